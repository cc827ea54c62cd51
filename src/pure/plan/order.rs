//! The step order: which jobs move in which step so that the disk never holds more than the
//! ceiling, with the peak as low as this greedy finds.
//!
//! 1. A sequence of single moves, chosen greedily with incrementally kept costs (what each move
//!    would add and free *now*, shared dependencies counted once):
//!    - a move that adds nothing (its new paths are on disk) goes at once;
//!    - then moves that free at least what they add, smallest addition first;
//!    - then the others, largest freeing first (for independent jobs these two rules give the
//!      lowest possible peak; with shared paths they are a good heuristic);
//!    - when nothing fits: stub a non-vital job (the one that frees most), or reboot into the
//!      current step when the booted system pins what would free room (if allowed); else give up.
//! 2. Consecutive moves are merged into one step while the merged step's peak stays within the
//!    sequence's own peak: fewer generations for the same peak.
//!
//! Numbers in the result come from [`Simulator`], the same model the tests check independently.

use serde::{Deserialize, Serialize};

use super::space::{GlueLedger, Job, Move, PathIdx, Side, Simulator, SpaceProblem, StepSpace};

/// One step of the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderedStep {
    pub moves: Vec<Move>,
    pub space: StepSpace,
    /// Reboot into this step before the next one (it frees what the booted system pinned).
    pub reboot_after: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub steps: Vec<OrderedStep>,
    /// The highest `used` of any step.
    pub peak: u64,
    /// The peak of the single-move sequence the steps were merged from (≥ `peak`); any ceiling
    /// at or above it gives a plan.
    pub sequence_peak: u64,
}

/// Why no order fits, and what would help.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoFit {
    /// Moves done before the planner got stuck.
    pub moves_done: usize,
    /// Bytes missing for the cheapest next move at that point.
    pub missing_next: u64,
    /// Bytes missing for a whole plan without stubs or reboots (from an unconstrained run).
    pub missing_total: u64,
    /// The job whose next move needs the least extra room (the bottleneck).
    pub bottleneck: Option<u32>,
    /// Jobs that are not non-vital, with what stubbing each would free at that point, largest
    /// first (at most 5).
    pub stub_candidates: Vec<(u32, u64)>,
    /// What a reboot into the current step would free, when reboots were not allowed.
    pub reboot_would_free: u64,
    /// Whether allowing reboots makes the plan fit.
    pub fits_with_reboot: bool,
    /// The fewest of `stub_candidates` (largest first) that, marked non-vital, make the plan
    /// fit; empty when none do.
    pub fits_with_non_vital: Vec<u32>,
}

/// Compute the order.
pub fn order(p: &SpaceProblem) -> Result<Order, NoFit> {
    order_with(p, 0)
}

/// As [`order`], trading peak for fewer steps: consecutive moves merge while the step's peak
/// stays within the sequence's peak plus `headroom_percent` of the room left above it (0: the
/// lowest peak; 100: up to the ceiling).
pub fn order_with(p: &SpaceProblem, headroom_percent: u8) -> Result<Order, NoFit> {
    let seq = match greedy(p, p.ceiling, p.reboot_allowed, false) {
        Ok(seq) => seq,
        // The greedy does not look ahead: moving a non-vital job early can block a bigger one
        // that stubbing would have let through. Then do what a user does by hand: stub every
        // non-vital job first, bring them back at the end.
        Err(stuck) => match p.jobs.iter().any(|j| j.stub.is_some()) {
            true => match greedy(p, p.ceiling, p.reboot_allowed, true) {
                Ok(seq) => seq,
                Err(_) => return Err(explain(p, stuck)),
            },
            false => return Err(explain(p, stuck)),
        },
    };
    let pstar = sequential_peak(p, &seq);
    let pct = u64::from(headroom_percent.min(100));
    let limit = pstar + (p.ceiling.saturating_sub(pstar) as u128 * pct as u128 / 100) as u64;
    let mut order = merge(p, &seq, limit);
    debug_assert!(order.peak <= limit.max(pstar));
    order.sequence_peak = pstar;
    Ok(order)
}

/// The greedy's output: moves (several only for the forced first one) and reboots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Moves(Vec<Move>),
    Reboot,
}

struct Stuck {
    moves_done: usize,
    missing_next: u64,
    bottleneck: Option<u32>,
    stub_candidates: Vec<(u32, u64)>,
    reboot_would_free: u64,
}

