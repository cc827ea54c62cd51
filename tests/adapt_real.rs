//! A step that runs out of space on real Nix (the real `stepwise`, built with `--features
//! crash-points`, whose fill point writes a ballast file on the store's disk just before a chosen
//! realise: the plan's estimate turns out optimistic). The step's realise fails with Nix's "No
//! space left on device"; that is not a build failure: its leftovers go, the rest of the chain is
//! planned again from the complete generation the system stands at, and the run goes on; when
//! nothing fits, it stops there (exit 3) and `resume` with room again reaches the target. Root
//! only (tmpfs beds).

use std::process::{Command, Output};

use serde_json::Value;
use stepwise_testbed::{require_root, Bed, Disk, Fixture, FixtureSpec};

fn stepwise(bed: &Bed, args: &[&str]) -> Command {
    bed.stepwise(env!("CARGO_BIN_EXE_stepwise"), args)
}

fn show(o: &Output) -> String {
    stepwise_testbed::show_output(o)
}

/// `stepwise upgrade --strategy stepwise` with the disk filled before the `nth` realise, leaving
/// `leave` bytes; the ballast is removed again at `until` when given.
fn upgrade_filled(bed: &Bed, fx: &Fixture, nth: u32, leave: u64, until: Option<&str>) -> Output {
    let mut cmd = stepwise(
        bed,
        &["upgrade", "--target", &fx.new.drv, "--strategy", "stepwise"],
    );
    cmd.args(bed.system_args());
    cmd.env("STEPWISE_FILL_AT", format!("before-intent-realise:{nth}"))
        .env("STEPWISE_FILL_FILE", ballast(bed))
        .env("STEPWISE_FILL_LEAVE", leave.to_string());
    if let Some(u) = until {
        cmd.env("STEPWISE_FILL_UNTIL", u);
    }
    cmd.output().unwrap()
}

fn ballast(bed: &Bed) -> std::path::PathBuf {
    bed.nix_dir().join("ballast")
}

fn kinds(bed: &Bed) -> Vec<String> {
    let o = stepwise(bed, &["journal", "export"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["kind"].as_str().map(str::to_string))
        .collect()
}

/// The profile and current-system name the same complete generation; returns it.
fn complete_generation(bed: &Bed) -> String {
    let profile = bed.profile_target().expect("a profile");
    assert_eq!(bed.current_system().as_deref(), Some(profile.as_str()));
    for p in bed.closure(&[&profile]).unwrap() {
        assert!(bed.is_valid(&p).unwrap(), "{p} of {profile} is not valid");
    }
    profile
}

fn verified(bed: &Bed) {
    let v = stepwise(bed, &["journal", "verify"]).output().unwrap();
    assert_eq!(v.status.code(), Some(0), "journal verify: {}", show(&v));
}

fn tight_bed() -> (Bed, Fixture, String) {
    let (bed, fx) = Bed::prepared_with(&FixtureSpec::standard(), |f| {
        Disk::TmpfsMib(f.tight_disk_mib())
    });
    let g0 = bed.install(&fx.old.drv).expect("installing G0");
    // Switched since boot: no booted pin, so that the steps fit without a reboot.
    std::fs::remove_file(bed.booted_system_link()).expect("removing the booted pin");
    (bed, fx, g0)
}

/// Something fills the disk just before step 2's realise and lets go once that realise failed:
/// the run re-measures, plans the rest again and reaches the target, without unwinding.
#[test]
fn a_step_that_runs_out_of_space_is_planned_again_and_reaches_the_target() {
    if !require_root("adapt: a step out of space is re-planned") {
        return;
    }
    let (bed, fx, _g0) = tight_bed();
    let o = upgrade_filled(&bed, &fx, 2, 64 << 10, Some("after-outcome-realise"));
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let k = kinds(&bed);
    assert!(k.iter().any(|k| k == "spaceRanOut"), "{k:?}\n{}", show(&o));
    assert!(k.iter().any(|k| k == "replanned"), "{k:?}");
    assert!(!k.iter().any(|k| k == "unwindStarted"), "{k:?}");
    assert_eq!(complete_generation(&bed), fx.new.out);
    verified(&bed);
}

/// The disk stays full after step 2's realise failed: nothing fits from step 1, so the run stops
/// there (exit 3), a complete generation, saying what is missing; with the ballast gone,
/// `resume` plans the rest again and reaches the target.
#[test]
fn nothing_fits_stops_at_a_complete_generation_then_resume_reaches_the_target() {
    if !require_root("adapt: nothing fits, then resume") {
        return;
    }
    let (bed, fx, g0) = tight_bed();
    let o = upgrade_filled(&bed, &fx, 2, 64 << 10, None);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert!(
        show(&o).contains("no re-plan fits"),
        "says what is missing: {}",
        show(&o)
    );
    let at = complete_generation(&bed);
    assert!(at != g0 && at != fx.new.out, "stopped at step 1, not {at}");
    let k = kinds(&bed);
    assert!(k.iter().any(|k| k == "spaceRanOut"), "{k:?}");
    assert!(!k.iter().any(|k| k == "unwindStarted"), "{k:?}");
    verified(&bed);

    std::fs::remove_file(ballast(&bed)).unwrap();
    let r = stepwise(&bed, &["resume"]).output().unwrap();
    assert_eq!(r.status.code(), Some(0), "{}", show(&r));
    assert!(kinds(&bed).iter().any(|k| k == "replanned"));
    assert_eq!(complete_generation(&bed), fx.new.out);
    verified(&bed);
}
