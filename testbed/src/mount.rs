//! A size-limited tmpfs, unmounted when its guard drops (also while a test panics).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// A tmpfs mounted by this process; unmounts on drop (lazily if it is busy).
#[derive(Debug)]
pub struct TmpfsMount {
    path: PathBuf,
    size_mib: u64,
}

impl TmpfsMount {
    /// Mounts a tmpfs of `size_mib` MiB at `path` (created if missing). Needs root.
    pub fn new(path: &Path, size_mib: u64) -> io::Result<TmpfsMount> {
        fs::create_dir_all(path)?;
        let options = format!("size={size_mib}m,mode=755");
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(|e| {
            io::Error::other(format!(
                "mounting a {size_mib} MiB tmpfs at {}: {e} (needs root)",
                path.display()
            ))
        })?;
        Ok(TmpfsMount {
            path: path.to_path_buf(),
            size_mib,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size_mib(&self) -> u64 {
        self.size_mib
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        unmount(&self.path);
    }
}

/// Unmounts `path`, lazily if a plain unmount fails (a process still inside it).
pub fn unmount(path: &Path) {
    if umount2(path, MntFlags::empty()).is_err() {
        if let Err(e) = umount2(path, MntFlags::MNT_DETACH) {
            eprintln!("testbed: cannot unmount {}: {e}", path.display());
        }
    }
}

/// Whether `path` is a mount point: its device differs from its parent's.
pub fn is_mount_point(path: &Path) -> bool {
    let (Ok(me), Some(parent)) = (fs::symlink_metadata(path), path.parent()) else {
        return false;
    };
    match fs::metadata(parent) {
        Ok(p) => me.dev() != p.dev() || me.ino() == p.ino(),
        Err(_) => false,
    }
}
