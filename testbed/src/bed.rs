//! `Bed`: a private Nix store in a directory of its own, optionally on a size-limited tmpfs, with
//! NixOS-like system links and GC roots. Every Nix command a test runs goes through `command`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use crate::error::{run, run_stdout, BedError, Result};
use crate::mount::{is_mount_point, unmount, LoopFs, LoopMount, TmpfsMount};
use crate::util::{force_remove, replace_symlink};

/// What keeps a bed's directory reserved while it lives.
#[derive(Debug)]
pub(crate) enum Holder {
    /// A unique temporary directory, removed on drop.
    Temp(#[allow(dead_code)] tempfile::TempDir),
    /// A prepared slot (see `prepared.rs`): its lock; the slot's cache survives.
    Slot(#[allow(dead_code)] crate::prepared::SlotLock),
    /// Nothing: the caller owns the directory (its contents are still removed on drop).
    Nothing,
}

/// How big the bed's disk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disk {
    /// The store lives on the machine's disk (no root needed).
    Unlimited,
    /// The store and Nix's state (its SQLite database) share a tmpfs of this many MiB (root).
    TmpfsMib(u64),
    /// … a btrfs mounted `compress-force=zstd` on a loop device of this many MiB (root).
    BtrfsZstdMib(u64),
    /// … an ext4 on a loop device of this many MiB (root).
    Ext4Mib(u64),
}

/// A private Nix store: `<root>/nix/{store,var/nix,var/log/nix}`, links in `<root>/run`.
///
/// Dropping it unmounts its tmpfs and removes its directory, also while a test panics.
#[derive(Debug)]
pub struct Bed {
    root: PathBuf,
    cache: Option<PathBuf>,
    mount: Option<TmpfsMount>,
    loop_mount: Option<LoopMount>,
    /// `auto-optimise-store` in the bed's Nix configuration.
    optimise: bool,
    _holder: Holder,
}

impl Bed {
    /// A bed on the machine's disk in a fresh temporary directory, without a binary cache.
    pub fn new() -> Result<Bed> {
        Bed::create(Disk::Unlimited, None)
    }

    /// A bed whose store and state share a tmpfs of `mib` MiB (needs root: see `require_root`).
    pub fn on_tmpfs(mib: u64) -> Result<Bed> {
        Bed::create(Disk::TmpfsMib(mib), None)
    }

    /// A bed in a fresh temporary directory, with `disk` and an optional file:// cache.
    /// A cache serves only stores at the directory it was filled from: see `Bed::prepared`.
    pub fn create(disk: Disk, cache: Option<&Path>) -> Result<Bed> {
        clean_stale_beds();
        let base = base_dir();
        fs::create_dir_all(&base)
            .map_err(|e| BedError::io(format!("creating {}", base.display()), e))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("bed-{}-", std::process::id()))
            .tempdir_in(&base)
            .map_err(|e| {
                BedError::io(
                    format!("creating a temporary directory in {}", base.display()),
                    e,
                )
            })?;
        let root = dir.path().to_path_buf();
        Bed::at(root, disk, cache.map(Path::to_path_buf), Holder::Temp(dir))
    }

