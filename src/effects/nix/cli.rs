//! `NixCli`: the `Store` and `System` traits over Nix's real command-line tools.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::argv::Invocation;
use super::commands::NixCommands;
use super::parse::{self, FailureKind, FailureScan};
use super::runner::{tail_lines, CancelToken, RunOptions, Runner, StdoutMode, Stream};
use crate::drv::{StoreDir, StorePath};
use crate::effects::store::{
    Action, Activated, Generation, NixImplementation, NixInfo, PathInfo, RealiseError,
    RealiseEvent, Result, Space, Store, StoreError, SubstituteInfo, System, TargetSpec,
};

/// How many paths one command line carries (argument lists have limits).
const BATCH: usize = 500;
/// Lines of a failed build's log kept in the error.
const LOG_TAIL_LINES: usize = 25;

/// How to reach Nix.
#[derive(Debug, Clone, Default)]
pub struct NixCliConfig {
    /// Variables for every command (tests: `NIX_STORE_DIR`, `NIX_STATE_DIR`, `NIX_CONFIG`, …).
    pub env: Vec<(OsString, OsString)>,
    /// Where the Nix tools are; `None`: found on `PATH`.
    pub bin_dir: Option<PathBuf>,
    /// Substituter URLs to ask for narinfo; `None`: Nix's configured `substituters`.
    pub substituters: Option<Vec<String>>,
    /// Timeout for queries (not for realise and activation, which take as long as they take).
    pub query_timeout: Option<Duration>,
    /// Nix settings for evaluation and realisation (`--nix-option NAME VALUE`).
    pub nix_options: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct NixCli {
    runner: Runner,
    cmds: NixCommands,
    info: NixInfo,
    substituters: Vec<String>,
    query_timeout: Option<Duration>,
    cancel: CancelToken,
    /// Nix's state directory (its database, and beside it the build logs): `NIX_STATE_DIR` of
    /// the commands' environment or of this process, else `/nix/var/nix`.
    state_dir: PathBuf,
}

/// An evaluation that failed: the user's configuration (bad input), unless the store's disk was
/// full, which is no fault of the input and passes once there is room (a stop, exit 3).
fn evaluation_failed(shown: &str, stderr: &str) -> StoreError {
    let message = format!("evaluating {shown} failed:\n{}", stderr.trim_end());
    if parse::OUT_OF_SPACE_MARKERS
        .iter()
        .any(|m| stderr.contains(m))
    {
        StoreError::OutOfSpace(message)
    } else {
        StoreError::Target(message)
    }
}

fn output_err(inv: &Invocation, why: impl Into<String>) -> StoreError {
    StoreError::Output {
        command: inv.display(),
        why: why.into(),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl NixCli {
    /// Detect the Nix version, the store dir and the substituters once.
    pub fn new(config: NixCliConfig) -> Result<Self> {
        let state_dir = config
            .env
            .iter()
            .find(|(k, _)| k == "NIX_STATE_DIR")
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var_os("NIX_STATE_DIR"))
            .map_or_else(|| PathBuf::from("/nix/var/nix"), PathBuf::from);
        let runner = Runner::new(config.env.clone(), None).map_err(|source| StoreError::Io {
            path: PathBuf::from("<tokio runtime>"),
            source,
        })?;
        let bin = config.bin_dir.as_deref();

        let inv = NixCommands::version(bin);
        let out = runner.run_ok(&inv)?;
        let info = parse::parse_version(&out.stdout_str()).map_err(|e| output_err(&inv, e))?;

        let inv = NixCommands::store_dir_query(bin);
        let out = runner.run_ok(&inv)?;
        let dir: String =
            serde_json::from_slice(&out.stdout).map_err(|e| output_err(&inv, e.to_string()))?;
        let store_dir = StoreDir::new(dir).map_err(|e| output_err(&inv, e.to_string()))?;

        let substituters = match config.substituters {
            Some(s) => s,
            None => {
                // `config show` from Nix 2.20; `show-config` before (and in Lix, forked from
                // 2.18). Try the likely name first, then the other.
                let new_name =
                    info.implementation == NixImplementation::Nix && info.at_least(2, 20);
                let (first, second) = if new_name {
                    (NixCommands::config_show(bin), NixCommands::show_config(bin))
                } else {
                    (NixCommands::show_config(bin), NixCommands::config_show(bin))
                };
                let (inv, out) = match runner.run_ok(&first) {
                    Ok(o) => (first, o),
                    Err(_) => {
                        let o = runner.run_ok(&second)?;
                        (second, o)
                    }
                };
                parse::parse_substituters(&out.stdout_str()).map_err(|e| output_err(&inv, e))?
            }
        };

        Ok(NixCli {
            runner,
            cmds: NixCommands::new(store_dir)
                .with_bin_dir(config.bin_dir)
                .with_path_info_json_format(NixCommands::path_info_takes_json_format(&info))
                .with_options(config.nix_options),
            info,
            substituters,
            query_timeout: config.query_timeout,
            cancel: CancelToken::new(),
            state_dir,
        })
    }

    /// Cancelling this token kills whatever Nix command runs (its whole process group) and
    /// refuses every later one: for a second SIGTERM, not the first (the first lets the current
    /// transition finish).
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    fn opts(&self) -> RunOptions<'_> {
        RunOptions {
            cancel: Some(&self.cancel),
            ..Default::default()
        }
    }

    pub fn commands(&self) -> &NixCommands {
        &self.cmds
    }

    pub fn substituters(&self) -> &[String] {
        &self.substituters
    }

    fn query(&self, inv: &Invocation) -> Result<super::runner::Output> {
        let opts = RunOptions {
            timeout: self.query_timeout,
            ..self.opts()
        };
        self.runner.run(inv, opts)?.check()
    }

    fn path_lines(&self, inv: &Invocation) -> Result<Vec<StorePath>> {
        let out = self.query(inv)?;
        parse::parse_path_lines(self.store_dir(), &out.stdout_str()).map_err(|e| output_err(inv, e))
    }

    fn parse_user_drv(&self, shown: &str, s: &str) -> Result<StorePath> {
        let p = self.store_dir().parse(s.trim()).map_err(|e| {
            StoreError::Target(format!(
                "{shown}: {e}\n  hint: give the toplevel's .drv inside {}",
                self.store_dir()
            ))
        })?;
        if !p.is_derivation() {
            return Err(StoreError::Target(format!(
                "{shown} is not a derivation (.drv)\n  hint: give the toplevel's .drv, e.g. from `nix-instantiate '<nixpkgs/nixos>' -A system`"
            )));
        }
        Ok(p)
    }

    /// Output name → path, from the `.drv` itself.
    fn drv_outputs(&self, drv: &StorePath) -> Result<BTreeMap<String, StorePath>> {
        let text = self.read_file(drv)?;
        let d = crate::drv::parse(&text, self.store_dir()).map_err(|e| StoreError::Output {
            command: format!("reading {}", self.store_dir().display(drv)),
            why: e.to_string(),
        })?;
        Ok(d.outputs
            .into_iter()
            .filter_map(|(n, o)| o.path.map(|p| (n, p)))
            .collect())
    }

    /// The last lines of `drv`'s build log (streamed: a huge log costs nothing), else of the
    /// realise's own stderr.
    fn log_tail(&self, drv: &StorePath, stderr: &str) -> String {
        let mut tail = std::collections::VecDeque::with_capacity(LOG_TAIL_LINES);
        let mut keep = |_: Stream, line: &str| {
            if tail.len() == LOG_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.to_string());
        };
        let opts = RunOptions {
            timeout: self.query_timeout,
            stdout: StdoutMode::Stream,
            on_line: Some(&mut keep),
            ..self.opts()
        };
        match self.runner.run(&self.cmds.read_log(drv), opts) {
            Ok(out) if out.success() && !tail.is_empty() => Vec::from(tail).join("\n"),
            _ => tail_lines(stderr, LOG_TAIL_LINES),
        }
    }