fn explain(p: &SpaceProblem, stuck: Stuck) -> NoFit {
    let unconstrained = greedy(p, u64::MAX, false, false)
        .ok()
        .map(|seq| sequential_peak(p, &seq))
        .unwrap_or(u64::MAX);
    let fits = |q: &SpaceProblem, reboot: bool| {
        greedy(q, q.ceiling, reboot, false).is_ok() || greedy(q, q.ceiling, reboot, true).is_ok()
    };
    let fits_with_reboot = !p.reboot_allowed && fits(p, true);
    let mut fits_with_non_vital = Vec::new();
    for k in 1..=stuck.stub_candidates.len() {
        let mut q = p.clone();
        for &(j, _) in &stuck.stub_candidates[..k] {
            q.sizes.push(super::mask::empty_dir_nar().len() as u64);
            q.present.push(false);
            q.keep.push(false);
            q.booted.push(false);
            q.jobs[j as usize].stub = Some((q.sizes.len() - 1) as PathIdx);
        }
        if fits(&q, p.reboot_allowed) {
            fits_with_non_vital = stuck.stub_candidates[..k].iter().map(|c| c.0).collect();
            break;
        }
    }
    NoFit {
        fits_with_non_vital,
        moves_done: stuck.moves_done,
        missing_next: stuck.missing_next,
        missing_total: unconstrained
            .saturating_sub(p.ceiling)
            .max(stuck.missing_next),
        bottleneck: stuck.bottleneck,
        stub_candidates: stuck.stub_candidates,
        reboot_would_free: stuck.reboot_would_free,
        fits_with_reboot,
    }
}

fn sequential_peak(p: &SpaceProblem, seq: &[Entry]) -> u64 {
    let mut sim = Simulator::new(p);
    let mut peak = p.used;
    for e in seq {
        match e {
            Entry::Moves(ms) => {
                for &m in ms {
                    sim.add_move(m);
                }
                peak = peak.max(sim.close_step().peak);
            }
            Entry::Reboot => {
                sim.reboot();
            }
        }
    }
    if seq.is_empty() {
        peak = peak.max(sim.close_step().peak);
    }
    peak
}

/// Merge consecutive moves while the step's peak stays within `limit`.
pub fn merge(p: &SpaceProblem, seq: &[Entry], limit: u64) -> Order {
    let mut sim = Simulator::new(p);
    let mut steps: Vec<OrderedStep> = Vec::new();
    let mut moves: Vec<Move> = Vec::new();
    let close = |sim: &mut Simulator, moves: &mut Vec<Move>, steps: &mut Vec<OrderedStep>| {
        let space = sim.close_step();
        steps.push(OrderedStep {
            moves: std::mem::take(moves),
            space,
            reboot_after: false,
        });
    };
    for e in seq {
        match e {
            Entry::Moves(ms) => {
                // Join the open step when its peak stays within the limit (the sum over-counts
                // paths shared by the joining moves: conservative).
                if sim.is_open() {
                    let (bytes, paths) = ms
                        .iter()
                        .map(|&m| sim.extra_adds(m))
                        .fold((0, 0), |(b, n), (x, y)| (b + x, n + y));
                    let same_job = ms.iter().any(|m| moves.iter().any(|x| x.job == m.job));
                    if same_job || sim.open_peak(paths, ms) + bytes > limit {
                        close(&mut sim, &mut moves, &mut steps);
                    }
                }
                for &m in ms {
                    sim.add_move(m);
                    moves.push(m);
                }
            }
            Entry::Reboot => {
                if sim.is_open() {
                    close(&mut sim, &mut moves, &mut steps);
                }
                let freed = sim.reboot();
                if let Some(last) = steps.last_mut() {
                    last.reboot_after = true;
                    last.space.reboot_frees = freed;
                }
            }
        }
    }
    if sim.is_open() || steps.is_empty() {
        close(&mut sim, &mut moves, &mut steps);
    }
    let peak = steps.iter().map(|s| s.space.peak).max().unwrap_or(p.used);
    Order {
        steps,
        peak,
        sequence_peak: peak,
    }
}

const NO_CREDIT: u32 = u32::MAX;