    /// Sets the bed up at `root` (empty or absent), which `holder` keeps reserved.
    pub(crate) fn at(
        root: PathBuf,
        disk: Disk,
        cache: Option<PathBuf>,
        holder: Holder,
    ) -> Result<Bed> {
        fs::create_dir_all(&root)
            .map_err(|e| BedError::io(format!("creating {}", root.display()), e))?;
        let mut bed = Bed {
            root,
            cache,
            mount: None,
            loop_mount: None,
            optimise: false,
            _holder: holder,
        };
        let image = bed.root.join("disk.img");
        let on_loop = |kind, mib| {
            LoopMount::new(&image, &bed.nix_dir(), kind, mib)
                .map_err(|e| BedError::io("mounting the bed's loop device", e))
        };
        match disk {
            Disk::Unlimited => {}
            Disk::TmpfsMib(mib) => {
                let m = TmpfsMount::new(&bed.nix_dir(), mib)
                    .map_err(|e| BedError::io("mounting the bed's tmpfs", e))?;
                bed.mount = Some(m);
            }
            Disk::BtrfsZstdMib(mib) => bed.loop_mount = Some(on_loop(LoopFs::BtrfsZstd, mib)?),
            Disk::Ext4Mib(mib) => bed.loop_mount = Some(on_loop(LoopFs::Ext4, mib)?),
        }
        for d in [
            bed.store_path(),
            bed.state_dir(),
            bed.log_dir(),
            bed.conf_dir(),
            bed.root.join("xdg-cache"),
            bed.root.join("run"),
            bed.state_dir().join("profiles"),
            bed.state_dir().join("gcroots"),
            bed.nix_dir().join("var/lib/stepwise"),
        ] {
            fs::create_dir_all(&d)
                .map_err(|e| BedError::io(format!("creating {}", d.display()), e))?;
        }
        // As NixOS has /nix/var/nix/gcroots/{current,booted}-system → /run/…-system.
        for (name, link) in [
            ("current-system", bed.current_system_link()),
            ("booted-system", bed.booted_system_link()),
        ] {
            let root_link = bed.state_dir().join("gcroots").join(name);
            std::os::unix::fs::symlink(&link, &root_link).map_err(|e| {
                BedError::io(format!("creating GC root {}", root_link.display()), e)
            })?;
        }
        Ok(bed)
    }

    // ---- layout -------------------------------------------------------------------------------

    /// The bed's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/nix`: the tmpfs mount point when the bed has one.
    pub fn nix_dir(&self) -> PathBuf {
        self.root.join("nix")
    }

    /// The store directory, `<root>/nix/store`.
    pub fn store_dir(&self) -> String {
        self.store_path().to_string_lossy().into_owned()
    }

    fn store_path(&self) -> PathBuf {
        self.nix_dir().join("store")
    }

    /// `NIX_STATE_DIR`: `<root>/nix/var/nix` (database, profiles, gcroots).
    pub fn state_dir(&self) -> PathBuf {
        self.nix_dir().join("var/nix")
    }

    /// `NIX_LOG_DIR`: `<root>/nix/var/log/nix`.
    pub fn log_dir(&self) -> PathBuf {
        self.nix_dir().join("var/log/nix")
    }

    /// `NIX_CONF_DIR`: an empty directory, so the machine's /etc/nix/nix.conf is not read.
    pub fn conf_dir(&self) -> PathBuf {
        self.root.join("etc-nix")
    }

    /// The system profile, `<state>/profiles/system` (a root, as on NixOS).
    pub fn profile(&self) -> PathBuf {
        self.state_dir().join("profiles/system")
    }

    /// The bed's `/run/current-system`: `<root>/run/current-system`.
    pub fn current_system_link(&self) -> PathBuf {
        self.root.join("run/current-system")
    }

    /// The bed's `/run/booted-system`: `<root>/run/booted-system`.
    pub fn booted_system_link(&self) -> PathBuf {
        self.root.join("run/booted-system")
    }

    /// The file where the fixture's `switch-to-configuration switch|boot` records the boot default.
    pub fn boot_default_file(&self) -> PathBuf {
        self.root.join("run/boot-default")
    }

    /// The file where the fixture's `switch-to-configuration` appends `ACTION TOPLEVEL` lines.
    pub fn activation_log(&self) -> PathBuf {
        self.root.join("run/activations.log")
    }

    /// Make the fixture's `switch-to-configuration` of the toplevel named `base_name` (its store
    /// path's last component) end as NixOS' does with `code`: 4 after switching, naming `units` as
    /// failed; 100 after installing the boot loader, without switching; 0 as usual.
    pub fn set_activation_exit(&self, base_name: &str, code: u8, units: &[&str]) {
        let ctl = PathBuf::from(format!(
            "{}.exit-{base_name}",
            self.activation_log().display()
        ));
        if code == 0 {
            let _ = fs::remove_file(ctl);
        } else {
            fs::write(ctl, format!("{code} {}\n", units.join(" "))).expect("writing the exit file");
        }
    }

    /// The file where the fixture's `switch-to-configuration switch|boot` (a boot-loader install)
    /// appends `ENTRIES ACTION TOPLEVEL`, ENTRIES being the profile's generation links then.
    pub fn boot_installs_log(&self) -> PathBuf {
        self.root.join("run/boot-installs.log")
    }

