//! Crash tests on real Nix: the real `stepwise` binary (built with `--features crash-points`) is
//! killed at every named checkpoint of a run in turn (`STEPWISE_CRASH_AT=any:K` aborts it at the
//! K-th), and its whole process group is SIGKILLed at seeded random moments; after each kill the
//! profile and current-system point at a complete generation, `journal verify` passes, and
//! `stepwise resume` reaches the target. Root only (tmpfs beds).

use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use stepwise_testbed::{require_root, Bed, Disk, Fixture, FixtureSpec, PackageSpec};

fn stepwise_cmd(bed: &Bed, args: &[&str]) -> Command {
    bed.stepwise(env!("CARGO_BIN_EXE_stepwise"), args)
}

fn upgrade_cmd(bed: &Bed, fx: &Fixture, extra: &[&str]) -> Command {
    let mut cmd = stepwise_cmd(bed, &["upgrade", "--target", &fx.new.drv]);
    cmd.args(bed.system_args());
    cmd.args(extra);
    cmd
}

fn show(o: &Output) -> String {
    stepwise_testbed::show_output(o)
}

/// The planned steps' toplevel outputs, from `journal export` (empty before a run is recorded).
fn planned_outs(bed: &Bed) -> Vec<String> {
    if !bed.journal_path().exists() {
        return vec![];
    }
    let o = stepwise_cmd(bed, &["journal", "export"]).output().unwrap();
    let sd = bed.store_dir();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "runStarted")
        .flat_map(|v| {
            v["data"]["plan"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|s| s["toplevelOut"].as_str().map(|p| format!("{sd}/{p}")))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// After any kill: the profile and current-system name a complete generation: G0, a planned step
/// or the target.
fn consistent(bed: &Bed, fx: &Fixture, g0: &str) {
    let steps = planned_outs(bed);
    for (what, link) in [
        ("profile", bed.profile_target()),
        ("current-system", bed.current_system()),
    ] {
        let link = link.unwrap_or_else(|| panic!("{what} is missing"));
        assert!(
            link == g0 || link == fx.new.out || steps.contains(&link),
            "{what} points at {link}, not G0, a planned step or the target ({steps:?})"
        );
        let closure = bed.closure(&[&link]).expect("closure of the generation");
        for p in &closure {
            assert!(bed.is_valid(p).unwrap(), "{what}'s {p} is not valid");
        }
    }
}

/// `journal verify` passes (a kill before anything was recorded leaves no journal).
fn verified(bed: &Bed) {
    if !bed.journal_path().exists() {
        return;
    }
    let v = stepwise_cmd(bed, &["journal", "verify"]).output().unwrap();
    assert_eq!(v.status.code(), Some(0), "journal verify: {}", show(&v));
}

/// Resume until the run ends; returns the last exit code.
fn resume_to_end(bed: &Bed) -> Output {
    let o = stepwise_cmd(bed, &["resume"]).output().unwrap();
    assert!(
        matches!(o.status.code(), Some(0) | Some(1)),
        "resume: {}",
        show(&o)
    );
    o
}

fn spec() -> FixtureSpec {
    FixtureSpec::two_big(1)
}

#[test]
fn killed_at_every_checkpoint_then_resumed() {
    if !require_root("engine: crash at every checkpoint") {
        return;
    }
    let mut covered = 0;
    for k in 1.. {
        let (bed, fx) = Bed::prepared_with(&spec(), |_| Disk::Unlimited);
        let g0 = bed.install(&fx.old.drv).unwrap();
        let o = upgrade_cmd(&bed, &fx, &["--strategy", "direct"])
            .env("STEPWISE_CRASH_AT", format!("any:{k}"))
            .output()
            .unwrap();
        if o.status.success() {
            // K is past the last checkpoint: the run ended normally.
            assert_eq!(bed.profile_target().as_deref(), Some(fx.new.out.as_str()));
            break;
        }
        assert_eq!(o.status.code(), None, "killed by the abort: {}", show(&o));
        covered += 1;
        consistent(&bed, &fx, &g0);
        verified(&bed);
        let r = resume_to_end(&bed);
        if k == 1 && String::from_utf8_lossy(&r.stderr).contains("no run") {
            continue;
        }
        assert_eq!(
            r.status.code(),
            Some(0),
            "resume after kill {k}: {}",
            show(&r)
        );
        assert_eq!(bed.profile_target().as_deref(), Some(fx.new.out.as_str()));
        assert_eq!(bed.current_system().as_deref(), Some(fx.new.out.as_str()));
        consistent(&bed, &fx, &g0);
        verified(&bed);
        assert!(k < 200, "the run does not end");
    }
    eprintln!("kill points covered (plain run): {covered}");
    assert!(covered >= 30, "only {covered} checkpoints");
}

#[test]
fn killed_while_unwinding_a_failed_build_then_resumed() {
    if !require_root("engine: crash while unwinding") {
        return;
    }
    let spec = spec().package(PackageSpec::changed("broken", 1, 1).new_fails());
    let mut covered = 0;
    for k in 1.. {
        let (bed, fx) = Bed::prepared_with(&spec, |_| Disk::Unlimited);
        let g0 = bed.install(&fx.old.drv).unwrap();
        let o = upgrade_cmd(&bed, &fx, &[])
            .env("STEPWISE_CRASH_AT", format!("any:{k}"))
            .output()
            .unwrap();
        if o.status.code() == Some(1) {
            break;
        }
        assert_eq!(o.status.code(), None, "killed by the abort: {}", show(&o));
        covered += 1;
        consistent(&bed, &fx, &g0);
        verified(&bed);
        let r = resume_to_end(&bed);
        if String::from_utf8_lossy(&r.stderr).contains("no run") {
            continue;
        }
        assert_eq!(
            r.status.code(),
            Some(1),
            "resume after kill {k}: {}",
            show(&r)
        );
        assert_eq!(bed.profile_target().as_deref(), Some(g0.as_str()));
        assert_eq!(bed.current_system().as_deref(), Some(g0.as_str()));
        consistent(&bed, &fx, &g0);
        verified(&bed);
        assert!(k < 200, "the run does not end");
    }
    eprintln!("kill points covered (failed run): {covered}");
    assert!(covered >= 15, "only {covered} checkpoints");
}

/// A small seeded generator (xorshift), so a failing moment can be replayed.
fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn process_group_killed_at_random_moments_then_resumed() {
    if !require_root("engine: SIGKILL of the process group") {
        return;
    }
    let mut seed: u64 = std::env::var("STEPWISE_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0001);
    eprintln!("seed {seed} (STEPWISE_KILL_SEED replays it)");
    for round in 0..6 {
        // Even rounds: the plain upgrade on a roomy disk; odd rounds: steps on a tight one.
        let stepwise = round % 2 == 1;
        let strategy: &[&str] = if stepwise {
            &["--strategy", "stepwise"]
        } else {
            &["--strategy", "direct"]
        };
        let (bed, fx) = if stepwise {
            Bed::prepared_with(&FixtureSpec::two_big(6), |f| {
                Disk::TmpfsMib(f.tight_disk_mib())
            })
        } else {
            Bed::prepared_with(&spec(), |_| Disk::Unlimited)
        };
        let g0 = bed.install(&fx.old.drv).unwrap();
        if stepwise {
            std::fs::remove_file(bed.booted_system_link()).unwrap();
        }
        let mut cmd = upgrade_cmd(&bed, &fx, strategy);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        // Its own session and process group, as a systemd unit's would be.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        let delay = Duration::from_millis(xorshift(&mut seed) % 3000);
        // A random moment, not a synchronisation: wherever the run is, the kill must be safe.
        std::thread::sleep(delay);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let status = child.wait().unwrap();
        eprintln!("round {round}: killed after {delay:?} ({status})");
        consistent(&bed, &fx, &g0);
        verified(&bed);
        let r = stepwise_cmd(&bed, &["resume"]).output().unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        if status.success()
            || err.contains("already finished")
            || err.contains("has finished")
            || err.contains("no run")
        {
            // Killed after the end, or before the run was recorded: upgrade again.
            if bed.profile_target().as_deref() != Some(fx.new.out.as_str()) {
                let o = upgrade_cmd(&bed, &fx, strategy).output().unwrap();
                assert_eq!(o.status.code(), Some(0), "{}", show(&o));
            }
        } else {
            assert_eq!(r.status.code(), Some(0), "resume: {}", show(&r));
        }
        assert_eq!(bed.profile_target().as_deref(), Some(fx.new.out.as_str()));
        consistent(&bed, &fx, &g0);
        verified(&bed);
    }
}

/// The stepwise chain on a tmpfs where the plain upgrade does not fit: killed at every
/// checkpoint in turn, then resumed to the target.
#[test]
fn stepwise_killed_at_every_checkpoint_then_resumed() {
    if !require_root("engine: stepwise crash at every checkpoint") {
        return;
    }
    let spec = FixtureSpec::two_big(6);
    let mut covered = 0;
    // Every other checkpoint keeps the test's time reasonable; STEPWISE_CRASH_ALL=1 takes all.
    let stride = if std::env::var("STEPWISE_CRASH_ALL").is_ok_and(|v| v == "1") {
        1
    } else {
        2
    };
    let mut k = 1;
    loop {
        let (bed, fx) = Bed::prepared_with(&spec, |f| Disk::TmpfsMib(f.tight_disk_mib()));
        let g0 = bed.install(&fx.old.drv).unwrap();
        std::fs::remove_file(bed.booted_system_link()).unwrap();
        let o = upgrade_cmd(&bed, &fx, &["--strategy", "stepwise"])
            .env("STEPWISE_CRASH_AT", format!("any:{k}"))
            .output()
            .unwrap();
        if o.status.success() {
            assert_eq!(bed.profile_target().as_deref(), Some(fx.new.out.as_str()));
            eprintln!("k = {k}: the run ended before the checkpoint\n{}", show(&o));
            break;
        }
        assert_eq!(o.status.code(), None, "killed by the abort: {}", show(&o));
        covered += 1;
        consistent(&bed, &fx, &g0);
        verified(&bed);
        let r = resume_to_end(&bed);
        if !String::from_utf8_lossy(&r.stderr).contains("no run") {
            assert_eq!(
                r.status.code(),
                Some(0),
                "resume after kill {k}: {}",
                show(&r)
            );
        } else {
            let o = upgrade_cmd(&bed, &fx, &["--strategy", "stepwise"])
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(0), "{}", show(&o));
        }
        assert_eq!(bed.profile_target().as_deref(), Some(fx.new.out.as_str()));
        assert_eq!(bed.current_system().as_deref(), Some(fx.new.out.as_str()));
        consistent(&bed, &fx, &g0);
        verified(&bed);
        k += stride;
        assert!(k < 400, "the run does not end");
    }
    eprintln!("kill points covered (stepwise run): {covered}");
    assert!(covered >= 20, "only {covered} checkpoints");
}

/// SIGTERM while a transition runs: it finishes and is journaled, the run stops with exit 3,
/// and `stepwise resume` reaches the target.
#[test]
fn sigterm_finishes_the_transition_then_stops() {
    if !require_root("engine: SIGTERM") {
        return;
    }
    for point in [
        "after-intent-realise",
        "after-intent-collect",
        "before-intent-activate",
    ] {
        let (bed, fx) = Bed::prepared_with(&spec(), |_| Disk::Unlimited);
        let g0 = bed.install(&fx.old.drv).unwrap();
        let o = upgrade_cmd(&bed, &fx, &["--strategy", "direct"])
            .env("STEPWISE_SIGNAL_AT", point)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(3), "{point}: {}", show(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains("stopped by a signal"));
        consistent(&bed, &fx, &g0);
        verified(&bed);
        // The interrupted transition was finished and journaled: nothing is left in flight.
        let s = stepwise_cmd(&bed, &["status", "--json"]).output().unwrap();
        let status = String::from_utf8_lossy(&s.stdout);
        assert!(
            status.contains("stopped between transitions"),
            "{point}: {status}"
        );
        let r = resume_to_end(&bed);
        assert_eq!(r.status.code(), Some(0), "{point}: {}", show(&r));
        assert_eq!(bed.current_system().as_deref(), Some(fx.new.out.as_str()));
    }
}

/// Issue 8: a run that takes a non-vital package out as a stub and brings it back, killed at
/// checkpoints in turn (every fifth; STEPWISE_CRASH_ALL=1 takes all), then resumed to the
/// target with the package back, upgraded. The disk: the standard fixture with all but 23 MiB
/// taken by the reserve, where only `--non-vital big-b` makes the upgrade fit.
#[test]
fn non_vital_run_killed_at_checkpoints_then_resumed() {
    if !require_root("engine: non-vital run crash at checkpoints") {
        return;
    }
    let spec = FixtureSpec::standard();
    let stride = if std::env::var("STEPWISE_CRASH_ALL").is_ok_and(|v| v == "1") {
        1
    } else {
        5
    };
    let mut covered = 0;
    let mut k = 1;
    loop {
        let (bed, fx, g0, reserve) = Bed::squeezed(&spec, 23);
        // `--strategy stepwise`: with auto, a kill before the first transition resumes on the
        // direct chain (reported to the lead; not this test's subject).
        let args = [
            "--strategy",
            "stepwise",
            "--reserve",
            reserve.as_str(),
            "--non-vital",
            "big-b",
        ];
        let o = upgrade_cmd(&bed, &fx, &args)
            .env("STEPWISE_CRASH_AT", format!("any:{k}"))
            .output()
            .unwrap();
        let ended = o.status.success();
        if !ended {
            assert_eq!(o.status.code(), None, "killed by the abort: {}", show(&o));
            covered += 1;
            consistent(&bed, &fx, &g0);
            verified(&bed);
            // Killed before the run was recorded (in the stub probe, before the journal):
            // nothing to resume, the next upgrade starts it.
            let r = if bed.journal_path().exists() {
                resume_to_end(&bed)
            } else {
                upgrade_cmd(&bed, &fx, &args).output().unwrap()
            };
            if String::from_utf8_lossy(&r.stderr).contains("no run") {
                let o = upgrade_cmd(&bed, &fx, &args).output().unwrap();
                assert_eq!(o.status.code(), Some(0), "{}", show(&o));
            } else {
                assert_eq!(
                    r.status.code(),
                    Some(0),
                    "resume after kill {k}: {}",
                    show(&r)
                );
            }
        }
        assert_eq!(bed.profile_target().as_deref(), Some(fx.new.out.as_str()));
        assert_eq!(bed.current_system().as_deref(), Some(fx.new.out.as_str()));
        let closure = bed.closure(&[&fx.new.out]).unwrap();
        for p in fx.package("big-b").new.as_ref().unwrap().outputs.values() {
            assert!(closure.contains(p), "big-b is back, upgraded: {p}");
        }
        consistent(&bed, &fx, &g0);
        verified(&bed);
        if ended {
            eprintln!("k = {k}: the run ended before the checkpoint");
            break;
        }
        k += stride;
        assert!(k < 400, "the run does not end");
    }
    eprintln!("kill points covered (non-vital run): {covered}");
    assert!(covered >= 5, "only {covered} checkpoints");
}

/// Issue 8: `upgrade --non-vital` killed inside the stub probe (before any run exists) leaves
/// the system as it was and no journal; the next `upgrade` removes the probe's scratch, runs,
/// and leaves the store holding exactly what an uninterrupted run leaves.
#[test]
fn killed_in_the_stub_probe_then_upgraded_again() {
    if !require_root("engine: kill inside the stub probe") {
        return;
    }
    let spec = FixtureSpec::standard();
    // Valid paths outside the target's closure, by name (hashes differ between beds' stores).
    let extra = |bed: &Bed, fx: &Fixture| -> Vec<String> {
        let closure = bed.closure(&[&fx.new.out]).unwrap();
        let mut v: Vec<String> = bed
            .valid_paths()
            .unwrap()
            .into_iter()
            .filter(|p| !closure.contains(p))
            .filter_map(|p| {
                p.rsplit('/')
                    .next()?
                    .split_once('-')
                    .map(|(_, n)| n.to_string())
            })
            .collect();
        v.sort();
        v
    };
    let mut baseline: Option<Vec<String>> = None;
    for point in [None, Some("probe-written"), Some("probe-built")] {
        let (bed, fx, g0, reserve) = Bed::squeezed(&spec, 23);
        let args = ["--reserve", reserve.as_str(), "--non-vital", "big-b"];
        if let Some(point) = point {
            let o = upgrade_cmd(&bed, &fx, &args)
                .env("STEPWISE_CRASH_AT", point)
                .output()
                .unwrap();
            assert_eq!(o.status.code(), None, "killed at {point}: {}", show(&o));
            assert!(
                String::from_utf8_lossy(&o.stderr).contains(&format!("crash point {point}")),
                "{}",
                show(&o)
            );
            assert_eq!(bed.profile_target().as_deref(), Some(g0.as_str()));
            assert_eq!(bed.current_system().as_deref(), Some(g0.as_str()));
            assert!(!bed.journal_path().exists(), "no run was started");
        }
        let o = upgrade_cmd(&bed, &fx, &args).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", show(&o));
        assert_eq!(bed.profile_target().as_deref(), Some(fx.new.out.as_str()));
        verified(&bed);
        let left = extra(&bed, &fx);
        match &baseline {
            None => {
                eprintln!("outside the target's closure after a clean run: {left:?}");
                // Only the fixture's own .drv files (the bed pins them): no probe output.
                assert!(left.iter().all(|n| n.ends_with(".drv")), "{left:?}");
                baseline = Some(left)
            }
            Some(b) => assert_eq!(&left, b, "after a kill at {point:?}: scratch left behind"),
        }
    }
}

/// Killed in the middle of a long unwind (four steps, the last fails to build; the way back
/// G3 → G2 → G1 → G0 on the tight disk), at two points: after the intent to realise G1 again
/// (then `stepwise resume`), and after G1 was activated but before that was journaled (then
/// `stepwise unwind`, which probes the activation). Either way: exit 1, G0 exactly and whole,
/// `journal verify` passes, no run root left. With STEPWISE_CRASH_ALL=1 also at every
/// checkpoint of the whole run in turn (`any:K`, ~200, half resumed, half unwound).
#[test]
fn killed_in_the_middle_of_a_long_unwind_then_resumed_or_unwound() {
    if !require_root("engine: kill during a long unwind") {
        return;
    }
    let spec = FixtureSpec::long_chain_failing_last(3);
    // Realise intents: steps 1..4 forward (4 fails), then G2, G1, G0 on the way back.
    // Activations: G1, G2, G3 forward, then G2, G1 on the way back.
    let mut points: Vec<(String, &str, bool)> = vec![
        ("after-intent-realise:6".into(), "resume", true),
        ("after-effect-activate:5".into(), "unwind", true),
    ];
    if std::env::var("STEPWISE_CRASH_ALL").is_ok_and(|v| v == "1") {
        for k in 1..400 {
            let then = if k % 2 == 0 { "resume" } else { "unwind" };
            points.push((format!("any:{k}"), then, false));
        }
    }
    let mut covered = 0;
    for (point, then, middle) in points {
        let (bed, fx) = Bed::prepared_with(&spec, |f| Disk::TmpfsMib(f.tight_disk_mib()));
        let g0 = bed.install(&fx.old.drv).unwrap();
        std::fs::remove_file(bed.booted_system_link()).unwrap();
        let g0_closure = bed.closure(&[&g0]).unwrap();
        let o = upgrade_cmd(&bed, &fx, &["--strategy", "stepwise"])
            .env("STEPWISE_CRASH_AT", &point)
            .output()
            .unwrap();
        if !middle && o.status.code() == Some(1) {
            // K is past the last checkpoint: the run ended as it does unkilled.
            assert!(
                String::from_utf8_lossy(&o.stderr).contains("zz-broken"),
                "{point}: {}",
                show(&o)
            );
            eprintln!("{point}: the run ended before the checkpoint");
            break;
        }
        assert_eq!(o.status.code(), None, "{point}: killed: {}", show(&o));
        covered += 1;
        if middle {
            assert!(
                String::from_utf8_lossy(&o.stderr).contains("FAILED"),
                "{point}: killed after the failure: {}",
                show(&o)
            );
            let steps = planned_outs(&bed);
            assert_eq!(steps.len(), 4, "{point}: {steps:?}");
            // In the middle: neither at G0 nor at the target, but at a step in between.
            let at = bed.profile_target().unwrap();
            assert!(steps[..3].contains(&at), "{point}: profile at {at}");
        }
        consistent(&bed, &fx, &g0);
        verified(&bed);
        let r = stepwise_cmd(&bed, &[then]).output().unwrap();
        if String::from_utf8_lossy(&r.stderr).contains("no run") {
            // Killed before the run was recorded: nothing changed; nothing to converge.
            assert_eq!(bed.profile_target().as_deref(), Some(g0.as_str()));
            continue;
        }
        // Exit 1 when the build failed (journaled, possibly by this process re-running the
        // realise it found in flight); a user's unwind before that ends with exit 0.
        let export = stepwise_cmd(&bed, &["journal", "export"]).output().unwrap();
        let failed = String::from_utf8_lossy(&export.stdout).contains(r#""kind":"failed""#);
        // Killed after the last transition: the run is over, there is nothing to unwind (exit 2,
        // the end is recorded).
        let over = String::from_utf8_lossy(&r.stderr).contains("already finished");
        let want = match (then, failed) {
            ("unwind", _) if over => 2,
            ("unwind", false) => 0,
            _ => 1,
        };
        assert_eq!(r.status.code(), Some(want), "{point}, {then}: {}", show(&r));
        assert_eq!(bed.profile_target().as_deref(), Some(g0.as_str()));
        assert_eq!(bed.current_system().as_deref(), Some(g0.as_str()));
        for p in &g0_closure {
            assert!(bed.is_valid(p).unwrap(), "{point}: {p} of G0 is back");
        }
        let roots = bed.journal_path().with_extension("redb.roots");
        assert!(
            !roots.exists() || std::fs::read_dir(&roots).unwrap().next().is_none(),
            "{point}: no run root left"
        );
        verified(&bed);
    }
    eprintln!("kill points covered (long unwind): {covered}");
}

/// The journal is the whole truth: a stepwise run killed mid-chain (in its second realise), then
/// every regular file beside the journal deleted but the writer lock and the reserve (nothing
/// else holds state: no `*.steps.json` was written), resumes to the exact target.
#[test]
fn killed_mid_chain_with_everything_but_the_journal_lock_and_reserve_deleted_then_resumed() {
    if !require_root("engine: resume from the journal alone") {
        return;
    }
    let spec = FixtureSpec::two_big(6);
    let (bed, fx) = Bed::prepared_with(&spec, |f| Disk::TmpfsMib(f.tight_disk_mib()));
    let g0 = bed.install(&fx.old.drv).unwrap();
    std::fs::remove_file(bed.booted_system_link()).unwrap();
    let o = upgrade_cmd(&bed, &fx, &["--strategy", "stepwise"])
        .env("STEPWISE_CRASH_AT", "after-intent-realise:2")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), None, "killed by the abort: {}", show(&o));
    let steps = planned_outs(&bed);
    assert!(steps.len() >= 2, "a chain of steps: {steps:?}");
    // Mid-chain: step 1 is the system now, step 2 is being realised.
    assert_eq!(bed.profile_target().as_deref(), Some(steps[0].as_str()));
    consistent(&bed, &fx, &g0);
    let journal = bed.journal_path();
    let dir = journal.parent().unwrap();
    let name = journal.file_name().unwrap().to_string_lossy().into_owned();
    let keep = [
        name.clone(),
        format!("{name}.lock"),
        format!("{name}.reserve"),
    ];
    let mut deleted = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let file = entry.file_name().to_string_lossy().into_owned();
        assert!(
            !file.ends_with(".steps.json"),
            "a side file of state: {file}"
        );
        if entry.file_type().unwrap().is_file() && !keep.contains(&file) {
            std::fs::remove_file(entry.path()).unwrap();
            deleted.push(file);
        }
    }
    eprintln!("deleted beside the journal: {deleted:?}");
    let r = stepwise_cmd(&bed, &["resume"]).output().unwrap();
    assert_eq!(r.status.code(), Some(0), "resume: {}", show(&r));
    assert_eq!(bed.profile_target().as_deref(), Some(fx.new.out.as_str()));
    assert_eq!(bed.current_system().as_deref(), Some(fx.new.out.as_str()));
    for p in bed.closure(&[&fx.new.out]).unwrap() {
        assert!(bed.is_valid(&p).unwrap(), "the target's {p} is not valid");
    }
    consistent(&bed, &fx, &g0);
    verified(&bed);
}
