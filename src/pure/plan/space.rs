//! The space model every step is measured against, and its simulator.
//!
//! Paths are numbered (`PathIdx`). Each generation's closure is the union of what its jobs hold on
//! their current side (old version, new version, or stub) plus what every generation holds
//! (`base`) plus what only G0 holds (`base_old`: G0's glue, removed packages). A step:
//!
//! 1. realises the new generation: every path it needs that is not on disk is added, plus the
//!    step's own glue (built locally) — the peak is reached here, with the previous generation
//!    still whole;
//! 2. drops the previous generation and collects: a path nobody holds any more is freed, unless
//!    it is kept by another GC root (`keep`) or belongs to the booted system (`booted`, freed only
//!    by a reboot).
//!
//! Shared dependencies are counted once because holders are counted per path.

use serde::{Deserialize, Serialize};

pub type PathIdx = u32;

/// Which version of a job a generation holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    Old,
    New,
    Stub,
}

impl Side {
    pub(crate) fn index(self) -> usize {
        match self {
            Side::Old => 0,
            Side::New => 1,
            Side::Stub => 2,
        }
    }
}

/// Something that moves as one: a unit, or units tied together (kernel, modules, initrd and
/// firmware; `--together a,b`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub name: String,
    /// Closure of the old outputs (empty for an added package).
    pub old: Vec<PathIdx>,
    /// Closure of the new outputs.
    pub new: Vec<PathIdx>,
    /// The stub's path, when the job is non-vital.
    pub stub: Option<PathIdx>,
    /// Whether the job can stay at its old version in an intermediate generation (it has a G0
    /// counterpart for every output the target's glue references). Otherwise it moves in the first
    /// step, to its stub when it has one.
    pub maskable: bool,
}

impl Job {
    pub fn closure(&self, side: Side) -> &[PathIdx] {
        match side {
            Side::Old => &self.old,
            Side::New => &self.new,
            Side::Stub => self.stub.as_slice(),
        }
    }
}

/// Everything the order is computed from. Sizes are bytes (NAR sizes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceProblem {
    pub sizes: Vec<u64>,
    /// On disk now.
    pub present: Vec<bool>,
    /// Live through other GC roots (other generations, user profiles): never freed.
    pub keep: Vec<bool>,
    /// In the booted system's closure: freed only after a reboot.
    pub booted: Vec<bool>,
    pub jobs: Vec<Job>,
    /// Held by every generation (packages that do not change).
    pub base: Vec<PathIdx>,
    /// Held by G0 only (its glue, removed packages): released by the first step.
    pub base_old: Vec<PathIdx>,
    /// What each step's own glue adds (built locally; estimate). Freed once the next step is in.
    pub step_glue: u64,
    /// How many glue paths the first step builds: every glue output the target changes.
    #[serde(default)]
    pub step_glue_paths: u64,
    /// The glue derivations the target changes: how many outputs each builds.
    #[serde(default)]
    pub glue_outputs: Vec<u64>,
    /// Per job, the glue (indices into `glue_outputs`, sorted) a later step that moves it
    /// builds: the glue that reads its packages. A step's glue is the target's rewritten under
    /// the step's mask, so its output changes exactly when something it reads moves. Empty:
    /// every step builds all of it.
    #[serde(default)]
    pub glue_by_job: Vec<Vec<u32>>,
    /// Bytes each glue build leaves for good in Nix's log directory, where that shares the
    /// store's filesystem: a collect deletes store paths, never build logs.
    #[serde(default)]
    pub log_per_build: u64,
    /// Bytes each path a realise registers holds beside it only while that realise runs: Nix's
    /// SQLite write-ahead log, where Nix's state shares the store's filesystem (0 where not).
    #[serde(default)]
    pub registration_transient: u64,
    /// Bytes used on the store's filesystem now.
    pub used: u64,
    /// `used` may never exceed this: capacity minus the reserve.
    pub ceiling: u64,
    /// Whether the plan may reboot into a step to free what the booted system pins.
    pub reboot_allowed: bool,
}

