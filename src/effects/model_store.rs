//! An in-memory store implementing the same traits as the real one, for the engine's property and
//! crash tests. It behaves like Nix where stepwise can tell: a disk of fixed capacity that runs out
//! (a realise that does not fit fails out of space and, as Nix does, removes what it wrote of the
//! output; other writes that do not fit leave a partial path taking the rest of the disk until
//! it is deleted), real `.drv` text (parsed with `crate::drv`), a reference graph,
//! substitutable paths, GC roots, profiles with generations, current/booted system links, and
//! activation. Deterministic: no clock, no randomness.
//!
//! Fault injection: every effect (anything that changes state) is counted; the N-th can fail
//! before it happens, or happen and then "crash" (report failure, and refuse every later effect
//! until [`ModelStore::revive`], as a killed process would). Clones share one state, so a test
//! keeps a handle while the engine owns another.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::drv::{self, Derivation, Hasher, Output, StoreDir, StorePath};
use crate::effects::store::{
    Action, Activated, Generation, NixImplementation, NixInfo, PathInfo, RealiseError,
    RealiseEvent, Result, Space, Store, StoreError, SubstituteInfo, System, TargetSpec,
};

/// Built outputs without a size hint take this many bytes.
pub const DEFAULT_BUILD_SIZE: u64 = 4096;

/// NAR size of a regular file with `len` bytes of contents (what Nix reports for text objects).
pub fn nar_size_of_file(len: u64) -> u64 {
    112 + len.div_ceil(8) * 8
}

/// A derivation to add with [`ModelStore::add_derivation`]: a real `.drv` is written for it, with
/// output paths computed as Nix does.
#[derive(Debug, Clone, Default)]
pub struct DrvSpec {
    pub name: String,
    /// Output name and the NAR size it will have once built (`out` if empty).
    pub outputs: Vec<(String, u64)>,
    /// Input derivations and the outputs used.
    pub input_drvs: Vec<(StorePath, Vec<String>)>,
    pub input_srcs: Vec<StorePath>,
    /// The builder's arguments (`/bin/sh` is the builder).
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Its build fails; `fail_log` is the log tail reported.
    pub fails: bool,
    pub fail_log: String,
    /// Its outputs are NixOS systems (activation accepts them).
    pub system: bool,
}

impl DrvSpec {
    pub fn new(name: &str, size: u64) -> Self {
        DrvSpec {
            name: name.to_string(),
            outputs: vec![("out".into(), size)],
            ..Default::default()
        }
    }
    pub fn input(mut self, drv: &StorePath, outputs: &[&str]) -> Self {
        self.input_drvs
            .push((drv.clone(), outputs.iter().map(|s| s.to_string()).collect()));
        self
    }
    pub fn src(mut self, path: &StorePath) -> Self {
        self.input_srcs.push(path.clone());
        self
    }
    pub fn output(mut self, name: &str, size: u64) -> Self {
        self.outputs.push((name.to_string(), size));
        self
    }
    pub fn failing(mut self, log: &str) -> Self {
        self.fails = true;
        self.fail_log = log.to_string();
        self
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
    pub fn system(mut self) -> Self {
        self.system = true;
        self
    }
}

/// What a boot-loader install (an activation with `switch` or `boot`) saw: on NixOS it writes one
/// entry per generation of the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootInstall {
    pub action: Action,
    pub toplevel: StorePath,
    /// Each profile's number of generations at that moment.
    pub generations: BTreeMap<PathBuf, usize>,
}

#[derive(Debug, Clone)]
struct Object {
    size: u64,
    references: BTreeSet<StorePath>,
    deriver: Option<StorePath>,
    contents: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
struct Substitute {
    nar_size: u64,
    download_size: Option<u64>,
    references: BTreeSet<StorePath>,
    deriver: Option<StorePath>,
}

#[derive(Debug, Clone, Default)]
struct Profile {
    generations: BTreeMap<u64, StorePath>,
    current: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct Faults {
    fail_at: Option<u64>,
    interrupt_at: Option<u64>,
    crash_after: Option<u64>,
    stop_after: Option<u64>,
    dead: bool,
}

#[derive(Debug, Clone)]
struct Model {
    capacity: u64,
    used_elsewhere: u64,
    objects: BTreeMap<StorePath, Object>,
    /// Invalid leftovers of a write (not a realise) that ran out of space: bytes on disk until
    /// deleted.
    partial: BTreeMap<StorePath, u64>,
    derivations: BTreeMap<StorePath, Derivation>,
    substitutes: BTreeMap<StorePath, Substitute>,
    build_sizes: BTreeMap<StorePath, u64>,
    /// Derivations whose builds fail → the log tail.
    failing: BTreeMap<StorePath, String>,
    systems: BTreeSet<StorePath>,
    /// Names of systems: every path whose name starts with one of these is one (the steps a
    /// run rewrites from a system are named as it is).
    system_names: BTreeSet<String>,
    /// Systems whose `switch-to-configuration` exits non-zero → (exit code, failed units).
    activation_exits: BTreeMap<StorePath, (i32, Vec<String>)>,
    /// Root links (stepwise's and the test's own) → path.
    roots: BTreeMap<PathBuf, StorePath>,
    profiles: BTreeMap<PathBuf, Profile>,
    current_system_link: PathBuf,
    booted_system_link: PathBuf,
    current_system: Option<StorePath>,
    booted_system: Option<StorePath>,
    boot_default: Option<StorePath>,
    targets: BTreeMap<String, std::result::Result<StorePath, String>>,
    activations: Vec<(Action, StorePath)>,
    boot_installs: Vec<BootInstall>,
    reboots: u64,
    effects: u64,
    faults: Faults,
}

/// The in-memory store. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct ModelStore {
    store_dir: StoreDir,
    info: NixInfo,
    inner: Arc<Mutex<Model>>,
}

fn key(t: &TargetSpec) -> String {
    serde_json::to_string(t).expect("target specs serialise")
}

impl ModelStore {
    /// An empty store at `store_dir` on a disk of `capacity` bytes, pretending to be Nix 2.8.0.
    /// The system links default to `/run/current-system` and `/run/booted-system`.
    pub fn new(store_dir: StoreDir, capacity: u64) -> Self {
        ModelStore {
            store_dir,
            info: NixInfo::new(NixImplementation::Nix, (2, 8, 0)),
            inner: Arc::new(Mutex::new(Model {
                capacity,
                used_elsewhere: 0,
                objects: BTreeMap::new(),
                partial: BTreeMap::new(),
                derivations: BTreeMap::new(),
                substitutes: BTreeMap::new(),
                build_sizes: BTreeMap::new(),
                failing: BTreeMap::new(),
                systems: BTreeSet::new(),
                system_names: BTreeSet::new(),
                activation_exits: BTreeMap::new(),
                roots: BTreeMap::new(),
                profiles: BTreeMap::new(),
                current_system_link: "/run/current-system".into(),
                booted_system_link: "/run/booted-system".into(),
                current_system: None,
                booted_system: None,
                boot_default: None,
                targets: BTreeMap::new(),
                activations: Vec::new(),
                boot_installs: Vec::new(),
                reboots: 0,
                effects: 0,
                faults: Faults::default(),
            })),
        }
    }

