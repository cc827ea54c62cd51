//! The step order on synthetic graphs, checked against an independent, set-based model of the
//! disk: every returned plan stays under the ceiling, upgrades each job exactly once, ends at the
//! full target, and its numbers are the model's numbers.

use std::collections::BTreeSet;

use proptest::prelude::*;
use stepwise::plan::order::{order, order_with, Order};
use stepwise::plan::space::{Job, Side, SpaceProblem, StepSpace};

/// The naive model: a generation is a set of paths; each step's glue is a fresh path.
struct Naive<'a> {
    p: &'a SpaceProblem,
    sides: Vec<Side>,
    present: BTreeSet<usize>,
    booted: BTreeSet<usize>,
    prev: BTreeSet<usize>,
    used: u64,
    steps_done: usize,
}

const GLUE_BASE: usize = 1 << 30;

impl<'a> Naive<'a> {
    fn new(p: &'a SpaceProblem) -> Self {
        let sides = vec![Side::Old; p.jobs.len()];
        let present = (0..p.sizes.len()).filter(|&i| p.present[i]).collect();
        let booted = (0..p.sizes.len()).filter(|&i| p.booted[i]).collect();
        let mut n = Naive {
            p,
            sides,
            present,
            booted,
            prev: BTreeSet::new(),
            used: p.used,
            steps_done: 0,
        };
        n.prev = n.generation(None);
        n
    }

    fn size(&self, x: usize) -> u64 {
        if x >= GLUE_BASE {
            self.p.step_glue
        } else {
            self.p.sizes[x]
        }
    }

    fn generation(&self, glue: Option<usize>) -> BTreeSet<usize> {
        let mut g = BTreeSet::new();
        for (j, job) in self.p.jobs.iter().enumerate() {
            g.extend(job.closure(self.sides[j]).iter().map(|&x| x as usize));
        }
        g.extend(self.p.base.iter().map(|&x| x as usize));
        match glue {
            None => g.extend(self.p.base_old.iter().map(|&x| x as usize)),
            Some(k) => {
                g.insert(GLUE_BASE + k);
            }
        }
        g
    }

    fn keep(&self, x: usize) -> bool {
        x < GLUE_BASE && self.p.keep[x]
    }

    fn step(&mut self, moves: &[stepwise::plan::space::Move]) -> StepSpace {
        for m in moves {
            self.sides[m.job as usize] = m.to;
        }
        let gen = self.generation(Some(self.steps_done));
        self.steps_done += 1;
        let adds: u64 = gen
            .iter()
            .filter(|x| !self.present.contains(x))
            .map(|&x| self.size(x))
            .sum();
        let paths = gen
            .iter()
            .filter(|&&x| x < GLUE_BASE && !self.present.contains(&x))
            .count() as u64;
        // The first step builds every changed glue path; a later one the glue its jobs' packages
        // are read by.
        let glue = if self.steps_done == 1 || self.p.glue_by_job.is_empty() {
            self.p.step_glue_paths
        } else {
            let read: BTreeSet<u32> = moves
                .iter()
                .flat_map(|m| self.p.glue_by_job[m.job as usize].iter().copied())
                .collect();
            read.iter().map(|&g| self.p.glue_outputs[g as usize]).sum()
        };
        self.present.extend(gen.iter().copied());
        // Build logs stay for good.
        let logs = glue * self.p.log_per_build;
        let adds = adds + logs;
        self.used += adds;
        let peak = self.used + self.p.transient(paths + glue);
        let gone: Vec<usize> = self
            .prev
            .difference(&gen)
            .copied()
            .filter(|x| !self.keep(*x) && !self.booted.contains(x))
            .collect();
        let frees: u64 = gone.iter().map(|&x| self.size(x)).sum();
        for x in gone {
            self.present.remove(&x);
        }
        self.used -= frees;
        self.prev = gen;
        StepSpace {
            adds,
            frees,
            peak,
            used_after: self.used,
            reboot_frees: 0,
        }
    }