    /// The boot-loader installs so far: (profile generations seen, action, toplevel).
    pub fn boot_installs(&self) -> Vec<(usize, String, String)> {
        fs::read_to_string(self.boot_installs_log())
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut f = l.splitn(3, ' ');
                let n = f.next().and_then(|n| n.parse().ok()).unwrap_or(usize::MAX);
                let a = f.next().unwrap_or_default().to_string();
                (n, a, f.next().unwrap_or_default().to_string())
            })
            .collect()
    }

    /// Where a stepwise journal belongs in this bed: on the store's disk, as /var/lib is on a VPS
    /// (`<root>/nix/var/lib/stepwise/journal.redb`; the directory exists).
    pub fn journal_path(&self) -> PathBuf {
        self.nix_dir().join("var/lib/stepwise/journal.redb")
    }

    /// `--profile P --current-system C --booted-system B` for the stepwise binary (the SYSTEM
    /// arguments of the command contract), pointing into this bed.
    pub fn system_args(&self) -> Vec<OsString> {
        vec![
            "--profile".into(),
            self.profile().into_os_string(),
            "--current-system".into(),
            self.current_system_link().into_os_string(),
            "--booted-system".into(),
            self.booted_system_link().into_os_string(),
        ]
    }

    /// The attached binary cache directory, if any.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache.as_deref()
    }

    /// Attaches (or detaches) a file:// binary cache as the bed's only substituter.
    pub fn set_cache(&mut self, cache: Option<&Path>) {
        self.cache = cache.map(Path::to_path_buf);
    }

    /// Turn `auto-optimise-store` on or off for every later Nix command of this bed.
    pub fn set_optimise(&mut self, on: bool) {
        self.optimise = on;
    }

    /// Resizes the bed's tmpfs to `mib` MiB (fails without a tmpfs, or if it holds more).
    pub fn resize_tmpfs(&mut self, mib: u64) -> Result<()> {
        let m = self
            .mount
            .as_mut()
            .ok_or_else(|| BedError::msg("the bed has no tmpfs to resize"))?;
        m.resize(mib)
            .map_err(|e| BedError::io("resizing the bed's tmpfs", e))
    }

    /// The tmpfs size, if the bed has one.
    pub fn tmpfs_mib(&self) -> Option<u64> {
        self.mount.as_ref().map(TmpfsMount::size_mib)
    }

    // ---- environment --------------------------------------------------------------------------

    /// The `NIX_CONFIG` text: a local store as root without the daemon, no sandbox, no build
    /// users, no signatures, and the attached cache as the only substituter (none otherwise).
    pub fn nix_config(&self) -> String {
        let substituters = match &self.cache {
            Some(c) => format!("file://{}", c.display()),
            None => String::new(),
        };
        [
            "experimental-features = nix-command".to_string(),
            "sandbox = false".to_string(),
            "build-users-group =".to_string(),
            "require-sigs = false".to_string(),
            format!("substituters = {substituters}"),
            format!("auto-optimise-store = {}", self.optimise),
            "narinfo-cache-negative-ttl = 0".to_string(),
            "narinfo-cache-positive-ttl = 0".to_string(),
        ]
        .join("\n")
    }

    /// The environment every Nix command of this bed runs with (also the stepwise binary's).
    /// `NIX_REMOTE` is empty, which Nix reads as `auto`: a writable state dir means a local store.
    pub fn env(&self) -> Vec<(OsString, OsString)> {
        let os = |s: &str| OsString::from(s);
        vec![
            (os("NIX_STORE_DIR"), self.store_path().into_os_string()),
            (os("NIX_STATE_DIR"), self.state_dir().into_os_string()),
            (os("NIX_LOG_DIR"), self.log_dir().into_os_string()),
            (os("NIX_CONF_DIR"), self.conf_dir().into_os_string()),
            (os("NIX_USER_CONF_FILES"), os("")),
            (os("NIX_REMOTE"), os("")),
            (os("NIX_PATH"), os("")),
            (
                os("XDG_CACHE_HOME"),
                self.root.join("xdg-cache").into_os_string(),
            ),
            (os("NIX_CONFIG"), os(&self.nix_config())),
        ]
    }

    /// `program` with the bed's environment applied.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.envs(self.env());
        cmd
    }

    /// The stepwise binary `bin` run on this bed: its environment, its journal (`--journal`),
    /// then `args`; stdin closed, as under systemd.
    pub fn stepwise(&self, bin: impl AsRef<OsStr>, args: &[&str]) -> Command {
        let mut cmd = self.command(bin);
        cmd.arg("--journal").arg(self.journal_path());
        cmd.args(args);
        cmd.stdin(std::process::Stdio::null());
        cmd
    }

    // ---- Nix helpers --------------------------------------------------------------------------

    /// `nix-instantiate FILE [-A ATTR]`: the `.drv` path.
    pub fn instantiate(&self, file: &Path, attr: Option<&str>) -> Result<String> {
        let mut cmd = self.command("nix-instantiate");
        cmd.arg(file);
        if let Some(a) = attr {
            cmd.args(["-A", a]);
        }
        run_stdout(&mut cmd)
    }

    /// `nix-instantiate --eval --strict --json --read-write-mode FILE [-A ATTR]`: evaluates to JSON,
    /// writing the `.drv` files the value's `drvPath`s name.
    pub fn eval_json(&self, file: &Path, attr: Option<&str>) -> Result<serde_json::Value> {
        let mut cmd = self.command("nix-instantiate");
        cmd.args(["--eval", "--strict", "--json", "--read-write-mode"])
            .arg(file);
        if let Some(a) = attr {
            cmd.args(["-A", a]);
        }
        let out = run_stdout(&mut cmd)?;
        serde_json::from_str(&out)
            .map_err(|e| BedError::msg(format!("parsing nix-instantiate's JSON: {e}: {out}")))
    }

    /// `nix-store --realise PATHS`: the output paths (one line per output).
    pub fn realise<S: AsRef<OsStr>>(&self, paths: &[S]) -> Result<Vec<String>> {
        let mut cmd = self.command("nix-store");
        cmd.arg("--realise").args(paths);
        Ok(lines(&run_stdout(&mut cmd)?))
    }

    /// `nix copy --to file://CACHE?compression=none PATHS` (with their closures).
    pub fn copy_to_cache<S: AsRef<OsStr>>(&self, cache: &Path, paths: &[S]) -> Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let mut cmd = self.command("nix");
        cmd.args(["copy", "--to"])
            .arg(format!("file://{}?compression=none", cache.display()))
            .args(paths);
        run(&mut cmd).map(drop)
    }

    /// `nix-store --query --requisites PATHS`: the closure.
    pub fn closure<S: AsRef<OsStr>>(&self, paths: &[S]) -> Result<BTreeSet<String>> {
        let mut cmd = self.command("nix-store");
        cmd.args(["--query", "--requisites"]).args(paths);
        Ok(lines(&run_stdout(&mut cmd)?).into_iter().collect())
    }

    /// NAR sizes of valid paths (`nix path-info --json`, both of its shapes).
    pub fn nar_sizes<S: AsRef<OsStr>>(&self, paths: &[S]) -> Result<BTreeMap<String, u64>> {
        Ok(self
            .path_infos(paths)?
            .into_iter()
            .map(|(p, (nar, _))| (p, nar))
            .collect())
    }

    /// NAR size and references of each of `paths` (`nix path-info --json`, both of its shapes).
    pub fn path_infos<S: AsRef<OsStr>>(
        &self,
        paths: &[S],
    ) -> Result<BTreeMap<String, (u64, BTreeSet<String>)>> {
        let mut out = BTreeMap::new();
        for chunk in paths.chunks(500) {
            let mut cmd = self.command("nix");
            cmd.args(["path-info", "--json"]).args(chunk);
            let text = run_stdout(&mut cmd)?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| BedError::msg(format!("parsing nix path-info's JSON: {e}")))?;
            let mut take = |path: &str, info: &serde_json::Value| {
                let nar = info
                    .get("narSize")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0);
                let refs = info
                    .get("references")
                    .and_then(serde_json::Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|r| r.as_str())
                            .map(|r| {
                                // Nix 2.19+ lists base names.
                                if r.starts_with('/') {
                                    r.to_string()
                                } else {
                                    format!("{}/{r}", self.store_dir())
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.insert(path.to_string(), (nar, refs));
            };
            match &v {
                serde_json::Value::Array(items) => {
                    for it in items {
                        if let Some(p) = it.get("path").and_then(serde_json::Value::as_str) {
                            take(p, it);
                        }
                    }
                }
                serde_json::Value::Object(map) => {
                    for (p, it) in map {
                        take(p, it);
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The NAR size of one valid path.
    pub fn nar_size(&self, path: &str) -> Result<u64> {
        self.nar_sizes(&[path])?
            .remove(path)
            .ok_or_else(|| BedError::msg(format!("no NAR size for {path}")))
    }

    /// The summed NAR size of the union of the closures of `paths`.
    pub fn closure_bytes<S: AsRef<OsStr>>(&self, paths: &[S]) -> Result<u64> {
        let closure: Vec<String> = self.closure(paths)?.into_iter().collect();
        Ok(self.nar_sizes(&closure)?.values().sum())
    }

    /// Whether `path` is valid in the store.
    pub fn is_valid(&self, path: &str) -> Result<bool> {
        let mut cmd = self.command("nix-store");
        cmd.args(["--check-validity", "--print-invalid", path]);
        Ok(run_stdout(&mut cmd)?.is_empty())
    }

    /// `nix-env -p PROFILE --set PATH`.
    pub fn set_profile(&self, toplevel: &str) -> Result<()> {
        let mut cmd = self.command("nix-env");
        cmd.arg("-p").arg(self.profile()).args(["--set", toplevel]);
        run(&mut cmd).map(drop)
    }

    /// `TOPLEVEL/bin/switch-to-configuration ACTION` (switch, boot, test).
    pub fn switch(&self, toplevel: &str, action: &str) -> Result<()> {
        let mut cmd = self.command(format!("{toplevel}/bin/switch-to-configuration"));
        cmd.arg(action);
        run(&mut cmd).map(drop)
    }

    /// Points the booted-system link at `toplevel`, as a reboot into it would.
    pub fn set_booted(&self, toplevel: &str) -> Result<()> {
        replace_symlink(Path::new(toplevel), &self.booted_system_link())
            .map_err(|e| BedError::io("pointing booted-system", e))
    }

    /// Installs a generation as a running NixOS has it: realises `toplevel_drv`, sets the profile,
    /// switches to it and marks it booted. Returns the toplevel's output path.
    pub fn install(&self, toplevel_drv: &str) -> Result<String> {
        let out = self
            .realise(&[toplevel_drv])?
            .into_iter()
            .next()
            .ok_or_else(|| BedError::msg(format!("realising {toplevel_drv} printed no output")))?;
        self.set_profile(&out)?;
        self.switch(&out, "switch")?;
        self.set_booted(&out)?;
        Ok(out)
    }

    /// Where a link points (None if it does not exist).
    pub fn read_link(&self, link: &Path) -> Option<String> {
        fs::read_link(link)
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// The toplevel the current-system link points at.
    pub fn current_system(&self) -> Option<String> {
        self.read_link(&self.current_system_link())
    }

    /// The toplevel the booted-system link points at.
    pub fn booted_system(&self) -> Option<String> {
        self.read_link(&self.booted_system_link())
    }

    /// The toplevel the system profile points at (following the generation link).
    pub fn profile_target(&self) -> Option<String> {
        fs::canonicalize(self.profile())
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// The boot default recorded by `switch-to-configuration switch|boot`.
    pub fn boot_default(&self) -> Option<String> {
        fs::read_to_string(self.boot_default_file())
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// `nix-store --gc`: deletes everything no root reaches. Returns Nix's output.
    pub fn gc(&self) -> Result<String> {
        let mut cmd = self.command("nix-store");
        cmd.arg("--gc");
        let out = run(&mut cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr))
    }

    /// Adds an indirect GC root `<state>/gcroots/NAME` → `path`.
    pub fn add_root(&self, name: &str, path: &str) -> Result<PathBuf> {
        let link = self.state_dir().join("gcroots").join(name);
        replace_symlink(Path::new(path), &link).map_err(|e| BedError::io("adding a GC root", e))?;
        Ok(link)
    }

    /// Every valid path in the store (`nix path-info --all`).
    pub fn valid_paths(&self) -> Result<BTreeSet<String>> {
        let mut cmd = self.command("nix");
        cmd.args(["path-info", "--all"]);
        Ok(lines(&run_stdout(&mut cmd)?).into_iter().collect())
    }

    // ---- disk ---------------------------------------------------------------------------------

    fn statvfs(&self) -> Result<nix::sys::statvfs::Statvfs> {
        nix::sys::statvfs::statvfs(&self.nix_dir())
            .map_err(|e| BedError::io("statvfs of the bed's disk", std::io::Error::from(e)))
    }

    /// Bytes used on the filesystem holding the store (the tmpfs, if any).
    pub fn used_bytes(&self) -> u64 {
        self.statvfs()
            .map(|s| bytes(s.blocks() - s.blocks_free(), s.fragment_size()))
            .unwrap_or(0)
    }

    /// What `f` returns, and the highest disk use and size of Nix's write-ahead log
    /// (`db.sqlite-wal`) seen while it ran. Sampled every millisecond from another thread, so the
    /// figures are lower bounds of the true high-water marks: a measurement, never a gate.
    pub fn high_water<T>(&self, f: impl FnOnce() -> T) -> (T, HighWater) {
        let done = std::sync::atomic::AtomicBool::new(false);
        let wal = self.state_dir().join("db").join("db.sqlite-wal");
        std::thread::scope(|scope| {
            let sampler = scope.spawn(|| {
                let mut seen = HighWater::default();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    seen.used = seen.used.max(self.used_bytes());
                    seen.wal = seen.wal.max(fs::metadata(&wal).map_or(0, |m| m.len()));
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                seen
            });
            let out = f();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            (out, sampler.join().expect("the disk sampler"))
        })
    }

    /// Size of the filesystem holding the store.
    pub fn capacity(&self) -> u64 {
        self.statvfs()
            .map(|s| bytes(s.blocks(), s.fragment_size()))
            .unwrap_or(0)
    }

    /// Bytes still available on the filesystem holding the store.
    pub fn available_bytes(&self) -> u64 {
        self.statvfs()
            .map(|s| bytes(s.blocks_available(), s.fragment_size()))
            .unwrap_or(0)
    }
}

/// The highest figures [`Bed::high_water`] saw, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HighWater {
    /// Used bytes of the filesystem holding the store.
    pub used: u64,
    /// Nix's SQLite write-ahead log.
    pub wal: u64,
}

impl Drop for Bed {
    fn drop(&mut self) {
        // Unmount first (the store vanishes with the tmpfs), then remove what is on disk.
        self.mount.take();
        self.loop_mount.take();
        if let Err(e) = force_remove(&self.root) {
            eprintln!("testbed: cannot remove {}: {e}", self.root.display());
        }
    }
}

/// Blocks times block size; the libc types are u64 on Linux but not everywhere.
#[allow(clippy::unnecessary_cast)]
fn bytes(blocks: nix::libc::fsblkcnt_t, size: nix::libc::c_ulong) -> u64 {
    blocks as u64 * size as u64
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Where beds live: `$STEPWISE_TESTBED_DIR`, or `<tmp>/stepwise-testbed-<uid>` (one per user, as
/// one user cannot remove another's read-only store paths).
pub fn base_dir() -> PathBuf {
    match std::env::var_os("STEPWISE_TESTBED_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => std::env::temp_dir().join(format!("stepwise-testbed-{}", nix::unistd::geteuid())),
    }
}

/// Removes beds left by processes that died without dropping them (SIGKILL): `bed-<pid>-*`
/// directories whose process is gone, unmounting their tmpfs first. Once per process.
fn clean_stale_beds() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Ok(entries) = fs::read_dir(base_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("bed-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if process_alive(pid) {
                continue;
            }
            let dir = entry.path();
            // A bed's tmpfs is at `nix`, a series' at `r/nix`.
            for mnt in [dir.join("nix"), dir.join("r/nix")] {
                if is_mount_point(&mnt) {
                    unmount(&mnt);
                }
            }
            let _ = force_remove(&dir);
        }
    });
}

fn process_alive(pid: i32) -> bool {
    use nix::errno::Errno;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(_) => true,
    }
}
