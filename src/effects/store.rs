//! The seam between the engine and Nix: every question and effect stepwise asks of the store and of
//! the running system. `nix::NixCli` implements it over the real command-line tools,
//! `model_store::ModelStore` in memory; the contract tests run against both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::drv::{StoreDir, StorePath};

/// What the user asked to upgrade to, before it is resolved to a toplevel `.drv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetSpec {
    /// `--target /nix/store/…-nixos-system-….drv`
    Drv(PathBuf),
    /// `--flake REF[#host]`; the host defaults to the machine's hostname.
    Flake {
        reference: String,
        host: Option<String>,
    },
    /// `--file F.nix [--attr A]`
    File { file: PathBuf, attr: Option<String> },
}

/// Which Nix: upstream Nix or Lix (forked from 2.18; its version numbers start at 2.90).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NixImplementation {
    Nix,
    Lix,
}

impl From<&str> for NixImplementation {
    /// The implementation's name as `nix --version` prints it (`Nix`, `Lix`), case-insensitive.
    fn from(name: &str) -> Self {
        if name.eq_ignore_ascii_case("lix") {
            NixImplementation::Lix
        } else {
            NixImplementation::Nix
        }
    }
}

/// The running Nix, detected once (`nix --version`, feature probes); never assumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NixInfo {
    pub implementation: NixImplementation,
    /// (major, minor, patch)
    pub version: (u32, u32, u32),
    /// `nix derivation add` exists (Nix 2.15+, Lix).
    pub has_derivation_add: bool,
}

impl NixInfo {
    /// Features follow from the implementation and version.
    pub fn new(implementation: NixImplementation, version: (u32, u32, u32)) -> Self {
        let has_derivation_add = match implementation {
            NixImplementation::Lix => true,
            NixImplementation::Nix => version >= (2, 15, 0),
        };
        NixInfo {
            implementation,
            version,
            has_derivation_add,
        }
    }

    /// Upstream Nix at least `major.minor` (Lix answers by its own numbering).
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.version.0, self.version.1) >= (major, minor)
    }
}

/// A valid path in the local store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathInfo {
    pub path: StorePath,
    pub nar_size: u64,
    pub references: BTreeSet<StorePath>,
    pub deriver: Option<StorePath>,
}

/// A path a substituter (binary cache) can provide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubstituteInfo {
    pub path: StorePath,
    pub nar_size: u64,
    /// Compressed size, when the cache says.
    pub download_size: Option<u64>,
    pub references: BTreeSet<StorePath>,
}

/// A structured line of a realise's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RealiseEvent {
    /// Nix will build this derivation locally.
    Building(StorePath),
    /// Nix copies this path from a substituter.
    Copying(StorePath),
    /// Any other line, for logs.
    Message(String),
}

/// How a profile generation looks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub number: u64,
    pub toplevel: StorePath,
    /// `PROFILE-N-link`
    pub link: PathBuf,
    pub current: bool,
}

/// `switch-to-configuration` actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Make it the boot default and activate it now.
    Switch,
    /// Make it the boot default; activate at the next boot.
    Boot,
    /// Activate now without making it the boot default.
    Test,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Switch => "switch",
            Action::Boot => "boot",
            Action::Test => "test",
        }
    }
}

/// How an activation (`switch-to-configuration`) ended, as NixOS defines its exit codes; any
/// other non-zero exit is an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activated {
    /// Exit 0.
    Done,
    /// Exit 4: the configuration is switched (and, for `switch`/`boot`, the boot default) but
    /// some units failed to start, reload or restart. The units its stderr named ("warning: the
    /// following units failed: a.service, b.service"); empty when it named none (a failed reload
    /// or a user's activation also exit 4).
    UnitsFailed(Vec<String>),
    /// Exit 100: the new system's init is incompatible with the running one; nothing was
    /// activated. For `switch`/`boot` it is the boot default: it takes effect at the next boot.
    RebootRequired,
}

/// Size and free space of the filesystem holding the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    pub total: u64,
    /// Bytes available to an unprivileged writer (`f_bavail`).
    pub free: u64,
}

