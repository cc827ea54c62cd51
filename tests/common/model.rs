//! A NixOS-shaped system on the in-memory model store, revised again and again as hourly nixpkgs
//! bumps revise a real one: each revision gives some packages a new version (and size), and a new
//! toplevel over a `system-path` and a unit file. The revisions' derivations are made when asked
//! for, so a year of them costs only what the runs keep. Used by the activation tests and the
//! model soak; the engine is driven through its API (`stepwise::engine::{upgrade, resume, …}`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use stepwise::drv::{StoreDir, StorePath};
use stepwise::effects::journal::{
    Action, OnFailure, RebootPolicy, RebootWindow, RunOptions, Strategy, Target,
};
use stepwise::effects::model_store::{DrvSpec, ModelStore};
use stepwise::effects::{Store, System};
use stepwise::engine::plan_inputs::SystemLinks;
use stepwise::engine::{ContinueRequest, Seams, UpgradeRequest};

pub const KIB: u64 = 1024;
pub const PROFILE: &str = "/nix/var/nix/profiles/system";
pub const CURRENT: &str = "/run/current-system";
pub const BOOTED: &str = "/run/booted-system";
/// Where no directory can be made: a model run that reached for the real filesystem fails.
pub const ROOTS: &str = "/dev/null/stepwise-roots";

/// The system's packages and their revisions.
pub struct Series {
    pub store: ModelStore,
    /// Per package: its version (bumped by revisions) and its size in bytes at that version.
    versions: Vec<(u32, u64)>,
    /// Package derivations already made, by (package, version).
    made: BTreeMap<(usize, u32), StorePath>,
    pub revision: u32,
}

impl Series {
    /// Revision 0 of a system of packages of `sizes` KiB, installed and running (booted before the
    /// model knew: no booted-system link until its first reboot), on a
    /// disk of `capacity` bytes.
    pub fn new(sizes: &[u64], capacity: u64) -> Series {
        let store = ModelStore::new(StoreDir::new("/nix/store").unwrap(), capacity);
        store.set_system_links(CURRENT, BOOTED);
        store.mark_systems_named("nixos-system-model-");
        let mut s = Series {
            store,
            versions: sizes.iter().map(|k| (0, k * KIB)).collect(),
            made: BTreeMap::new(),
            revision: 0,
        };
        let drv = s.toplevel_drv();
        s.store.prebuild(&drv).unwrap();
        let out = s.out(&drv);
        s.store.set_profile(Path::new(PROFILE), &out).unwrap();
        s.store.set_running_system(&out, false);
        s
    }

    pub fn packages(&self) -> usize {
        self.versions.len()
    }

    /// The largest package's size now, in bytes.
    pub fn largest(&self) -> u64 {
        self.versions.iter().map(|v| v.1).max().unwrap_or(0)
    }

    /// The sum of the packages' sizes now, in bytes.
    pub fn total(&self) -> u64 {
        self.versions.iter().map(|v| v.1).sum()
    }

    /// The next revision: each package `i` in `bumps` gets a new version of `size(i, old)`
    /// bytes. Returns the new toplevel's `.drv`.
    pub fn revise(&mut self, bumps: &[usize], size: impl Fn(usize, u64) -> u64) -> StorePath {
        self.revision += 1;
        for &i in bumps {
            let (v, s) = self.versions[i];
            self.versions[i] = (v + 1, size(i, s).max(KIB));
        }
        self.toplevel_drv()
    }

    /// Build the current versions of packages `which` without rooting them: what a plain upgrade
    /// cut short leaves behind.
    pub fn leave_unrooted(&mut self, which: &[usize]) {
        for &i in which {
            let d = self.package(i);
            self.store.prebuild(&d).unwrap();
        }
    }

    /// Evaluate the current revision again (as the hourly timer does): its `.drv`s are written
    /// again where a GC deleted them. Returns the toplevel's `.drv`.
    pub fn evaluate(&mut self) -> StorePath {
        self.toplevel_drv()
    }

    /// The output of the package named `pname-version` in the store.
    pub fn output_named(&self, name: &str) -> StorePath {
        self.store
            .all_valid()
            .into_iter()
            .find(|p| !p.is_derivation() && p.name() == name)
            .unwrap_or_else(|| panic!("no {name} in the store"))
    }

    /// The toplevel's output path.
    pub fn out(&self, drv: &StorePath) -> StorePath {
        self.store.outputs_of(drv)["out"].clone()
    }

    fn package(&mut self, i: usize) -> StorePath {
        let (v, size) = self.versions[i];
        // Evaluating again writes a `.drv` a GC deleted meanwhile, as Nix does.
        if let Some(d) = self.made.get(&(i, v)) {
            if self
                .store
                .valid_paths(std::slice::from_ref(d))
                .unwrap()
                .is_empty()
            {
                self.store
                    .add_derivation(&DrvSpec::new(&format!("pkg{i}-{v}.0"), size));
            }
            return d.clone();
        }
        let d = self
            .store
            .add_derivation(&DrvSpec::new(&format!("pkg{i}-{v}.0"), size));
        self.store.make_substitutable(&d);
        self.made.insert((i, v), d.clone());
        d
    }