impl SpaceProblem {
    /// Check indices and lengths; the planner trusts them afterwards.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.sizes.len();
        if self.present.len() != n || self.keep.len() != n || self.booted.len() != n {
            return Err("per-path vectors differ in length".into());
        }
        let bad = |v: &[PathIdx]| v.iter().any(|&p| p as usize >= n);
        for j in &self.jobs {
            if bad(&j.old) || bad(&j.new) || j.stub.is_some_and(|s| s as usize >= n) {
                return Err(format!("job {} refers to an unknown path", j.name));
            }
        }
        if bad(&self.base) || bad(&self.base_old) {
            return Err("base refers to an unknown path".into());
        }
        Ok(())
    }

    /// Bytes of the union of these paths.
    pub fn size_of<'a>(&self, paths: impl IntoIterator<Item = &'a PathIdx>) -> u64 {
        let mut seen = vec![false; self.sizes.len()];
        let mut total = 0;
        for &p in paths {
            if !std::mem::replace(&mut seen[p as usize], true) {
                total += self.sizes[p as usize];
            }
        }
        total
    }

    /// |G0|: the closure of the starting generation (without its glue outputs' size if unknown).
    pub fn g0_size(&self) -> u64 {
        self.size_of(
            self.jobs
                .iter()
                .flat_map(|j| j.old.iter())
                .chain(&self.base)
                .chain(&self.base_old),
        )
    }

    /// |T|: the target's closure, its glue estimate included.
    pub fn target_size(&self) -> u64 {
        self.size_of(
            self.jobs
                .iter()
                .flat_map(|j| j.new.iter())
                .chain(&self.base),
        ) + self.step_glue
    }

    /// What the plain upgrade needs at its peak: everything now on disk plus what the target
    /// adds, registered by one realise, and the logs of its glue builds.
    pub fn plain_peak(&self) -> u64 {
        let (add, paths) = self.plain_adds();
        self.used + add + self.transient(paths) + self.logs(self.step_glue_paths)
    }

    /// What the plain upgrade's one realise adds: bytes, and the paths it registers.
    pub fn plain_adds(&self) -> (u64, u64) {
        let mut seen = vec![false; self.sizes.len()];
        let (mut add, mut paths) = (self.step_glue, self.step_glue_paths);
        for &p in self
            .jobs
            .iter()
            .flat_map(|j| j.new.iter())
            .chain(&self.base)
        {
            if !self.present[p as usize] && !std::mem::replace(&mut seen[p as usize], true) {
                add += self.sizes[p as usize];
                paths += 1;
            }
        }
        (add, paths)
    }

    /// The build logs `glue` glue builds leave.
    pub fn logs(&self, glue: u64) -> u64 {
        glue.saturating_mul(self.log_per_build)
    }

    /// What one realise that registers `paths` store paths holds beyond their bytes while it
    /// runs. Nix's write-ahead log takes a few pages for every registration (each its own
    /// transaction) and is reset only at a checkpoint, which Nix defers to 40,000 pages; it is
    /// deleted when the process exits.
    pub fn transient(&self, paths: u64) -> u64 {
        if self.registration_transient == 0 {
            return 0;
        }
        paths
            .saturating_mul(self.registration_transient)
            .min(super::disk::NIX_WAL_MAX_BYTES)
    }

    /// How many glue paths a step builds that moves `jobs` (`first`: the chain's first step):
    /// the outputs of the union of the glue that reads them.
    pub fn glue_paths(&self, first: bool, jobs: impl IntoIterator<Item = u32>) -> u64 {
        if first || self.glue_by_job.is_empty() {
            return self.step_glue_paths;
        }
        let mut glue: Vec<u32> = jobs
            .into_iter()
            .flat_map(|j| self.glue_by_job[j as usize].iter().copied())
            .collect();
        glue.sort_unstable();
        glue.dedup();
        glue.iter()
            .map(|&g| self.glue_outputs[g as usize])
            .sum::<u64>()
            .min(self.step_glue_paths)
    }
}

