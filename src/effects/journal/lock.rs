//! One writer at a time: an exclusive `flock` on `PATH.lock` beside the journal, holding the
//! holder's pid and the time it took the lock, so a second writer can name it.
//!
//! flock locks die with their process (a crash, an OOM kill), so a stale lock file never blocks
//! a `resume`; its content is only read when the lock is really held.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::Error;

/// The held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct WriterLock {
    _lock: Flock<File>,
    pub path: PathBuf,
}

/// `journal.redb` → `journal.redb.lock`.
pub fn lock_path(journal: &Path) -> PathBuf {
    let mut s = journal.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Take the writer lock of `journal`, or say who holds it.
pub fn acquire(journal: &Path, now_ms: u64) -> Result<WriterLock, Error> {
    let path = lock_path(journal);
    let io = |e: std::io::Error| Error::Journal {
        path: journal.display().to_string(),
        what: format!("cannot open its lock file {}: {e}", path.display()),
        hint: "check the permissions of the journal's directory (stepwise runs as root)".into(),
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(Error::Journal {
                path: journal.display().to_string(),
                what: format!("locked by {}", describe_holder(&holder)),
                hint: "another stepwise run is in progress: wait for it, or look at it with \
                       `stepwise status`"
                    .into(),
            });
        }
        Err((_, e)) => return Err(io(std::io::Error::from(e))),
    };
    let write = |f: &mut File| -> std::io::Result<()> {
        f.set_len(0)?;
        f.seek(SeekFrom::Start(0))?;
        writeln!(f, "pid {} since {}", std::process::id(), now_ms)
    };
    write(&mut lock).map_err(io)?;
    Ok(WriterLock { _lock: lock, path })
}

/// Hold writers off for a moment (a shared lock), or say who is writing. No lock file: no writer
/// ever ran, nothing to hold off.
pub fn shared(journal: &Path) -> Result<Option<Flock<File>>, Error> {
    let path = lock_path(journal);
    let Ok(file) = File::open(&path) else {
        return Ok(None);
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            Err(Error::Journal {
                path: journal.display().to_string(),
                what: format!(
                    "its last writer died and {} is opening it now",
                    describe_holder(&holder)
                ),
                hint: "try again in a moment".into(),
            })
        }
        Err((_, e)) => Err(Error::Journal {
            path: journal.display().to_string(),
            what: format!("cannot lock {}: {e}", path.display()),
            hint: "check the permissions of the journal's directory".into(),
        }),
    }
}

/// `pid 123 since 1700000000000` → `pid 123 since 2023-11-14 22:13:20 UTC`.
fn describe_holder(content: &str) -> String {
    let mut words = content.split_whitespace();
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some("pid"), Some(pid), Some("since"), Some(ms)) => match ms.parse::<u64>() {
            Ok(ms) => format!("pid {pid} since {}", super::render::utc(ms)),
            Err(_) => format!("pid {pid}"),
        },
        // Taken a moment ago, not written yet.
        _ => "another process (its pid is not written yet)".into(),
    }
}