    fn toplevel_drv(&mut self) -> StorePath {
        let pkgs: Vec<StorePath> = (0..self.packages()).map(|i| self.package(i)).collect();
        let ms = &self.store;
        let mut sp = DrvSpec::new("system-path", 2 * KIB).env("preferLocalBuild", "1");
        for p in &pkgs {
            let out = ms.outputs_of(p)["out"].clone();
            sp = sp.input(p, &["out"]).arg(&format!("/nix/store/{out}"));
        }
        let sp = ms.add_derivation(&sp);
        let unit = DrvSpec::new("unit-pkg0.service", KIB)
            .env("preferLocalBuild", "1")
            .input(&pkgs[0], &["out"])
            .env(
                "text",
                &format!(
                    "ExecStart=/nix/store/{}/bin/pkg0",
                    ms.outputs_of(&pkgs[0])["out"]
                ),
            );
        let unit = ms.add_derivation(&unit);
        let top = DrvSpec::new(&format!("nixos-system-model-r{}", self.revision), 4 * KIB)
            .env("preferLocalBuild", "1")
            .input(&sp, &["out"])
            .input(&unit, &["out"])
            .system();
        ms.add_derivation(&top)
    }
}

/// What the module's timer asks for: `upgrade --target DRV` with the given policies.
pub fn request(target_drv: &StorePath, journal: &Path) -> UpgradeRequest {
    UpgradeRequest {
        target: Target::Drv {
            path: PathBuf::from(format!("/nix/store/{target_drv}")),
        },
        target_drv: target_drv.clone(),
        links: SystemLinks {
            profile: PROFILE.into(),
            current_system: CURRENT.into(),
            booted_system: BOOTED.into(),
        },
        action: Action::Switch,
        strategy: Strategy::Auto,
        on_failure: OnFailure::Unwind,
        reboot: RebootPolicy::WhenNeeded,
        reboot_command: vec!["reboot".into()],
        non_vital: vec![],
        together: vec![],
        reserve: Some(0),
        reboot_window: None::<RebootWindow>,
        boot_dir: None,
        roots_dir: ROOTS.into(),
        probe_dir: "/dev/null/stepwise-probe".into(),
        journal: journal.to_path_buf(),
        legacy_masks: None,
        options: RunOptions::default(),
    }
}

pub fn continue_req(accept_failed_units: bool) -> ContinueRequest {
    ContinueRequest {
        roots_dir: ROOTS.into(),
        legacy_masks: None,
        accept_failed_units,
    }
}

/// A clock that says what the test wants (minutes after midnight).
pub struct FixedClock(pub std::cell::Cell<u16>);

impl stepwise::engine::Clock for FixedClock {
    fn local_minute(&self) -> u16 {
        self.0.get()
    }
}

pub fn seams<'a>(ms: &'a ModelStore, stop: &'a AtomicBool, clock: &'a FixedClock) -> Seams<'a> {
    Seams {
        store: ms,
        system: ms,
        clock,
        stop,
        reserve: None,
        progress: Box::new(|_| {}),
        checkpoint: None,
    }
}

/// The profile's current generation and the current-system link.
pub fn at(ms: &ModelStore) -> (StorePath, StorePath) {
    let current = ms.read_system_link(Path::new(CURRENT)).unwrap().unwrap();
    let profile = ms
        .generations(Path::new(PROFILE))
        .unwrap()
        .into_iter()
        .find(|g| g.current)
        .unwrap()
        .toplevel;
    (profile, current)
}

/// The invariant at every instant: the profile, current-system and booted-system name
/// complete systems, and every live path is valid (nothing live was deleted).
pub fn check_system(ms: &ModelStore) -> Result<(), String> {
    let valid = ms.all_valid();
    let profile = ms
        .generations(Path::new(PROFILE))
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|g| g.current)
        .ok_or("no current generation")?
        .toplevel;
    let mut links = vec![("profile", profile)];
    for (what, link) in [("current-system", CURRENT), ("booted-system", BOOTED)] {
        if let Some(p) = ms
            .read_system_link(Path::new(link))
            .map_err(|e| e.to_string())?
        {
            links.push((what, p));
        }
    }
    for (what, p) in &links {
        let closure = ms
            .closure(std::slice::from_ref(p))
            .map_err(|e| format!("{what} → {p}: {e}"))?;
        if let Some(m) = closure.iter().find(|q| !valid.contains(*q)) {
            return Err(format!("{what} → {p} is incomplete: {m} missing"));
        }
    }
    for p in ms.live_paths().map_err(|e| e.to_string())? {
        if !valid.contains(&p) {
            return Err(format!("live path {p} is not valid"));
        }
    }
    Ok(())
}

/// What `nix-store --gc` does: delete every valid path nothing live needs.
pub fn gc(ms: &ModelStore) {
    let live = ms.live_paths().unwrap();
    let dead: Vec<StorePath> = ms
        .all_valid()
        .into_iter()
        .filter(|p| !live.contains(p))
        .collect();
    if !dead.is_empty() {
        ms.delete(&dead).unwrap();
    }
}

/// Bytes of valid paths that are not derivations (the plan does not count `.drv` text).
pub fn outputs_bytes(ms: &ModelStore) -> u64 {
    let paths: Vec<StorePath> = ms
        .all_valid()
        .into_iter()
        .filter(|p| !p.is_derivation())
        .collect();
    ms.path_infos(&paths)
        .unwrap()
        .values()
        .map(|i| i.nar_size)
        .sum()
}

/// What a step's move leaves behind, collected: every generation of `profile` but the current
/// one dropped, then every path nothing live needs deleted.
pub fn collect_all_but_current(ms: &ModelStore, profile: &std::path::Path) {
    let old: Vec<u64> = ms
        .generations(profile)
        .unwrap()
        .iter()
        .filter(|g| !g.current)
        .map(|g| g.number)
        .collect();
    ms.delete_generations(profile, &old).unwrap();
    gc(ms);
}
