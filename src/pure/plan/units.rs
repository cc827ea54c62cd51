//! Glue, the target's derivation graph down to the glue boundary, and upgrade units matched
//! between G0 and the target.
//!
//! **Target side.** From the toplevel `.drv`, walk through glue derivations only. Every non-glue
//! output a glue derivation takes as input (`inputDrvs`) is a unit output; the outputs of one
//! derivation form one unit.
//!
//! **G0 side.** G0 is a toplevel output path, and its `.drv` graph may be gone. Its closure (path
//! infos: references, deriver) is walked from the toplevel through glue outputs only. A path is
//! glue when its deriver `.drv` is readable and glue by attributes; when the deriver is not
//! readable, when its name (pname) is the name of one of the target's glue derivations (NixOS
//! glue keeps its names across generations: `etc`, `system-path`, `unit-*.service`, …); the
//! toplevel always is. Every other path a G0 glue path references is a G0 unit output, named
//! from its deriver's name (which tells the output) or, without a deriver, from its own name.
//!
//! **Matching** is by pname and output. Units whose outputs are all the same paths on both sides
//! are unchanged. When several units share a pname on a side, the unchanged ones pair first and
//! the rest pair by version order; such a set moves as one job and the plan says so.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::names::{compare_versions, name_shape, parse_drv_name, PackageName};
use crate::drv::store_path::{HASH_BYTES, HASH_CHARS};
use crate::drv::{nix32, Derivation, DrvSource, StoreDir, StorePath};

/// Glue: cheap to build locally, never substituted. `preferLocalBuild = "1"` or
/// `allowSubstitutes = ""` (what `true`/`false` become in the environment), or the same keys in
/// `__json` (structured attributes).
pub fn is_glue(drv: &Derivation) -> bool {
    if drv.env_get("preferLocalBuild") == Some(b"1") || drv.env_get("allowSubstitutes") == Some(b"")
    {
        return true;
    }
    if let Some(json) = drv.env_get("__json") {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) {
            return v.get("preferLocalBuild") == Some(&serde_json::Value::Bool(true))
                || v.get("allowSubstitutes") == Some(&serde_json::Value::Bool(false));
        }
    }
    false
}

/// Environment variables (and `__json` keys) that only name build tools: what stdenv puts in
/// the build's PATH, not what the output is made of.
const BUILD_TOOL_KEYS: [&str; 5] = [
    "nativeBuildInputs",
    "depsBuildBuild",
    "stdenv",
    "propagatedNativeBuildInputs",
    "SHELL",
];

/// Where one derivation names store paths: where only build tools go (the builder,
/// [`BUILD_TOOL_KEYS`]) and where an output could keep them (arguments, any other variable or
/// `__json` key). One scan of the derivation, then a lookup per input: scanning it again for each
/// input made the planner quadratic in system-path's inputs (68 s at 100,000 paths).
#[derive(Debug, Default)]
pub struct PathMentions {
    tool: HashSet<[u8; HASH_BYTES]>,
    kept: HashSet<[u8; HASH_BYTES]>,
}

impl PathMentions {
    pub fn of(drv: &Derivation, store_dir: &StoreDir) -> Self {
        let mut m = PathMentions::default();
        let prefix = format!("{}/", store_dir.as_str());
        let scan = |set: &mut HashSet<_>, v: &[u8]| set.extend(hashes_after(v, prefix.as_bytes()));
        scan(&mut m.tool, &drv.builder);
        for a in &drv.args {
            scan(&mut m.kept, a);
        }
        for (k, v) in &drv.env {
            if k.as_slice() == b"__json" {
                let Ok(serde_json::Value::Object(json)) = serde_json::from_slice(v) else {
                    scan(&mut m.kept, v);
                    continue;
                };
                for (k, v) in json {
                    let set = if BUILD_TOOL_KEYS.contains(&k.as_str()) {
                        &mut m.tool
                    } else {
                        &mut m.kept
                    };
                    scan(set, v.to_string().as_bytes());
                }
            } else if BUILD_TOOL_KEYS.iter().any(|b| b.as_bytes() == k.as_slice()) {
                scan(&mut m.tool, v);
            } else {
                scan(&mut m.kept, v);
            }
        }
        m
    }

