//! One run per system: an exclusive `flock` keyed to the system profile, not to the journal, so
//! two runs with different `--journal` paths cannot both change one system. `upgrade`, `resume`
//! and `unwind` take it before anything touches the store (the stub probe and leftover deletion
//! included) and hold it to the end; the journal's own writer lock stays, inside it.
//!
//! The lock file is `RUN_DIR/profile-HASH.lock`, HASH naming the profile's canonical path (its
//! directory resolved, its own name kept: the profile is a link that moves with every
//! generation), so every spelling of one profile meets one lock. `RUN_DIR` is `/run/stepwise`: a
//! tmpfs emptied at boot, root's; flock locks die with their holder (a crash, an OOM kill, a power
//! cut), so a stale file never blocks. The file says who holds it: pid, since when, its journal
//! and the profile, for the message a second run gets (exit 4).

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;

use crate::effects::fs::holder_lock::{self, Attempt};
use crate::error::Error;

/// Where the system locks live on a real system.
pub const RUN_DIR: &str = "/run/stepwise";

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct SystemLock {
    _lock: Flock<File>,
    pub path: PathBuf,
}

/// The profile's canonical spelling: its directory resolved through symlinks, its name kept.
pub fn canonical_profile(profile: &Path) -> Result<PathBuf, Error> {
    let bad = |why: String| {
        Error::bad_input(
            format!("--profile {}: {why}", profile.display()),
            "give the system profile's path, e.g. /nix/var/nix/profiles/system",
        )
    };
    let name = profile
        .file_name()
        .ok_or_else(|| bad("has no file name".into()))?;
    let dir = match profile.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(dir)
        .map_err(|e| bad(format!("its directory cannot be resolved ({e})")))?;
    Ok(dir.join(name))
}

/// `RUN_DIR/profile-HASH.lock` for `profile` (already canonical).
pub fn lock_path(run_dir: &Path, canonical_profile: &Path) -> PathBuf {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(canonical_profile.as_os_str().as_encoded_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    run_dir.join(format!("profile-{hex}.lock"))
}

fn lock_error(profile: &Path, what: String, hint: &str) -> Error {
    Error::Journal {
        path: profile.display().to_string(),
        what,
        hint: hint.into(),
    }
}

/// Create `run_dir` (0755) if needed; refuse one that is a symlink, not ours, or writable by
/// others (anyone could then swap the lock file under us). Checked before anything is created
/// inside it.
fn check_run_dir(run_dir: &Path, profile: &Path) -> Result<(), Error> {
    let refuse = |why: String| {
        lock_error(
            profile,
            format!("the lock directory {} {why}", run_dir.display()),
            "it must be a real directory owned by root and writable only by root: remove it \
             (it holds only lock files) and run stepwise again",
        )
    };
    if let Err(e) = std::fs::symlink_metadata(run_dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(refuse(format!("cannot be read ({e})")));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(run_dir)
            .map_err(|e| refuse(format!("cannot be created ({e})")))?;
    }
    // Checked again after creating it: a symlink planted in between is refused too.
    let m =
        std::fs::symlink_metadata(run_dir).map_err(|e| refuse(format!("cannot be read ({e})")))?;
    let mode = m.permissions().mode() & 0o7777;
    if m.file_type().is_symlink() {
        Err(refuse("is a symlink".into()))
    } else if !m.is_dir() {
        Err(refuse("is not a directory".into()))
    } else if m.uid() != nix::unistd::geteuid().as_raw() {
        Err(refuse(format!("belongs to uid {}", m.uid())))
    } else if mode & 0o022 != 0 {
        Err(refuse(format!("is writable by others (mode {mode:o})")))
    } else {
        Ok(())
    }
}

/// Take the system lock of `profile` for a run writing `journal`, or say who holds it (exit 4).
pub fn acquire(
    run_dir: &Path,
    profile: &Path,
    journal: &Path,
    now_ms: u64,
) -> Result<SystemLock, Error> {
    let profile = canonical_profile(profile)?;
    check_run_dir(run_dir, &profile)?;
    let path = lock_path(run_dir, &profile);
    let io = |e: std::io::Error| {
        lock_error(
            &profile,
            format!("cannot open the system lock {}: {e}", path.display()),
            "stepwise runs as root; check the lock directory",
        )
    };
    let mut lock = match holder_lock::try_exclusive(&path, 0o644, true).map_err(io)? {
        Attempt::Taken(l) => l,
        Attempt::Busy(holder) => {
            return Err(lock_error(
                &profile,
                format!(
                    "another stepwise run changes this system: {}",
                    describe_holder(&holder)
                ),
                "one run per system, whatever its journal: wait for it to finish (`stepwise \
                 status --journal THAT-JOURNAL` shows where it is)",
            ));
        }
    };
    let content = format!(
        "pid {} since {now_ms}\njournal {}\nprofile {}\n",
        std::process::id(),
        journal.display(),
        profile.display()
    );
    holder_lock::write_holder(&mut lock, &content).map_err(io)?;
    Ok(SystemLock { _lock: lock, path })
}

/// `pid 123 since MS / journal J` → `pid 123 (journal J) since 2023-11-14 22:13:20 UTC`.
fn describe_holder(content: &str) -> String {
    let mut pid = None;
    let mut since = None;
    let mut journal = None;
    for line in content.lines() {
        let mut words = line.splitn(2, ' ');
        match (words.next(), words.next()) {
            (Some("pid"), Some(rest)) => {
                let mut w = rest.split(' ');
                pid = w.next().map(str::to_string);
                since = (w.next() == Some("since"))
                    .then(|| w.next().and_then(|ms| ms.parse::<u64>().ok()))
                    .flatten();
            }
            (Some("journal"), Some(j)) => journal = Some(j.to_string()),
            _ => {}
        }
    }
    let Some(pid) = pid else {
        return "another process (it has not written its name yet)".into();
    };
    let mut s = format!("pid {pid}");
    if let Some(j) = journal {
        s.push_str(&format!(" with journal {j}"));
    }
    if let Some(ms) = since {
        s.push_str(&format!(
            " since {}",
            crate::effects::journal::render::utc(ms)
        ));
    }
    s
}
