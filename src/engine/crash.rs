//! Named crash checkpoints for the crash tests (cargo feature `crash-points`), as rustup does:
//! `STEPWISE_CRASH_AT=NAME[:N]` aborts the process at the N-th (default first) time the checkpoint
//! NAME is reached; `STEPWISE_CRASH_AT=any:N` at the N-th checkpoint of any name.
//! `STEPWISE_SIGNAL_AT=NAME` sends SIGTERM to the process itself there instead (the signal path
//! without a race). Without the feature every checkpoint compiles to nothing.

/// Mark a checkpoint.
#[inline]
pub fn point(name: &str) {
    #[cfg(feature = "crash-points")]
    imp::point(name);
    #[cfg(not(feature = "crash-points"))]
    let _ = name;
}

#[cfg(feature = "crash-points")]
mod imp {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);

    fn spec() -> &'static Option<(String, u64)> {
        SPEC.get_or_init(|| {
            let v = std::env::var("STEPWISE_CRASH_AT").ok()?;
            Some(match v.rsplit_once(':') {
                Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
                None => (v, 1),
            })
        })
    }

    pub fn point(name: &str) {
        if std::env::var("STEPWISE_SIGNAL_AT").is_ok_and(|v| v == name) {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM);
        }
        let Some((want, n)) = spec() else { return };
        if want == "any" || want == name {
            let hit = HITS.fetch_add(1, Ordering::SeqCst) + 1;
            if hit == *n {
                eprintln!("stepwise: crash point {name} (hit {hit}): aborting");
                std::process::abort();
            }
        }
    }
}