#[derive(Debug, Error)]
pub enum StoreError {
    /// A Nix command exited non-zero.
    #[error("`{command}` failed ({status}): {stderr_tail}")]
    Command {
        command: String,
        status: String,
        stderr_tail: String,
    },
    /// A Nix command could not be started or timed out.
    #[error("could not run `{command}`: {why}")]
    Spawn { command: String, why: String },
    /// Nix printed something we do not understand.
    #[error("unexpected output from `{command}`: {why}")]
    Output { command: String, why: String },
    /// The target could not be resolved or evaluated: the user's input is wrong (exit 2).
    #[error("{0}")]
    Target(String),
    /// A request stepwise refuses for safety (deleting a live path, activating a non-system).
    #[error("refused: {0}")]
    Refused(String),
    /// No space left on the store's filesystem.
    #[error("out of space: {0}")]
    OutOfSpace(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The command was stopped, not failed: killed by a stop signal (to it, its group or the
    /// whole session), Nix said "interrupted by the user", or stepwise cancelled it (a second
    /// SIGTERM). Nothing is wrong with the system or the target: `resume` redoes the effect.
    #[error("`{command}` was interrupted: {why}")]
    Interrupted { command: String, why: String },
    /// The model store's injected fault, or a crash point.
    #[error("injected fault: {0}")]
    Injected(String),
}

/// Why a realise failed: what the engine does next depends on it.
#[derive(Debug, Error)]
pub enum RealiseError {
    /// ENOSPC or "database or disk is full": the plain upgrade falls back to steps.
    #[error("out of space while realising: {message}")]
    OutOfSpace { message: String },
    /// A derivation failed to build: unwind (or hold).
    #[error("build of {drv} failed:\n{log_tail}")]
    BuildFailed { drv: StorePath, log_tail: String },
    #[error(transparent)]
    Other(#[from] StoreError),
}

impl StoreError {
    /// A stop (signal, cancel), which the engine records as a stop to resume, not a failure.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, StoreError::Interrupted { .. })
    }
}

impl RealiseError {
    /// A realise stopped by a signal or a cancel: not a failed build.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, RealiseError::Other(e) if e.is_interrupted())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The store: paths, sizes, derivations, builds, roots and deletion.
pub trait Store {
    fn store_dir(&self) -> &StoreDir;
    fn nix_info(&self) -> &NixInfo;

    /// Evaluate a target to its toplevel `.drv` (already instantiated in the store).
    fn resolve_target(&self, target: &TargetSpec) -> Result<StorePath>;

    /// The bytes of a store object that is a regular file (a `.drv`).
    fn read_file(&self, path: &StorePath) -> Result<Vec<u8>>;

    /// Which of `paths` are valid in the local store.
    fn valid_paths(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>>;

    /// Info for valid local paths; invalid ones are left out.
    fn path_infos(&self, paths: &[StorePath]) -> Result<BTreeMap<StorePath, PathInfo>>;

    /// The closure (references, transitively) of valid local paths, the roots included.
    fn closure(&self, roots: &[StorePath]) -> Result<BTreeSet<StorePath>>;

    /// What the substituters know of `paths`, in one batched query; unknown paths are left out.
    fn substitute_infos(&self, paths: &[StorePath]) -> Result<BTreeMap<StorePath, SubstituteInfo>>;

    /// Add a text store object (how a `.drv` is written); returns the path Nix reports, which the
    /// caller compares to the one it computed.
    fn add_text(&self, name: &str, contents: &[u8], references: &[StorePath]) -> Result<StorePath>;

    /// Add a stub (an empty directory named `stub.name`, no references) and return its path.
    /// Refused when the store puts it anywhere but `stub.path`, the path the plan computed.
    fn add_stub(&self, stub: &crate::plan::Stub) -> Result<StorePath>;

    /// The closure of `roots` with each path's info, in one query where the store can.
    fn closure_infos(&self, roots: &[StorePath]) -> Result<BTreeMap<StorePath, PathInfo>> {
        let closure: Vec<StorePath> = self.closure(roots)?.into_iter().collect();
        self.path_infos(&closure)
    }

    /// Build or substitute `drv`'s outputs, registering `gc_root` as an indirect GC root to the
    /// `out` output and `gc_root-NAME` to each other output NAME (Nix's own naming). Returns
    /// output name → path. Failures are classified: out of space, a failed build naming its
    /// derivation and log tail, or other.
    fn realise(
        &self,
        drv: &StorePath,
        gc_root: &Path,
        events: &mut dyn FnMut(RealiseEvent),
    ) -> Result<BTreeMap<String, StorePath>, RealiseError>;

    /// Add an indirect GC root `link` → `path` (replacing `link` if it exists). `path` must be
    /// valid; a `.drv` is rooted as it is, never built.
    fn add_root(&self, link: &Path, path: &StorePath) -> Result<()>;
    /// Remove a root link stepwise owns (no error if already gone).
    fn remove_root(&self, link: &Path) -> Result<()>;
    /// The root links directly inside `dir` (a directory stepwise owns) and what they point at;
    /// an absent directory has none.
    fn roots(&self, dir: &Path) -> Result<BTreeMap<PathBuf, StorePath>>;

    /// Everything reachable from GC roots (profiles, current-system, booted-system, run roots),
    /// with the derivers of live paths (`keep-derivations`, Nix's default).
    fn live_paths(&self) -> Result<BTreeSet<StorePath>>;

    /// Every valid path that refers to one of `paths`, directly or through others (the paths
    /// themselves included where valid): what must go before they can be deleted.
    fn referrers_closure(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>>;

    /// Delete exactly these paths. Refused (`StoreError::Refused`, nothing deleted) if one is
    /// live or still referenced by a valid path outside the set. Paths already gone are fine.
    fn delete(&self, paths: &[StorePath]) -> Result<()>;

    /// Size and free space of the store's filesystem.
    fn space(&self) -> Result<Space>;

    /// What the store's paths take on its filesystem (`plan::DiskCost`), measured on the
    /// `on_disk` paths (valid paths with their NAR sizes). The default measures nothing: sizes
    /// stay NAR bytes (the model store, whose capacity is counted in NAR bytes).
    fn disk_cost(&self, on_disk: &[(StorePath, u64)]) -> Result<crate::plan::DiskCost> {
        let _ = on_disk;
        Ok(crate::plan::DiskCost::default())
    }

    /// Every GC root: the link (or `/proc/…` for a runtime root) and the store path it keeps.
    fn gc_roots(&self) -> Result<Vec<(PathBuf, StorePath)>>;
}

/// The running system: profile generations, the current/booted links, activation, reboot.
pub trait System {
    fn generations(&self, profile: &Path) -> Result<Vec<Generation>>;

    /// Point the profile at `toplevel` (a new generation unless it already points there).
    fn set_profile(&self, profile: &Path, toplevel: &StorePath) -> Result<()>;

    /// Point the profile at its existing generation `number` (`nix-env --switch-generation`): no
    /// new generation. Refused if there is no such generation.
    fn switch_generation(&self, profile: &Path, number: u64) -> Result<()>;

    /// Delete these generations; absent ones are fine, the current one is refused.
    fn delete_generations(&self, profile: &Path, numbers: &[u64]) -> Result<()>;

    /// The toplevel a link such as `/run/current-system` points at, if it exists.
    fn read_system_link(&self, link: &Path) -> Result<Option<StorePath>>;

    /// `toplevel/bin/switch-to-configuration ACTION`, after checking it looks like a system
    /// (refused otherwise). Its output goes line by line to `on_line`. Exit 0, 4 and 100 are
    /// outcomes ([`Activated`]); any other non-zero exit is an error, and a stop signal is
    /// [`StoreError::Interrupted`].
    fn activate(
        &self,
        toplevel: &StorePath,
        action: Action,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Activated>;

    /// Run the reboot command (argument vector).
    fn reboot(&self, command: &[String]) -> Result<()>;
}