    /// Whether `path` is named, and named only as a build tool (see
    /// [`TargetGraph::build_only_outputs`]).
    pub fn only_as_build_tool(&self, path: &StorePath) -> bool {
        let h = path.hash_bytes();
        self.tool.contains(h) && !self.kept.contains(h)
    }
}

/// The hash parts of the store paths `text` names: each `prefix` (the store directory and a
/// slash) followed by 32 nix32 characters and a dash.
fn hashes_after<'a>(
    text: &'a [u8],
    prefix: &'a [u8],
) -> impl Iterator<Item = [u8; HASH_BYTES]> + 'a {
    let len = prefix.len() + HASH_CHARS + 1;
    (0..text.len().saturating_sub(len - 1)).filter_map(move |i| {
        let w = &text[i..i + len];
        if !w.starts_with(prefix) || w[len - 1] != b'-' {
            return None;
        }
        let hash = std::str::from_utf8(&w[prefix.len()..len - 1]).ok()?;
        nix32::decode(hash, HASH_BYTES).ok()?.try_into().ok()
    })
}

#[derive(Debug, Error)]
pub enum UnitsError {
    #[error("cannot read derivation {path}: {why}")]
    Read { path: String, why: String },
    #[error("derivation {drv} uses output {output:?} of {input}, which has no such output or no path for it (content-addressed derivations are not supported)")]
    Output {
        drv: String,
        input: String,
        output: String,
    },
}

/// The target's derivations down to the glue boundary.
#[derive(Debug, Clone)]
pub struct TargetGraph {
    pub store_dir: StoreDir,
    /// The toplevel `.drv`.
    pub root: StorePath,
    /// Glue derivations reachable from the root through glue, and the non-glue derivations they
    /// take as inputs.
    pub drvs: BTreeMap<StorePath, Derivation>,
    /// Which of `drvs` are glue (the root always is), the local ones included.
    pub glue: BTreeSet<StorePath>,
    /// Glue by the substituters rather than by attributes: non-glue derivations between the
    /// toplevel and the packages that no substituter has (the initrd, modules-shrunk,
    /// etc-metadata, `system.checks`). They are built locally for every generation, so they are
    /// rewritten under each step's mask like glue: a package they read follows the mask.
    pub local: BTreeSet<StorePath>,
}

/// Which output paths some substituter has (a narinfo): how configuration-specific derivations
/// that are not glue by their attributes are told from packages.
pub trait Substitutable {
    fn substitutable(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>, String>;
}

/// A derivation that may be local: it reads other derivations' outputs (a package built from
/// sources only, e.g. a fixture's, is a package whatever the cache says) and is not
/// fixed-output (a fetch).
fn may_be_local(drv: &Derivation) -> bool {
    !drv.input_drvs.is_empty() && drv.outputs.values().all(|o| o.hash_algo.is_empty())
}

impl TargetGraph {
    /// Read the graph through `source` (the store, or a map in tests), glue by attributes only.
    pub fn read(
        store_dir: StoreDir,
        root: StorePath,
        source: &dyn DrvSource,
    ) -> Result<TargetGraph, UnitsError> {
        Self::read_with(store_dir, root, source, None)
    }

