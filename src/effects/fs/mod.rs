//! Filesystem effects: free space (statvfs), the reserve file, atomic symlink flips, lock files
//! that name their holder.

pub mod holder_lock;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::drv::{StoreDir, StorePath};
use crate::effects::store::{Space, StoreError};
use crate::plan::DiskCost;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Size and free space of the filesystem holding `path` (statvfs).
pub fn space(path: &Path) -> Result<Space, StoreError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let frsize = st.fragment_size() as u64;
    Ok(Space {
        total: st.blocks() as u64 * frsize,
        free: st.blocks_available() as u64 * frsize,
    })
}

/// The filesystem holding `path`: its name, and whether it may compress what is written.
pub fn filesystem_kind(path: &Path) -> Result<(String, bool), StoreError> {
    use nix::sys::statfs::{
        statfs, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC,
    };
    let st = statfs(path).map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let t = st.filesystem_type();
    // ZFS and bcachefs have no constant in libc.
    let raw = t.0 as u64;
    Ok(match t {
        BTRFS_SUPER_MAGIC => ("btrfs".into(), true),
        EXT4_SUPER_MAGIC => ("ext4".into(), false),
        TMPFS_MAGIC => ("tmpfs".into(), false),
        XFS_SUPER_MAGIC => ("xfs".into(), false),
        _ if raw == 0x2fc1_2fc1 => ("zfs".into(), true),
        _ if raw == 0xca45_1a4e => ("bcachefs".into(), true),
        _ => (format!("filesystem 0x{raw:x}"), false),
    })
}

/// Bytes the filesystem holding `path` really uses (`f_blocks − f_bfree`).
pub fn used_bytes(path: &Path) -> Result<u64, StoreError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    Ok((st.blocks() as u64).saturating_sub(st.blocks_free() as u64) * st.fragment_size() as u64)
}

/// Measure what the store's paths on disk take (see `plan::disk`): each path's files are
/// walked (`lstat`, no file is read), hard links counted once per path and once overall; a file
/// is the path's own when no link to it lies outside the path but `<store>/.links`.
/// `on_disk`: valid paths with their NAR sizes; `live_nar`: NAR bytes of all live paths (0 where
/// the filesystem does not compress); `state_dir`: Nix's state directory, whose database and
/// build logs grow with each path a step adds when it shares the store's filesystem.
pub fn measure_store(
    store: &StoreDir,
    on_disk: &[(StorePath, u64)],
    live_nar: u64,
    state_dir: Option<&Path>,
) -> Result<DiskCost, StoreError> {
    use std::collections::{HashMap, HashSet};
    let store_dir = Path::new(store.as_str());
    let (filesystem, compresses) = filesystem_kind(store_dir)?;
    let optimised = store_dir.join(".links").is_dir();
    if compresses {
        // btrfs counts data waiting for writeback at its uncompressed size: flush it, so that
        // the used bytes show what the store's paths really take.
        let dir = File::open(store_dir).map_err(io_err(store_dir))?;
        nix::unistd::syncfs(&dir).map_err(|e| io_err(store_dir)(e.into()))?;
    }
    let mut cost = DiskCost {
        filesystem,
        compresses,
        optimised,
        fs_used: used_bytes(store_dir)?,
        live_nar,
        block: block_size(store_dir)?,
        state_on_store_fs: state_dir.is_some_and(|d| same_filesystem(d, store_dir)),
        ..Default::default()
    };
    let mut samples = Vec::with_capacity(on_disk.len());
    let mut everywhere: HashSet<(u64, u64)> = HashSet::new();
    for (path, nar) in on_disk {
        let root = store.to_path(path);
        // (dev, ino) → (bytes, links, links seen in this path, is a directory).
        let mut inodes: HashMap<(u64, u64), (u64, u64, u64, bool)> = HashMap::new();
        if walk(&root, &mut inodes).is_err() {
            continue; // Gone meanwhile, or unreadable: left to the estimate.
        }
        let mut all = 0;
        let mut own = 0;
        for (key, (bytes, nlink, seen, dir)) in &inodes {
            all += bytes;
            if *dir || *nlink <= seen + u64::from(optimised) {
                own += bytes;
            }
            if everywhere.insert(*key) {
                cost.sample_allocated_unique += bytes;
            }
        }
        cost.sample_paths += 1;
        cost.sample_nar += nar;
        cost.sample_allocated += all;
        cost.own_bytes.insert(path.clone(), own);
        samples.push((*nar, all));
    }
    cost.fit_path_overhead(&samples);
    Ok(cost)
}

/// The filesystem's allocation unit (`f_frsize`).
fn block_size(path: &Path) -> Result<u64, StoreError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| io_err(path)(e.into()))?;
    Ok(st.fragment_size() as u64)
}

/// Whether `a` exists and lies on the filesystem `b` is on.
fn same_filesystem(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => false,
    }
}