    /// The one place a text store object is written; the drv helper's `nix derivation add` route
    /// can take over here for Nix ≥ 2.15.
    fn add_text_via_to_file(
        &self,
        name: &str,
        contents: &[u8],
        references: &[StorePath],
    ) -> Result<StorePath> {
        let mut tmp = tempfile::NamedTempFile::new().map_err(io_err(Path::new("<tempfile>")))?;
        tmp.write_all(contents)
            .and_then(|_| tmp.flush())
            .map_err(io_err(tmp.path()))?;
        let inv = self
            .cmds
            .add_text_to_file(name, tmp.path(), references)
            .ok_or_else(|| {
                StoreError::Refused(format!(
                    "{name}: {} references do not fit on one command line",
                    references.len()
                ))
            })?;
        let out = self.query(&inv)?;
        let s: String =
            serde_json::from_slice(&out.stdout).map_err(|e| output_err(&inv, e.to_string()))?;
        self.store_dir()
            .parse(&s)
            .map_err(|e| output_err(&inv, e.to_string()))
    }
}

impl Store for NixCli {
    fn store_dir(&self) -> &StoreDir {
        &self.cmds.store_dir
    }

    fn nix_info(&self) -> &NixInfo {
        &self.info
    }

    fn resolve_target(&self, target: &TargetSpec) -> Result<StorePath> {
        let drv = match target {
            TargetSpec::Drv(path) => {
                let shown = path.display().to_string();
                // A link to the .drv (a GC root, `./system.drv`) names it too.
                let inside = match std::fs::canonicalize(path) {
                    Ok(real) if !shown.starts_with(self.store_dir().as_str()) => {
                        real.display().to_string()
                    }
                    _ => shown.clone(),
                };
                let drv = self.parse_user_drv(&shown, &inside)?;
                if self.valid_paths(std::slice::from_ref(&drv))?.is_empty() {
                    return Err(StoreError::Target(format!(
                        "{shown} is not a valid path in the store\n  hint: instantiate it first (`nix-instantiate`), or pass --flake / --file"
                    )));
                }
                return Ok(drv);
            }
            TargetSpec::Flake { reference, host } => {
                let host = match host {
                    Some(h) => h.clone(),
                    None => nix::unistd::gethostname()
                        .map_err(|e| {
                            StoreError::Target(format!(
                                "--flake {reference}: no host given and the hostname is unknown ({e})\n  hint: write --flake {reference}#HOST"
                            ))
                        })?
                        .to_string_lossy()
                        .into_owned(),
                };
                let inv = self.cmds.eval_flake_toplevel(reference, &host);
                let out = self.runner.run(&inv, self.opts())?;
                if !out.success() {
                    return Err(evaluation_failed(
                        &format!("--flake {reference}#{host}"),
                        &out.stderr_str(),
                    ));
                }
                let shown = format!("{reference}#{host}");
                self.parse_user_drv(&shown, &out.stdout_str())?
            }
            TargetSpec::File { file, attr } => {
                let abs = std::fs::canonicalize(file)
                    .map_err(|e| StoreError::Target(format!("--file {}: {e}", file.display())))?;
                let inv = self.cmds.eval_file_target(&abs, attr.as_deref());
                let out = self.runner.run(&inv, self.opts())?;
                let shown = match attr {
                    Some(a) => format!("--file {} --attr {a}", file.display()),
                    None => format!("--file {}", file.display()),
                };
                if !out.success() {
                    return Err(evaluation_failed(&shown, &out.stderr_str()));
                }
                let s: String = serde_json::from_slice(&out.stdout)
                    .map_err(|e| output_err(&inv, e.to_string()))?;
                self.parse_user_drv(&shown, &s)?
            }
        };
        Ok(drv)
    }

