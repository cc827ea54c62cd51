//! One writer at a time: an exclusive `flock` on `PATH.lock` beside the journal, holding the
//! holder's pid and the time it took the lock, so a second writer can name it.
//!
//! flock locks die with their process (a crash, an OOM kill), so a stale lock file never blocks
//! a `resume`.
//!
//! The lock file also carries the *witness*: the journal's id and the seq and link of the last
//! record committed, rewritten (without fsync) after every commit. redb, handed a file whose
//! writer died, picks the newest commit slot it can trust; one flipped bit in its header can make
//! that the commit before the last, a history one record short that is internally consistent.
//! The witness, kept outside the database, catches that. It is advisory: missing, torn or stale
//! (a power cut) it tells nothing, and it never makes a sound journal fail.

use crate::drv::store_path::hex;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::effects::fs::holder_lock::{self, Attempt};
use crate::error::Error;

/// The held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct WriterLock {
    lock: Flock<File>,
    pub path: PathBuf,
    holder_line: String,
    /// The witness found when the lock was taken.
    pub previous: Option<Witness>,
}

/// The last commit as the writer saw it return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    pub journal_id: [u8; 16],
    pub seq: u64,
    pub link: [u8; 32],
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Witness {
    fn body(&self) -> String {
        format!("{} {} {}", hex(&self.journal_id), self.seq, hex(&self.link))
    }

    /// `witness ID SEQ LINK CHECK`: CHECK is the first 8 bytes of SHA-256 of `ID SEQ LINK`, so a
    /// torn or garbled line is ignored rather than believed.
    pub fn line(&self) -> String {
        use sha2::Digest;
        let body = self.body();
        let check = sha2::Sha256::digest(body.as_bytes());
        format!("witness {body} {}", hex(&check[..8]))
    }

    pub fn parse(content: &str) -> Option<Witness> {
        use sha2::Digest;
        let line = content.lines().find_map(|l| l.strip_prefix("witness "))?;
        let mut w = line.split(' ');
        let (id, seq, link, check) = (w.next()?, w.next()?, w.next()?, w.next()?);
        if w.next().is_some() {
            return None;
        }
        let witness = Witness {
            journal_id: unhex(id)?,
            seq: seq.parse().ok()?,
            link: unhex(link)?,
        };
        let expected = sha2::Sha256::digest(witness.body().as_bytes());
        (hex(&expected[..8]) == check).then_some(witness)
    }
}

/// The witness in `journal`'s lock file, read without locking (None if absent or unreadable).
pub fn read_witness(journal: &Path) -> Option<Witness> {
    let content = std::fs::read_to_string(lock_path(journal)).ok()?;
    Witness::parse(&content)
}

impl WriterLock {
    /// Record the commit that just returned. Best effort: the journal is already durable.
    pub fn witness(&mut self, w: &Witness) -> std::io::Result<()> {
        let content = format!("{}\n{}\n", self.holder_line, w.line());
        let f: &mut File = &mut self.lock;
        // One write of the whole content at offset 0; a reader racing it sees a torn line whose
        // check fails.
        std::os::unix::fs::FileExt::write_all_at(f, content.as_bytes(), 0)?;
        f.set_len(content.len() as u64)
    }
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
    let mut lock = match holder_lock::try_exclusive(&path, 0o600, false).map_err(io)? {
        Attempt::Taken(l) => l,
        Attempt::Busy(holder) => {
            return Err(Error::Journal {
                path: journal.display().to_string(),
                what: format!("locked by {}", describe_holder(&holder)),
                hint: "another stepwise run is in progress: wait for it, or look at it with \
                       `stepwise status`"
                    .into(),
            });
        }
    };
    let mut old = String::new();
    let _ = lock.read_to_string(&mut old);
    let previous = Witness::parse(&old);
    let holder_line = format!("pid {} since {}", std::process::id(), now_ms);
    let mut content = format!("{holder_line}\n");
    if let Some(w) = &previous {
        content.push_str(&w.line());
        content.push('\n');
    }
    holder_lock::write_holder(&mut lock, &content).map_err(io)?;
    Ok(WriterLock {
        lock,
        path,
        holder_line,
        previous,
    })
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