fn walk(
    p: &Path,
    inodes: &mut std::collections::HashMap<(u64, u64), (u64, u64, u64, bool)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p)?;
    let e =
        inodes
            .entry((m.dev(), m.ino()))
            .or_insert((m.blocks() * 512, m.nlink(), 0, m.is_dir()));
    e.2 += 1;
    if m.is_dir() {
        for entry in std::fs::read_dir(p)? {
            walk(&entry?.path(), inodes)?;
        }
    }
    Ok(())
}

/// Allocate `size` bytes of real blocks for `f` with fallocate: `Ok(false)` where the filesystem
/// does not support it (the caller writes the blocks instead).
fn allocate(f: &File, size: u64) -> std::io::Result<bool> {
    use nix::errno::Errno;
    use nix::fcntl::{fallocate, FallocateFlags};
    let Ok(len) = i64::try_from(size) else {
        return Ok(false);
    };
    if len == 0 {
        return Ok(true);
    }
    match fallocate(f, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(true),
        Err(Errno::EOPNOTSUPP | Errno::ENOSYS | Errno::EINVAL) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Write `size` bytes no compressor can shrink (xorshift64*: fast, and randomness is not needed,
/// only incompressibility).
fn write_incompressible(f: &mut File, size: u64) -> std::io::Result<()> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// A file kept beside `journal` in its directory (`journal.redb` → `journal.redb.SUFFIX`): the
/// reserve, the run-owned roots, the step masks, the stub probe's scratch. All on the journal's
/// disk, all found from the journal's path alone.
pub fn beside(journal: &Path, suffix: &str) -> PathBuf {
    let mut name = journal.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    journal.with_file_name(name)
}

/// Default reserve: 1% of the filesystem, at least 1 MiB, at most 256 MiB (doc/design.md, "Space").
pub fn default_reserve_size(fs_total: u64) -> u64 {
    (fs_total / 100).clamp(1 << 20, 256 << 20)
}

/// Where the reserve file goes: on the store's filesystem, where releasing it gives Nix room
/// (beside the journal only helps when the journal is on that filesystem). In order: beside the
/// journal, in Nix's state directory (`/nix/var/nix`), in the store's parent directory (`/nix`),
/// whichever is first on the store's filesystem; `None` when none is (skip the reserve and say
/// so). The engine takes the reserve there and calls `PlanInput::count_held_reserve` with
/// [`held_bytes`] of it before planning, so that the plan counts it once.
pub fn reserve_path(journal: &Path, store_dir: &Path, state_dir: Option<&Path>) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let store_dev = std::fs::metadata(store_dir).ok()?.dev();
    let on_store =
        |dir: &Path| std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.dev() == store_dev);
    let journal_dir = journal
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if on_store(journal_dir) {
        return Some(beside(journal, ".reserve"));
    }
    let candidates = state_dir.into_iter().chain(store_dir.parent());
    for dir in candidates {
        if on_store(dir) {
            return Some(dir.join("stepwise.reserve"));
        }
    }
    None
}

/// Bytes the file at `path` holds on disk (0 when absent): a reserve taken before planning is
/// part of the filesystem's used bytes.
pub fn held_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// A file of real blocks kept beside the journal, so that when the disk fills up, releasing it
/// frees room for the journal, Nix's database and the deletions that make room again.
#[derive(Debug, Clone)]
pub struct Reserve {
    path: PathBuf,
    size: u64,
}

impl Reserve {
    pub fn new(path: impl Into<PathBuf>, size: u64) -> Self {
        Reserve {
            path: path.into(),
            size,
        }
    }

    /// The reserve of a journal: `<journal>.reserve` in the journal's directory, on the same disk.
    pub fn beside(journal: &Path, size: u64) -> Self {
        Reserve::new(beside(journal, ".reserve"), size)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the reserve is held: the file exists with its full size.
    pub fn is_held(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.size)
    }

    /// Create (or complete) the reserve with real blocks, fsynced with its directory. Fails with
    /// `OutOfSpace` (removing the partial file) when the disk cannot hold it.
    ///
    /// The blocks come from `fallocate` (ext4, xfs, btrfs, tmpfs: no data written, so taking a
    /// 256 MiB reserve costs milliseconds, and btrfs keeps preallocated extents uncompressed).
    /// Where that is not supported (ZFS, some FUSE filesystems) the file is written with
    /// pseudo-random bytes: zeros would shrink to nothing on a compressed store (btrfs
    /// `compress=`, ZFS `compression=`), a reserve that reserves nothing.
    pub fn take(&self) -> Result<(), StoreError> {
        if self.is_held() {
            return Ok(());
        }
        let tmp = self.path.with_extension("tmp");
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            if !allocate(&f, self.size)? {
                write_incompressible(&mut f, self.size)?;
            }
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            sync_dir(self.path.parent().unwrap_or(Path::new(".")))
        })();
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                if e.raw_os_error() == Some(nix::libc::ENOSPC) {
                    Err(StoreError::OutOfSpace(format!(
                        "no room for the {}-byte reserve file {}",
                        self.size,
                        self.path.display()
                    )))
                } else {
                    Err(io_err(&self.path)(e))
                }
            }
        }
    }

    /// Release the reserve (the disk is full); no error if it is not held.
    pub fn release(&self) -> Result<(), StoreError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                sync_dir(self.path.parent().unwrap_or(Path::new("."))).map_err(io_err(&self.path))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&self.path)(e)),
        }
    }
}