    pub fn with_nix_info(mut self, info: NixInfo) -> Self {
        self.info = info;
        self
    }

    fn m(&self) -> MutexGuard<'_, Model> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An independent copy of the whole state (clones share; this does not).
    pub fn deep_clone(&self) -> Self {
        let m = self.m().clone();
        ModelStore {
            store_dir: self.store_dir.clone(),
            info: self.info.clone(),
            inner: Arc::new(Mutex::new(m)),
        }
    }

    // ---- setup (not effects) ---------------------------------------------------------------

    pub fn set_system_links(&self, current: impl Into<PathBuf>, booted: impl Into<PathBuf>) {
        let mut m = self.m();
        m.current_system_link = current.into();
        m.booted_system_link = booted.into();
    }

    /// Bytes used on the disk by something else than the store (Nix's database, logs, …).
    pub fn set_used_elsewhere(&self, bytes: u64) {
        self.m().used_elsewhere = bytes;
    }

    pub fn set_capacity(&self, bytes: u64) {
        self.m().capacity = bytes;
    }

    /// Write a real derivation for `spec` (output paths computed as Nix does) and register sizes
    /// and failure for its outputs. Inputs must be known derivations. Returns the `.drv` path.
    pub fn add_derivation(&self, spec: &DrvSpec) -> StorePath {
        let outputs: Vec<(String, u64)> = if spec.outputs.is_empty() {
            vec![("out".into(), DEFAULT_BUILD_SIZE)]
        } else {
            spec.outputs.clone()
        };
        let mut d = Derivation {
            system: b"x86_64-linux".to_vec(),
            builder: b"/bin/sh".to_vec(),
            ..Default::default()
        };
        for (o, _) in &outputs {
            d.outputs.insert(
                o.clone(),
                Output {
                    path: None,
                    hash_algo: String::new(),
                    hash: String::new(),
                },
            );
        }
        for (p, outs) in &spec.input_drvs {
            d.input_drvs
                .entry(p.clone())
                .or_default()
                .extend(outs.iter().cloned());
        }
        d.input_srcs.extend(spec.input_srcs.iter().cloned());
        d.args = spec.args.iter().map(|a| a.as_bytes().to_vec()).collect();
        let mut env: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        env.insert(b"name".to_vec(), spec.name.as_bytes().to_vec());
        env.insert(b"builder".to_vec(), b"/bin/sh".to_vec());
        env.insert(b"system".to_vec(), b"x86_64-linux".to_vec());
        if outputs.len() > 1 || outputs[0].0 != "out" {
            let names: Vec<&str> = outputs.iter().map(|(o, _)| o.as_str()).collect();
            env.insert(b"outputs".to_vec(), names.join(" ").into_bytes());
        }
        for (k, v) in &spec.env {
            env.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
        }
        // As derivationStrict: output variables exist (empty) while the outputs are hashed.
        for (o, _) in &outputs {
            env.insert(o.as_bytes().to_vec(), Vec::new());
        }
        d.env = env;
        let drv_path = {
            let m = self.m();
            let mut hasher = Hasher::new(self.store_dir.clone(), &m.derivations);
            hasher
                .fill_outputs(&mut d, &spec.name)
                .unwrap_or_else(|e| panic!("model derivation {}: {e}", spec.name));
            drv::drv_path(&self.store_dir, &spec.name, &d)
        };
        let aterm = drv::to_aterm(&d, &self.store_dir);
        let refs: Vec<StorePath> = d.references().into_iter().collect();
        let mut m = self.m();
        m.insert_text(&self.store_dir, &drv_path, aterm, &refs)
            .unwrap_or_else(|e| panic!("model derivation {}: {e}", spec.name));
        for (o, size) in &outputs {
            let p = d.outputs[o].path.clone().expect("filled above");
            m.build_sizes.insert(p.clone(), *size);
            if spec.system {
                m.systems.insert(p);
            }
        }
        if spec.fails {
            m.failing.insert(drv_path.clone(), spec.fail_log.clone());
        }
        drv_path
    }

