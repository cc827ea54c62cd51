//! From what the store said to a plan: units, the space problem, the order, and each step's mask.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::boot::{boot_plan, BootPlan, ProfileFacts};
use super::diff::{diff, Diff};
use super::disk::replay;
use super::disk::DiskCost;
use super::mask::{Mask, Stub};
use super::order::{order_with, NoFit};
use super::space::{Job, PathIdx, Side, SpaceProblem, StepSpace};
use super::units::{
    match_units, read_g0, together_groups, Change, G0Reading, G0Side, TargetGraph, Units,
};
use crate::drv::StorePath;

/// Where a size comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SizeSource {
    /// A valid path in the local store.
    Local,
    /// A substituter's narinfo.
    Cache,
    /// Must be built: estimated from its G0 counterpart (0 without one).
    Estimate,
}

/// What is known of one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathFacts {
    pub size: u64,
    pub references: BTreeSet<StorePath>,
    pub present: bool,
    pub source: SizeSource,
}

/// The user's say in the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOptions {
    /// pnames that may be stubbed for the duration.
    pub non_vital: Vec<String>,
    /// Extra groups of pnames that move together.
    pub together: Vec<Vec<String>>,
    pub reboot_allowed: bool,
    /// 0: the lowest peak (default); up to 100: merge steps into the room above it, for fewer
    /// generations (see `order::order_with`).
    #[serde(default)]
    pub merge_headroom_percent: u8,
}

/// Everything the plan is computed from (gathered by `engine::plan_inputs`).
#[derive(Debug, Clone)]
pub struct PlanInput {
    pub target: TargetGraph,
    pub g0: G0Side,
    /// G0's closure and the closures of the target's unit outputs (not its glue outputs).
    pub facts: BTreeMap<StorePath, PathFacts>,
    /// Live through roots other than the system's generations stepwise manages.
    pub keep: BTreeSet<StorePath>,
    /// The booted system's closure.
    pub booted: BTreeSet<StorePath>,
    /// Bytes used and free on the store's filesystem, and the reserve kept free.
    pub used: u64,
    pub free: u64,
    pub reserve: u64,
    pub options: PlanOptions,
    /// The system profile's generations before the run (for the boot figures).
    pub profile: ProfileFacts,
    /// What a NAR byte costs on the store's filesystem (default: nothing measured, NAR bytes).
    pub disk: DiskCost,
}

impl PlanInput {
    /// A reserve file already taken on the store's filesystem holds `held` of its used bytes;
    /// the ceiling subtracts the whole reserve already, so those bytes count as free: the
    /// reserve is counted once.
    pub fn count_held_reserve(&mut self, held: u64) {
        let held = held.min(self.used);
        self.used -= held;
        self.free += held;
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("--non-vital {0}: no package of that name in the target or the running system")]
    UnknownNonVital(String),
    #[error("--together: no package named {0} in the target or the running system")]
    UnknownTogether(String),
}

/// One step: the generation G_k = the target under `mask`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// 1-based.
    pub index: usize,
    /// Units reaching their target version in this step (names; several units may share one).
    pub upgraded: Vec<String>,
    /// Units replaced by a stub in this step.
    pub stubbed: Vec<String>,
    /// The mask of this step's generation: every unit not yet upgraded.
    pub mask: Mask,
    /// In the disk's bytes (what the order is computed from).
    pub space: StepSpace,
    /// The same step in NAR bytes (what Nix reports), for comparison.
    pub space_nar: StepSpace,
    /// Reboot into this step before the next.
    pub reboot_after: bool,
}

/// A plan that fits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Highest bytes used on the filesystem during the plan.
    pub peak: u64,
}