    fn read_file(&self, path: &StorePath) -> Result<Vec<u8>> {
        let p = self.store_dir().to_path(path);
        std::fs::read(&p).map_err(io_err(&p))
    }

    fn valid_paths(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>> {
        let mut valid: BTreeSet<StorePath> = paths.iter().cloned().collect();
        for chunk in paths.chunks(BATCH) {
            for p in self.path_lines(&self.cmds.check_validity(chunk))? {
                valid.remove(&p);
            }
        }
        Ok(valid)
    }

    fn path_infos(&self, paths: &[StorePath]) -> Result<BTreeMap<StorePath, PathInfo>> {
        let valid: Vec<StorePath> = self.valid_paths(paths)?.into_iter().collect();
        let mut out = BTreeMap::new();
        for chunk in valid.chunks(BATCH) {
            let inv = self.cmds.path_info_json(chunk, false);
            out.extend(self.parse_infos(&inv)?);
        }
        Ok(out)
    }

    fn closure(&self, roots: &[StorePath]) -> Result<BTreeSet<StorePath>> {
        if roots.is_empty() {
            return Ok(BTreeSet::new());
        }
        Ok(self
            .path_lines(&self.cmds.requisites(roots))?
            .into_iter()
            .collect())
    }

    fn closure_infos(&self, roots: &[StorePath]) -> Result<BTreeMap<StorePath, PathInfo>> {
        if roots.is_empty() {
            return Ok(BTreeMap::new());
        }
        self.parse_infos(&self.cmds.path_info_json(roots, true))
    }

    fn substitute_infos(&self, paths: &[StorePath]) -> Result<BTreeMap<StorePath, SubstituteInfo>> {
        let mut out = BTreeMap::new();
        let mut left: Vec<StorePath> = paths.to_vec();
        // Substituters in configured order; a path found in one is not asked of the next.
        for url in &self.substituters {
            if left.is_empty() {
                break;
            }
            for chunk in left.chunks(BATCH) {
                let inv = self.cmds.substituter_path_info(url, chunk);
                let o = self.query(&inv)?;
                let found = parse::parse_path_info_json(self.store_dir(), &o.stdout_str())
                    .map_err(|e| output_err(&inv, e))?;
                for (p, i) in found {
                    out.insert(
                        p.clone(),
                        SubstituteInfo {
                            path: p,
                            nar_size: i.nar_size,
                            download_size: i.download_size,
                            references: i.references,
                        },
                    );
                }
            }
            left.retain(|p| !out.contains_key(p));
        }
        Ok(out)
    }

    fn add_text(&self, name: &str, contents: &[u8], references: &[StorePath]) -> Result<StorePath> {
        self.add_text_via_to_file(name, contents, references)
    }

    fn add_stub(&self, stub: &crate::plan::Stub) -> Result<StorePath> {
        let tmp = tempfile::tempdir().map_err(io_err(Path::new("<tempdir>")))?;
        let dir = tmp.path().join(&stub.name);
        std::fs::create_dir(&dir).map_err(io_err(&dir))?;
        let inv = self.cmds.add_path(&dir);
        let got = self.path_lines(&inv)?;
        match got.as_slice() {
            [p] if *p == stub.path => Ok(p.clone()),
            _ => Err(StoreError::Refused(format!(
                "stub {}: the store added {:?}, the plan expected {}",
                stub.name,
                got.iter()
                    .map(|p| self.store_dir().display(p))
                    .collect::<Vec<_>>(),
                self.store_dir().display(&stub.path)
            ))),
        }
    }

    fn realise(
        &self,
        drv: &StorePath,
        gc_root: &Path,
        events: &mut dyn FnMut(RealiseEvent),
    ) -> Result<BTreeMap<String, StorePath>, RealiseError> {
        if let Some(dir) = gc_root.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let inv = self.cmds.realise(drv, gc_root);
        let store_dir = self.store_dir().clone();
        let mut scan = FailureScan::default();
        // Nix's build output is on stderr; stdout has only the root links, not needed.
        let mut on_line = |stream: Stream, line: &str| {
            if stream == Stream::Stderr {
                scan.observe(&store_dir, line);
                events(parse::parse_progress_line(&store_dir, line));
            }
        };
        let out = self
            .runner
            .run(
                &inv,
                RunOptions {
                    stdout: StdoutMode::Stream,
                    on_line: Some(&mut on_line),
                    ..self.opts()
                },
            )
            .map_err(StoreError::from)?;
        if !out.success() {
            if out.interrupted() {
                return Err(RealiseError::Other(out.to_error()));
            }
            return Err(match scan.kind() {
                FailureKind::Interrupted => RealiseError::Other(StoreError::Interrupted {
                    command: out.command.clone(),
                    why: format!("Nix said \"{}\"", super::runner::NIX_INTERRUPTED),
                }),
                FailureKind::OutOfSpace(line) => RealiseError::OutOfSpace { message: line },
                FailureKind::BuildFailed(failed) => RealiseError::BuildFailed {
                    log_tail: self.log_tail(&failed, &out.stderr_str()),
                    drv: failed,
                },
                FailureKind::Other => RealiseError::Other(out.to_error()),
            });
        }
        // With --add-root Nix prints the root links, not the outputs: read them from the .drv.
        self.drv_outputs(drv).map_err(RealiseError::Other)
    }

    fn add_root(&self, link: &Path, path: &StorePath) -> Result<()> {
        if self.valid_paths(std::slice::from_ref(path))?.is_empty() {
            return Err(StoreError::Refused(format!(
                "cannot root {}: it is not a valid path",
                self.store_dir().display(path)
            )));
        }
        if let Some(dir) = link.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        if path.is_derivation() {
            self.query(&self.cmds.add_drv_root(path, link))?;
        } else {
            // Realising a valid output is a no-op that registers the indirect root.
            self.query(&self.cmds.realise(path, link))?;
        }
        Ok(())
    }

    fn remove_root(&self, link: &Path) -> Result<()> {
        match std::fs::symlink_metadata(link) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(link)(e)),
            Ok(m) if !m.file_type().is_symlink() => Err(StoreError::Refused(format!(
                "{} is not a symlink; stepwise only removes root links it made",
                link.display()
            ))),
            Ok(_) => std::fs::remove_file(link).map_err(io_err(link)),
        }
    }

    fn roots(&self, dir: &Path) -> Result<BTreeMap<PathBuf, StorePath>> {
        roots_in(self.store_dir(), dir)
    }

    fn live_paths(&self) -> Result<BTreeSet<StorePath>> {
        Ok(self
            .path_lines(&self.cmds.print_live())?
            .into_iter()
            .collect())
    }

    fn referrers_closure(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>> {
        // Nix refuses to query an invalid path: ask about the valid ones only.
        let valid: Vec<StorePath> = self.valid_paths(paths)?.into_iter().collect();
        if valid.is_empty() {
            return Ok(BTreeSet::new());
        }
        Ok(self
            .path_lines(&self.cmds.referrers_closure(&valid))?
            .into_iter()
            .collect())
    }

    fn delete(&self, paths: &[StorePath]) -> Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let set: BTreeSet<&StorePath> = paths.iter().collect();
        let live = self.live_paths()?;
        if let Some(p) = paths.iter().find(|p| live.contains(p)) {
            return Err(StoreError::Refused(format!(
                "{} is live (reachable from a GC root); stepwise never deletes live paths",
                self.store_dir().display(p)
            )));
        }
        let valid: Vec<StorePath> = self.valid_paths(paths)?.into_iter().collect();
        if !valid.is_empty() {
            for r in self.path_lines(&self.cmds.referrers(&valid))? {
                if !set.contains(&r) {
                    return Err(StoreError::Refused(format!(
                        "{} still refers to a path being deleted; delete it too or keep them",
                        self.store_dir().display(&r)
                    )));
                }
            }
        }
        let out = self.runner.run(&self.cmds.delete(paths), self.opts())?;
        if out.success() {
            return Ok(());
        }
        let stderr = out.stderr_str();
        if parse::is_delete_refusal(&stderr) {
            return Err(StoreError::Refused(tail_lines(&stderr, 3)));
        }
        Err(out.to_error())
    }

    fn space(&self) -> Result<Space> {
        crate::effects::fs::space(self.store_dir().as_ref())
    }

    fn disk_cost(&self, on_disk: &[(StorePath, u64)]) -> Result<crate::plan::DiskCost> {
        let sd = self.store_dir();
        let (_, compresses) = crate::effects::fs::filesystem_kind(sd.as_ref())?;
        // Compression shows only in the filesystem's used bytes against the live NAR bytes.
        let live_nar = if compresses {
            let live: Vec<StorePath> = self.live_paths()?.into_iter().collect();
            self.path_infos(&live)?.values().map(|i| i.nar_size).sum()
        } else {
            0
        };
        crate::effects::fs::measure_store(sd, on_disk, live_nar, Some(&self.state_dir))
    }

    fn gc_roots(&self) -> Result<Vec<(PathBuf, StorePath)>> {
        let inv = self.cmds.print_roots();
        let out = self.query(&inv)?;
        parse::parse_roots(self.store_dir(), &out.stdout_str()).map_err(|e| output_err(&inv, e))
    }
}