/// One job changing side within a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Move {
    pub job: u32,
    pub to: Side,
}

/// What a step did to the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSpace {
    /// Bytes added while realising the step (its glue included).
    pub adds: u64,
    /// Bytes freed once the previous generation is dropped and collected.
    pub frees: u64,
    /// Bytes used at the step's peak (before anything is freed).
    pub peak: u64,
    /// Bytes used once the step is done.
    pub used_after: u64,
    /// Bytes a reboot into this step frees (when the plan reboots after it).
    pub reboot_frees: u64,
}

/// Glue bytes are not paths: each step's glue is new, and it goes when the generation after it is
/// collected, unless that generation is booted.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GlueLedger {
    /// The current generation's glue (0 for G0, whose glue is real paths in `base_old`).
    pub current: u64,
    /// Whether the current generation is the booted one.
    pub current_booted: bool,
    /// Glue of a booted step generation that is no longer current: freed at the next reboot.
    pub stale_booted: u64,
}

impl GlueLedger {
    /// A new step is in and the previous generation dropped: what glue that frees.
    pub fn step(&mut self, step_glue: u64) -> u64 {
        let freed = if self.current_booted {
            self.stale_booted += self.current;
            0
        } else {
            self.current
        };
        self.current = step_glue;
        self.current_booted = false;
        freed
    }

    /// A reboot into the current generation: what glue that frees.
    pub fn reboot(&mut self) -> u64 {
        self.current_booted = true;
        std::mem::take(&mut self.stale_booted)
    }
}

/// The simulator: the state of the disk while a plan runs.
#[derive(Debug, Clone)]
pub struct Simulator<'a> {
    p: &'a SpaceProblem,
    count: Vec<u32>,
    present: Vec<bool>,
    booted: Vec<bool>,
    side: Vec<Side>,
    used: u64,
    glue: GlueLedger,
    first_done: bool,
    // The open step.
    open: bool,
    step_adds: u64,
    /// Paths the open step's realise registers (its glue's not included).
    step_paths: u64,
    step_moves: Vec<Move>,
}

