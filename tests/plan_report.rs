//! Golden tests of the plan's renderers (human table and versioned JSON), for a plan that fits and
//! one that does not. `STEPWISE_BLESS=1 cargo test --test plan_report` rewrites the files; review
//! the diff.

mod common;

use std::path::PathBuf;

use common::synthetic::{store_dir, system, Params};
use stepwise::plan::plan;
use stepwise::plan::report::{write_human, write_json, Header};

fn golden(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var("STEPWISE_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (STEPWISE_BLESS=1 creates it)", path.display()));
    assert_eq!(
        got,
        want,
        "{} differs (STEPWISE_BLESS=1 rewrites it)",
        path.display()
    );
}

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
    write_json(&mut json, &h, &planned, &sd).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    (
        String::from_utf8(human).unwrap(),
        serde_json::to_string_pretty(&v).unwrap() + "\n",
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