/// The greedy's state: holders per path, and for every job what each possible move would add
/// and free now, kept up to date as paths come and go.
struct Greedy<'a> {
    p: &'a SpaceProblem,
    inv_start: Vec<u32>,
    inv: Vec<(u32, Side)>,
    count: Vec<u32>,
    base_holds: Vec<u32>,
    present: Vec<bool>,
    booted: Vec<bool>,
    side: Vec<Side>,
    /// Per job, indexed by target side: bytes the move would add / free, and the paths it would
    /// add.
    adds: Vec<[u64; 3]>,
    add_paths: Vec<[u64; 3]>,
    frees: Vec<[u64; 3]>,
    credit_job: Vec<u32>,
    credit_side: Vec<Side>,
    used: u64,
    glue: GlueLedger,
    first_done: bool,
    last: LastStep,
}

/// The last step the greedy made, for a move that joins it: the bytes at its peak, the paths its
/// realise registers, the jobs it moves, and whether it is the chain's first step.
#[derive(Default)]
struct LastStep {
    peak_bytes: u64,
    paths: u64,
    jobs: Vec<u32>,
    first: bool,
    /// The logs of its glue builds (in `used` and `peak_bytes`).
    logs: u64,
}

fn targets(from: Side) -> &'static [Side] {
    match from {
        Side::Old => &[Side::New, Side::Stub],
        Side::Stub => &[Side::New],
        Side::New => &[],
    }
}

impl<'a> Greedy<'a> {
    fn new(p: &'a SpaceProblem) -> Self {
        let n = p.sizes.len();
        let mut deg = vec![0u32; n + 1];
        for j in &p.jobs {
            for s in [Side::Old, Side::New, Side::Stub] {
                for &x in j.closure(s) {
                    deg[x as usize + 1] += 1;
                }
            }
        }
        for i in 0..n {
            deg[i + 1] += deg[i];
        }
        let inv_start = deg.clone();
        let mut fill = deg;
        let mut inv = vec![(0u32, Side::Old); inv_start[n] as usize];
        for (ji, j) in p.jobs.iter().enumerate() {
            for s in [Side::Old, Side::New, Side::Stub] {
                for &x in j.closure(s) {
                    inv[fill[x as usize] as usize] = (ji as u32, s);
                    fill[x as usize] += 1;
                }
            }
        }
        let mut g = Greedy {
            p,
            inv_start,
            inv,
            count: vec![0; n],
            base_holds: vec![0; n],
            present: p.present.clone(),
            booted: p.booted.clone(),
            side: vec![Side::Old; p.jobs.len()],
            adds: vec![[0; 3]; p.jobs.len()],
            add_paths: vec![[0; 3]; p.jobs.len()],
            frees: vec![[0; 3]; p.jobs.len()],
            credit_job: vec![NO_CREDIT; n],
            credit_side: vec![Side::Old; n],
            used: p.used,
            glue: GlueLedger::default(),
            first_done: false,
            last: LastStep::default(),
        };
        for j in &p.jobs {
            for &x in &j.old {
                g.count[x as usize] += 1;
            }
        }
        for &x in p.base.iter().chain(&p.base_old) {
            g.count[x as usize] += 1;
            g.base_holds[x as usize] += 1;
        }
        for (ji, j) in p.jobs.iter().enumerate() {
            for s in [Side::New, Side::Stub] {
                let absent = || j.closure(s).iter().filter(|&&x| !g.present[x as usize]);
                g.adds[ji][s.index()] = absent().map(|&x| p.sizes[x as usize]).sum();
                g.add_paths[ji][s.index()] = absent().count() as u64;
            }
        }
        for x in 0..n as u32 {
            g.recredit(x);
        }
        g
    }

    fn holders(&self, x: PathIdx) -> &[(u32, Side)] {
        &self.inv[self.inv_start[x as usize] as usize..self.inv_start[x as usize + 1] as usize]
    }

    fn job_has(&self, j: u32, s: Side, x: PathIdx) -> bool {
        self.p.jobs[j as usize].closure(s).binary_search(&x).is_ok()
    }

    fn set_present(&mut self, x: PathIdx, v: bool) {
        self.present[x as usize] = v;
        let size = self.p.sizes[x as usize];
        let (a, b) = (
            self.inv_start[x as usize] as usize,
            self.inv_start[x as usize + 1] as usize,
        );
        for i in a..b {
            let (j, s) = self.inv[i];
            if s != Side::Old {
                let (e, n) = (
                    &mut self.adds[j as usize][s.index()],
                    &mut self.add_paths[j as usize][s.index()],
                );
                if v {
                    *e -= size;
                    *n -= 1;
                } else {
                    *e += size;
                    *n += 1;
                }
            }
        }
    }

