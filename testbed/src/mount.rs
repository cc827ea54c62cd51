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

    /// Remounts it with a new size (fails if it holds more than that).
    pub fn resize(&mut self, size_mib: u64) -> io::Result<()> {
        let options = format!("size={size_mib}m,mode=755");
        mount(
            None::<&str>,
            &self.path,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(|e| {
            io::Error::other(format!(
                "resizing the tmpfs at {} to {size_mib} MiB: {e}",
                self.path.display()
            ))
        })?;
        self.size_mib = size_mib;
        Ok(())
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

/// A filesystem a loop device carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopFs {
    /// btrfs mounted `compress-force=zstd` (mixed data and metadata block groups: the
    /// metadata chunks of a non-mixed btrfs would take half of a disk this small).
    BtrfsZstd,
    /// ext4 with its defaults (5% reserved for root: `f_bavail` < `f_bfree`).
    Ext4,
}

/// A filesystem in an image file, mounted through a loop device (`mount -o loop`, which sets
/// the device to detach itself when unmounted); unmounts on drop, also while a test panics.
#[derive(Debug)]
pub struct LoopMount {
    path: PathBuf,
    image: PathBuf,
    /// The devices that carried the image once mounted (`/dev/loopN`).
    devices: Vec<PathBuf>,
}

impl LoopMount {
    /// Makes a `size_mib` MiB `fs` in `image` (created) and mounts it at `path`. Needs root.
    pub fn new(image: &Path, path: &Path, fs_kind: LoopFs, size_mib: u64) -> io::Result<LoopMount> {
        fs::create_dir_all(path)?;
        let f = fs::File::create(image)?;
        f.set_len(size_mib << 20)?;
        drop(f);
        let (mkfs, opts): (&[&str], &str) = match fs_kind {
            LoopFs::BtrfsZstd => (
                &["mkfs.btrfs", "-q", "-f", "--mixed"],
                "loop,compress-force=zstd",
            ),
            LoopFs::Ext4 => (&["mkfs.ext4", "-q", "-F"], "loop"),
        };
        run(std::process::Command::new(mkfs[0])
            .args(&mkfs[1..])
            .arg(image))?;
        run(std::process::Command::new("mount")
            .args(["-o", opts])
            .arg(image)
            .arg(path))?;
        Ok(LoopMount {
            path: path.to_path_buf(),
            image: image.to_path_buf(),
            devices: source_of(path).into_iter().collect(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        unmount(&self.path);
        // Where /tmp is bind-mounted elsewhere with shared propagation (a chroot's), the mount
        // was copied there too, and a copy keeps the device busy: unmount every copy of it.
        for dev in &self.devices {
            for copy in mounts_of(dev) {
                unmount(&copy);
            }
        }
        // Autoclear detaches the device once the filesystem lets go of it, which the kernel
        // does in the background: ask for it and wait (bounded), so that a bed dropped is a
        // device freed.
        if !wait_detached(&self.image, std::time::Duration::from_secs(10)) {
            eprintln!(
                "testbed: a loop device still carries {}",
                self.image.display()
            );
        }
    }
}

/// Wait, bounded by `limit`, until no loop device carries `image` (the kernel releases a loop
/// device in the background after its filesystem is unmounted); whether none does.
pub fn wait_detached(image: &Path, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let devices = loop_devices_of(image);
        if devices.is_empty() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        for dev in devices {
            let _ = std::process::Command::new("losetup")
                .arg("-d")
                .arg(&dev)
                .output();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The loop devices (`/dev/loopN`) whose backing file is `image`.
pub fn loop_devices_of(image: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| Path::new("/dev").join(e.file_name()))
        .filter(|d| carries(d, image))
        .collect()
}

/// Mount points of the block device `dev` (`/proc/self/mountinfo`, whose mount source follows
/// the ` - FSTYPE` separator; octal escapes in mount points decoded for spaces only).
fn mounts_of(dev: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let dev = dev.to_string_lossy();
    info.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let source = right.split(' ').nth(1)?;
            let point = left.split(' ').nth(4)?;
            (source == dev).then(|| PathBuf::from(point.replace("\\040", " ")))
        })
        .collect()
}

/// The device mounted at `path` (the last mount there), from `/proc/self/mountinfo`.
fn source_of(path: &Path) -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines().rev().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let source = right.split(' ').nth(1)?;
        (left.split(' ').nth(4)? == want).then(|| PathBuf::from(source))
    })
}

/// Whether the loop device `dev` is bound to `image`. A device being changed may fail to
/// answer for a moment: only a missing `backing_file` (an unbound device) or another file
/// counts as not carrying it.
fn carries(dev: &Path, image: &Path) -> bool {
    let name = dev.file_name().unwrap_or_default();
    let file = Path::new("/sys/block").join(name).join("loop/backing_file");
    match fs::read_to_string(&file) {
        Ok(b) => b.trim_end().trim_end_matches(" (deleted)") == image.to_string_lossy(),
        Err(e) => e.kind() != io::ErrorKind::NotFound && name.to_string_lossy().starts_with("loop"),
    }
}

fn run(cmd: &mut std::process::Command) -> io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{:?}: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