    /// Read the graph; with `substituters`, a derivation that reads other derivations and whose
    /// outputs no substituter has is walked through as local glue. Level by level, so the
    /// substituters are asked once per level.
    pub fn read_with(
        store_dir: StoreDir,
        root: StorePath,
        source: &dyn DrvSource,
        substituters: Option<&dyn Substitutable>,
    ) -> Result<TargetGraph, UnitsError> {
        let read = |p: &StorePath| {
            source.read(p).map_err(|e| UnitsError::Read {
                path: store_dir.display(p),
                why: e.to_string(),
            })
        };
        let mut drvs = BTreeMap::new();
        let mut glue = BTreeSet::new();
        let mut local = BTreeSet::new();
        let mut level = vec![root.clone()];
        drvs.insert(root.clone(), read(&root)?);
        glue.insert(root.clone());
        while !level.is_empty() {
            let mut candidates = Vec::new();
            let mut next = Vec::new();
            for d in &level {
                let inputs: Vec<StorePath> = drvs[d].input_drvs.keys().cloned().collect();
                for i in inputs {
                    if drvs.contains_key(&i) {
                        continue;
                    }
                    let drv = read(&i)?;
                    if is_glue(&drv) {
                        glue.insert(i.clone());
                        next.push(i.clone());
                    } else if substituters.is_some() && may_be_local(&drv) {
                        candidates.push(i.clone());
                    }
                    drvs.insert(i, drv);
                }
            }
            if let (Some(subs), false) = (substituters, candidates.is_empty()) {
                let outs: Vec<StorePath> = candidates
                    .iter()
                    .flat_map(|c| drvs[c].outputs.values().filter_map(|o| o.path.clone()))
                    .collect();
                let have = subs.substitutable(&outs).map_err(|why| UnitsError::Read {
                    path: store_dir.display(&root),
                    why: format!("asking the substituters: {why}"),
                })?;
                for c in candidates {
                    let all_there = drvs[&c]
                        .outputs
                        .values()
                        .filter_map(|o| o.path.as_ref())
                        .all(|p| have.contains(p));
                    if !all_there {
                        glue.insert(c.clone());
                        local.insert(c.clone());
                        next.push(c);
                    }
                }
            }
            level = next;
        }
        let g = TargetGraph {
            store_dir,
            root,
            drvs,
            glue,
            local,
        };
        g.check_outputs()?;
        Ok(g)
    }