/// Sizes that frame the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub used: u64,
    pub free: u64,
    pub reserve: u64,
    /// `used` must stay at or below this.
    pub ceiling: u64,
    pub g0_closure: u64,
    pub target_closure: u64,
    /// No order does better: the bytes used with the larger of the two closures and nothing of
    /// the other (used − |G0| + max(|G0|, |T|)).
    pub lower_bound: u64,
    /// What the plain upgrade needs at its peak.
    pub plain_peak: u64,
    /// Whether the plain upgrade fits.
    pub plain_fits: bool,
    /// Bytes of the target's closure that are estimates (to be built, no counterpart size).
    pub estimated: u64,
    /// The largest job: what its new version adds on its own, and its name. Its old and new
    /// versions are on disk together at some point of any plan.
    pub largest_move: u64,
    pub largest_move_name: String,
    /// How the disk bytes above were obtained, and the same figures in NAR bytes.
    pub disk: DiskFigures,
}

/// Disk bytes against NAR bytes: which sizes were measured on the filesystem, which estimated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskFigures {
    pub filesystem: String,
    /// Whether anything was measured (otherwise every disk figure is a NAR figure).
    pub measured: bool,
    /// Allocated / NAR bytes of the paths on disk, in parts per million.
    pub measured_ratio_ppm: u64,
    /// The ratio applied to paths not on disk, in parts per million.
    pub ratio_ppm: u64,
    /// Paths on disk whose bytes were measured, and their bytes (disk, NAR).
    pub measured_paths: u64,
    pub measured_bytes: u64,
    pub measured_nar: u64,
    /// Paths whose disk bytes are NAR × ratio, and their bytes (disk, NAR).
    pub estimated_paths: u64,
    pub estimated_bytes: u64,
    pub estimated_nar: u64,
    /// The frame's closures and plain peak in NAR bytes (the peak: `used` plus NAR adds).
    pub g0_closure_nar: u64,
    pub target_closure_nar: u64,
    pub plain_peak_nar: u64,
    /// Nix's bookkeeping in the plain peak, estimated (0 where Nix's state is on another
    /// filesystem): the paths its one realise registers, the write-ahead log they hold while it
    /// runs (`wal_per_path` each, up to Nix's checkpoint), and the build logs its glue builds
    /// leave (`build_log` each).
    #[serde(default)]
    pub plain_registrations: u64,
    #[serde(default)]
    pub wal_per_path: u64,
    #[serde(default)]
    pub plain_wal: u64,
    #[serde(default)]
    pub build_log: u64,
    #[serde(default)]
    pub plain_build_logs: u64,
}

/// Why no plan fits, in the user's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortfall {
    pub missing_next: u64,
    pub missing_total: u64,
    /// The unit names of the job that could not move.
    pub bottleneck: Vec<String>,
    /// Units that would free room if marked non-vital, with bytes.
    pub non_vital_candidates: Vec<(String, u64)>,
    pub reboot_would_free: u64,
    pub fits_with_reboot: bool,
    /// Names that, marked non-vital, make the plan fit (empty: none found).
    pub non_vital_that_fits: Vec<String>,
    pub steps_done: usize,
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    pub units: Units,
    pub g0: G0Reading,
    pub diff: Diff,
    pub frame: Frame,
    /// Jobs as unit indices (units that move together).
    pub jobs: Vec<Vec<usize>>,
    pub outcome: Result<Plan, Shortfall>,
    /// Things the user should know (ambiguous matches, estimates, glue read by name).
    pub notes: Vec<String>,
    /// What the plan does to the boot loader and /boot (when a plan fits).
    pub boot: Option<BootPlan>,
}