impl NixCli {
    fn parse_infos(&self, inv: &Invocation) -> Result<BTreeMap<StorePath, PathInfo>> {
        let out = self.query(inv)?;
        let infos = parse::parse_path_info_json(self.store_dir(), &out.stdout_str())
            .map_err(|e| output_err(inv, e))?;
        Ok(infos
            .into_iter()
            .map(|(p, i)| {
                (
                    p.clone(),
                    PathInfo {
                        path: p,
                        nar_size: i.nar_size,
                        references: i.references,
                        deriver: i.deriver,
                    },
                )
            })
            .collect())
    }
}

/// Symlinks directly in `dir` that point at a store path.
pub(crate) fn roots_in(store_dir: &StoreDir, dir: &Path) -> Result<BTreeMap<PathBuf, StorePath>> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        r => r.map_err(io_err(dir))?,
    };
    let mut out = BTreeMap::new();
    for e in entries {
        let e = e.map_err(io_err(dir))?;
        let p = e.path();
        if let Ok(target) = std::fs::read_link(&p) {
            if let Ok(sp) = store_dir.parse(&target.to_string_lossy()) {
                out.insert(p, sp);
            }
        }
    }
    Ok(out)
}

/// Follow `link` (through profile links and the like) to the store path it ends at.
pub(crate) fn resolve_system_link(store_dir: &StoreDir, link: &Path) -> Result<Option<StorePath>> {
    let mut cur = link.to_path_buf();
    for _ in 0..40 {
        let target = match std::fs::read_link(&cur) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&cur)(e)),
        };
        let target = if target.is_absolute() {
            target
        } else {
            cur.parent().unwrap_or(Path::new("/")).join(target)
        };
        if let Ok((sp, _)) = store_dir.parse_prefix(&target.to_string_lossy()) {
            return Ok(Some(sp));
        }
        cur = target;
    }
    Err(StoreError::Io {
        path: link.to_path_buf(),
        source: std::io::Error::other("too many levels of symbolic links"),
    })
}

