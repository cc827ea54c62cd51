//! Stop signals for a run: SIGTERM, SIGINT and SIGHUP (a closed terminal, or systemd's
//! `SendSIGHUP=`) mean the same. The first sets [`STOP`], which the engine checks between
//! transitions: the current one finishes and is journaled, then the run stops (exit 3). The
//! second cancels the running Nix command at once through the store's [`CancelToken`] (its
//! whole process group is killed, the store reports it as interrupted), so a `systemctl stop`
//! that repeats itself, or a second Ctrl-C, does not wait for a long build.
//!
//! The handler only stores to atomics and writes one byte to a pipe (both async-signal-safe); a
//! thread reads the pipe and does the rest.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::effects::nix::runner::CancelToken;

/// Set by the first stop signal.
pub static STOP: AtomicBool = AtomicBool::new(false);
/// Stop signals the watcher thread has handled (tests wait on it).
pub static HANDLED: AtomicUsize = AtomicUsize::new(0);
/// The pipe's write end, for the handler (-1: not installed).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// The signals that stop a run.
pub const STOP_SIGNALS: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

extern "C" fn on_stop_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; a full pipe only loses a wake-up we don't need.
        unsafe { nix::libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}

/// Install the handlers (once per process): later calls only replace the token cancelled by
/// the second signal.
pub fn install(cancel: CancelToken) -> std::io::Result<()> {
    static TOKEN: std::sync::Mutex<Option<CancelToken>> = std::sync::Mutex::new(None);
    let first = TOKEN.lock().unwrap().replace(cancel).is_none();
    if !first {
        return Ok(());
    }
    let (read, write): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    nix::fcntl::fcntl(
        &write,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(std::io::Error::from)?;
    // The write end lives as long as the process (the handler may run at any time).
    WAKE_FD.store(write.as_raw_fd(), Ordering::SeqCst);
    std::mem::forget(write);
    std::thread::Builder::new()
        .name("stop-signals".into())
        .spawn(move || {
            let mut byte = [0u8; 1];
            let mut seen = 0usize;
            while let Ok(1) = nix::unistd::read(&read, &mut byte) {
                seen += 1;
                if seen >= 2 {
                    if let Some(t) = TOKEN.lock().unwrap().as_ref() {
                        t.cancel();
                    }
                }
                HANDLED.fetch_add(1, Ordering::SeqCst);
            }
        })?;
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in STOP_SIGNALS {
        // SAFETY: the handler is async-signal-safe (atomics and write(2)).
        unsafe { sigaction(sig, &action) }.map_err(std::io::Error::from)?;
    }
    Ok(())
}