    /// Keep `frees` right for `x`: credited to its sole holder when freeing is possible.
    fn recredit(&mut self, x: PathIdx) {
        let i = x as usize;
        let size = self.p.sizes[i];
        let cj = self.credit_job[i];
        if cj != NO_CREDIT {
            let cs = self.credit_side[i];
            for &t in targets(cs) {
                if !self.job_has(cj, t, x) {
                    self.frees[cj as usize][t.index()] -= size;
                }
            }
            self.credit_job[i] = NO_CREDIT;
        }
        if self.count[i] == 1
            && self.base_holds[i] == 0
            && self.present[i]
            && !self.p.keep[i]
            && !self.booted[i]
        {
            let holder = self
                .holders(x)
                .iter()
                .copied()
                .find(|&(j, s)| self.side[j as usize] == s);
            if let Some((j, s)) = holder {
                for &t in targets(s) {
                    if !self.job_has(j, t, x) {
                        self.frees[j as usize][t.index()] += size;
                    }
                }
                self.credit_job[i] = j;
                self.credit_side[i] = s;
            }
        }
    }

    /// What moving job `j` to `s` as a step of its own needs beyond what is used now: the bytes
    /// it adds, the step's glue, and the transient of the realise that registers both.
    fn step_need(&self, j: usize, s: Side) -> u64 {
        let glue = self.p.glue_paths(!self.first_done, [j as u32]);
        self.adds[j][s.index()]
            + self.p.step_glue
            + self.p.transient(self.add_paths[j][s.index()] + glue)
            + self.p.logs(glue)
    }

    /// Peak of a step made of these moves.
    fn peak_of(&self, moves: &[Move]) -> u64 {
        if let [m] = moves {
            return self.used + self.step_need(m.job as usize, m.to);
        }
        let mut seen = std::collections::HashSet::new();
        let (mut add, mut paths) = (0, 0);
        for m in moves {
            for &x in self.p.jobs[m.job as usize].closure(m.to) {
                if !self.present[x as usize] && seen.insert(x) {
                    add += self.p.sizes[x as usize];
                    paths += 1;
                }
            }
        }
        let glue = self
            .p
            .glue_paths(!self.first_done, moves.iter().map(|m| m.job));
        self.used + add + self.p.step_glue + self.p.transient(paths + glue) + self.p.logs(glue)
    }

    /// The peak of the last step if `m` joined it.
    fn join_peak(&self, m: Move) -> u64 {
        let (j, s) = (m.job as usize, m.to.index());
        let jobs = self.last.jobs.iter().copied().chain([m.job]);
        let glue = self.p.glue_paths(self.last.first, jobs);
        self.last.peak_bytes - self.last.logs
            + self.adds[j][s]
            + self
                .p
                .transient(self.last.paths + self.add_paths[j][s] + glue)
            + self.p.logs(glue)
    }

    /// Apply moves as a new step, or (`new_step` false) as part of the last step: moves that
    /// add nothing join it without a glue build of their own.
    fn apply(&mut self, moves: &[Move], new_step: bool) {
        let glue = if new_step { self.p.step_glue } else { 0 };
        if new_step {
            self.last = LastStep {
                first: !self.first_done,
                ..LastStep::default()
            };
        }
        let mut from = Vec::with_capacity(moves.len());
        for m in moves {
            let j = m.job as usize;
            from.push(self.side[j]);
            self.side[j] = m.to;
        }
        let mut added = 0;
        for m in moves {
            let job: &Job = &self.p.jobs[m.job as usize];
            for &x in job.closure(m.to) {
                self.count[x as usize] += 1;
                if !self.present[x as usize] {
                    self.set_present(x, true);
                    added += self.p.sizes[x as usize];
                    self.last.paths += 1;
                }
                self.recredit(x);
            }
            self.last.jobs.push(m.job);
        }
        // The step's glue builds leave their logs for good: what joining adds to them.
        let logs = self.p.logs(
            self.p
                .glue_paths(self.last.first, self.last.jobs.iter().copied()),
        );
        let more_logs = logs - self.last.logs;
        self.last.logs = logs;
        self.used += added + glue + more_logs;
        self.last.peak_bytes = if new_step {
            self.used
        } else {
            self.last.peak_bytes + added + more_logs
        };
        let mut freed = 0;
        for (m, &s) in moves.iter().zip(&from) {
            let job: &Job = &self.p.jobs[m.job as usize];
            for &x in job.closure(s) {
                freed += self.release(x);
            }
        }
        if !self.first_done {
            self.first_done = true;
            for &x in &self.p.base_old {
                self.base_holds[x as usize] -= 1;
                freed += self.release(x);
            }
        }
        if new_step {
            freed += self.glue.step(self.p.step_glue);
        }
        self.used -= freed;
    }

