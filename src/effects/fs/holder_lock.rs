//! An exclusive `flock` on a file that names its holder: the pattern of the system lock
//! (`effects::system_lock`) and the journal's writer lock (`effects::journal::lock`).
//!
//! flock locks die with their holder (a crash, an OOM kill, a power cut), so a stale file never
//! blocks; what it says about its holder is only for the message a second process gets.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// What trying the lock found.
#[derive(Debug)]
pub enum Attempt {
    /// Ours now; the file's content (what the previous holder left) is still there.
    Taken(Flock<File>),
    /// Another process holds it: what the file says about it (possibly nothing yet).
    Busy(String),
}

/// Open (creating with `mode`) and try to lock `path` without waiting. `no_follow`: refuse a
/// symlink in the file's place (a directory others could once write).
pub fn try_exclusive(path: &Path, mode: u32, no_follow: bool) -> std::io::Result<Attempt> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode);
    if no_follow {
        options.custom_flags(nix::libc::O_NOFOLLOW);
    }
    let file = options.open(path)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Attempt::Taken(l)),
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            Ok(Attempt::Busy(holder))
        }
        Err((_, e)) => Err(std::io::Error::from(e)),
    }
}

/// Replace the held file's content with `content` (who holds it, and since when).
pub fn write_holder(lock: &mut Flock<File>, content: &str) -> std::io::Result<()> {
    let f: &mut File = lock;
    f.set_len(0)?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(content.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_attempt_reads_the_holder_and_a_dropped_lock_is_free_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let Attempt::Taken(mut held) = try_exclusive(&path, 0o600, true).unwrap() else {
            panic!("the first attempt takes it");
        };
        write_holder(&mut held, "pid 1 since 2\n").unwrap();
        match try_exclusive(&path, 0o600, true).unwrap() {
            Attempt::Busy(holder) => assert_eq!(holder, "pid 1 since 2\n"),
            Attempt::Taken(_) => panic!("a second open file description must not take it"),
        }
        drop(held);
        assert!(matches!(
            try_exclusive(&path, 0o600, true).unwrap(),
            Attempt::Taken(_)
        ));
    }

    #[test]
    fn a_symlink_in_the_lock_files_place_is_refused_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &path).unwrap();
        assert!(try_exclusive(&path, 0o600, true).is_err());
        assert!(!dir.path().join("elsewhere").exists());
    }
}