    /// The output paths of a known derivation.
    pub fn outputs_of(&self, drv: &StorePath) -> BTreeMap<String, StorePath> {
        self.m()
            .derivations
            .get(drv)
            .map(|d| {
                d.outputs
                    .iter()
                    .filter_map(|(n, o)| o.path.clone().map(|p| (n.clone(), p)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Make `path` a valid path directly (as if it had always been there).
    pub fn add_valid(&self, path: &StorePath, size: u64, references: &[StorePath]) {
        self.m().objects.insert(
            path.clone(),
            Object {
                size,
                references: references.iter().cloned().collect(),
                deriver: None,
                contents: None,
            },
        );
    }

    /// Realise `drv` now, as setup (not counted as an effect, no root).
    pub fn prebuild(&self, drv: &StorePath) -> std::result::Result<(), RealiseError> {
        let mut m = self.m();
        m.realise_drv(&self.store_dir, drv, &mut |_| {})
    }

    /// Offer the outputs of `drv` (with their sizes) from the substituter; realise its inputs'
    /// outputs the same way first if they should be substitutable too.
    pub fn make_substitutable(&self, drv: &StorePath) {
        let outs = self.outputs_of(drv);
        let mut m = self.m();
        let refs = m.build_references(&self.store_dir, drv);
        for p in outs.values() {
            let size = m.build_sizes.get(p).copied().unwrap_or(DEFAULT_BUILD_SIZE);
            m.substitutes.insert(
                p.clone(),
                Substitute {
                    nar_size: size,
                    download_size: Some(size / 2 + 1),
                    references: refs.clone(),
                    deriver: Some(drv.clone()),
                },
            );
        }
    }

    pub fn add_substitutable(&self, path: &StorePath, nar_size: u64, references: &[StorePath]) {
        self.m().substitutes.insert(
            path.clone(),
            Substitute {
                nar_size,
                download_size: Some(nar_size / 2 + 1),
                references: references.iter().cloned().collect(),
                deriver: None,
            },
        );
    }

    /// Builds of `drv` fail with this log tail (`None`: they succeed).
    pub fn set_build_fails(&self, drv: &StorePath, log: Option<&str>) {
        let mut m = self.m();
        match log {
            Some(l) => m.failing.insert(drv.clone(), l.to_string()),
            None => m.failing.remove(drv),
        };
    }

    /// The size `path` will have when built.
    pub fn set_build_size(&self, path: &StorePath, size: u64) {
        self.m().build_sizes.insert(path.clone(), size);
    }

    /// `path` is a NixOS system (has `bin/switch-to-configuration`).
    pub fn mark_system(&self, path: &StorePath) {
        self.m().systems.insert(path.clone());
    }

    /// Every path whose name starts with `prefix` is a NixOS system, whenever it is built (the
    /// steps a run rewrites from a system keep its name).
    pub fn mark_systems_named(&self, prefix: &str) {
        self.m().system_names.insert(prefix.to_string());
    }

    pub fn set_activation_fails(&self, toplevel: &StorePath, fails: bool) {
        self.set_activation_exit(toplevel, if fails { 1 } else { 0 }, &[]);
    }

    /// `toplevel`'s `switch-to-configuration` exits `code` as the real one would: 4 after
    /// switching with `failed_units` named, 100 before activating (the boot default is set),
    /// anything else non-zero before doing anything.
    pub fn set_activation_exit(&self, toplevel: &StorePath, code: i32, failed_units: &[&str]) {
        let mut m = self.m();
        if code == 0 {
            m.activation_exits.remove(toplevel);
        } else {
            let units = failed_units.iter().map(|u| u.to_string()).collect();
            m.activation_exits.insert(toplevel.clone(), (code, units));
        }
    }

    /// What `resolve_target` answers for `--flake`/`--file` targets: a `.drv`, or an evaluation
    /// error message.
    pub fn set_target(&self, target: &TargetSpec, result: std::result::Result<StorePath, String>) {
        self.m().targets.insert(key(target), result);
    }

    /// Point the current-system (and, if `booted`, the booted-system) link at `toplevel`.
    pub fn set_running_system(&self, toplevel: &StorePath, booted: bool) {
        let mut m = self.m();
        m.current_system = Some(toplevel.clone());
        m.boot_default = Some(toplevel.clone());
        if booted {
            m.booted_system = Some(toplevel.clone());
        }
    }

    /// A root link that is not stepwise's (like `/nix/var/nix/gcroots/…`).
    pub fn add_external_root(&self, link: impl Into<PathBuf>, path: &StorePath) {
        self.m().roots.insert(link.into(), path.clone());
    }

    // ---- observation --------------------------------------------------------------------------

    /// Every valid path.
    pub fn all_valid(&self) -> BTreeSet<StorePath> {
        self.m().objects.keys().cloned().collect()
    }

    pub fn used(&self) -> u64 {
        self.m().used()
    }

    /// The boot default set by `switch`/`boot` activations.
    pub fn boot_default(&self) -> Option<StorePath> {
        self.m().boot_default.clone()
    }

    pub fn activations(&self) -> Vec<(Action, StorePath)> {
        self.m().activations.clone()
    }

    /// Every boot-loader install so far, with the profiles' generation counts it saw.
    pub fn boot_installs(&self) -> Vec<BootInstall> {
        self.m().boot_installs.clone()
    }

    pub fn reboots(&self) -> u64 {
        self.m().reboots
    }

    // ---- fault injection ----------------------------------------------------------------------

    /// Effects attempted so far (including injected failures).
    pub fn effect_count(&self) -> u64 {
        self.m().effects
    }

    /// The `n`-th effect (1-based, counting from the start) fails without happening.
    /// The substituters forget everything (a boot without a network, a cache emptied): every
    /// later `substitute_infos` finds nothing.
    pub fn forget_substitutes(&self) {
        self.m().substitutes.clear();
    }

    pub fn fail_effect(&self, n: u64) {
        self.m().faults.fail_at = Some(n);
    }

    /// The `n`-th effect happens, then reports a crash; every later effect is refused until
    /// `revive` (the process died right after the effect).
    pub fn crash_after_effect(&self, n: u64) {
        self.m().faults.crash_after = Some(n);
    }

    /// The `n`-th effect is interrupted without happening, as a stop signal reaching Nix is
    /// ([`StoreError::Interrupted`]).
    pub fn interrupt_effect(&self, n: u64) {
        self.m().faults.interrupt_at = Some(n);
    }

    /// Effects after the `n`-th are refused until `revive` (the process died before them).
    pub fn stop_after(&self, n: u64) {
        self.m().faults.stop_after = Some(n);
    }

    /// Clear faults: a new process starts on the same disk.
    pub fn revive(&self) {
        self.m().faults = Faults::default();
    }

    /// Count an effect and decide: Ok(true) apply and succeed, Ok(false) apply then crash.
    fn begin_effect(&self, what: &str) -> Result<bool> {
        let mut m = self.m();
        m.effects += 1;
        let n = m.effects;
        let f = &mut m.faults;
        if f.dead {
            return Err(StoreError::Injected(format!(
                "effect {n} ({what}) after a crash"
            )));
        }
        if f.stop_after.is_some_and(|s| n > s) {
            f.dead = true;
            return Err(StoreError::Injected(format!(
                "stopped before effect {n} ({what})"
            )));
        }
        if f.fail_at == Some(n) {
            return Err(StoreError::Injected(format!("effect {n} ({what}) failed")));
        }
        if f.interrupt_at == Some(n) {
            return Err(StoreError::Interrupted {
                command: what.to_string(),
                why: format!("effect {n} stopped by an injected signal"),
            });
        }
        Ok(f.crash_after != Some(n))
    }

    /// Run an effect under fault injection.
    fn effect<T>(&self, what: &str, f: impl FnOnce(&mut Model) -> Result<T>) -> Result<T> {
        let ok = self.begin_effect(what)?;
        let r = f(&mut self.m());
        if ok {
            r
        } else {
            let mut m = self.m();
            m.faults.dead = true;
            Err(StoreError::Injected(format!(
                "crashed after effect {} ({what})",
                m.effects
            )))
        }
    }
}

impl Model {
    fn insert_text(
        &mut self,
        store_dir: &StoreDir,
        path: &StorePath,
        contents: Vec<u8>,
        refs: &[StorePath],
    ) -> Result<()> {
        if self.objects.contains_key(path) {
            return Ok(());
        }
        if let Some(r) = refs.iter().find(|r| !self.objects.contains_key(*r)) {
            return Err(StoreError::Refused(format!(
                "reference {} of {path} is not valid",
                store_dir.display(r)
            )));
        }
        let size = nar_size_of_file(contents.len() as u64);
        let parsed = if path.is_derivation() {
            drv::parse(&contents, store_dir).ok()
        } else {
            None
        };
        self.add_object(
            store_dir,
            path,
            Object {
                size,
                references: refs.iter().cloned().collect(),
                deriver: None,
                contents: Some(contents),
            },
        )
        .map_err(StoreError::OutOfSpace)?;
        if let Some(d) = parsed {
            self.derivations.insert(path.clone(), d);
        }
        Ok(())
    }

    fn used(&self) -> u64 {
        self.used_elsewhere
            + self.objects.values().map(|o| o.size).sum::<u64>()
            + self.partial.values().sum::<u64>()
    }

    fn free(&self) -> u64 {
        self.capacity.saturating_sub(self.used())
    }

    /// Add a valid path; if it does not fit, it fills the disk as a partial leftover.
    fn add_object(
        &mut self,
        store_dir: &StoreDir,
        path: &StorePath,
        obj: Object,
    ) -> std::result::Result<(), String> {
        // Like Nix, which deletes an invalid path before writing it again: what an earlier
        // attempt left of this path is room for it.
        let free = self.free() + self.partial.get(path).copied().unwrap_or(0);
        if obj.size > free {
            self.partial.insert(path.clone(), free);
            return Err(format!(
                "writing {}: No space left on device",
                store_dir.display(path)
            ));
        }
        self.partial.remove(path);
        self.objects.insert(path.clone(), obj);
        Ok(())
    }

    /// The references a built output of `drv` gets: every input output and source it names,
    /// but build tools (an input named only in `nativeBuildInputs` and the like): what a build
    /// that uses a tool without copying it leaves.
    fn build_references(&self, store_dir: &StoreDir, drv: &StorePath) -> BTreeSet<StorePath> {
        let Some(d) = self.derivations.get(drv) else {
            return BTreeSet::new();
        };
        let mut refs: BTreeSet<StorePath> = d.input_srcs.clone();
        let mentions = crate::plan::units::PathMentions::of(d, store_dir);
        for (i, outs) in &d.input_drvs {
            if let Some(id) = self.derivations.get(i) {
                for o in outs {
                    if let Some(p) = id.outputs.get(o).and_then(|o| o.path.clone()) {
                        if !mentions.only_as_build_tool(&p) {
                            refs.insert(p);
                        }
                    }
                }
            }
        }
        refs
    }

    fn deriver_of(&self, path: &StorePath) -> Option<StorePath> {
        self.derivations
            .iter()
            .find(|(_, d)| d.outputs.values().any(|o| o.path.as_ref() == Some(path)))
            .map(|(p, _)| p.clone())
    }

    fn realise_drv(
        &mut self,
        store_dir: &StoreDir,
        drv: &StorePath,
        events: &mut dyn FnMut(RealiseEvent),
    ) -> std::result::Result<(), RealiseError> {
        let d = self.derivations.get(drv).cloned().ok_or_else(|| {
            RealiseError::Other(StoreError::Refused(format!(
                "{} is not a valid derivation",
                store_dir.display(drv)
            )))
        })?;
        let missing: Vec<StorePath> = d
            .outputs
            .values()
            .filter_map(|o| o.path.clone())
            .filter(|p| !self.objects.contains_key(p))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        // Substitute when every missing output is substitutable, as Nix does.
        if missing.iter().all(|p| self.substitutes.contains_key(p)) {
            for p in &missing {
                self.ensure_valid(store_dir, p, events)?;
            }
            return Ok(());
        }
        for (i, outs) in &d.input_drvs {
            let id = self.derivations.get(i).cloned().ok_or_else(|| {
                RealiseError::Other(StoreError::Refused(format!(
                    "input {} is not a valid derivation",
                    store_dir.display(i)
                )))
            })?;
            for o in outs {
                let p = id
                    .outputs
                    .get(o)
                    .and_then(|o| o.path.clone())
                    .ok_or_else(|| {
                        RealiseError::Other(StoreError::Refused(format!("{i} has no output {o}")))
                    })?;
                self.ensure_valid(store_dir, &p, events)?;
            }
        }
        for s in &d.input_srcs {
            if !self.objects.contains_key(s) {
                return Err(RealiseError::Other(StoreError::Refused(format!(
                    "input source {} is not valid",
                    store_dir.display(s)
                ))));
            }
        }
        events(RealiseEvent::Building(drv.clone()));
        if let Some(log) = self.failing.get(drv) {
            return Err(RealiseError::BuildFailed {
                drv: drv.clone(),
                log_tail: log.clone(),
            });
        }
        let refs = self.build_references(store_dir, drv);
        for p in missing {
            let size = self
                .build_sizes
                .get(&p)
                .copied()
                .unwrap_or(DEFAULT_BUILD_SIZE);
            self.add_output(
                store_dir,
                &p,
                Object {
                    size,
                    references: refs.clone(),
                    deriver: Some(drv.clone()),
                    contents: None,
                },
            )?;
        }
        Ok(())
    }

    /// Add an output a realise builds or substitutes. When it does not fit, nothing of it stays:
    /// Nix builds in a sandbox's scratch store and unpacks a substitute after deleting the path,
    /// and removes what it wrote when the build or the copy fails.
    fn add_output(
        &mut self,
        store_dir: &StoreDir,
        path: &StorePath,
        obj: Object,
    ) -> std::result::Result<(), RealiseError> {
        self.add_object(store_dir, path, obj).map_err(|message| {
            self.partial.remove(path);
            RealiseError::OutOfSpace { message }
        })
    }

    fn ensure_valid(
        &mut self,
        store_dir: &StoreDir,
        path: &StorePath,
        events: &mut dyn FnMut(RealiseEvent),
    ) -> std::result::Result<(), RealiseError> {
        if self.objects.contains_key(path) {
            return Ok(());
        }
        if let Some(s) = self.substitutes.get(path).cloned() {
            for r in &s.references {
                if r != path {
                    self.ensure_valid(store_dir, r, events)?;
                }
            }
            events(RealiseEvent::Copying(path.clone()));
            return self.add_output(
                store_dir,
                path,
                Object {
                    size: s.nar_size,
                    references: s.references.clone(),
                    deriver: s.deriver.clone(),
                    contents: None,
                },
            );
        }
        match self.deriver_of(path) {
            Some(d) => self.realise_drv(store_dir, &d, events),
            None => Err(RealiseError::Other(StoreError::Refused(format!(
                "don't know how to build {}",
                store_dir.display(path)
            )))),
        }
    }

    fn closure_of(&self, roots: impl IntoIterator<Item = StorePath>) -> BTreeSet<StorePath> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<StorePath> = roots.into_iter().collect();
        while let Some(p) = stack.pop() {
            if !self.objects.contains_key(&p) || !seen.insert(p.clone()) {
                continue;
            }
            stack.extend(self.objects[&p].references.iter().cloned());
        }
        seen
    }

    fn live(&self) -> BTreeSet<StorePath> {
        let mut roots: Vec<StorePath> = self.roots.values().cloned().collect();
        for prof in self.profiles.values() {
            roots.extend(prof.generations.values().cloned());
        }
        roots.extend(self.current_system.iter().cloned());
        roots.extend(self.booted_system.iter().cloned());
        let mut live = self.closure_of(roots);
        // keep-derivations: the derivers of live paths are live, with their closures.
        loop {
            let derivers: Vec<StorePath> = live
                .iter()
                .filter(|p| !p.is_derivation())
                .flat_map(|p| {
                    let recorded = self.objects.get(p).and_then(|o| o.deriver.clone());
                    recorded.into_iter().chain(self.deriver_of(p))
                })
                .filter(|d| self.objects.contains_key(d) && !live.contains(d))
                .collect();
            if derivers.is_empty() {
                break;
            }
            live.extend(self.closure_of(derivers));
        }
        live
    }

    fn link_target(&self, link: &Path) -> Option<StorePath> {
        if link == self.current_system_link {
            return self.current_system.clone();
        }
        if link == self.booted_system_link {
            return self.booted_system.clone();
        }
        if let Some(p) = self.roots.get(link) {
            return Some(p.clone());
        }
        if let Some(prof) = self.profiles.get(link) {
            return prof.current.and_then(|n| prof.generations.get(&n).cloned());
        }
        for (profile, prof) in &self.profiles {
            for (n, p) in &prof.generations {
                if generation_link(profile, *n) == link {
                    return Some(p.clone());
                }
            }
        }
        None
    }
}

fn generation_link(profile: &Path, n: u64) -> PathBuf {
    crate::effects::nix::cli::generation_link(profile, n)
}

impl Store for ModelStore {
    fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    fn nix_info(&self) -> &NixInfo {
        &self.info
    }

    fn resolve_target(&self, target: &TargetSpec) -> Result<StorePath> {
        if let TargetSpec::Drv(path) = target {
            let shown = path.display().to_string();
            let p = self
                .store_dir
                .parse(&shown)
                .map_err(|e| StoreError::Target(format!("{shown}: {e}")))?;
            if !p.is_derivation() {
                return Err(StoreError::Target(format!(
                    "{shown} is not a derivation (.drv)"
                )));
            }
            if !self.m().objects.contains_key(&p) {
                return Err(StoreError::Target(format!(
                    "{shown} is not a valid path in the store"
                )));
            }
            return Ok(p);
        }
        match self.m().targets.get(&key(target)) {
            Some(Ok(p)) => Ok(p.clone()),
            Some(Err(msg)) => Err(StoreError::Target(msg.clone())),
            None => Err(StoreError::Target(format!(
                "the model store cannot evaluate {target:?}"
            ))),
        }
    }

    fn read_file(&self, path: &StorePath) -> Result<Vec<u8>> {
        self.m()
            .objects
            .get(path)
            .and_then(|o| o.contents.clone())
            .ok_or_else(|| StoreError::Io {
                path: self.store_dir.to_path(path),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a valid text file"),
            })
    }

    fn valid_paths(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>> {
        let m = self.m();
        Ok(paths
            .iter()
            .filter(|p| m.objects.contains_key(*p))
            .cloned()
            .collect())
    }

    fn path_infos(&self, paths: &[StorePath]) -> Result<BTreeMap<StorePath, PathInfo>> {
        let m = self.m();
        Ok(paths
            .iter()
            .filter_map(|p| {
                m.objects.get(p).map(|o| {
                    (
                        p.clone(),
                        PathInfo {
                            path: p.clone(),
                            nar_size: o.size,
                            references: o.references.clone(),
                            deriver: o.deriver.clone(),
                        },
                    )
                })
            })
            .collect())
    }

    fn closure(&self, roots: &[StorePath]) -> Result<BTreeSet<StorePath>> {
        let m = self.m();
        if let Some(p) = roots.iter().find(|p| !m.objects.contains_key(*p)) {
            return Err(StoreError::Refused(format!(
                "path {} is not valid",
                self.store_dir.display(p)
            )));
        }
        Ok(m.closure_of(roots.iter().cloned()))
    }

    fn substitute_infos(&self, paths: &[StorePath]) -> Result<BTreeMap<StorePath, SubstituteInfo>> {
        let m = self.m();
        Ok(paths
            .iter()
            .filter_map(|p| {
                m.substitutes.get(p).map(|s| {
                    (
                        p.clone(),
                        SubstituteInfo {
                            path: p.clone(),
                            nar_size: s.nar_size,
                            download_size: s.download_size,
                            references: s.references.clone(),
                        },
                    )
                })
            })
            .collect())
    }

    fn add_text(&self, name: &str, contents: &[u8], references: &[StorePath]) -> Result<StorePath> {
        let path = self.store_dir.text_path(name, contents, references);
        let sd = self.store_dir.clone();
        self.effect("add_text", |m| {
            m.insert_text(&sd, &path, contents.to_vec(), references)
        })?;
        Ok(path)
    }

    fn add_stub(&self, stub: &crate::plan::Stub) -> Result<StorePath> {
        use sha2::Digest;
        // What `nix-store --add` of an empty directory named `stub.name` gives.
        let h: [u8; 32] = sha2::Sha256::digest(crate::plan::mask::empty_dir_nar()).into();
        let path = self.store_dir.make_store_path("source", &h, &stub.name);
        if path != stub.path {
            return Err(StoreError::Refused(format!(
                "stub {}: the store would add {}, the plan expected {}",
                stub.name,
                self.store_dir.display(&path),
                self.store_dir.display(&stub.path)
            )));
        }
        let sd = self.store_dir.clone();
        self.effect("add_stub", |m| {
            if m.objects.contains_key(&path) {
                return Ok(());
            }
            m.add_object(
                &sd,
                &path,
                Object {
                    size: crate::plan::mask::empty_dir_nar().len() as u64,
                    references: BTreeSet::new(),
                    deriver: None,
                    contents: None,
                },
            )
            .map_err(StoreError::OutOfSpace)
        })?;
        Ok(path)
    }

    fn realise(
        &self,
        drv: &StorePath,
        gc_root: &Path,
        events: &mut dyn FnMut(RealiseEvent),
    ) -> Result<BTreeMap<String, StorePath>, RealiseError> {
        let store_dir = self.store_dir.clone();
        let mut result: std::result::Result<BTreeMap<String, StorePath>, RealiseError> =
            Ok(BTreeMap::new());
        let outer = self.effect("realise", |m| {
            result = m.realise_drv(&store_dir, drv, events).map(|()| {
                let outs: BTreeMap<String, StorePath> = m.derivations[drv]
                    .outputs
                    .iter()
                    .filter_map(|(n, o)| o.path.clone().map(|p| (n.clone(), p)))
                    .collect();
                for (n, p) in &outs {
                    let link = if n == "out" {
                        gc_root.to_path_buf()
                    } else {
                        PathBuf::from(format!("{}-{n}", gc_root.display()))
                    };
                    m.roots.insert(link, p.clone());
                }
                outs
            });
            Ok(())
        });
        outer?;
        result
    }

    fn add_root(&self, link: &Path, path: &StorePath) -> Result<()> {
        self.effect("add_root", |m| {
            if !m.objects.contains_key(path) {
                return Err(StoreError::Refused(format!(
                    "cannot root {path}: it is not a valid path"
                )));
            }
            m.roots.insert(link.to_path_buf(), path.clone());
            Ok(())
        })
    }

    fn remove_root(&self, link: &Path) -> Result<()> {
        self.effect("remove_root", |m| {
            m.roots.remove(link);
            Ok(())
        })
    }

    fn roots(&self, dir: &Path) -> Result<BTreeMap<PathBuf, StorePath>> {
        Ok(self
            .m()
            .roots
            .iter()
            .filter(|(l, _)| l.parent() == Some(dir))
            .map(|(l, p)| (l.clone(), p.clone()))
            .collect())
    }

    fn live_paths(&self) -> Result<BTreeSet<StorePath>> {
        Ok(self.m().live())
    }

    fn gc_roots(&self) -> Result<Vec<(PathBuf, StorePath)>> {
        let m = self.m();
        let mut roots: Vec<(PathBuf, StorePath)> = m
            .roots
            .iter()
            .map(|(l, p)| (l.clone(), p.clone()))
            .collect();
        for (profile, prof) in &m.profiles {
            for (n, p) in &prof.generations {
                roots.push((generation_link(profile, *n), p.clone()));
            }
        }
        roots.extend(
            m.current_system
                .iter()
                .map(|p| (m.current_system_link.clone(), p.clone())),
        );
        roots.extend(
            m.booted_system
                .iter()
                .map(|p| (m.booted_system_link.clone(), p.clone())),
        );
        Ok(roots)
    }

    fn referrers_closure(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>> {
        let m = self.m();
        let mut found: BTreeSet<StorePath> = paths
            .iter()
            .filter(|p| m.objects.contains_key(*p))
            .cloned()
            .collect();
        loop {
            let more: Vec<StorePath> = m
                .objects
                .iter()
                .filter(|(r, o)| {
                    !found.contains(*r) && o.references.iter().any(|x| found.contains(x))
                })
                .map(|(r, _)| r.clone())
                .collect();
            if more.is_empty() {
                return Ok(found);
            }
            found.extend(more);
        }
    }

    fn delete(&self, paths: &[StorePath]) -> Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let sd = self.store_dir.clone();
        self.effect("delete", |m| {
            let set: BTreeSet<&StorePath> = paths.iter().collect();
            let live = m.live();
            if let Some(p) = paths.iter().find(|p| live.contains(*p)) {
                return Err(StoreError::Refused(format!(
                    "{} is live (reachable from a GC root); stepwise never deletes live paths",
                    sd.display(p)
                )));
            }
            for (r, o) in &m.objects {
                if !set.contains(r) && o.references.iter().any(|x| set.contains(x)) {
                    return Err(StoreError::Refused(format!(
                        "{} still refers to a path being deleted; delete it too or keep them",
                        sd.display(r)
                    )));
                }
            }
            for p in paths {
                m.objects.remove(p);
                m.partial.remove(p);
                m.derivations.remove(p);
            }
            Ok(())
        })
    }

    fn space(&self) -> Result<Space> {
        let m = self.m();
        Ok(Space {
            total: m.capacity,
            free: m.free(),
        })
    }
}

impl System for ModelStore {
    fn generations(&self, profile: &Path) -> Result<Vec<Generation>> {
        let m = self.m();
        Ok(m.profiles
            .get(profile)
            .map(|prof| {
                prof.generations
                    .iter()
                    .map(|(n, p)| Generation {
                        number: *n,
                        toplevel: p.clone(),
                        link: generation_link(profile, *n),
                        current: prof.current == Some(*n),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    fn set_profile(&self, profile: &Path, toplevel: &StorePath) -> Result<()> {
        self.effect("set_profile", |m| {
            if !m.objects.contains_key(toplevel) {
                return Err(StoreError::Refused(format!(
                    "{toplevel} is not a valid path"
                )));
            }
            let prof = m.profiles.entry(profile.to_path_buf()).or_default();
            let current = prof.current.and_then(|n| prof.generations.get(&n));
            if current == Some(toplevel) {
                return Ok(());
            }
            let n = prof.generations.keys().next_back().map_or(1, |n| n + 1);
            prof.generations.insert(n, toplevel.clone());
            prof.current = Some(n);
            Ok(())
        })
    }

    fn switch_generation(&self, profile: &Path, number: u64) -> Result<()> {
        self.effect("switch_generation", |m| {
            let prof = m.profiles.get_mut(profile);
            match prof {
                Some(prof) if prof.generations.contains_key(&number) => {
                    prof.current = Some(number);
                    Ok(())
                }
                _ => Err(StoreError::Refused(format!(
                    "{} has no generation {number}",
                    profile.display()
                ))),
            }
        })
    }

    fn delete_generations(&self, profile: &Path, numbers: &[u64]) -> Result<()> {
        if numbers.is_empty() {
            return Ok(());
        }
        self.effect("delete_generations", |m| {
            let Some(prof) = m.profiles.get_mut(profile) else {
                return Ok(());
            };
            if let Some(c) = prof.current.filter(|c| numbers.contains(c)) {
                return Err(StoreError::Refused(format!(
                    "generation {c} is the current one of {}",
                    profile.display()
                )));
            }
            for n in numbers {
                prof.generations.remove(n);
            }
            Ok(())
        })
    }

    fn read_system_link(&self, link: &Path) -> Result<Option<StorePath>> {
        Ok(self.m().link_target(link))
    }

    fn activate(
        &self,
        toplevel: &StorePath,
        action: Action,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Activated> {
        let sd = self.store_dir.clone();
        let activated = self.effect("activate", |m| {
            let named = m
                .system_names
                .iter()
                .any(|n| toplevel.name().starts_with(n.as_str()));
            if !m.objects.contains_key(toplevel) || !(named || m.systems.contains(toplevel)) {
                return Err(StoreError::Refused(format!(
                    "{} does not look like a NixOS system: no executable bin/switch-to-configuration",
                    sd.display(toplevel)
                )));
            }
            let (code, units) = m
                .activation_exits
                .get(toplevel)
                .cloned()
                .unwrap_or((0, vec![]));
            if ![0, 4, 100].contains(&code) {
                return Err(StoreError::Command {
                    command: format!(
                        "{}/bin/switch-to-configuration {}",
                        sd.display(toplevel),
                        action.as_str()
                    ),
                    status: format!("exit status: {code}"),
                    stderr_tail: "the model's activation fails".into(),
                });
            }
            m.activations.push((action, toplevel.clone()));
            if matches!(action, Action::Switch | Action::Boot) {
                m.boot_default = Some(toplevel.clone());
                let generations = m
                    .profiles
                    .iter()
                    .map(|(p, prof)| (p.clone(), prof.generations.len()))
                    .collect();
                m.boot_installs.push(BootInstall {
                    action,
                    toplevel: toplevel.clone(),
                    generations,
                });
            }
            if action == Action::Boot {
                return Ok(Activated::Done);
            }
            if code == 100 {
                return Ok(Activated::RebootRequired);
            }
            m.current_system = Some(toplevel.clone());
            Ok(match code {
                4 => Activated::UnitsFailed(units),
                _ => Activated::Done,
            })
        })?;
        if let Activated::UnitsFailed(units) = &activated {
            on_line(&format!(
                "warning: the following units failed: {}",
                units.join(", ")
            ));
        }
        Ok(activated)
    }

    fn reboot(&self, command: &[String]) -> Result<()> {
        if command.is_empty() {
            return Err(StoreError::Refused("empty reboot command".into()));
        }
        self.effect("reboot", |m| {
            m.reboots += 1;
            if let Some(b) = m.boot_default.clone() {
                m.current_system = Some(b.clone());
                m.booted_system = Some(b);
            } else {
                m.booted_system = m.current_system.clone();
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(cap: u64) -> ModelStore {
        ModelStore::new(StoreDir::new("/nix/store").unwrap(), cap)
    }

    #[test]
    fn derivations_have_the_paths_nix_computes() {
        // The same derivation Nix 2.8 instantiates from
        // derivation { name = "a-1.0"; system = "x86_64-linux"; builder = "/bin/sh"; }
        // has these paths (computed independently by `crate::drv`, checked against Nix there).
        let s = store(1 << 30);
        let d = s.add_derivation(&DrvSpec::new("a-1.0", 100));
        let text = s.read_file(&d).unwrap();
        let parsed = drv::parse(&text, s.store_dir()).unwrap();
        assert_eq!(drv::drv_path(s.store_dir(), "a-1.0", &parsed), d);
        let out = &s.outputs_of(&d)["out"];
        assert_eq!(
            parsed.env_get("out"),
            Some(s.store_dir().display(out).as_bytes())
        );
    }

    #[test]
    fn effects_are_counted_and_faults_injected() {
        let s = store(1 << 30);
        let a = s.add_derivation(&DrvSpec::new("a-1.0", 100));
        let a_out = s.outputs_of(&a)["out"].clone();
        s.prebuild(&a).unwrap();
        assert_eq!(s.effect_count(), 0, "setup is not an effect");

        s.fail_effect(2);
        s.add_root(Path::new("/r/1"), &a_out).unwrap();
        let e = s.add_root(Path::new("/r/2"), &a_out).unwrap_err();
        assert!(matches!(e, StoreError::Injected(_)), "{e}");
        assert!(
            s.roots(Path::new("/r")).unwrap().len() == 1,
            "failed effect did not happen"
        );
        s.add_root(Path::new("/r/3"), &a_out).unwrap();
        assert_eq!(s.effect_count(), 3);

        s.revive();
        s.crash_after_effect(4);
        let e = s.remove_root(Path::new("/r/1")).unwrap_err();
        assert!(matches!(e, StoreError::Injected(_)));
        assert!(
            !s.roots(Path::new("/r"))
                .unwrap()
                .contains_key(Path::new("/r/1")),
            "a crash after the effect leaves it done"
        );
        // Dead until revived.
        assert!(s.remove_root(Path::new("/r/3")).is_err());
        assert!(s
            .roots(Path::new("/r"))
            .unwrap()
            .contains_key(Path::new("/r/3")));
        s.revive();
        s.remove_root(Path::new("/r/3")).unwrap();

        s.stop_after(6);
        assert!(s.add_root(Path::new("/r/4"), &a_out).is_err());
        assert!(s.roots(Path::new("/r")).unwrap().is_empty());
    }

    #[test]
    fn capacity_runs_out_like_a_disk() {
        let s = store(10_000);
        let big = s.add_derivation(&DrvSpec::new("big-1.0", 50_000));
        let used_before = s.used();
        let e = s
            .realise(&big, Path::new("/r/big"), &mut |_| {})
            .unwrap_err();
        assert!(matches!(e, RealiseError::OutOfSpace { .. }), "{e}");
        assert_eq!(
            s.used(),
            used_before,
            "a failed realise removes what it wrote, as Nix does"
        );
        let out = s.outputs_of(&big)["out"].clone();
        assert!(s
            .valid_paths(std::slice::from_ref(&out))
            .unwrap()
            .is_empty());
        s.delete(std::slice::from_ref(&out)).unwrap();
        assert_eq!(s.used(), used_before);
    }

    #[test]
    fn a_substitute_that_does_not_fit_leaves_nothing() {
        let s = store(10_000);
        let big = s.add_derivation(&DrvSpec::new("big-1.0", 50_000));
        let out = s.outputs_of(&big)["out"].clone();
        s.add_substitutable(&out, 50_000, &[]);
        let used_before = s.used();
        let e = s
            .realise(&big, Path::new("/r/big"), &mut |_| {})
            .unwrap_err();
        assert!(matches!(e, RealiseError::OutOfSpace { .. }), "{e}");
        assert_eq!(s.used(), used_before);
    }

    #[test]
    fn reboot_boots_the_boot_default() {
        let s = store(1 << 30);
        let t = s.add_derivation(&DrvSpec::new("nixos-system-x-1", 100).system());
        let t2 = s.add_derivation(&DrvSpec::new("nixos-system-x-2", 100).system());
        s.prebuild(&t).unwrap();
        s.prebuild(&t2).unwrap();
        let (o1, o2) = (
            s.outputs_of(&t)["out"].clone(),
            s.outputs_of(&t2)["out"].clone(),
        );
        s.set_running_system(&o1, true);
        s.activate(&o2, Action::Boot, &mut |_| {}).unwrap();
        let cur = s
            .read_system_link(Path::new("/run/current-system"))
            .unwrap();
        assert_eq!(cur, Some(o1.clone()));
        s.reboot(&["reboot".into()]).unwrap();
        assert_eq!(
            s.read_system_link(Path::new("/run/booted-system")).unwrap(),
            Some(o2.clone())
        );
        assert_eq!(
            s.read_system_link(Path::new("/run/current-system"))
                .unwrap(),
            Some(o2)
        );
    }
}
