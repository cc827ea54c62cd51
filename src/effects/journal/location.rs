//! Where the journal may live: checked before anything is created.
//!
//! The journal's companions (`.lock`, `.roots/`, `.reserve`) are created beside it by a process
//! running as root. A directory on the way that another user can write to, or a symlink another
//! user owns, would let that user point a companion at a file of their choice (the reserve file is
//! allocated, the roots directory gets symlinks into the store). So the directories that hold the
//! journal must belong to root (or to the user running stepwise) and be writable by nobody else;
//! a sticky, world-writable directory such as `/tmp` is accepted above the journal's own
//! directory but not as it.
//!
//! The path is made absolute and its existing directories are resolved, so that the same journal
//! reached by another spelling (a relative path, a symlinked directory) is the same path in
//! messages and companions.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::error::Error;

const EXAMPLE: &str = "pass a file path such as /var/lib/stepwise/journal.redb";

/// The journal path to use for `path` (as given to `--journal`): absolute, its existing
/// directories resolved. With `writes`, the directories are also checked to be safe to create
/// the journal's companions in. Nothing is created.
pub fn checked(path: &Path, writes: bool) -> Result<PathBuf, Error> {
    shape(path)?;
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let cwd = std::env::current_dir().map_err(|e| {
            Error::bad_input(
                format!(
                    "--journal {}: a relative path, and the current directory cannot be read: {e}",
                    path.display()
                ),
                EXAMPLE,
            )
        })?;
        cwd.join(path)
    };
    let lexical = normalise(&absolute);
    let (existing, rest) = split_existing(&lexical);
    let resolved = existing.canonicalize().map_err(|e| {
        Error::bad_input(
            format!(
                "--journal {}: cannot resolve {}: {e}",
                path.display(),
                existing.display()
            ),
            EXAMPLE,
        )
    })?;
    let full = if rest.as_os_str().is_empty() {
        resolved
    } else {
        resolved.join(&rest)
    };
    if full.is_dir() {
        return Err(is_a_directory(path));
    }
    if writes {
        let parent_exists = rest.components().count() <= 1;
        owned_safely(path, &lexical, parent_exists)?;
        owned_safely(path, &full, parent_exists)?;
    }
    Ok(full)
}

/// What can be told from the spelling alone.
fn shape(path: &Path) -> Result<(), Error> {
    if path.as_os_str().is_empty() {
        return Err(Error::bad_input("--journal is empty", EXAMPLE));
    }
    if path.to_str().is_none() {
        return Err(Error::bad_input(
            format!(
                "--journal {}: the path is not valid UTF-8 (the journal names its companions and prints its path)",
                path.display()
            ),
            EXAMPLE,
        ));
    }
    let text = path.as_os_str().as_encoded_bytes();
    if text.ends_with(b"/")
        || matches!(
            path.components().next_back(),
            Some(Component::ParentDir | Component::CurDir | Component::RootDir)
        )
    {
        return Err(is_a_directory(path));
    }
    Ok(())
}

fn is_a_directory(path: &Path) -> Error {
    Error::bad_input(
        format!(
            "--journal {}: names a directory, not a file",
            path.display()
        ),
        EXAMPLE,
    )
}

