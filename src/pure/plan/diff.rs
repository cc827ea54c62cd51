//! The package diff of G0 against the target, as nvd and dix show it: changed, added and removed
//! packages with old → new versions and the size of their own outputs.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::planner::{PathFacts, SizeSource};
use super::units::{Change, Units};
use crate::drv::StorePath;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffRow {
    pub name: String,
    pub change: Change,
    /// Versions on each side (several when a package appears in several versions).
    pub old_versions: Vec<String>,
    pub new_versions: Vec<String>,
    /// Bytes of the package's own outputs (not its dependencies).
    pub old_size: u64,
    pub new_size: u64,
    /// The new size is (partly) an estimate.
    pub estimate: bool,
    /// Outputs referenced (beyond `out`).
    pub outputs: Vec<String>,
}

impl DiffRow {
    pub fn delta(&self) -> i64 {
        self.new_size as i64 - self.old_size as i64
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    /// Runtime packages: what the systems hold.
    pub rows: Vec<DiffRow>,
    /// Packages the target's glue only builds with (`jq`, `kmod`, `cpio` for the initrd): on disk
    /// while the run builds, in no generation's closure.
    #[serde(default)]
    pub build_inputs: Vec<DiffRow>,
    pub unchanged: usize,
    pub g0_closure: u64,
    pub target_closure: u64,
}

impl Diff {
    pub fn count(&self, c: Change) -> usize {
        self.rows.iter().filter(|r| r.change == c).count()
    }
}

/// Rows by name: the units of one pname merged (several outputs or versions), sorted by change
/// kind then name. A unit whose target outputs are all in `build_only` is a build input, listed
/// apart.
pub fn diff(
    units: &Units,
    build_only: &BTreeSet<StorePath>,
    facts: &BTreeMap<StorePath, PathFacts>,
    g0_closure: u64,
    target_closure: u64,
) -> Diff {
    let size = |p: &StorePath| facts.get(p).map(|f| f.size).unwrap_or(0);
    let est = |p: &StorePath| {
        facts
            .get(p)
            .map_or(true, |f| f.source == SizeSource::Estimate)
    };
    let mut by_name: BTreeMap<(bool, Change, &str), DiffRow> = BTreeMap::new();
    let mut unchanged = BTreeSet::new();
    for u in &units.units {
        if u.change == Change::Unchanged {
            unchanged.insert(u.name.as_str());
            continue;
        }
        let build = !u.new.is_empty() && u.new.values().all(|p| build_only.contains(p));
        let row = by_name
            .entry((build, u.change, u.name.as_str()))
            .or_insert_with(|| DiffRow {
                name: u.name.clone(),
                change: u.change,
                old_versions: Vec::new(),
                new_versions: Vec::new(),
                old_size: 0,
                new_size: 0,
                estimate: false,
                outputs: Vec::new(),
            });
        if let Some(v) = &u.old_version {
            if !row.old_versions.contains(v) {
                row.old_versions.push(v.clone());
            }
        }
        if let Some(v) = &u.new_version {
            if !row.new_versions.contains(v) {
                row.new_versions.push(v.clone());
            }
        }
        row.old_size += u.old.values().map(size).sum::<u64>();
        row.new_size += u.new.values().map(size).sum::<u64>();
        row.estimate |= u.new.values().any(est);
        for o in u.new.keys().chain(u.old.keys()) {
            if o != "out" && !row.outputs.contains(o) {
                row.outputs.push(o.clone());
            }
        }
    }
    let (build, runtime): (Vec<_>, Vec<_>) = by_name.into_iter().partition(|(k, _)| k.0);
    Diff {
        rows: runtime.into_iter().map(|(_, r)| r).collect(),
        build_inputs: build.into_iter().map(|(_, r)| r).collect(),
        unchanged: unchanged.len(),
        g0_closure,
        target_closure,
    }
}