impl<'a> Simulator<'a> {
    pub fn new(p: &'a SpaceProblem) -> Self {
        let mut count = vec![0u32; p.sizes.len()];
        for j in &p.jobs {
            for &x in &j.old {
                count[x as usize] += 1;
            }
        }
        for &x in p.base.iter().chain(&p.base_old) {
            count[x as usize] += 1;
        }
        Simulator {
            p,
            count,
            present: p.present.clone(),
            booted: p.booted.clone(),
            side: vec![Side::Old; p.jobs.len()],
            used: p.used,
            glue: GlueLedger::default(),
            first_done: false,
            open: false,
            step_adds: 0,
            step_paths: 0,
            step_moves: Vec::new(),
        }
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn side(&self, job: u32) -> Side {
        self.side[job as usize]
    }

    pub fn present(&self, p: PathIdx) -> bool {
        self.present[p as usize]
    }

    /// What `m` would add to the open step (or to a new one), without changing anything: bytes
    /// and paths.
    pub fn extra_adds(&self, m: Move) -> (u64, u64) {
        self.p.jobs[m.job as usize]
            .closure(m.to)
            .iter()
            .filter(|&&x| !self.present[x as usize])
            .fold((0, 0), |(b, n), &x| (b + self.p.sizes[x as usize], n + 1))
    }

    /// The peak of the open step if `m` joined it (a new step if none is open).
    pub fn peak_with(&self, m: Move) -> u64 {
        let (bytes, paths) = self.extra_adds(m);
        let glue = if self.open { 0 } else { self.p.step_glue };
        let (transient, logs) = self.open_extra(paths, &[m]);
        self.used + bytes + glue + transient + logs
    }

    /// The peak of the open step so far, if `more` joined it, registering `paths` more.
    pub fn open_peak(&self, paths: u64, more: &[Move]) -> u64 {
        let (transient, logs) = self.open_extra(paths, more);
        self.used + transient + logs
    }

    /// What the open step writes beyond its paths, if `more` joined it, registering `paths`
    /// more: its realise's transient, and the logs of its glue builds.
    fn open_extra(&self, paths: u64, more: &[Move]) -> (u64, u64) {
        let jobs = self.step_moves.iter().chain(more).map(|m| m.job);
        let glue = self.p.glue_paths(!self.first_done, jobs);
        (
            self.p.transient(self.step_paths + paths + glue),
            self.p.logs(glue),
        )
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Add `m` to the open step (opening one if needed). Frees wait for `close_step`.
    pub fn add_move(&mut self, m: Move) {
        if !self.open {
            self.open = true;
            self.step_adds = self.p.step_glue;
            self.used += self.p.step_glue;
        }
        let job = &self.p.jobs[m.job as usize];
        debug_assert_ne!(self.side[m.job as usize], m.to);
        for &x in job.closure(m.to) {
            self.count[x as usize] += 1;
            if !self.present[x as usize] {
                self.present[x as usize] = true;
                self.step_adds += self.p.sizes[x as usize];
                self.step_paths += 1;
                self.used += self.p.sizes[x as usize];
            }
        }
        self.step_moves.push(m);
    }

    /// Drop the previous generation and collect what nobody holds any more.
    pub fn close_step(&mut self) -> StepSpace {
        if !self.open {
            // An empty step still builds its glue (the target when nothing else changes).
            self.open = true;
            self.step_adds = self.p.step_glue;
            self.used += self.p.step_glue;
        }
        let (transient, logs) = self.open_extra(0, &[]);
        self.used += logs;
        self.step_adds += logs;
        let peak = self.used + transient;
        self.step_paths = 0;
        let mut freed = 0u64;
        let moves = std::mem::take(&mut self.step_moves);
        let mut release = |sim: &mut Self, x: PathIdx| {
            let c = &mut sim.count[x as usize];
            *c -= 1;
            if *c == 0 && sim.freeable(x) {
                sim.present[x as usize] = false;
                freed += sim.p.sizes[x as usize];
            }
        };
        for m in &moves {
            let from = self.side[m.job as usize];
            for &x in self.p.jobs[m.job as usize].closure(from) {
                release(self, x);
            }
            self.side[m.job as usize] = m.to;
        }
        if !self.first_done {
            self.first_done = true;
            for &x in &self.p.base_old {
                release(self, x);
            }
        }
        freed += self.glue.step(self.p.step_glue);
        self.used -= freed;
        self.open = false;
        StepSpace {
            adds: std::mem::take(&mut self.step_adds),
            frees: freed,
            peak,
            used_after: self.used,
            reboot_frees: 0,
        }
    }

    fn freeable(&self, x: PathIdx) -> bool {
        let i = x as usize;
        self.present[i] && !self.p.keep[i] && !self.booted[i]
    }

    /// Reboot into the current generation: the booted pins move to it. Returns what that frees.
    pub fn reboot(&mut self) -> u64 {
        assert!(!self.open, "reboot with a step open");
        let mut freed = self.glue.reboot();
        for i in 0..self.count.len() {
            let now = self.count[i] > 0;
            if self.booted[i] && !now {
                self.booted[i] = false;
                if self.present[i] && !self.p.keep[i] {
                    self.present[i] = false;
                    freed += self.p.sizes[i];
                }
            }
            self.booted[i] = now;
        }
        self.used -= freed;
        freed
    }

    /// Bytes a reboot into the current generation would free.
    pub fn reboot_would_free(&self) -> u64 {
        let glue = self.glue.stale_booted;
        glue + (0..self.count.len())
            .filter(|&i| self.booted[i] && self.count[i] == 0 && self.present[i] && !self.p.keep[i])
            .map(|i| self.p.sizes[i])
            .sum::<u64>()
    }
}