/// Plan: match the units of G0 and the target, make the space problem (in the disk's bytes and
/// in NAR bytes), order the moves, and turn the order into steps with their masks.
pub fn plan(input: &PlanInput) -> Result<Planned, PlanError> {
    let glue_pnames = input.target.glue_pnames();
    let g0 = read_g0(&input.g0, &glue_pnames, &input.target.local_shapes());
    let units = match_units(&input.target, &g0);
    let known: BTreeSet<&str> = units.units.iter().map(|u| u.name.as_str()).collect();
    if let Some(n) = input
        .options
        .non_vital
        .iter()
        .find(|n| !known.contains(n.as_str()))
    {
        return Err(PlanError::UnknownNonVital(n.clone()));
    }
    let groups = together_groups(&units, &input.options.together)
        .map_err(|unknown| PlanError::UnknownTogether(unknown.join(", ")))?;
    let jobs_units = jobs_of(&units, &groups);
    let (problem, nar_problem, disk) = space_problems(input, &units, &g0, &jobs_units);
    let frame = frame_of(input, &problem, disk);
    let notes = notes_of(input, &units, &g0, &jobs_units, &problem, frame.estimated);
    let names = JobNames {
        jobs_units: &jobs_units,
        units: &units,
    };
    let outcome = match order_with(&problem, input.options.merge_headroom_percent) {
        Ok(o) => Ok(steps_of_order(input, &o, &nar_problem, &names)),
        Err(no_fit) => Err(shortfall_of(no_fit, &names)),
    };
    let build_only = input.target.build_only_outputs();
    let diff = diff(
        &units,
        &build_only,
        &input.facts,
        frame.g0_closure,
        frame.target_closure,
    );
    let boot = outcome
        .as_ref()
        .ok()
        .map(|p| boot_plan(&units, &input.target, &p.steps, &input.profile));
    Ok(Planned {
        units,
        g0,
        diff,
        frame,
        jobs: jobs_units,
        outcome,
        notes,
        boot,
    })
}

/// The jobs: the changing units (changed or added), those tied by a `together` group in one job
/// (union-find over the groups).
fn jobs_of(units: &Units, groups: &[Vec<usize>]) -> Vec<Vec<usize>> {
    fn find(p: &mut [usize], x: usize) -> usize {
        let mut r = x;
        while p[r] != r {
            r = p[r];
        }
        let mut y = x;
        while p[y] != r {
            let n = p[y];
            p[y] = r;
            y = n;
        }
        r
    }
    let mut parent: Vec<usize> = (0..units.units.len()).collect();
    for g in groups {
        for w in g.windows(2) {
            let (a, b) = (find(&mut parent, w[0]), find(&mut parent, w[1]));
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut by_root: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for u in (0..units.units.len())
        .filter(|&u| matches!(units.units[u].change, Change::Changed | Change::Added))
    {
        let r = find(&mut parent, u);
        by_root.entry(r).or_default().push(u);
    }
    by_root.into_values().collect()
}

/// Every path of the input numbered, with its references, and closures over them.
struct PathTable<'a> {
    idx: HashMap<&'a StorePath, PathIdx>,
    paths: Vec<&'a StorePath>,
    refs: Vec<Vec<PathIdx>>,
    /// `stamp[x] == epoch`: x is in the closure being walked.
    stamp: Vec<u32>,
    epoch: u32,
}

impl<'a> PathTable<'a> {
    fn new(facts: &'a BTreeMap<StorePath, PathFacts>) -> Self {
        let paths: Vec<&StorePath> = facts.keys().collect();
        let idx: HashMap<&StorePath, PathIdx> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, i as PathIdx))
            .collect();
        let refs = paths
            .iter()
            .map(|p| {
                facts[*p]
                    .references
                    .iter()
                    .filter_map(|r| idx.get(r).copied())
                    .collect()
            })
            .collect();
        PathTable {
            stamp: vec![0; paths.len()],
            epoch: 0,
            idx,
            paths,
            refs,
        }
    }

    /// The closure of `roots` (those that are known), sorted.
    fn closure<'r>(&mut self, roots: impl Iterator<Item = &'r StorePath>) -> Vec<PathIdx> {
        self.epoch += 1;
        let mut out = Vec::new();
        let mut todo: Vec<PathIdx> = roots.filter_map(|r| self.idx.get(r).copied()).collect();
        while let Some(x) = todo.pop() {
            if self.stamp[x as usize] == self.epoch {
                continue;
            }
            self.stamp[x as usize] = self.epoch;
            out.push(x);
            todo.extend(self.refs[x as usize].iter().copied());
        }
        out.sort_unstable();
        out
    }
}

/// Per path (by index): its size in the disk's bytes and in NAR bytes, and whether it is on
/// disk, kept by another root, held by the booted system. Stubs are appended as they are made.
struct PathColumns {
    sizes: Vec<u64>,
    nar_sizes: Vec<u64>,
    present: Vec<bool>,
    keep: Vec<bool>,
    booted: Vec<bool>,
}