/// fsync a directory so that a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Point `link` at `target` atomically: a temporary link beside it, renamed over it, and the
/// directory fsynced. Readers see the old or the new target, never neither.
pub fn flip_symlink(link: &Path, target: &Path) -> Result<(), StoreError> {
    let dir = link.parent().unwrap_or(Path::new("."));
    let name = link
        .file_name()
        .ok_or_else(|| StoreError::Io {
            path: link.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
        })?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(io_err(&tmp))?;
    if let Err(e) = std::fs::rename(&tmp, link) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(link)(e));
    }
    sync_dir(dir).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_of_tmp() {
        let d = tempfile::tempdir().unwrap();
        let s = space(d.path()).unwrap();
        assert!(s.total > 0 && s.free <= s.total, "{s:?}");
        assert!(space(&d.path().join("missing")).is_err());
    }

    #[test]
    fn default_reserve_bounds() {
        assert_eq!(default_reserve_size(10 << 20), 1 << 20);
        assert_eq!(default_reserve_size(10 << 30), (10u64 << 30) / 100);
        assert_eq!(default_reserve_size(1 << 40), 256 << 20);
    }

    #[test]
    fn reserve_beside_the_journal() {
        let r = Reserve::beside(Path::new("/var/lib/stepwise/journal.redb"), 1 << 20);
        assert_eq!(
            r.path(),
            Path::new("/var/lib/stepwise/journal.redb.reserve")
        );
        assert_eq!(r.size(), 1 << 20);
    }

    #[test]
    fn the_reserve_goes_on_the_stores_filesystem() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("nix/store");
        let state = d.path().join("nix/var/nix");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        let journal = d.path().join("journal.redb");
        // Same filesystem: beside the journal, as before.
        assert_eq!(
            reserve_path(&journal, &store, Some(&state)),
            Some(d.path().join("journal.redb.reserve"))
        );
        // The journal on another filesystem (/proc is never the temp dir's): the state dir.
        let elsewhere = Path::new("/proc/journal.redb");
        assert_eq!(
            reserve_path(elsewhere, &store, Some(&state)),
            Some(state.join("stepwise.reserve"))
        );
        assert_eq!(
            reserve_path(elsewhere, &store, None),
            Some(d.path().join("nix/stepwise.reserve"))
        );
        // No store: nowhere.
        assert_eq!(reserve_path(&journal, &d.path().join("none"), None), None);
        let r = Reserve::new(state.join("stepwise.reserve"), 2 << 20);
        assert_eq!(held_bytes(r.path()), 0);
        r.take().unwrap();
        assert!(held_bytes(r.path()) >= 2 << 20);
    }

    #[test]
    fn reserve_take_release_take() {
        let d = tempfile::tempdir().unwrap();
        let r = Reserve::new(d.path().join("reserve"), 3 << 20);
        assert!(!r.is_held());
        r.take().unwrap();
        assert!(r.is_held());
        let meta = std::fs::metadata(r.path()).unwrap();
        assert_eq!(meta.len(), 3 << 20);
        // Real blocks, not a sparse file.
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 >= 3 << 20, "{} blocks", meta.blocks());
        r.take().unwrap();
        r.release().unwrap();
        assert!(!r.path().exists());
        r.release().unwrap();
        r.take().unwrap();
        assert!(r.is_held());
    }

    #[test]
    fn the_written_fallback_does_not_compress() {
        use std::io::Read;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("reserve");
        let mut f = File::create(&p).unwrap();
        write_incompressible(&mut f, (1 << 20) + 12_345).unwrap();
        drop(f);
        let mut bytes = Vec::new();
        File::open(&p).unwrap().read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len(), (1 << 20) + 12_345);
        // No byte value dominates, and no 4 KiB block repeats: nothing for a compressor.
        let mut counts = [0usize; 256];
        for b in &bytes {
            counts[*b as usize] += 1;
        }
        let max = *counts.iter().max().unwrap();
        assert!(max < bytes.len() / 128, "byte histogram too skewed: {max}");
        let blocks: std::collections::BTreeSet<&[u8]> = bytes.chunks(4096).collect();
        assert_eq!(blocks.len(), bytes.len().div_ceil(4096));
    }

    #[test]
    fn flip_replaces_atomically() {
        let d = tempfile::tempdir().unwrap();
        let link = d.path().join("current");
        flip_symlink(&link, Path::new("/a")).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/a"));
        flip_symlink(&link, Path::new("/b")).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/b"));
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary link left behind");
    }
}
