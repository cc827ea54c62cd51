//! Golden tests of the plan's renderers (human table and versioned JSON), for a plan that fits and
//! one that does not. `STEPWISE_BLESS=1 cargo test --test plan_report` rewrites the files;
//! review the diff.

mod common;

use common::golden::{check as golden, one_document};
use common::synthetic::{store_dir, system, Params};
use stepwise::output::write_document;
use stepwise::plan::plan;
use stepwise::plan::report::{json_body, write_human, Header};

fn render(free: u64, booted: bool) -> (String, String) {
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