/// `PROFILE-N-link` beside the profile.
pub(crate) fn generation_link(profile: &Path, n: u64) -> PathBuf {
    let name = profile
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    profile.with_file_name(format!("{name}-{n}-link"))
}

/// The check before activation: `bin/switch-to-configuration` exists and is executable.
pub(crate) fn check_looks_like_system(store_dir: &StoreDir, toplevel: &StorePath) -> Result<()> {
    let stc = store_dir
        .to_path(toplevel)
        .join("bin/switch-to-configuration");
    match std::fs::metadata(&stc) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        _ => Err(StoreError::Refused(format!(
            "{} does not look like a NixOS system: no executable bin/switch-to-configuration",
            store_dir.display(toplevel)
        ))),
    }
}

impl System for NixCli {
    fn generations(&self, profile: &Path) -> Result<Vec<Generation>> {
        if profile.parent().is_some_and(|d| !d.exists()) {
            return Ok(Vec::new());
        }
        let inv = self.cmds.list_generations(profile);
        let out = self.query(&inv)?;
        let gens = parse::parse_generations(&out.stdout_str()).map_err(|e| output_err(&inv, e))?;
        let mut result = Vec::new();
        for (number, current) in gens {
            let link = generation_link(profile, number);
            let toplevel = resolve_system_link(self.store_dir(), &link)?
                .ok_or_else(|| output_err(&inv, format!("{} is missing", link.display())))?;
            result.push(Generation {
                number,
                toplevel,
                link,
                current,
            });
        }
        Ok(result)
    }