    fn release(&mut self, x: PathIdx) -> u64 {
        let i = x as usize;
        self.count[i] -= 1;
        let mut freed = 0;
        if self.count[i] == 0 && self.present[i] && !self.p.keep[i] && !self.booted[i] {
            self.set_present(x, false);
            freed = self.p.sizes[i];
        }
        self.recredit(x);
        freed
    }

    /// Jobs without a G0 counterpart cannot stay old: they move (or are stubbed) first, with
    /// every non-vital job when stubbing first.
    fn forced_moves(&self, stub_first: bool) -> Vec<Move> {
        self.p
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| !j.maskable || (stub_first && j.stub.is_some()))
            .map(|(i, j)| Move {
                job: i as u32,
                // A stub only saves room when the new version is not on disk already.
                to: if j.stub.is_some() && self.adds[i][Side::New.index()] > 0 {
                    Side::Stub
                } else {
                    Side::New
                },
            })
            .collect()
    }

    /// Why nothing more fits under `ceiling`: the job closest to fitting, what it lacks, the
    /// non-vital jobs whose stub would free the most, and what a reboot would free (`after_moves`:
    /// something moved already, so the booted generation may pin what a reboot releases).
    fn stuck(&self, ceiling: u64, moves_done: usize, after_moves: bool) -> Stuck {
        let p = self.p;
        let (bottleneck, missing_next) = (0..p.jobs.len())
            .filter(|&j| self.side[j] != Side::New)
            .map(|j| {
                let need = self.used + self.step_need(j, Side::New);
                (j as u32, need.saturating_sub(ceiling))
            })
            .min_by_key(|&(j, miss)| (miss, j))
            .map(|(j, m)| (Some(j), m))
            .unwrap_or((None, 0));
        let mut stub_candidates: Vec<(u32, u64)> = (0..p.jobs.len())
            .filter(|&j| self.side[j] == Side::Old && p.jobs[j].stub.is_none())
            .map(|j| (j as u32, self.frees[j][Side::Stub.index()]))
            .filter(|&(_, f)| f > 0)
            .collect();
        stub_candidates.sort_by_key(|&(j, f)| (std::cmp::Reverse(f), j));
        stub_candidates.truncate(5);
        Stuck {
            moves_done,
            missing_next,
            bottleneck,
            stub_candidates,
            reboot_would_free: if after_moves {
                self.reboot_would_free()
            } else {
                0
            },
        }
    }

    fn reboot_would_free(&self) -> u64 {
        self.glue.stale_booted
            + (0..self.count.len())
                .filter(|&i| {
                    self.booted[i] && self.count[i] == 0 && self.present[i] && !self.p.keep[i]
                })
                .map(|i| self.p.sizes[i])
                .sum::<u64>()
    }

    fn reboot(&mut self) {
        let mut freed = self.glue.reboot();
        for i in 0..self.count.len() {
            let now = self.count[i] > 0;
            let was = self.booted[i];
            if was == now {
                continue;
            }
            self.booted[i] = now;
            if was && self.present[i] && !self.p.keep[i] {
                self.set_present(i as u32, false);
                freed += self.p.sizes[i];
            }
            self.recredit(i as u32);
        }
        self.used -= freed;
    }
}

