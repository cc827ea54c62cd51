//! Golden tests of the plan's renderers (human table and versioned JSON), for a plan that fits and
//! one that does not. `STEPWISE_BLESS=1 cargo test --test plan_report` rewrites the files;
//! review the diff.

mod common;

use common::golden::{check as golden, one_document};
use common::synthetic::{store_dir, system, Params};
use stepwise::output::write_document;
use stepwise::plan::disk::DiskCost;
use stepwise::plan::plan;
use stepwise::plan::report::{json_body, write_human, Header};

fn render(free: u64, booted: bool) -> (String, String) {
    render_on(free, booted, DiskCost::default())
}

fn render_on(free: u64, booted: bool, disk: DiskCost) -> (String, String) {
    let mut s = system(&Params {
        paths: 40,
        units: 8,
        changed: 4,
        dep_change_per_mille: 100,
        seed: 11,
        booted,
        free,
        kernel: true,
    });
    s.input.used = 3 << 30;
    s.input.disk = disk;
    s.input.options.non_vital = vec!["pkg3".into()];
    let planned = plan(&s.input).unwrap();
    let sd = store_dir();
    let h = Header::new(
        &sd,
        s.input.g0.toplevel.as_ref(),
        &s.input.target.root,
        s.input.target.root_out(),
    );
    let mut human = Vec::new();
    write_human(&mut human, &h, &planned).unwrap();
    let mut json = Vec::new();
    write_document(&mut json, "plan", &json_body(&h, &planned, &sd)).unwrap();
    (
        String::from_utf8(human).unwrap(),
        one_document(&String::from_utf8(json).unwrap(), "plan"),
    )
}

#[test]
fn a_plan_that_fits() {
    let (human, json) = render(1 << 30, false);
    golden("plan_fits.txt", &human);
    golden("plan_fits.json", &json);
}

#[test]
fn a_plan_that_does_not_fit() {
    let (human, json) = render(40 << 20, true);
    golden("plan_nofit.txt", &human);
    golden("plan_nofit.json", &json);
}

/// Measured on an ext4 where Nix's state shares the store's filesystem: disk and NAR figures side
/// by side, and Nix's bookkeeping (write-ahead log, build logs) in the plain peak.
#[test]
fn a_plan_on_a_measured_disk() {
    let disk = DiskCost {
        filesystem: "ext4".into(),
        sample_paths: 40,
        sample_nar: 20 << 20,
        sample_allocated: 21 << 20,
        sample_allocated_unique: 21 << 20,
        fs_used: 3 << 30,
        block: 4096,
        state_on_store_fs: true,
        path_overhead: 2048,
        ..Default::default()
    };
    let (human, json) = render_on(1 << 30, false, disk);
    golden("plan_measured.txt", &human);
    golden("plan_measured.json", &json);
}