    fn set_profile(&self, profile: &Path, toplevel: &StorePath) -> Result<()> {
        if let Some(dir) = profile.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        self.query(&self.cmds.set_profile(profile, toplevel))?;
        Ok(())
    }

    fn switch_generation(&self, profile: &Path, number: u64) -> Result<()> {
        if !self
            .generations(profile)?
            .iter()
            .any(|g| g.number == number)
        {
            return Err(StoreError::Refused(format!(
                "{} has no generation {number}",
                profile.display()
            )));
        }
        self.query(&self.cmds.switch_generation(profile, number))?;
        Ok(())
    }

    fn delete_generations(&self, profile: &Path, numbers: &[u64]) -> Result<()> {
        if numbers.is_empty() {
            return Ok(());
        }
        let gens = self.generations(profile)?;
        if let Some(g) = gens
            .iter()
            .find(|g| g.current && numbers.contains(&g.number))
        {
            return Err(StoreError::Refused(format!(
                "generation {} is the current one of {}",
                g.number,
                profile.display()
            )));
        }
        self.query(&self.cmds.delete_generations(profile, numbers))?;
        Ok(())
    }

    fn read_system_link(&self, link: &Path) -> Result<Option<StorePath>> {
        resolve_system_link(self.store_dir(), link)
    }