/// The greedy sequence under `ceiling`. `stub_first`: every non-vital job is stubbed in the
/// first step and returns only once every other job has moved.
fn greedy(
    p: &SpaceProblem,
    ceiling: u64,
    reboot_allowed: bool,
    stub_first: bool,
) -> Result<Vec<Entry>, Stuck> {
    let mut g = Greedy::new(p);
    let mut seq = Vec::new();
    let mut remaining = p.jobs.len();
    let mut moves_done = 0;

    let forced = g.forced_moves(stub_first);
    if !forced.is_empty() {
        let peak = g.peak_of(&forced);
        if peak > ceiling {
            return Err(Stuck {
                moves_done: 0,
                missing_next: peak - ceiling,
                bottleneck: forced
                    .iter()
                    .max_by_key(|m| g.adds[m.job as usize][m.to.index()])
                    .map(|m| m.job),
                stub_candidates: Vec::new(),
                reboot_would_free: 0,
            });
        }
        g.apply(&forced, true);
        remaining -= forced.iter().filter(|m| m.to == Side::New).count();
        moves_done += 1;
        seq.push(Entry::Moves(forced));
    }

    let mut rebooted_since_move = false;
    while remaining > 0 {
        let last = match seq.last() {
            Some(Entry::Moves(ms)) => Some(ms.as_slice()),
            _ => None,
        };
        // Stubbed jobs wait for the others when stubbing first.
        let allow_return = !stub_first || (0..p.jobs.len()).all(|j| g.side[j] != Side::Old);
        match pick(&g, ceiling, last, allow_return) {
            Some(m) => {
                let free_ride = g.adds[m.job as usize][m.to.index()] == 0;
                match seq.last_mut() {
                    // A job moves at most once per step.
                    Some(Entry::Moves(last))
                        if free_ride
                            && last.iter().all(|x| x.job != m.job)
                            && g.join_peak(m) <= ceiling =>
                    {
                        g.apply(&[m], false);
                        last.push(m);
                    }
                    _ => {
                        g.apply(&[m], true);
                        seq.push(Entry::Moves(vec![m]));
                    }
                }
                if m.to == Side::New {
                    remaining -= 1;
                }
                moves_done += 1;
                rebooted_since_move = false;
            }
            None => {
                let reboot_frees = if seq.is_empty() {
                    0
                } else {
                    g.reboot_would_free()
                };
                if reboot_allowed && !rebooted_since_move && reboot_frees > 0 {
                    g.reboot();
                    rebooted_since_move = true;
                    seq.push(Entry::Reboot);
                    continue;
                }
                return Err(g.stuck(ceiling, moves_done, !seq.is_empty()));
            }
        }
    }
    let glue_only =
        g.used + p.step_glue + p.transient(p.step_glue_paths) + p.logs(p.step_glue_paths);
    if seq.is_empty() && glue_only > ceiling {
        // Nothing changes but the glue, and even that does not fit.
        return Err(Stuck {
            moves_done: 0,
            missing_next: glue_only - ceiling,
            bottleneck: None,
            stub_candidates: Vec::new(),
            reboot_would_free: 0,
        });
    }
    Ok(seq)
}

/// The next move by the rules in the module's comment, or None when nothing fits.
fn pick(g: &Greedy, ceiling: u64, last: Option<&[Move]>, allow_return: bool) -> Option<Move> {
    // (class, key1, key2, job): lowest wins.
    let mut best: Option<((u8, u64, u64, u32), Move)> = None;
    let mut consider = |key: (u8, u64, u64, u32), m: Move| {
        if best.as_ref().map_or(true, |(k, _)| key < *k) {
            best = Some((key, m));
        }
    };
    for (j, job) in g.p.jobs.iter().enumerate() {
        let s = g.side[j];
        if s == Side::New || (s == Side::Stub && !allow_return) {
            continue;
        }
        let (a, f) = (g.adds[j][Side::New.index()], g.frees[j][Side::New.index()]);
        let can_join = last.is_some_and(|ms| ms.iter().all(|m| m.job != j as u32));
        let mv = Move {
            job: j as u32,
            to: Side::New,
        };
        let joins = a == 0 && can_join && g.join_peak(mv) <= ceiling;
        if joins || g.used + g.step_need(j, Side::New) <= ceiling {
            let key = if a == 0 {
                (0, 0, 0, j as u32)
            } else if f.saturating_mul(100) >= a.saturating_mul(99) {
                // Frees about what it adds (within 1%: a measured size on disk and an estimate
                // of the same package differ by a few blocks): smallest first.
                (1, a, 0, j as u32)
            } else {
                (2, u64::MAX - f, a, j as u32)
            };
            consider(key, mv);
        }
        if s == Side::Old && job.stub.is_some() {
            let (a, f) = (
                g.adds[j][Side::Stub.index()],
                g.frees[j][Side::Stub.index()],
            );
            if f > a && g.used + g.step_need(j, Side::Stub) <= ceiling {
                consider(
                    (3, u64::MAX - (f - a), 0, j as u32),
                    Move {
                        job: j as u32,
                        to: Side::Stub,
                    },
                );
            }
        }
    }
    best.map(|(_, m)| m)
}