    fn reboot(&mut self) -> u64 {
        let gone: Vec<usize> = self
            .booted
            .difference(&self.prev)
            .copied()
            .filter(|x| self.present.contains(x) && !self.keep(*x))
            .collect();
        let freed = gone.iter().map(|&x| self.size(x)).sum();
        for x in gone {
            self.present.remove(&x);
        }
        self.booted = self.prev.clone();
        self.used -= freed;
        freed
    }
}

fn replay(p: &SpaceProblem, o: &Order) -> Vec<StepSpace> {
    let mut n = Naive::new(p);
    o.steps
        .iter()
        .map(|s| {
            let mut sp = n.step(&s.moves);
            if s.reboot_after {
                sp.reboot_frees = n.reboot();
            }
            sp
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Gen {
    sizes: Vec<u64>,
    jobs: Vec<(Vec<u32>, Vec<u32>, bool, bool)>,
    base: Vec<u32>,
    base_old: Vec<u32>,
    extra_present: Vec<u32>,
    keep: Vec<u32>,
    booted_is_g0: bool,
    glue: u64,
    ceiling_frac: u32,
    reboot: bool,
    /// Bytes a registered path holds while its step's realise runs, the outputs of each changed
    /// glue derivation, and per job the glue that reads it (empty: all of it, every step).
    transient: (u64, Vec<u64>, Vec<Vec<u32>>),
    /// Bytes a glue build leaves for good (its log).
    log: u64,
}

fn gen() -> impl Strategy<Value = Gen> {
    (3usize..40).prop_flat_map(|n| {
        let idx = 0..n as u32;
        (
            prop::collection::vec(1u64..1000, n),
            prop::collection::vec(
                (
                    prop::collection::vec(idx.clone(), 0..6),
                    prop::collection::vec(idx.clone(), 1..6),
                    prop::bool::weighted(0.3),
                    prop::bool::weighted(0.9),
                ),
                0..8,
            ),
            prop::collection::vec(idx.clone(), 0..4),
            prop::collection::vec(idx.clone(), 0..3),
            prop::collection::vec(idx.clone(), 0..4),
            prop::collection::vec(idx, 0..2),
            any::<bool>(),
            0u64..50,
            0u32..130,
            any::<bool>(),
            prop_oneof![
                Just((0u64, Vec::new(), Vec::new())),
                (
                    1u64..200,
                    prop::collection::vec(1u64..3, 0..3),
                    Just(Vec::new())
                ),
                (
                    1u64..200,
                    prop::collection::vec(1u64..3, 4),
                    prop::collection::vec(prop::collection::btree_set(0u32..4, 0..4), 8)
                        .prop_map(|v| v.into_iter().map(|s| s.into_iter().collect()).collect()),
                ),
            ],
            prop_oneof![Just(0u64), 1u64..20],
        )
            .prop_map(
                |(
                    sizes,
                    jobs,
                    base,
                    base_old,
                    extra_present,
                    keep,
                    booted_is_g0,
                    glue,
                    ceiling_frac,
                    reboot,
                    transient,
                    log,
                )| Gen {
                    sizes,
                    jobs,
                    base,
                    base_old,
                    extra_present,
                    keep,
                    booted_is_g0,
                    glue,
                    ceiling_frac,
                    reboot,
                    transient,
                    log,
                },
            )
    })
}

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v.dedup();
    v
}

fn build(g: &Gen) -> SpaceProblem {
    let mut sizes = g.sizes.clone();
    let mut jobs = Vec::new();
    for (i, (old, new, non_vital, maskable)) in g.jobs.iter().enumerate() {
        let stub = non_vital.then(|| {
            sizes.push(1);
            (sizes.len() - 1) as u32
        });
        jobs.push(Job {
            name: format!("job{i}"),
            old: if *maskable {
                sorted(old.clone())
            } else {
                Vec::new()
            },
            new: sorted(new.clone()),
            stub,
            maskable: *maskable,
        });
    }
    let n = sizes.len();
    let base = sorted(g.base.clone());
    let base_old = sorted(g.base_old.clone());
    let mut present = vec![false; n];
    let mut g0 = vec![false; n];
    for &x in jobs
        .iter()
        .flat_map(|j| j.old.iter())
        .chain(&base)
        .chain(&base_old)
    {
        g0[x as usize] = true;
        present[x as usize] = true;
    }
    for &x in &g.extra_present {
        present[x as usize] = true;
    }
    let mut keep = vec![false; n];
    for &x in &g.keep {
        keep[x as usize] = true;
        present[x as usize] = true;
    }
    let used: u64 = (0..n).filter(|&i| present[i]).map(|i| sizes[i]).sum();
    let mut p = SpaceProblem {
        sizes,
        present,
        keep,
        booted: if g.booted_is_g0 { g0 } else { vec![false; n] },
        jobs,
        base,
        base_old,
        step_glue: g.glue,
        step_glue_paths: g.transient.1.iter().sum(),
        glue_outputs: g.transient.1.clone(),
        glue_by_job: match g.transient.2.is_empty() {
            true => Vec::new(),
            false => g.transient.2[..g.jobs.len()].to_vec(),
        },
        registration_transient: g.transient.0,
        log_per_build: g.log,
        used,
        ceiling: u64::MAX,
        reboot_allowed: g.reboot,
    };
    let plain = p.plain_peak();
    p.ceiling = used + (plain - used) * g.ceiling_frac as u64 / 100;
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn plans_fit_upgrade_once_end_at_target_and_match_the_model(g in gen()) {
        let p = build(&g);
        p.validate().unwrap();
        match order(&p) {
            Ok(o) => {
                prop_assert!(!o.steps.is_empty());
                prop_assert!(o.peak <= p.ceiling, "peak {} above ceiling {}", o.peak, p.ceiling);
                let mut to_new = vec![0; p.jobs.len()];
                let mut to_stub = vec![0; p.jobs.len()];
                for s in &o.steps {
                    prop_assert!(s.space.peak <= p.ceiling);
                    for m in &s.moves {
                        match m.to {
                            Side::New => to_new[m.job as usize] += 1,
                            Side::Stub => to_stub[m.job as usize] += 1,
                            Side::Old => prop_assert!(false, "a move back to old"),
                        }
                    }
                }
                prop_assert!(to_new.iter().all(|&c| c == 1), "each job upgraded once: {:?}", to_new);
                prop_assert!(to_stub.iter().all(|&c| c <= 1));
                for (j, job) in p.jobs.iter().enumerate() {
                    if to_stub[j] == 1 {
                        prop_assert!(job.stub.is_some(), "a vital job was stubbed");
                    }
                    if !job.maskable {
                        // It cannot stay old: it moves in the first step.
                        prop_assert!(o.steps[0].moves.iter().any(|m| m.job as usize == j));
                    }
                }
                // The model's numbers are the plan's numbers.
                let model = replay(&p, &o);
                let ours: Vec<StepSpace> = o.steps.iter().map(|s| s.space).collect();
                prop_assert_eq!(model, ours);
                prop_assert_eq!(o.peak, o.steps.iter().map(|s| s.space.peak).max().unwrap());
                // Reboots only when allowed.
                prop_assert!(p.reboot_allowed || o.steps.iter().all(|s| !s.reboot_after));
            }
            Err(nofit) => {
                prop_assert!(nofit.missing_total > 0 || nofit.missing_next > 0 || p.jobs.iter().any(|j| j.stub.is_some()) || p.reboot_allowed);
                // With room enough, a plan exists.
                let mut roomy = p.clone();
                roomy.ceiling = u64::MAX;
                let o = order(&roomy).expect("an unconstrained plan always exists");
                prop_assert!(o.sequence_peak > p.ceiling, "a plan with peak {} existed under {}", o.sequence_peak, p.ceiling);
            }
        }
    }

    #[test]
    fn merging_into_the_headroom_stays_under_the_ceiling(g in gen(), pct in 0u8..=100) {
        let p = build(&g);
        if let (Ok(low), Ok(few)) = (order(&p), order_with(&p, pct)) {
            prop_assert!(few.peak <= p.ceiling);
            let model = replay(&p, &few);
            let ours: Vec<StepSpace> = few.steps.iter().map(|s| s.space).collect();
            prop_assert_eq!(model, ours);
            let moves = |o: &Order| o.steps.iter().map(|s| s.moves.len()).sum::<usize>();
            prop_assert_eq!(moves(&low), moves(&few));
        }
    }

    #[test]
    fn more_room_never_loses_a_plan(g in gen()) {
        let mut p = build(&g);
        let mut roomy = p.clone();
        roomy.ceiling = u64::MAX;
        let free_peak = order(&roomy).unwrap().sequence_peak;
        p.ceiling = free_peak;
        prop_assert!(order(&p).is_ok());
    }
}

/// Two big packages that cannot be upgraded at once: the plan takes them one by one.
#[test]
fn two_big_packages_one_at_a_time() {
    // paths: 0 A.old 100, 1 A.new 100, 2 B.old 100, 3 B.new 100, 4 glibc 10
    let p = SpaceProblem {
        sizes: vec![100, 100, 100, 100, 10],
        present: vec![true, false, true, false, true],
        keep: vec![false; 5],
        booted: vec![false; 5],
        jobs: vec![
            Job {
                name: "A".into(),
                old: vec![0, 4],
                new: vec![1, 4],
                stub: None,
                maskable: true,
            },
            Job {
                name: "B".into(),
                old: vec![2, 4],
                new: vec![3, 4],
                stub: None,
                maskable: true,
            },
        ],
        base: vec![4],
        base_old: vec![],
        step_glue: 1,
        step_glue_paths: 0,
        glue_outputs: Vec::new(),
        glue_by_job: Vec::new(),
        registration_transient: 0,
        log_per_build: 0,
        used: 210,
        ceiling: 320,
        reboot_allowed: false,
    };
    assert_eq!(p.plain_peak(), 411);
    let o = order(&p).unwrap();
    assert_eq!(o.steps.len(), 2);
    assert_eq!(o.peak, 312);
    assert_eq!(o.steps[0].space.frees, 100);
    assert_eq!(o.steps[1].space.frees, 101);
    assert_eq!(o.steps[1].space.used_after, 211);
}

/// Nix's write-ahead log: each path a step's realise registers (its glue's too) holds some bytes
/// while that realise runs. They count in the step's peak and in the plain upgrade's, never after.
#[test]
fn a_realise_holds_its_registrations_at_the_peak_only() {
    // As in two_big_packages_one_at_a_time, with 20 bytes a registration and one glue path.
    let mut p = SpaceProblem {
        sizes: vec![100, 100, 100, 100, 10],
        present: vec![true, false, true, false, true],
        keep: vec![false; 5],
        booted: vec![false; 5],
        jobs: (0..2)
            .map(|j| Job {
                name: format!("{j}"),
                old: vec![2 * j, 4],
                new: vec![2 * j + 1, 4],
                stub: None,
                maskable: true,
            })
            .collect(),
        base: vec![4],
        base_old: vec![],
        step_glue: 1,
        step_glue_paths: 1,
        glue_outputs: Vec::new(),
        glue_by_job: Vec::new(),
        registration_transient: 20,
        log_per_build: 0,
        used: 210,
        ceiling: 352,
        reboot_allowed: false,
    };
    // Both packages and the glue in one realise: 3 registrations.
    assert_eq!(p.plain_peak(), 411 + 60);
    let o = order(&p).unwrap();
    assert_eq!(o.steps.len(), 2);
    assert_eq!(o.peak, 312 + 40);
    assert_eq!(o.steps[1].space.used_after, 211);
    p.ceiling = 351;
    assert!(
        order(&p).is_err(),
        "one byte short of the second step's realise"
    );
}

/// The booted system pins G0: nothing is freed without a reboot; with one, the plan fits.
#[test]
fn booted_pins_need_a_reboot() {
    let mut p = SpaceProblem {
        sizes: vec![100, 100, 100, 100],
        present: vec![true, false, true, false],
        keep: vec![false; 4],
        booted: vec![true, false, true, false],
        jobs: vec![
            Job {
                name: "A".into(),
                old: vec![0],
                new: vec![1],
                stub: None,
                maskable: true,
            },
            Job {
                name: "B".into(),
                old: vec![2],
                new: vec![3],
                stub: None,
                maskable: true,
            },
        ],
        base: vec![],
        base_old: vec![],
        step_glue: 0,
        step_glue_paths: 0,
        glue_outputs: Vec::new(),
        glue_by_job: Vec::new(),
        registration_transient: 0,
        log_per_build: 0,
        used: 200,
        ceiling: 300,
        reboot_allowed: false,
    };
    let e = order(&p).unwrap_err();
    assert_eq!(e.moves_done, 1);
    assert_eq!(e.missing_next, 100);
    assert_eq!(e.reboot_would_free, 100);
    assert!(e.fits_with_reboot);
    p.reboot_allowed = true;
    let o = order(&p).unwrap();
    assert_eq!(o.steps.len(), 2);
    assert!(o.steps[0].reboot_after);
    assert_eq!(o.steps[0].space.reboot_frees, 100);
    assert_eq!(o.peak, 300);
}

/// A non-vital package is stubbed first and comes back upgraded at the end.
#[test]
fn non_vital_is_stubbed_and_returns() {
    // 0 A.old 100, 1 A.new 100, 2 B.old 100, 3 B.new 100, 4 stub(B) 1
    let p = SpaceProblem {
        sizes: vec![100, 100, 100, 100, 1],
        present: vec![true, false, true, false, false],
        keep: vec![false; 5],
        booted: vec![false; 5],
        jobs: vec![
            Job {
                name: "A".into(),
                old: vec![0],
                new: vec![1],
                stub: None,
                maskable: true,
            },
            Job {
                name: "B".into(),
                old: vec![2],
                new: vec![3],
                stub: Some(4),
                maskable: true,
            },
        ],
        base: vec![],
        base_old: vec![],
        step_glue: 0,
        step_glue_paths: 0,
        glue_outputs: Vec::new(),
        glue_by_job: Vec::new(),
        registration_transient: 0,
        log_per_build: 0,
        used: 200,
        ceiling: 250,
        reboot_allowed: false,
    };
    let o = order(&p).unwrap();
    let moves: Vec<(u32, Side)> = o
        .steps
        .iter()
        .flat_map(|s| s.moves.iter().map(|m| (m.job, m.to)))
        .collect();
    assert_eq!(moves, vec![(1, Side::Stub), (0, Side::New), (1, Side::New)]);
    assert!(o.peak <= 250);

    // Without the stub nothing fits, and the shortfall says which non-vital names would help.
    // (Sizes in KiB here: a real stub is a 112-byte NAR.)
    let mut q = p.clone();
    q.jobs[1].stub = None;
    for s in q.sizes.iter_mut() {
        *s *= 1024;
    }
    q.used *= 1024;
    q.ceiling *= 1024;
    let e = order(&q).unwrap_err();
    assert_eq!(e.missing_next, 50 * 1024);
    assert_eq!(e.fits_with_non_vital.len(), 1, "{e:?}");
    assert!(e.stub_candidates.iter().any(|c| c.1 == 100 * 1024));
}