impl PathColumns {
    /// The columns of `table`'s paths, counting in `disk` what was measured and estimated.
    fn new(input: &PlanInput, table: &PathTable, disk: &mut DiskFigures) -> Self {
        let facts = |p: &StorePath| &input.facts[p];
        let sizes = table
            .paths
            .iter()
            .map(|p| {
                let f = facts(p);
                let (bytes, measured) = input.disk.bytes_of(p, f.size, f.present);
                let (paths, on_disk, nar) = if measured {
                    (
                        &mut disk.measured_paths,
                        &mut disk.measured_bytes,
                        &mut disk.measured_nar,
                    )
                } else {
                    (
                        &mut disk.estimated_paths,
                        &mut disk.estimated_bytes,
                        &mut disk.estimated_nar,
                    )
                };
                *paths += 1;
                *on_disk += bytes;
                *nar += f.size;
                bytes
            })
            .collect();
        PathColumns {
            sizes,
            nar_sizes: table.paths.iter().map(|p| facts(p).size).collect(),
            present: table.paths.iter().map(|p| facts(p).present).collect(),
            keep: table
                .paths
                .iter()
                .map(|p| input.keep.contains(*p))
                .collect(),
            booted: table
                .paths
                .iter()
                .map(|p| input.booted.contains(*p))
                .collect(),
        }
    }

    /// A stub's output (an empty directory, not on disk yet): its index.
    fn push_stub(&mut self, input: &PlanInput) -> PathIdx {
        self.sizes.push(input.disk.estimate(empty_dir_nar_size()));
        self.nar_sizes.push(empty_dir_nar_size());
        self.present.push(false);
        self.keep.push(false);
        self.booted.push(false);
        (self.sizes.len() - 1) as PathIdx
    }
}

/// The space problem in the disk's bytes and the same in NAR bytes, and the disk figures of the
/// paths measured and estimated.
fn space_problems(
    input: &PlanInput,
    units: &Units,
    g0: &G0Reading,
    jobs_units: &[Vec<usize>],
) -> (SpaceProblem, SpaceProblem, DiskFigures) {
    let mut disk = DiskFigures {
        filesystem: input.disk.filesystem.clone(),
        measured: input.disk.is_measured(),
        measured_ratio_ppm: input.disk.measured_ratio_ppm(),
        ratio_ppm: input.disk.ratio_ppm(),
        ..Default::default()
    };
    let mut table = PathTable::new(&input.facts);
    let mut columns = PathColumns::new(input, &table, &mut disk);
    let (base, base_old) = base_sets(input, units, g0, &mut table);
    let jobs = jobs_with_closures(input, units, jobs_units, &mut table, &mut columns);
    // G0's glue stands for each step's glue (the target's is not built yet): in the disk's bytes
    // each path's estimate as a path the step builds, or what G0's version takes if more.
    let g0_glue = || {
        g0.glue
            .iter()
            .filter_map(|p| Some((p, input.facts.get(p)?)))
    };
    let step_glue_nar: u64 = g0_glue().map(|(_, f)| f.size).sum();
    let step_glue: u64 = g0_glue()
        .map(|(p, f)| input.disk.estimate_rebuilt(p, f.size, f.present))
        .sum();
    let (glue_outputs, glue_by_job) = glue_by_job(input, units, jobs_units);
    let problem = SpaceProblem {
        sizes: columns.sizes,
        present: columns.present,
        keep: columns.keep,
        booted: columns.booted,
        jobs,
        base,
        base_old,
        step_glue,
        step_glue_paths: glue_outputs.iter().sum(),
        glue_outputs,
        glue_by_job,
        registration_transient: input.disk.registration_transient(),
        log_per_build: input.disk.build_log(),
        used: input.used,
        ceiling: (input.used + input.free).saturating_sub(input.reserve),
        reboot_allowed: input.options.reboot_allowed,
    };
    debug_assert!(problem.validate().is_ok());
    let nar_problem = SpaceProblem {
        sizes: columns.nar_sizes,
        step_glue: step_glue_nar,
        registration_transient: 0,
        log_per_build: 0,
        ..problem.clone()
    };
    disk.g0_closure_nar = nar_problem.g0_size();
    disk.target_closure_nar = nar_problem.target_size();
    disk.plain_peak_nar = nar_problem.plain_peak();
    disk.plain_registrations = problem.plain_adds().1;
    disk.wal_per_path = problem.registration_transient;
    disk.plain_wal = problem.transient(disk.plain_registrations);
    disk.build_log = problem.log_per_build;
    disk.plain_build_logs = problem.logs(problem.step_glue_paths);
    (problem, nar_problem, disk)
}

