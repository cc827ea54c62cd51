//! Named crash checkpoints for the crash tests (cargo feature `crash-points`), as rustup does:
//! `STEPWISE_CRASH_AT=NAME[:N]` aborts the process at the N-th (default first) time the checkpoint
//! NAME is reached; `STEPWISE_CRASH_AT=any:N` at the N-th checkpoint of any name.
//! `STEPWISE_SIGNAL_AT=NAME` sends SIGTERM to the process itself there instead (the signal path
//! without a race). `STEPWISE_FILL_AT=NAME[:N]` with `STEPWISE_FILL_FILE=PATH` and
//! `STEPWISE_FILL_LEAVE=BYTES` fills the filesystem of PATH with a ballast file there, leaving
//! BYTES available, at the N-th time NAME is reached (a disk that something else filled: the
//! plan's estimate turns out optimistic); with `STEPWISE_FILL_UNTIL=NAME2` the ballast is removed
//! again at the first NAME2 after it (a passing burst). Without the feature every checkpoint
//! compiles to nothing.

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
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::OnceLock;

    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    static FILL: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static FILL_HITS: AtomicU64 = AtomicU64::new(0);
    static FILLED: AtomicBool = AtomicBool::new(false);

    /// `NAME[:N]` from the variable `var`.
    fn named(var: &str) -> Option<(String, u64)> {
        let v = std::env::var(var).ok()?;
        Some(match v.rsplit_once(':') {
            Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        })
    }

    fn spec() -> &'static Option<(String, u64)> {
        SPEC.get_or_init(|| named("STEPWISE_CRASH_AT"))
    }

    /// Write a ballast file at `STEPWISE_FILL_FILE` until its filesystem has
    /// `STEPWISE_FILL_LEAVE` bytes available (or the disk is full).
    fn fill() {
        use std::io::Write;
        let (Some(path), Some(leave)) = (
            std::env::var_os("STEPWISE_FILL_FILE"),
            std::env::var("STEPWISE_FILL_LEAVE")
                .ok()
                .and_then(|v| v.parse::<u64>().ok()),
        ) else {
            return;
        };
        let path = std::path::PathBuf::from(path);
        let Ok(mut f) = std::fs::File::create(&path) else {
            return;
        };
        let chunk = vec![0xa5u8; 64 << 10];
        loop {
            // The fields' types vary by platform.
            #[allow(clippy::unnecessary_cast)]
            let avail = match nix::sys::statvfs::statvfs(&path) {
                Ok(s) => s.blocks_available() as u64 * s.fragment_size() as u64,
                Err(_) => return,
            };
            let want = avail.saturating_sub(leave);
            if want == 0 {
                break;
            }
            let n = want.min(chunk.len() as u64) as usize;
            if f.write_all(&chunk[..n]).is_err() || f.sync_data().is_err() {
                break;
            }
        }
        eprintln!("stepwise: fill point: {} filled", path.display());
        FILLED.store(true, Ordering::SeqCst);
    }

    fn fill_point(name: &str) {
        static UNTIL: OnceLock<Option<String>> = OnceLock::new();
        let until = UNTIL.get_or_init(|| std::env::var("STEPWISE_FILL_UNTIL").ok());
        if FILLED.load(Ordering::SeqCst) && until.as_deref() == Some(name) {
            if let Some(path) = std::env::var_os("STEPWISE_FILL_FILE") {
                let _ = std::fs::remove_file(path);
                eprintln!("stepwise: fill point: ballast removed at {name}");
            }
            FILLED.store(false, Ordering::SeqCst);
            return;
        }
        let Some((want, n)) = FILL.get_or_init(|| named("STEPWISE_FILL_AT")) else {
            return;
        };
        if want == name && FILL_HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            fill();
        }
    }

    pub fn point(name: &str) {
        fill_point(name);
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
