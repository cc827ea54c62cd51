//! `stepwise plan` through the binary on a real-Nix bed: exit 0 with a table or versioned JSON
//! when a plan fits, 3 when none does (saying what is missing), 2 for bad input.

use std::process::Command;

use stepwise_testbed::{Bed, Disk, Fixture, FixtureSpec};

fn stepwise(bed: &Bed, fx: &Fixture, extra: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stepwise"));
    cmd.envs(bed.env())
        .arg("plan")
        .arg("--target")
        .arg(&fx.new.drv)
        .arg("--profile")
        .arg(bed.profile())
        .arg("--current-system")
        .arg(bed.current_system_link())
        .arg("--booted-system")
        .arg(bed.booted_system_link())
        .args(extra);
    let out = cmd.output().expect("running stepwise");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plan_exit_codes_table_and_json() {
    let spec = FixtureSpec::standard();
    let (bed, fx) = Bed::prepared_with(&spec, |_| Disk::Unlimited);
    bed.install(&fx.old.drv).expect("G0");
    std::fs::remove_file(bed.booted_system_link()).unwrap();

    let (code, out, err) = stepwise(&bed, &fx, &["--reserve", "1M"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("Packages: 5 changed, 1 added, 1 removed, 2 unchanged"),
        "{out}"
    );
    assert!(out.contains("big-b") && out.contains("Steps ("), "{out}");

    let (code, out, err) = stepwise(&bed, &fx, &["--reserve", "1M", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON document");
    assert_eq!(v["stepwise"], "plan");
    assert_eq!(v["version"], 1);
    assert_eq!(v["fits"], true);
    let last = v["steps"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["mask"].as_object().unwrap().is_empty(),
        "the last step is the target"
    );

    // --together ties big-a and big-b into one step.
    let (code, out, _) = stepwise(
        &bed,
        &fx,
        &["--reserve", "1M", "--json", "--together", "big-a,big-b"],
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let together = v["steps"].as_array().unwrap().iter().any(|s| {
        let u: Vec<&str> = s["upgraded"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        u.contains(&"big-a") && u.contains(&"big-b")
    });
    assert!(together, "{out}");

    // No room: exit 3 with what is missing and what would help.
    let (code, out, err) = stepwise(&bed, &fx, &["--reserve", "100T"]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(out.contains("No order fits"), "{out}");
    assert!(out.contains("What would help"), "{out}");

    // Bad input: exit 2, saying what.
    let (code, _, err) = stepwise(&bed, &fx, &["--non-vital", "no-such-package"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no-such-package"), "{err}");
    let (code, _, err) = stepwise(&bed, &fx, &["--together", "big-a,nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nope"), "{err}");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stepwise"));
    let out = cmd
        .envs(bed.env())
        .args(["plan", "--target", "/nonexistent/x.drv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