/// The outputs of glue derivation `drv` not on disk: what building it registers. Glue whose
/// inputs the upgrade leaves alone has G0's output, on disk, in every step, so no step builds it;
/// any other glue is built at most once a step.
fn glue_outputs_to_build(input: &PlanInput, drv: &StorePath) -> u64 {
    let on_disk = |p: &StorePath| input.facts.get(p).is_some_and(|f| f.present);
    input.target.drvs.get(drv).map_or(0, |d| {
        d.outputs
            .values()
            .filter(|o| !o.path.as_ref().is_some_and(on_disk))
            .count() as u64
    })
}

/// The glue the target changes (how many outputs each builds), and per job the indices of the
/// glue that reads one of its packages, directly or through other glue. A job with a unit the
/// target has no derivation for (a removed package) is read by all of it.
fn glue_by_job(
    input: &PlanInput,
    units: &Units,
    jobs_units: &[Vec<usize>],
) -> (Vec<u64>, Vec<Vec<u32>>) {
    let t = &input.target;
    let changed: Vec<(&StorePath, u64)> = t
        .glue
        .iter()
        .map(|d| (d, glue_outputs_to_build(input, d)))
        .filter(|&(_, n)| n > 0)
        .collect();
    // Package derivation → the changed glue that reads it.
    let mut readers: BTreeMap<&StorePath, BTreeSet<u32>> = BTreeMap::new();
    for (gi, &(g, _)) in changed.iter().enumerate() {
        let mut stack = vec![g];
        let mut seen = BTreeSet::new();
        while let Some(d) = stack.pop() {
            for i in t.drvs.get(d).into_iter().flat_map(|x| x.input_drvs.keys()) {
                if !seen.insert(i) {
                    continue;
                }
                if t.glue.contains(i) {
                    stack.push(i);
                } else {
                    readers.entry(i).or_default().insert(gi as u32);
                }
            }
        }
    }
    let all: Vec<u32> = (0..changed.len() as u32).collect();
    let by_job = jobs_units
        .iter()
        .map(|members| {
            let mut glue = BTreeSet::new();
            for &u in members {
                let Some(d) = units.units[u].drv.as_ref() else {
                    return all.clone();
                };
                glue.extend(readers.get(d).into_iter().flatten().copied());
            }
            glue.into_iter().collect()
        })
        .collect();
    (changed.iter().map(|&(_, n)| n).collect(), by_job)
}

/// What every generation holds (unchanged packages and the target glue's sources, its
/// `inputSrcs`) and what only G0 holds (removed packages and G0's glue). One walk each.
fn base_sets(
    input: &PlanInput,
    units: &Units,
    g0: &G0Reading,
    table: &mut PathTable,
) -> (Vec<PathIdx>, Vec<PathIdx>) {
    let srcs = input
        .target
        .glue
        .iter()
        .flat_map(|d| input.target.drvs[d].input_srcs.iter());
    let of_change = |change: Change| units.units.iter().filter(move |u| u.change == change);
    let mut base = table.closure(
        of_change(Change::Unchanged)
            .flat_map(|u| u.new.values())
            .chain(srcs),
    );
    let mut base_old = table.closure(of_change(Change::Removed).flat_map(|u| u.old.values()));
    base_old.extend(g0.glue.iter().filter_map(|p| table.idx.get(p).copied()));
    base.sort_unstable();
    base.dedup();
    base_old.sort_unstable();
    base_old.dedup();
    (base, base_old)
}

