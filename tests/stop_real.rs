//! A stop is a stop: SIGTERM or SIGINT to every process of a run's session (a `systemctl stop`,
//! a shutdown's final kill, Ctrl-C of the group) while Nix realises a generation reaches Nix too.
//! The run must stop (exit 3) without recording a failure, and `stepwise resume` must reach the
//! target. Real Nix; root only (tmpfs beds).

use std::process::{Command, Output, Stdio};

use nix::sys::signal::Signal;
use serde_json::Value;
use stepwise_testbed::{
    kill_session, require_root, spawn_own_session, Bed, Disk, Fixture, FixtureSpec,
};

fn stepwise(bed: &Bed, args: &[&str]) -> Command {
    bed.stepwise(env!("CARGO_BIN_EXE_stepwise"), args)
}

fn show(o: &Output) -> String {
    stepwise_testbed::show_output(o)
}

/// The journal's records (`journal export`), empty while no journal exists.
fn records(bed: &Bed) -> Vec<Value> {
    if !bed.journal_path().exists() {
        return vec![];
    }
    let o = stepwise(bed, &["journal", "export"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("kind").is_some())
        .collect()
}

/// Whether the last record is the intent to realise a generation (Nix is at work).
fn realising(records: &[Value]) -> bool {
    records
        .last()
        .is_some_and(|r| r["kind"] == "intent" && r["data"]["transition"].get("realise").is_some())
}

/// Start the plain upgrade in a session of its own, wait until the journal shows it realising,
/// then send `signal` to every process of the session. Returns the run's output and whether
/// the signal reached it while the realise was still open.
fn stopped_while_realising(bed: &Bed, fx: &Fixture, signal: Signal) -> (Output, bool) {
    let mut cmd = stepwise(bed, &["upgrade", "--target", &fx.new.drv]);
    cmd.args(bed.system_args())
        .args(["--strategy", "direct"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_own_session(&mut cmd).unwrap();
    // Polling what the run has journaled (read-only), not a sleep: the signal goes out once the
    // realise has started, wherever it then is.
    let mut seen = false;
    while child.try_wait().unwrap().is_none() {
        if realising(&records(bed)) {
            seen = true;
            break;
        }
    }
    kill_session(&mut child, signal).unwrap();
    let out = child.wait_with_output().unwrap();
    (out, seen)
}

fn stop_then_resume(signal: Signal) {
    // Big packages: copying them from the cache takes long enough for the signal to land.
    let (bed, fx) = Bed::prepared_with(&FixtureSpec::two_big(48), |_| Disk::Unlimited);
    bed.install(&fx.old.drv).unwrap();
    let (out, seen) = stopped_while_realising(&bed, &fx, signal);
    assert!(seen, "the run never showed a realise: {}", show(&out));
    assert_eq!(out.status.code(), Some(3), "{signal}: {}", show(&out));
    // Its log (stderr is no terminal here: the lines a journal gets) ends with complete lines,
    // and says which transition the stop interrupted.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.ends_with('\n'), "the last log line is cut short: {log}");
    let recs = records(&bed);
    if realising(&recs) {
        // The stop reached Nix: the realise's own line says so.
        assert!(
            log.lines()
                .any(|l| l.contains("realise") && l.contains("interrupted")),
            "the log does not say the realise was interrupted: {log}"
        );
    }
    assert!(
        !recs
            .iter()
            .any(|r| r["kind"] == "failed" || r["kind"] == "unwindStarted"),
        "{signal} was recorded as a failure: {recs:#?}"
    );
    let o = stepwise(&bed, &["resume"]).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "resume after {signal}: {}",
        show(&o)
    );
    assert_eq!(bed.profile_target().as_deref(), Some(fx.new.out.as_str()));
    assert_eq!(bed.current_system().as_deref(), Some(fx.new.out.as_str()));
    let v = stepwise(&bed, &["journal", "verify"]).output().unwrap();
    assert_eq!(v.status.code(), Some(0), "{}", show(&v));
}

#[test]
fn sigterm_to_the_whole_session_while_realising_stops_and_resumes() {
    if !require_root("stop: SIGTERM to the session during a realise") {
        return;
    }
    stop_then_resume(Signal::SIGTERM);
}

#[test]
fn sigint_to_the_whole_session_while_realising_stops_and_resumes() {
    if !require_root("stop: SIGINT to the session during a realise") {
        return;
    }
    stop_then_resume(Signal::SIGINT);
}
