//! `switch-to-configuration`'s other endings on real Nix, through the `stepwise` binary: the
//! fixture's script exits 4 naming failed units, or 100 (takes effect after a reboot), as NixOS'
//! does (`Bed::set_activation_exit`). Root only (the bed's store); skipped otherwise, failing when
//! STEPWISE_REQUIRE_ROOT_TESTS=1.

use std::process::Output;

use stepwise_testbed::{require_root, Bed, Disk, Fixture, FixtureSpec};

fn stepwise(bed: &Bed, args: &[&str]) -> Output {
    let mut cmd = bed.command(env!("CARGO_BIN_EXE_stepwise"));
    cmd.arg("--journal").arg(bed.journal_path());
    cmd.args(args);
    cmd.output().expect("running stepwise")
}

fn upgrade(bed: &Bed, fx: &Fixture, extra: &[&str]) -> Output {
    let mut cmd = bed.command(env!("CARGO_BIN_EXE_stepwise"));
    cmd.arg("--journal").arg(bed.journal_path());
    cmd.args(["upgrade", "--target", &fx.new.drv, "--strategy", "direct"]);
    cmd.args(bed.system_args());
    cmd.args(extra);
    cmd.output().expect("running stepwise upgrade")
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn export(bed: &Bed) -> String {
    let o = stepwise(bed, &["journal", "export"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    String::from_utf8(o.stdout).unwrap()
}

fn verify(bed: &Bed) {
    let v = stepwise(bed, &["journal", "verify"]);
    assert_eq!(v.status.code(), Some(0), "journal verify: {}", show(&v));
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap()
}

fn bed() -> Option<(Bed, Fixture)> {
    if !require_root("activation endings on real Nix") {
        return None;
    }
    let (bed, fx) = Bed::prepared_with(&FixtureSpec::two_big(1), |_| Disk::Unlimited);
    bed.install(&fx.old.drv).unwrap();
    Some((bed, fx))
}

/// Exit 4 under the default `continue`: the target is reached, exit 5 names the units, the
/// journal has them; the next hourly `upgrade` sees the target running and does nothing.
/// Under `stop`: exit 3 at the target, waiting (nothing written) until `--accept-failed-units`.
#[test]
fn failed_units_exit_5_or_wait_for_acceptance() {
    let Some((bed, fx)) = bed() else { return };
    bed.set_activation_exit(
        base_name(&fx.new.out),
        4,
        &["nginx.service", "acme.service"],
    );
    let o = upgrade(&bed, &fx, &[]);
    assert_eq!(o.status.code(), Some(5), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nginx.service, acme.service"), "{}", show(&o));
    assert_eq!(bed.current_system().as_deref(), Some(fx.new.out.as_str()));
    let journal = export(&bed);
    assert!(
        journal.contains(r#""kind":"activated""#) && journal.contains("acme.service"),
        "{journal}"
    );
    let again = upgrade(&bed, &fx, &[]);
    assert_eq!(again.status.code(), Some(0), "{}", show(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already runs the target"));
    assert_eq!(export(&bed), journal, "the tick wrote to the journal");
    verify(&bed);
}

#[test]
fn failed_units_with_stop_wait_until_accepted() {
    let Some((bed, fx)) = bed() else { return };
    bed.set_activation_exit(base_name(&fx.new.out), 4, &["nginx.service"]);
    let o = upgrade(&bed, &fx, &["--on-failed-units", "stop"]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--accept-failed-units"),
        "{}",
        show(&o)
    );
    let journal = export(&bed);
    for args in [&["resume"][..], &["status"][..]] {
        let r = stepwise(&bed, args);
        assert!(matches!(r.status.code(), Some(0 | 3)), "{}", show(&r));
    }
    let tick = upgrade(&bed, &fx, &["--on-failed-units", "stop"]);
    assert_eq!(tick.status.code(), Some(3), "{}", show(&tick));
    assert_eq!(export(&bed), journal, "a waiting run wrote to the journal");
    let r = stepwise(&bed, &["resume", "--accept-failed-units"]);
    assert_eq!(r.status.code(), Some(5), "{}", show(&r));
    assert_eq!(bed.current_system().as_deref(), Some(fx.new.out.as_str()));
    verify(&bed);
}

/// Exit 100 with `--reboot never`: exit 3 with the target the boot default but not running;
/// after the (simulated) reboot the boot's `resume` finishes with exit 0.
#[test]
fn reboot_required_waits_for_the_reboot_then_resume_finishes() {
    let Some((bed, fx)) = bed() else { return };
    bed.set_activation_exit(base_name(&fx.new.out), 100, &[]);
    let o = upgrade(&bed, &fx, &["--reboot", "never"]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("after a reboot"),
        "{}",
        show(&o)
    );
    assert_eq!(bed.profile_target().as_deref(), Some(fx.new.out.as_str()));
    assert_eq!(bed.boot_default().as_deref(), Some(fx.new.out.as_str()));
    assert_ne!(bed.current_system().as_deref(), Some(fx.new.out.as_str()));
    let r = stepwise(&bed, &["resume"]);
    assert_eq!(r.status.code(), Some(3), "{}", show(&r));
    // The machine boots the boot default.
    bed.set_activation_exit(base_name(&fx.new.out), 0, &[]);
    bed.switch(&fx.new.out, "test").unwrap();
    bed.set_booted(&fx.new.out).unwrap();
    let r = stepwise(&bed, &["resume"]);
    assert_eq!(r.status.code(), Some(0), "{}", show(&r));
    assert_eq!(bed.current_system().as_deref(), Some(fx.new.out.as_str()));
    verify(&bed);
}