/// Each job's old and new closures, and its stub when every unit of it is non-vital.
fn jobs_with_closures(
    input: &PlanInput,
    units: &Units,
    jobs_units: &[Vec<usize>],
    table: &mut PathTable,
    columns: &mut PathColumns,
) -> Vec<Job> {
    let non_vital: BTreeSet<&str> = input.options.non_vital.iter().map(|s| s.as_str()).collect();
    jobs_units
        .iter()
        .map(|members| {
            let us: Vec<&super::units::Unit> = members.iter().map(|&u| &units.units[u]).collect();
            let stubbed = us.iter().all(|u| non_vital.contains(u.name.as_str()));
            let mut name: Vec<&str> = us.iter().map(|u| u.name.as_str()).collect();
            name.dedup();
            Job {
                name: name.join("+"),
                old: table.closure(us.iter().flat_map(|u| u.old.values())),
                new: table.closure(us.iter().flat_map(|u| u.new.values())),
                stub: stubbed.then(|| columns.push_stub(input)),
                maskable: us.iter().all(|u| u.maskable()),
            }
        })
        .collect()
}

/// The frame of the plan: the disk, the closures, the plain upgrade's peak, the largest move.
fn frame_of(input: &PlanInput, problem: &SpaceProblem, disk: DiskFigures) -> Frame {
    let g0_closure = problem.g0_size();
    let target_closure = problem.target_size();
    let plain_peak = problem.plain_peak();
    let estimated: u64 = input
        .facts
        .values()
        .filter(|f| f.source == SizeSource::Estimate && !f.present)
        .map(|f| f.size)
        .sum();
    let (largest_move, largest_move_name) = problem
        .jobs
        .iter()
        .map(|j| {
            let add: u64 = j
                .new
                .iter()
                .filter(|&&x| !problem.present[x as usize])
                .map(|&x| problem.sizes[x as usize])
                .sum();
            (add, j.name.clone())
        })
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)))
        .unwrap_or_default();
    Frame {
        used: input.used,
        free: input.free,
        reserve: input.reserve,
        ceiling: problem.ceiling,
        g0_closure,
        target_closure,
        lower_bound: input.used.saturating_sub(g0_closure) + g0_closure.max(target_closure),
        plain_peak,
        plain_fits: plain_peak <= problem.ceiling,
        estimated,
        largest_move,
        largest_move_name,
        disk,
    }
}

/// Things the user should know about the plan's inputs.
fn notes_of(
    input: &PlanInput,
    units: &Units,
    g0: &G0Reading,
    jobs_units: &[Vec<usize>],
    problem: &SpaceProblem,
    estimated: u64,
) -> Vec<String> {
    let mut notes = Vec::new();
    if input.disk.is_measured() {
        notes.push(input.disk.describe());
    }
    for set in &units.ambiguous {
        notes.push(format!(
            "{} appears in several versions; they were matched by version order and move together",
            units.units[set[0]].name
        ));
    }
    if estimated > 0 {
        notes.push(format!(
            "{} of the target must be built; its size is estimated from the running system",
            super::report::human_bytes(estimated)
        ));
    }
    if g0.glue.len() > g0.glue_by_deriver + 1 {
        notes.push(format!(
            "{} of the running system's {} glue paths were recognised by name (their derivations are gone)",
            g0.glue.len() - g0.glue_by_deriver - 1,
            g0.glue.len()
        ));
    }
    for (members, job) in jobs_units.iter().zip(&problem.jobs) {
        if !job.maskable {
            let names: Vec<&str> = members
                .iter()
                .map(|&u| units.units[u].name.as_str())
                .collect();
            let stub = if job.stub.is_some() {
                " (as a stub while room is short)"
            } else {
                ""
            };
            notes.push(format!(
                "{} has no counterpart in the running system: it moves in the first step{stub}",
                names.join(", "),
            ));
        }
    }
    notes
}

