//! SIGTERM, SIGINT and SIGHUP stop a run; the second one cancels the running child at once.
//! One test in its own binary: it signals its own process.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::signal::{raise, Signal};
use stepwise::effects::nix::argv::Invocation;
use stepwise::effects::nix::runner::{CancelToken, RunError, RunOptions, Runner, Stream};
use stepwise::effects::signals::{install, HANDLED, STOP};

/// Wait until the watcher thread has handled `n` signals (bounded).
fn handled(n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while HANDLED.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "signal {n} never handled");
        std::thread::yield_now();
    }
}

#[test]
fn the_first_stop_signal_stops_between_transitions_the_second_cancels_the_child() {
    let token = CancelToken::new();
    install(token.clone()).unwrap();
    let r = Runner::new(vec![], None).unwrap();
    let inv = Invocation::new("/bin/sh")
        .arg("-c")
        .arg("echo ready >&2; exec sleep 600");
    let mut signalled = false;
    let mut on_line = |_: Stream, line: &str| {
        if line == "ready" && !signalled {
            signalled = true;
            // SIGHUP counts as a stop signal like SIGTERM.
            raise(Signal::SIGHUP).unwrap();
            handled(1);
            assert!(
                STOP.load(Ordering::SeqCst),
                "the first signal sets the stop flag"
            );
            assert!(!token.is_cancelled(), "the first signal lets the child run");
            raise(Signal::SIGTERM).unwrap();
        }
    };
    let started = Instant::now();
    let e = r
        .run(
            &inv,
            RunOptions {
                cancel: Some(&token),
                on_line: Some(&mut on_line),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(e, RunError::Cancelled { .. }), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "cancelled promptly"
    );
}