    fn activate(
        &self,
        toplevel: &StorePath,
        action: Action,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Activated> {
        check_looks_like_system(self.store_dir(), toplevel)?;
        let mut units: Option<Vec<String>> = None;
        let mut each = |stream: Stream, line: &str| {
            if stream == Stream::Stderr && units.is_none() {
                units = parse::failed_units(line);
            }
            on_line(line);
        };
        let opts = RunOptions {
            stdout: StdoutMode::Stream,
            on_line: Some(&mut each),
            ..self.opts()
        };
        let out = self
            .runner
            .run(&self.cmds.activate(toplevel, action), opts)?;
        match out.status.code() {
            Some(0) => Ok(Activated::Done),
            Some(4) => Ok(Activated::UnitsFailed(units.unwrap_or_default())),
            Some(100) => Ok(Activated::RebootRequired),
            _ => Err(out.to_error()),
        }
    }

    fn reboot(&self, command: &[String]) -> Result<()> {
        let (prog, args) = command
            .split_first()
            .ok_or_else(|| StoreError::Refused("empty reboot command".into()))?;
        let inv = Invocation::new(prog).args(args);
        self.runner.run(&inv, self.opts())?.check()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const TOP: &str = "d1law87hm3mh8j449pm0gy6pmazsg3xi-nixos-system-vps-1";

    #[test]
    fn system_links_are_followed_through_profiles() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("store");
        std::fs::create_dir_all(store.join(TOP).join("bin")).unwrap();
        let sd = StoreDir::new(store.to_string_lossy().into_owned()).unwrap();
        let top = StorePath::from_base_name(TOP).unwrap();
        let profiles = d.path().join("profiles");
        std::fs::create_dir_all(&profiles).unwrap();
        let profile = profiles.join("system");
        assert_eq!(generation_link(&profile, 3), profiles.join("system-3-link"));
        // As nix-env makes them: relative `system -> system-3-link`, absolute into the store.
        symlink(sd.to_path(&top), profiles.join("system-3-link")).unwrap();
        symlink("system-3-link", &profile).unwrap();
        let current = d.path().join("current-system");
        symlink(&profile, &current).unwrap();
        assert_eq!(
            resolve_system_link(&sd, &current).unwrap(),
            Some(top.clone())
        );
        assert_eq!(
            resolve_system_link(&sd, &profile).unwrap(),
            Some(top.clone())
        );
        assert_eq!(
            resolve_system_link(&sd, &d.path().join("absent")).unwrap(),
            None
        );
        let plain = d.path().join("plain-file");
        std::fs::write(&plain, "x").unwrap();
        assert!(resolve_system_link(&sd, &plain).is_err());

        // Roots: only links into the store count.
        let roots = d.path().join("roots");
        std::fs::create_dir_all(&roots).unwrap();
        symlink(sd.to_path(&top), roots.join("step-1")).unwrap();
        symlink("/etc/passwd", roots.join("other")).unwrap();
        assert_eq!(
            roots_in(&sd, &roots).unwrap(),
            BTreeMap::from([(roots.join("step-1"), top.clone())])
        );
        assert!(roots_in(&sd, &d.path().join("none")).unwrap().is_empty());

        // A system has an executable bin/switch-to-configuration.
        assert!(matches!(
            check_looks_like_system(&sd, &top),
            Err(StoreError::Refused(_))
        ));
        let stc = store.join(TOP).join("bin/switch-to-configuration");
        std::fs::write(&stc, "#!/bin/sh\n").unwrap();
        assert!(
            check_looks_like_system(&sd, &top).is_err(),
            "not executable yet"
        );
        std::fs::set_permissions(&stc, std::fs::Permissions::from_mode(0o755)).unwrap();
        check_looks_like_system(&sd, &top).unwrap();
    }

    /// A configuration that does not evaluate is the user's to fix (exit 2); an evaluation the
    /// full disk stopped is not (a stop, exit 3: the next run, with room, goes on).
    #[test]
    fn an_evaluation_stopped_by_a_full_disk_is_not_bad_input() {
        let broken = evaluation_failed(
            "--file x.nix",
            "error: syntax error, unexpected end of file",
        );
        assert!(matches!(broken, StoreError::Target(_)), "{broken:?}");
        let full = evaluation_failed(
            "--flake /etc/nixos#web",
            "error: writing to file: No space left on device",
        );
        assert!(matches!(full, StoreError::OutOfSpace(_)), "{full:?}");
        assert_eq!(
            crate::error::Error::Store(full).exit(),
            crate::error::Exit::Stopped
        );
    }
}