/// `.` and `..` taken out lexically (`..` of the root stays the root), as the kernel would for
/// the directories that do not exist yet.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The longest prefix of `path` that exists (at least `/`), and the rest.
fn split_existing(path: &Path) -> (PathBuf, PathBuf) {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while existing.symlink_metadata().is_err() {
        match (
            existing.file_name().map(|n| n.to_owned()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let rest = rest.iter().rev().collect();
    (existing, rest)
}

/// Every existing directory on the way to the journal, and every symlink among them, belongs to
/// root or to us; none but the journal's own directory's ancestors may be writable by others,
/// and those only when sticky.
fn owned_safely(given: &Path, path: &Path, parent_exists: bool) -> Result<(), Error> {
    let me = nix::unistd::geteuid().as_raw();
    let dirs: Vec<&Path> = path.ancestors().skip(1).collect();
    for (i, dir) in dirs.iter().enumerate() {
        let Ok(meta) = dir.symlink_metadata() else {
            continue;
        };
        let owner = meta.uid();
        if owner != 0 && owner != me {
            return Err(unsafe_dir(
                given,
                dir,
                format!("belongs to uid {owner}, who could redirect the journal's files"),
            ));
        }
        if meta.file_type().is_symlink() {
            continue;
        }
        let others_write = meta.mode() & 0o022 != 0;
        let sticky = meta.mode() & 0o1000 != 0;
        let own_dir = i == 0 && parent_exists;
        if others_write && (own_dir || !sticky) {
            return Err(unsafe_dir(
                given,
                dir,
                format!(
                    "is writable by other users (mode {:o}), who could replace the journal's files",
                    meta.mode() & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

fn unsafe_dir(given: &Path, dir: &Path, why: String) -> Error {
    Error::Journal {
        path: given.display().to_string(),
        what: format!("refused before creating anything: {} {why}", dir.display()),
        hint: "keep the journal in a directory only root can write, such as /var/lib/stepwise \
               (the default), or pass another --journal"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn bad(path: &str) -> String {
        checked(Path::new(path), true).unwrap_err().to_string()
    }

    #[test]
    fn directories_and_empty_paths_are_bad_input() {
        for p in ["", "/", "/tmp/", ".", "..", "/var/lib/stepwise/.."] {
            let e = checked(Path::new(p), false).unwrap_err();
            assert_eq!(e.exit(), crate::error::Exit::BadInput, "{p}: {e}");
        }
        assert!(bad("/tmp").contains("names a directory"));
    }

    #[test]
    fn non_utf8_is_bad_input() {
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"/var/lib/j\xff.redb"));
        let e = checked(p, false).unwrap_err();
        assert_eq!(e.exit(), crate::error::Exit::BadInput);
        assert!(e.to_string().contains("not valid UTF-8"), "{e}");
    }

    #[test]
    fn relative_and_symlinked_spellings_resolve_to_one_path() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap().join("state");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let direct = checked(&real.join("j.redb"), true).unwrap();
        let via_link = checked(&dir.path().join("link/j.redb"), true).unwrap();
        let dotted = checked(&dir.path().join("link/../state/./new/../j.redb"), true).unwrap();
        assert_eq!(direct, real.join("j.redb"));
        assert_eq!(via_link, direct);
        assert_eq!(dotted, direct);
        // Directories that do not exist yet are kept as spelled.
        let deeper = checked(&dir.path().join("link/a/b/j.redb"), true).unwrap();
        assert_eq!(deeper, real.join("a/b/j.redb"));
        // An existing journal keeps its name (no trailing slash).
        std::fs::write(real.join("j.redb"), b"").unwrap();
        assert_eq!(
            checked(&dir.path().join("link/j.redb"), true).unwrap(),
            direct
        );
    }

    #[test]
    fn a_directory_writable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = checked(&open.join("j.redb"), true).unwrap_err();
        assert_eq!(e.exit(), crate::error::Exit::Journal, "{e}");
        assert!(e.to_string().contains("writable by other users"), "{e}");
        // Read-only commands may look at it.
        checked(&open.join("j.redb"), false).unwrap();
        // Sticky and world-writable (as /tmp) is fine above the journal's own directory only.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(checked(&open.join("j.redb"), true).is_err());
        let own = open.join("mine");
        std::fs::create_dir(&own).unwrap();
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o700)).unwrap();
        checked(&own.join("j.redb"), true).unwrap();
    }

    #[test]
    fn a_directory_or_symlink_of_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            return; // only root can give a file to another user
        }
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let e = checked(&theirs.join("j.redb"), true).unwrap_err();
        assert!(e.to_string().contains("belongs to uid 65534"), "{e}");

        let mine = dir.path().join("mine");
        std::fs::create_dir(&mine).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&mine, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), None).unwrap();
        let e = checked(&link.join("j.redb"), true).unwrap_err();
        assert!(e.to_string().contains("belongs to uid 65534"), "{e}");
        checked(&mine.join("j.redb"), true).unwrap();
    }
}