    fn check_outputs(&self) -> Result<(), UnitsError> {
        for d in &self.glue {
            for (i, outs) in &self.drvs[d].input_drvs {
                for o in outs {
                    if self.drvs[i]
                        .outputs
                        .get(o)
                        .and_then(|x| x.path.as_ref())
                        .is_none()
                    {
                        return Err(UnitsError::Output {
                            drv: self.store_dir.display(d),
                            input: self.store_dir.display(i),
                            output: o.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Output path `o` of `drv` (checked to exist at read time for glue inputs).
    pub fn output_path(&self, drv: &StorePath, o: &str) -> Option<&StorePath> {
        self.drvs.get(drv)?.outputs.get(o)?.path.as_ref()
    }

    /// The toplevel's `out` path.
    pub fn root_out(&self) -> Option<&StorePath> {
        self.output_path(&self.root, "out")
    }

    /// Output paths of every glue derivation (what each step builds locally).
    pub fn glue_outputs(&self) -> BTreeSet<StorePath> {
        self.glue
            .iter()
            .flat_map(|d| self.drvs[d].outputs.values().filter_map(|o| o.path.clone()))
            .collect()
    }

    /// pnames of the glue derivations: how G0's glue is recognised without its derivers.
    pub fn glue_pnames(&self) -> BTreeSet<String> {
        Self::pnames(&self.glue)
    }

    /// Name shapes ([`name_shape`]) of the local derivations: G0's outputs of these shapes are
    /// its own local builds (glue), whatever their derivers' attributes say. Shapes, not pnames:
    /// `linux-6.6.1-modules-shrunk`'s pname is the kernel's, `linux`.
    pub fn local_shapes(&self) -> BTreeSet<String> {
        self.local
            .iter()
            .filter_map(|d| d.derivation_name())
            .map(name_shape)
            .collect()
    }

    fn pnames(drvs: &BTreeSet<StorePath>) -> BTreeSet<String> {
        drvs.iter()
            .filter_map(|d| d.derivation_name())
            .map(|n| parse_drv_name(n).0.to_string())
            .collect()
    }

    /// Unit outputs only needed to build the glue: every glue derivation that takes one names
    /// it only where build tools go (`nativeBuildInputs`, `depsBuildBuild`, `stdenv`, the
    /// builder), never where an output could keep it (other variables, arguments). A path
    /// named nowhere counts as kept: an output can still reference it (a closure copied whole).
    pub fn build_only_outputs(&self) -> BTreeSet<StorePath> {
        let mut runtime: BTreeSet<StorePath> = BTreeSet::new();
        let mut seen: BTreeSet<StorePath> = BTreeSet::new();
        for d in &self.glue {
            let drv = &self.drvs[d];
            let mentions = PathMentions::of(drv, &self.store_dir);
            for (i, outs) in &drv.input_drvs {
                if self.glue.contains(i) {
                    continue;
                }
                for o in outs {
                    let Some(p) = self.output_path(i, o) else {
                        continue;
                    };
                    seen.insert(p.clone());
                    if !mentions.only_as_build_tool(p) {
                        runtime.insert(p.clone());
                    }
                }
            }
        }
        seen.retain(|p| !runtime.contains(p));
        seen
    }

    /// Unit outputs: non-glue derivation → output → path, as referenced by glue.
    pub fn unit_outputs(&self) -> BTreeMap<StorePath, BTreeMap<String, StorePath>> {
        let mut res: BTreeMap<StorePath, BTreeMap<String, StorePath>> = BTreeMap::new();
        for d in &self.glue {
            for (i, outs) in &self.drvs[d].input_drvs {
                if self.glue.contains(i) {
                    continue;
                }
                for o in outs {
                    if let Some(p) = self.output_path(i, o) {
                        res.entry(i.clone())
                            .or_default()
                            .insert(o.clone(), p.clone());
                    }
                }
            }
        }
        res
    }

    /// Glue derivations in dependency order (inputs first, the root last).
    pub fn glue_bottom_up(&self) -> Vec<StorePath> {
        let mut order = Vec::with_capacity(self.glue.len());
        let mut state: BTreeMap<&StorePath, bool> = BTreeMap::new(); // false: entered, true: done
        let mut stack: Vec<(&StorePath, bool)> = vec![(&self.root, false)];
        while let Some((d, children_done)) = stack.pop() {
            if children_done {
                state.insert(d, true);
                order.push(d.clone());
                continue;
            }
            if state.contains_key(d) {
                continue;
            }
            state.insert(d, false);
            stack.push((d, true));
            for i in self.drvs[d].input_drvs.keys() {
                if self.glue.contains(i) && !state.contains_key(i) {
                    stack.push((i, false));
                }
            }
        }
        order
    }
}

/// What the store says of one path of G0's closure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct G0Path {
    pub references: BTreeSet<StorePath>,
    pub deriver: Option<StorePath>,
}

/// G0 as read from the store.
#[derive(Debug, Clone, Default)]
pub struct G0Side {
    pub toplevel: Option<StorePath>,
    /// G0's closure.
    pub paths: BTreeMap<StorePath, G0Path>,
    /// Derivers that could be read: whether each is glue.
    pub deriver_glue: BTreeMap<StorePath, bool>,
}

/// How G0's side was read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct G0Reading {
    /// Glue paths of G0 (the toplevel included).
    pub glue: BTreeSet<StorePath>,
    /// How many of them were recognised by their deriver; the rest by name.
    pub glue_by_deriver: usize,
    /// Unit outputs of G0: path → its package name.
    pub units: BTreeMap<StorePath, PackageName>,
}

/// Walk G0's closure from the toplevel through glue. `local_shapes`: the target's local
/// derivations' name shapes; G0's paths of these shapes were built locally too (its initrd), so
/// they are glue even when their derivers are not glue by attributes.
pub fn read_g0(
    g0: &G0Side,
    glue_pnames: &BTreeSet<String>,
    local_shapes: &BTreeSet<String>,
) -> G0Reading {
    let mut r = G0Reading::default();
    let Some(top) = &g0.toplevel else {
        return r;
    };
    let is_glue = |p: &StorePath, r: &mut G0Reading| -> bool {
        if p == top || local_shapes.contains(&name_shape(p.name())) {
            return true;
        }
        let info = g0.paths.get(p);
        if let Some(known) = info
            .and_then(|i| i.deriver.as_ref())
            .and_then(|d| g0.deriver_glue.get(d))
        {
            if *known {
                r.glue_by_deriver += 1;
            }
            return *known;
        }
        glue_pnames.contains(parse_drv_name(p.name()).0)
    };
    let mut todo = vec![top.clone()];
    r.glue.insert(top.clone());
    while let Some(p) = todo.pop() {
        let Some(info) = g0.paths.get(&p) else {
            continue;
        };
        for q in &info.references {
            if q == &p || r.glue.contains(q) || r.units.contains_key(q) {
                continue;
            }
            if is_glue(q, &mut r) {
                r.glue.insert(q.clone());
                todo.push(q.clone());
            } else {
                let deriver = g0.paths.get(q).and_then(|i| i.deriver.as_ref());
                r.units.insert(q.clone(), name_of_output(q, deriver));
            }
        }
    }
    r
}

/// The package name of an output path, from its deriver's name when known (which tells the
/// output exactly), else from the path's own name.
pub fn name_of_output(path: &StorePath, deriver: Option<&StorePath>) -> PackageName {
    if let Some(drv_name) = deriver.and_then(|d| d.derivation_name()) {
        let name = path.name();
        if name == drv_name {
            return PackageName::from_drv(drv_name, "out");
        }
        if let Some(o) = name
            .strip_prefix(drv_name)
            .and_then(|rest| rest.strip_prefix('-'))
        {
            return PackageName::from_drv(drv_name, o);
        }
    }
    PackageName::from_path_name(path.name())
}

/// Whether a unit changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    Unchanged,
    Changed,
    Added,
    Removed,
}

/// A package of the system, on one or both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// The name users type: the pname.
    pub name: String,
    pub old_version: Option<String>,
    pub new_version: Option<String>,
    /// The target's derivation for it.
    pub drv: Option<StorePath>,
    /// Referenced outputs in the target: output → path.
    pub new: BTreeMap<String, StorePath>,
    /// The G0 counterparts: output → path.
    pub old: BTreeMap<String, StorePath>,
    pub change: Change,
    /// Matched among several units of the same pname.
    pub ambiguous: bool,
}

impl Unit {
    /// Can stay at its old version in an intermediate generation: every referenced output has
    /// a counterpart.
    pub fn maskable(&self) -> bool {
        !self.old.is_empty() && self.new.keys().all(|o| self.old.contains_key(o))
    }

    /// The mask entries that keep it at its old version.
    pub fn old_mask(&self) -> impl Iterator<Item = (&StorePath, &StorePath)> {
        self.new
            .iter()
            .filter_map(|(o, p)| self.old.get(o).map(|q| (p, q)))
            .filter(|(p, q)| p != q)
    }
}

/// Units of the target matched against G0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Units {
    pub units: Vec<Unit>,
    /// Sets of units matched among each other by version order (same pname, several versions).
    pub ambiguous: Vec<Vec<usize>>,
}

/// A unit output of the target, before matching.
struct TargetUnit {
    drv: StorePath,
    version: String,
    outputs: BTreeMap<String, StorePath>,
}

/// A version of a unit in G0: the version and its outputs (output name → path).
type OldUnit = (String, BTreeMap<String, StorePath>);

/// Match the target's unit outputs to G0's.
pub fn match_units(target: &TargetGraph, g0: &G0Reading) -> Units {
    let mut by_pname: BTreeMap<String, Vec<TargetUnit>> = BTreeMap::new();
    for (drv, outputs) in target.unit_outputs() {
        let dn = drv.derivation_name().unwrap_or(drv.name());
        let (pname, version) = parse_drv_name(dn);
        by_pname
            .entry(pname.to_string())
            .or_default()
            .push(TargetUnit {
                drv: drv.clone(),
                version: version.to_string(),
                outputs,
            });
    }
    // G0 units by pname, then by version: output → path.
    let mut g0_by_pname: BTreeMap<String, BTreeMap<String, BTreeMap<String, StorePath>>> =
        BTreeMap::new();
    for (p, n) in &g0.units {
        g0_by_pname
            .entry(n.pname.clone())
            .or_default()
            .entry(n.version.clone())
            .or_default()
            .insert(n.output.clone(), p.clone());
    }
    let mut res = Units::default();
    let pnames: BTreeSet<String> = by_pname.keys().chain(g0_by_pname.keys()).cloned().collect();
    for pname in pnames {
        let ts = by_pname.remove(&pname).unwrap_or_default();
        let olds = g0_by_pname
            .remove(&pname)
            .map(|m| m.into_iter().collect())
            .unwrap_or_default();
        let first = res.units.len();
        let ambiguous = match_pname(&pname, ts, olds, &mut res.units);
        let group: Vec<usize> = (first..res.units.len())
            .filter(|&u| res.units[u].change == Change::Changed)
            .collect();
        if ambiguous && group.len() > 1 {
            res.ambiguous.push(group);
        }
    }
    res
}

/// Match one pname's versions: unchanged ones first (every referenced output the same path), the
/// rest paired by version order, what is left over added or removed. Returns whether the match
/// was ambiguous (several versions on either side).
fn match_pname(
    pname: &str,
    mut ts: Vec<TargetUnit>,
    mut olds: Vec<OldUnit>,
    units: &mut Vec<Unit>,
) -> bool {
    let ambiguous = ts.len() > 1 || olds.len() > 1;
    let unit = |change, t: Option<TargetUnit>, old: Option<OldUnit>| {
        let (old_version, old) = old.map_or((None, BTreeMap::new()), |(v, o)| (Some(v), o));
        let (new_version, drv, new) = t.map_or((None, None, BTreeMap::new()), |t| {
            (Some(t.version), Some(t.drv), t.outputs)
        });
        Unit {
            name: pname.to_string(),
            old_version,
            new_version,
            drv,
            new,
            old,
            change,
            ambiguous,
        }
    };
    let mut i = 0;
    while i < ts.len() {
        let t = &ts[i];
        let same = |(_, outs): &OldUnit| t.outputs.iter().all(|(o, p)| outs.get(o) == Some(p));
        if let Some(k) = olds.iter().position(same) {
            let old = olds.remove(k);
            units.push(unit(Change::Unchanged, Some(ts.remove(i)), Some(old)));
        } else {
            i += 1;
        }
    }
    ts.sort_by(|a, b| compare_versions(&a.version, &b.version));
    olds.sort_by(|a, b| compare_versions(&a.0, &b.0));
    let mut olds = olds.into_iter();
    for t in ts {
        units.push(match olds.next() {
            Some(old) => unit(Change::Changed, Some(t), Some(old)),
            None => unit(Change::Added, Some(t), None),
        });
    }
    for old in olds {
        units.push(unit(Change::Removed, None, Some(old)));
    }
    ambiguous
}

/// pnames that boot together with the kernel: the kernel (and its `modules` output), its module
/// tree, the initrd and firmware.
pub fn is_kernel_part(pname: &str) -> bool {
    matches!(
        pname,
        "linux" | "linux-firmware" | "kernel-modules" | "initrd" | "initrd-linux" | "firmware"
    ) || pname.ends_with("-firmware")
        || pname.starts_with("linux-") && pname.ends_with("-modules")
}

/// Groups of units that must move in the same step: the kernel group (also out-of-tree modules
/// whose version ends with the kernel's), ambiguous sets, and the user's `--together` names.
/// Unknown names are returned as errors so the user hears of a typo.
pub fn together_groups(
    units: &Units,
    user: &[Vec<String>],
) -> Result<Vec<Vec<usize>>, Vec<String>> {
    let changing = |u: &Unit| matches!(u.change, Change::Changed | Change::Added);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let kernel_versions: BTreeSet<&str> = units
        .units
        .iter()
        .filter(|u| u.name == "linux")
        .flat_map(|u| [u.old_version.as_deref(), u.new_version.as_deref()])
        .flatten()
        .filter(|v| !v.is_empty())
        .collect();
    let kernel: Vec<usize> = units
        .units
        .iter()
        .enumerate()
        .filter(|(_, u)| changing(u))
        .filter(|(_, u)| {
            is_kernel_part(&u.name)
                || u.new_version.as_deref().is_some_and(|v| {
                    kernel_versions
                        .iter()
                        .any(|k| v.ends_with(&format!("-{k}")))
                })
        })
        .map(|(i, _)| i)
        .collect();
    if kernel.len() > 1 {
        groups.push(kernel);
    }
    groups.extend(units.ambiguous.iter().cloned());
    let mut unknown = Vec::new();
    for names in user {
        let mut g = Vec::new();
        for n in names {
            let found: Vec<usize> = units
                .units
                .iter()
                .enumerate()
                .filter(|(_, u)| &u.name == n)
                .map(|(i, _)| i)
                .collect();
            if found.is_empty() {
                unknown.push(n.clone());
            }
            g.extend(found.into_iter().filter(|&i| changing(&units.units[i])));
        }
        if g.len() > 1 {
            groups.push(g);
        }
    }
    if unknown.is_empty() {
        Ok(groups)
    } else {
        Err(unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drv::Output;

    fn sd() -> StoreDir {
        StoreDir::new("/nix/store").unwrap()
    }

    fn path(i: u32, name: &str) -> StorePath {
        let h = crate::drv::nix32::encode(&{
            let mut b = [0u8; 20];
            b[..4].copy_from_slice(&i.to_le_bytes());
            b
        });
        StorePath::from_base_name(&format!("{h}-{name}")).unwrap()
    }

    fn drv(env: &[(&str, &str)]) -> Derivation {
        let mut d = Derivation::default();
        for (k, v) in env {
            d.env.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
        }
        d
    }

    #[test]
    fn glue_by_attributes_and_structured_attrs() {
        assert!(is_glue(&drv(&[("preferLocalBuild", "1")])));
        assert!(is_glue(&drv(&[("allowSubstitutes", "")])));
        assert!(!is_glue(&drv(&[
            ("allowSubstitutes", "1"),
            ("preferLocalBuild", "")
        ])));
        assert!(is_glue(&drv(&[("__json", r#"{"preferLocalBuild":true}"#)])));
        assert!(is_glue(&drv(&[(
            "__json",
            r#"{"allowSubstitutes":false}"#
        )])));
        assert!(!is_glue(&drv(&[(
            "__json",
            r#"{"allowSubstitutes":true}"#
        )])));
        assert!(!is_glue(&drv(&[("__json", "not json")])));
    }

    #[test]
    fn a_path_is_a_build_tool_only_where_build_tools_go_and_nowhere_else() {
        let (gcc, hello, bash, jq) = (
            path(1, "gcc-13"),
            path(2, "hello-2.12"),
            path(3, "bash-5.2"),
            path(4, "jq-1.7"),
        );
        let s = |p: &StorePath| sd().display(p);
        let mut d = drv(&[
            ("nativeBuildInputs", &format!("{} {}/bin", s(&gcc), s(&jq))),
            ("stdenv", &s(&hello)),
            ("paths", &format!("x{}/share/doc", s(&hello))),
            (
                "__json",
                &format!(
                    r#"{{"depsBuildBuild":["{}"],"pkgs":["{}"]}}"#,
                    s(&bash),
                    s(&jq)
                ),
            ),
        ]);
        d.builder = s(&bash).into_bytes();
        let m = PathMentions::of(&d, &sd());
        assert!(m.only_as_build_tool(&gcc));
        assert!(m.only_as_build_tool(&bash), "builder and a __json tool key");
        assert!(!m.only_as_build_tool(&hello), "also in `paths`: kept");
        assert!(
            !m.only_as_build_tool(&jq),
            "also under a __json key that keeps it"
        );
        assert!(
            !m.only_as_build_tool(&path(5, "absent")),
            "named nowhere: kept"
        );
        d.args.push(s(&gcc).into_bytes());
        assert!(
            !PathMentions::of(&d, &sd()).only_as_build_tool(&gcc),
            "an argument keeps it"
        );
        let bad = drv(&[
            ("nativeBuildInputs", &s(&gcc)),
            ("__json", &format!("[{}", s(&gcc))),
        ]);
        assert!(
            !PathMentions::of(&bad, &sd()).only_as_build_tool(&gcc),
            "unreadable __json keeps it"
        );
        let other_dir = StoreDir::new("/gnu/store").unwrap();
        assert!(
            !PathMentions::of(&d, &other_dir).only_as_build_tool(&bash),
            "another store's paths"
        );
    }

    #[test]
    fn g0_glue_by_deriver_then_by_name() {
        let top = path(1, "nixos-system-h-23.05");
        let etc = path(2, "etc");
        let sp = path(3, "system-path");
        let hello = path(4, "hello-2.12");
        let hello_man = path(5, "hello-2.12-man");
        let glibc = path(6, "glibc-2.38-27");
        let sp_drv = path(7, "system-path.drv");
        let hello_drv = path(8, "hello-2.12.drv");
        let mut g0 = G0Side {
            toplevel: Some(top.clone()),
            ..Default::default()
        };
        let p = |refs: &[&StorePath], deriver: Option<&StorePath>| G0Path {
            references: refs.iter().map(|r| (*r).clone()).collect(),
            deriver: deriver.cloned(),
        };
        g0.paths.insert(top.clone(), p(&[&etc, &sp], None));
        g0.paths.insert(etc.clone(), p(&[&hello], None));
        g0.paths
            .insert(sp.clone(), p(&[&hello, &hello_man], Some(&sp_drv)));
        g0.paths
            .insert(hello.clone(), p(&[&glibc], Some(&hello_drv)));
        g0.paths.insert(hello_man.clone(), p(&[], Some(&hello_drv)));
        g0.paths.insert(glibc.clone(), p(&[], None));
        g0.deriver_glue.insert(sp_drv, true);
        g0.deriver_glue.insert(hello_drv, false);
        let names: BTreeSet<String> = ["etc".to_string()].into();
        let r = read_g0(&g0, &names, &BTreeSet::new());
        assert_eq!(r.glue, [top, etc, sp].into_iter().collect());
        assert_eq!(r.glue_by_deriver, 1);
        assert_eq!(r.units.len(), 2, "glibc is not referenced by glue");
        assert_eq!(r.units[&hello_man].output, "man");
        assert_eq!(r.units[&hello].version, "2.12");
    }

    #[test]
    fn kernel_parts() {
        for n in [
            "linux",
            "linux-firmware",
            "initrd-linux",
            "kernel-modules",
            "sof-firmware",
        ] {
            assert!(is_kernel_part(n), "{n}");
        }
        for n in ["linux-pam", "util-linux", "firefox"] {
            assert!(!is_kernel_part(n), "{n}");
        }
    }

    /// Two pythons in G0 and in the target: the unchanged one pairs exactly, the rest by version
    /// order, and the changed set is reported as ambiguous.
    #[test]
    fn ambiguous_matches_pair_by_version_and_group() {
        let mut drvs = BTreeMap::new();
        let mut glue_env = drv(&[("preferLocalBuild", "1")]);
        let mk = |i: u32, name: &str| {
            let mut d = Derivation::default();
            d.outputs
                .insert("out".into(), Output::input_addressed(path(i, name)));
            (path(i + 100, &format!("{name}.drv")), d)
        };
        let (a, ad) = mk(1, "python3-3.11.6");
        let (b, bd) = mk(2, "python3-3.12.1");
        let (c, cd) = mk(3, "python3-3.10.13");
        for (p, d) in [(&a, ad), (&b, bd), (&c, cd)] {
            glue_env
                .input_drvs
                .insert(p.clone(), ["out".to_string()].into());
            drvs.insert(p.clone(), d);
        }
        let root = path(50, "system-path.drv");
        glue_env.outputs.insert(
            "out".into(),
            Output::input_addressed(path(51, "system-path")),
        );
        drvs.insert(root.clone(), glue_env);
        let g = TargetGraph::read(sd(), root, &drvs).unwrap();
        let mut r = G0Reading::default();
        // G0: 3.10.13 unchanged (same path), 3.11.4 and 3.12.0 older.
        r.units.insert(
            path(3, "python3-3.10.13"),
            PackageName::from_path_name("python3-3.10.13"),
        );
        r.units.insert(
            path(9, "python3-3.12.0"),
            PackageName::from_path_name("python3-3.12.0"),
        );
        r.units.insert(
            path(8, "python3-3.11.4"),
            PackageName::from_path_name("python3-3.11.4"),
        );
        let u = match_units(&g, &r);
        let by_new: BTreeMap<String, (Change, Option<String>)> = u
            .units
            .iter()
            .map(|x| {
                (
                    x.new_version.clone().unwrap(),
                    (x.change, x.old_version.clone()),
                )
            })
            .collect();
        assert_eq!(
            by_new["3.10.13"],
            (Change::Unchanged, Some("3.10.13".into()))
        );
        assert_eq!(by_new["3.11.6"], (Change::Changed, Some("3.11.4".into())));
        assert_eq!(by_new["3.12.1"], (Change::Changed, Some("3.12.0".into())));
        assert_eq!(u.ambiguous.len(), 1);
        assert_eq!(u.ambiguous[0].len(), 2);
        let groups = together_groups(&u, &[]).unwrap();
        assert_eq!(groups, u.ambiguous);
        assert_eq!(
            together_groups(&u, &[vec!["nope".into()]]).unwrap_err(),
            vec!["nope".to_string()]
        );
    }
}