/// The package names of each job.
struct JobNames<'a> {
    jobs_units: &'a [Vec<usize>],
    units: &'a Units,
}

impl JobNames<'_> {
    fn of(&self, j: u32) -> Vec<String> {
        let mut v: Vec<String> = self.jobs_units[j as usize]
            .iter()
            .map(|&u| self.units.units[u].name.clone())
            .collect();
        v.dedup();
        v
    }
}

/// The order's steps, each with what it upgrades and stubs and its mask.
fn steps_of_order(
    input: &PlanInput,
    order: &super::order::Order,
    nar_problem: &SpaceProblem,
    names: &JobNames,
) -> Plan {
    let stubs: BTreeMap<String, Stub> = input
        .options
        .non_vital
        .iter()
        .map(|n| (n.clone(), Stub::for_package(&input.target.store_dir, n)))
        .collect();
    let nar_spaces = replay(nar_problem, &order.steps);
    let mut sides = vec![Side::Old; names.jobs_units.len()];
    let mut steps = Vec::new();
    for (k, s) in order.steps.iter().enumerate() {
        let mut upgraded = Vec::new();
        let mut stubbed = Vec::new();
        for m in &s.moves {
            sides[m.job as usize] = m.to;
            match m.to {
                Side::New => upgraded.extend(names.of(m.job)),
                Side::Stub => stubbed.extend(names.of(m.job)),
                Side::Old => {}
            }
        }
        steps.push(Step {
            index: k + 1,
            upgraded,
            stubbed,
            mask: mask_of(&sides, names, &stubs),
            space: s.space,
            space_nar: nar_spaces[k],
            reboot_after: s.reboot_after,
        });
    }
    Plan {
        steps,
        peak: order.peak,
    }
}

/// The mask of a generation whose jobs stand at `sides`: old units keep their G0 outputs,
/// stubbed ones are replaced by their stubs.
fn mask_of(sides: &[Side], names: &JobNames, stubs: &BTreeMap<String, Stub>) -> Mask {
    let mut mask = Mask::default();
    for (members, side) in names.jobs_units.iter().zip(sides) {
        for unit in members.iter().map(|&u| &names.units.units[u]) {
            match side {
                Side::New => {}
                Side::Old => {
                    for (a, b) in unit.old_mask() {
                        mask.0.insert(a.clone(), b.clone());
                    }
                }
                Side::Stub => {
                    let stub = &stubs[&unit.name];
                    for p in unit.new.values() {
                        mask.0.insert(p.clone(), stub.path.clone());
                    }
                }
            }
        }
    }
    mask
}

/// Why nothing fits, in package names.
fn shortfall_of(no_fit: NoFit, names: &JobNames) -> Shortfall {
    Shortfall {
        non_vital_that_fits: no_fit
            .fits_with_non_vital
            .into_iter()
            .flat_map(|j| names.of(j))
            .collect(),
        missing_next: no_fit.missing_next,
        missing_total: no_fit.missing_total,
        bottleneck: no_fit.bottleneck.map(|j| names.of(j)).unwrap_or_default(),
        non_vital_candidates: no_fit
            .stub_candidates
            .into_iter()
            .map(|(j, b)| (names.of(j).join("+"), b))
            .collect(),
        reboot_would_free: no_fit.reboot_would_free,
        fits_with_reboot: no_fit.fits_with_reboot,
        steps_done: no_fit.moves_done,
    }
}

fn empty_dir_nar_size() -> u64 {
    super::mask::empty_dir_nar().len() as u64
}

impl Planned {
    /// The stubs the plan uses (the engine creates them before the first step that needs them).
    pub fn stubs(&self, store_dir: &crate::drv::StoreDir) -> Vec<Stub> {
        let mut names: BTreeSet<&str> = BTreeSet::new();
        if let Ok(p) = &self.outcome {
            for s in &p.steps {
                names.extend(s.stubbed.iter().map(|s| s.as_str()));
            }
        }
        names
            .into_iter()
            .map(|n| Stub::for_package(store_dir, n))
            .collect()
    }
}
