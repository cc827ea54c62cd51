//! The engine on the in-memory `ModelStore` (no Nix): random NixOS-shaped worlds planned by the
//! real planner, runs crashed at every checkpoint and resumed (or unwound) by a fresh executor
//! over the same journal and world, random faults (a build that fails, an activation that fails,
//! a disk that is too small). After every effect the profile and current-system name a complete
//! generation that is G0, a planned step or the target, and no live path was deleted; every run
//! ends at the target or at G0 (or held at a step when asked).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::AtomicBool;

use proptest::prelude::*;

use stepwise::drv::{StoreDir, StorePath};
use stepwise::effects::journal::{
    Action, OnFailure, RebootPolicy, Record, RunHeader, RunOptions, Strategy, Target, Transition,
};
use stepwise::effects::model_store::{DrvSpec, ModelStore};
use stepwise::effects::{Store, System};
use stepwise::engine::plan_inputs::SystemLinks;
use stepwise::engine::steps::{PlannerSource, StepMasks};
use stepwise::engine::{
    ContinueRequest, Executor, MemLog, Prepared as Prepared_, RunEnd, RunLog, Seams, SystemClock,
    UpgradeOutcome, UpgradeRequest,
};
use stepwise::transition::{Chain, Outcome};

const KIB: u64 = 1024;
const PROFILE: &str = "/nix/var/nix/profiles/system";
const CURRENT: &str = "/run/current-system";
const BOOTED: &str = "/run/booted-system";
/// The run's roots directory: a path where no directory can ever be made, so a model run that
/// reached for the real filesystem (it did: tests running in parallel raced on a shared real
/// directory, and `pin-derivations` failed now and then) fails every time.
const ROOTS: &str = "/dev/null/stepwise-roots";

struct World {
    store: ModelStore,
    g0_out: StorePath,
    target_drv: StorePath,
    target_out: StorePath,
}

/// A system of `sizes.len()` packages (old size, new size in KiB), each under a system-path
/// glue and a unit file glue, with a toplevel; G0 installed and running (not booted).
fn world(sizes: &[(u64, u64)], broken: Option<usize>, capacity: u64) -> World {
    world_with_history(sizes, broken, capacity, 0)
}

/// `world`, with `older` generations of the user's in the profile before G0's.
fn world_with_history(
    sizes: &[(u64, u64)],
    broken: Option<usize>,
    capacity: u64,
    older: usize,
) -> World {
    let sd = StoreDir::new("/nix/store").unwrap();
    let ms = ModelStore::new(sd, capacity);
    ms.set_system_links(CURRENT, BOOTED);
    for i in 0..older {
        let hash = stepwise::drv::nix32::encode(&[i as u8 + 1; 20]);
        let top = StorePath::from_base_name(&format!("{hash}-nixos-system-model-22.{i}")).unwrap();
        ms.add_valid(&top, 4 * KIB, &[]);
        ms.mark_system(&top);
        ms.set_profile(Path::new(PROFILE), &top).unwrap();
    }
    let mut gens = Vec::new();
    for (gi, release) in ["23.05", "23.11"].iter().enumerate() {
        let mut pkgs = Vec::new();
        for (i, (old, new)) in sizes.iter().enumerate() {
            let (v, size) = if gi == 0 {
                ("1.0", *old)
            } else {
                ("2.0", *new)
            };
            let mut spec = DrvSpec::new(&format!("pkg{i}-{v}"), size * KIB);
            if gi == 1 && broken == Some(i) {
                spec = spec.failing(&format!("pkg{i}-{v}: 3 of 120 tests failed"));
            }
            let d = ms.add_derivation(&spec);
            if !(gi == 1 && broken == Some(i)) {
                ms.make_substitutable(&d);
            }
            pkgs.push(d);
        }
        let mut sp = DrvSpec::new("system-path", 2 * KIB).env("preferLocalBuild", "1");
        for p in &pkgs {
            sp = sp.input(p, &["out"]);
            let out = ms.outputs_of(p)["out"].clone();
            sp = sp.arg(&format!("/nix/store/{out}"));
        }
        let sp = ms.add_derivation(&sp);
        let mut unit = DrvSpec::new("unit-pkg0.service", KIB).env("preferLocalBuild", "1");
        unit = unit.input(&pkgs[0], &["out"]).env(
            "text",
            &format!(
                "ExecStart=/nix/store/{}/bin/pkg0",
                ms.outputs_of(&pkgs[0])["out"]
            ),
        );
        let unit = ms.add_derivation(&unit);
        let top = ms.add_derivation(
            &DrvSpec::new(&format!("nixos-system-model-{release}"), 4 * KIB)
                .env("preferLocalBuild", "1")
                .input(&sp, &["out"])
                .input(&unit, &["out"])
                .system(),
        );
        gens.push(top);
    }
    let g0_drv = gens[0].clone();
    let target_drv = gens[1].clone();
    ms.prebuild(&g0_drv).unwrap();
    let g0_out = ms.outputs_of(&g0_drv)["out"].clone();
    let target_out = ms.outputs_of(&target_drv)["out"].clone();
    ms.set_profile(Path::new(PROFILE), &g0_out).unwrap();
    ms.set_running_system(&g0_out, false);
    World {
        store: ms,
        g0_out,
        target_drv,
        target_out,
    }
}

struct Prepared {
    /// What the test asks `upgrade` for.
    req: UpgradeRequest,
    header: RunHeader,
    masks: StepMasks,
    chain: Chain,
    allowed: BTreeSet<StorePath>,
    /// The plan's boot figures.
    boot: stepwise::plan::BootPlan,
    /// Start the run from `header` as edited by the test, past `upgrade`'s preflight (which would
    /// refuse or plan it differently).
    past_preflight: bool,
}

fn request(w: &World, strategy: Strategy, on_failure: OnFailure) -> UpgradeRequest {
    UpgradeRequest {
        target: Target::Drv {
            path: PathBuf::from(format!("/nix/store/{}", w.target_drv)),
        },
        target_drv: w.target_drv.clone(),
        links: SystemLinks {
            profile: PROFILE.into(),
            current_system: CURRENT.into(),
            booted_system: BOOTED.into(),
        },
        action: Action::Switch,
        strategy,
        on_failure,
        reboot: RebootPolicy::Never,
        reboot_command: vec![],
        non_vital: vec![],
        together: vec![],
        reserve: Some(0),
        reboot_window: None,
        options: RunOptions::default(),
        boot_dir: None,
        roots_dir: ROOTS.into(),
        probe_dir: "/dev/null/stepwise-probe".into(),
        journal: "model".into(),
        legacy_masks: None,
    }
}

/// What `stepwise upgrade` does before the run, through the engine's own `prepare` (the code the
/// command line runs): plan, rewrite the steps, choose the chain. `None`: nothing fits.
fn prepare(w: &World, strategy: Strategy, on_failure: OnFailure) -> Option<Prepared> {
    prepare_with(w, request(w, strategy, on_failure))
}

fn prepare_with(w: &World, req: UpgradeRequest) -> Option<Prepared> {
    let ms = &w.store;
    let run = match stepwise::engine::prepare(&req, ms, ms, &mut |_| {}) {
        Ok(Prepared_::Run(run)) => run,
        Ok(Prepared_::AlreadyThere { .. }) => panic!("G0 is not the target"),
        Err(stepwise::error::Error::NoRoom { .. }) => return None,
        Err(e) => panic!("{e}"),
    };
    // The model's scenarios want a stepwise plan that fits (it has the boot figures).
    let boot = run.boot.clone()?;
    let mut allowed: BTreeSet<StorePath> = run
        .header
        .plan
        .iter()
        .map(|s| s.toplevel_out.clone())
        .collect();
    allowed.insert(w.g0_out.clone());
    allowed.insert(w.target_out.clone());
    for o in &allowed {
        ms.mark_system(o);
    }
    Some(Prepared {
        req,
        header: run.header.clone(),
        masks: run.masks.clone(),
        chain: run.chain,
        allowed,
        boot,
        past_preflight: false,
    })
}

/// The invariant after every effect: profile and current-system at a complete allowed
/// generation; every live path valid (nothing live was deleted).
fn check(ms: &ModelStore, allowed: &BTreeSet<StorePath>) -> Result<(), String> {
    let current = ms
        .read_system_link(Path::new(CURRENT))
        .unwrap()
        .ok_or("no current system")?;
    let profile = ms
        .generations(Path::new(PROFILE))
        .unwrap()
        .into_iter()
        .find(|g| g.current)
        .ok_or("no current generation")?
        .toplevel;
    let valid = ms.all_valid();
    for (what, p) in [("current-system", &current), ("profile", &profile)] {
        if !allowed.contains(p) {
            return Err(format!("{what} → {p}: not G0, a step or the target"));
        }
        let closure = ms
            .closure(std::slice::from_ref(p))
            .map_err(|e| e.to_string())?;
        if let Some(m) = closure.iter().find(|q| !valid.contains(*q)) {
            return Err(format!("{what} → {p} is incomplete: {m} missing"));
        }
    }
    for p in ms.live_paths().unwrap() {
        if !valid.contains(&p) {
            return Err(format!("live path {p} is not valid"));
        }
    }
    Ok(())
}

/// Superseded generations are dropped before the next boot-loader install: every install since
/// `installs_before` saw at most one generation more than the profile had before the run.
fn check_boot_entries(
    ms: &ModelStore,
    installs_before: usize,
    generations_before: usize,
) -> Result<(), String> {
    for (i, inst) in ms.boot_installs().iter().enumerate().skip(installs_before) {
        let n = inst
            .generations
            .get(Path::new(PROFILE))
            .copied()
            .unwrap_or(0);
        if n > generations_before + 1 {
            return Err(format!(
                "boot-loader install {} ({} {}) saw {n} profile generations; {generations_before} before the run",
                i - installs_before + 1,
                inst.action.as_str(),
                inst.toplevel
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Next {
    Resume,
    Unwind,
}

/// Run: crash at checkpoint `crash_at` (if any), then continue with `then` in a fresh executor.
/// Returns the final end and the number of checkpoints passed in the first process.
fn run(
    w: &World,
    prep: &Prepared,
    crash_at: Option<usize>,
    then: Next,
) -> Result<(RunEnd, usize), String> {
    let log = MemLog::default();
    let stop = AtomicBool::new(false);
    let passed = Rc::new(RefCell::new(0usize));
    let violation: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
    let roots = PathBuf::from(ROOTS);
    // Boot entries: the profile's generations at each boot-loader install of this run.
    let generations_before = w.store.generations(Path::new(PROFILE)).unwrap().len();
    let installs_before = w.store.boot_installs().len();
    let make_hook = |crash_at: Option<usize>| {
        let passed = passed.clone();
        let violation = violation.clone();
        let ms = w.store.clone();
        let allowed = prep.allowed.clone();
        Box::new(move |name: &str| {
            if name.starts_with("after-effect") && violation.borrow().is_none() {
                if let Err(e) = check(&ms, &allowed) {
                    *violation.borrow_mut() = Some(format!("after {name}: {e}"));
                }
            }
            *passed.borrow_mut() += 1;
            crash_at == Some(*passed.borrow())
        }) as Box<dyn FnMut(&str) -> bool>
    };
    let seams = |hook| Seams {
        store: &w.store,
        system: &w.store,
        clock: &SystemClock,
        stop: &stop,
        reserve: None,
        progress: Box::new(|_| {}),
        checkpoint: Some(hook),
    };
    let end = if prep.past_preflight {
        let source = PlannerSource::new(&w.store, prep.masks.clone());
        let mut l1 = log.clone();
        let mut ex = Executor::new(&w.store, &w.store, &mut l1, &source, &stop);
        ex.checkpoint = make_hook(crash_at);
        ex.start(
            prep.header.clone(),
            roots.clone(),
            prep.chain,
            "test".into(),
        )
        .map_err(|e| e.to_string())?
    } else {
        match stepwise::engine::upgrade(
            &prep.req,
            &mut seams(make_hook(crash_at)),
            &mut log.clone(),
        )
        .map_err(|e| e.to_string())?
        {
            UpgradeOutcome::Ran(end) => end,
            other => return Err(format!("{other:?}")),
        }
    };
    let first = *passed.borrow();
    if let Some(v) = violation.borrow().clone() {
        return Err(v);
    }
    let end = match end {
        RunEnd::Crashed { .. } => {
            // A new process: a fresh executor and planner source over the same journal and world.
            let req = ContinueRequest {
                accept_failed_units: false,
                roots_dir: roots.clone(),
                legacy_masks: None,
            };
            let mut seams = seams(make_hook(None));
            let r = match then {
                Next::Resume => stepwise::engine::resume(req, &mut seams, &mut log.clone()),
                Next::Unwind => stepwise::engine::unwind(req, &mut seams, &mut log.clone()),
            };
            match r {
                Ok(stepwise::engine::ContinueOutcome::Ran(e)) => e,
                // Crashed after the end was recorded: nothing left to do.
                Ok(stepwise::engine::ContinueOutcome::Nothing(_)) => RunEnd::Finished {
                    outcome: recorded_outcome(&log.last_run()),
                    failure: None,
                    units_failed: vec![],
                },
                Err(stepwise::engine::EngineError::Finished(o, _)) => RunEnd::Finished {
                    outcome: o,
                    failure: None,
                    units_failed: vec![],
                },
                Err(e) => return Err(e.to_string()),
            }
        }
        e => e,
    };
    if let Some(v) = violation.borrow().clone() {
        return Err(v);
    }
    check_boot_entries(&w.store, installs_before, generations_before)?;
    assert!(!log.last_run().is_empty());
    if let RunEnd::Finished { outcome, .. } = &end {
        // A run that ended (not held) owns no root any more.
        let left = w.store.roots(&roots).unwrap();
        if !matches!(outcome, Outcome::Held { .. }) && !left.is_empty() {
            return Err(format!("{outcome:?}, yet run roots are left: {left:?}"));
        }
    }
    Ok((end, first))
}

/// The outcome a run's `runFinished` records, as the machine names it.
fn recorded_outcome(records: &[(u64, Record)]) -> Outcome {
    use stepwise::effects::journal::Outcome as J;
    let failed = records
        .iter()
        .any(|(_, r)| matches!(r, Record::Failed { .. }));
    match records.iter().rev().find_map(|(_, r)| match r {
        Record::RunFinished { outcome } => Some(outcome.clone()),
        _ => None,
    }) {
        Some(J::ReachedTarget) => Outcome::ReachedTarget,
        Some(J::UnwoundToG0) => Outcome::Unwound { failed },
        Some(J::Held { step }) => Outcome::Held { at: step },
        other => panic!("no outcome recorded: {other:?}"),
    }
}

fn at(ms: &ModelStore) -> (StorePath, StorePath) {
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

/// Sizes where the plain upgrade does not fit but steps do: capacity between max and union.
fn tight_capacity(sizes: &[(u64, u64)]) -> u64 {
    let old: u64 = sizes.iter().map(|s| s.0).sum();
    let new: u64 = sizes.iter().map(|s| s.1).sum();
    let big = sizes.iter().map(|s| s.0.max(s.1)).max().unwrap();
    (old.max(new) + big + 64) * KIB
}

#[test]
fn stepwise_run_reaches_the_target_exactly() {
    let sizes = [(100, 110), (200, 190), (50, 60)];
    let w = world(&sizes, None, tight_capacity(&sizes));
    let prep = prepare(&w, Strategy::Auto, OnFailure::Unwind).expect("a plan fits");
    assert_eq!(prep.chain, Chain::Steps, "the plain upgrade does not fit");
    let (end, n) = run(&w, &prep, None, Next::Resume).unwrap();
    assert!(matches!(
        end,
        RunEnd::Finished {
            outcome: Outcome::ReachedTarget,
            ..
        }
    ));
    assert_eq!(at(&w.store), (w.target_out.clone(), w.target_out.clone()));
    assert!(!w.store.all_valid().contains(&w.g0_out), "G0 was collected");
    eprintln!("checkpoints in a clean stepwise run: {n}");
}

/// A stepwise run with two older generations of the user's: one boot-loader install per step, as
/// the plan says, each seeing at most one generation more than before the run (the previous step's
/// generation is dropped before the next install), and the bound is reached.
#[test]
fn one_install_per_step_and_one_entry_more_at_most() {
    let sizes = [(100, 110), (200, 190), (50, 60), (150, 160)];
    // Room for everything: the bound must come from the order of the transitions, not from
    // a disk that forces the drops.
    let roomy = (sizes.iter().map(|s| s.0 + s.1).sum::<u64>() + 256) * KIB;
    let w = world_with_history(&sizes, None, roomy, 2);
    let prep = prepare(&w, Strategy::Stepwise, OnFailure::Unwind).unwrap();
    assert_eq!(prep.boot.entries_before, 3);
    assert_eq!(prep.boot.entries_added_max, 1);
    assert!(prep.boot.installs >= 3, "{} steps", prep.boot.installs);
    let (end, _) = run(&w, &prep, None, Next::Resume).unwrap();
    assert!(matches!(
        end,
        RunEnd::Finished {
            outcome: Outcome::ReachedTarget,
            ..
        }
    ));
    let installs = w.store.boot_installs();
    assert_eq!(installs.len(), prep.boot.installs, "{installs:?}");
    let seen: Vec<usize> = installs
        .iter()
        .map(|i| i.generations[Path::new(PROFILE)])
        .collect();
    eprintln!("profile generations at each install: {seen:?} (3 before the run)");
    assert!(seen.iter().all(|&n| n <= 3 + 1), "{seen:?}");
    assert_eq!(seen.iter().max(), Some(&4));
    assert_eq!(w.store.generations(Path::new(PROFILE)).unwrap().len(), 3);
}

/// `--action test`: every step, intermediate ones included, is activated with `test`, so the run
/// never installs the boot loader (its default stays where it was); the target is reached.
#[test]
fn action_test_installs_nothing() {
    let sizes = [(100, 110), (200, 190), (50, 60), (150, 160)];
    let roomy = (sizes.iter().map(|s| s.0 + s.1).sum::<u64>() + 256) * KIB;
    let w = world_with_history(&sizes, None, roomy, 2);
    // Past preflight: it accepts `--action test` only where G0 is the booted system, whose pin
    // leaves nothing to free and so no intermediate step; the executor's choice of action for
    // intermediate steps is what this checks.
    let mut prep = prepare(&w, Strategy::Stepwise, OnFailure::Unwind).unwrap();
    prep.header.action = Action::Test;
    prep.past_preflight = true;
    assert!(
        prep.header.plan.len() >= 3,
        "intermediate steps to activate: {} step(s)",
        prep.header.plan.len()
    );
    let before = w.store.boot_installs().len();
    let (end, _) = run(&w, &prep, None, Next::Resume).unwrap();
    assert!(matches!(
        end,
        RunEnd::Finished {
            outcome: Outcome::ReachedTarget,
            ..
        }
    ));
    assert_eq!(
        w.store.boot_installs().len(),
        before,
        "{:?}",
        w.store.boot_installs()
    );
    assert_eq!(prep.boot.installs_with_test, 0);
}

#[test]
fn crash_at_every_checkpoint_then_resume_or_unwind() {
    let sizes = [(100, 110), (200, 190), (50, 60)];
    let probe = world(&sizes, None, tight_capacity(&sizes));
    let prep = prepare(&probe, Strategy::Stepwise, OnFailure::Unwind).unwrap();
    let (_, total) = run(&probe, &prep, None, Next::Resume).unwrap();
    let mut covered = 0;
    for k in 1..total {
        for then in [Next::Resume, Next::Unwind] {
            let w = world(&sizes, None, tight_capacity(&sizes));
            let prep = prepare(&w, Strategy::Stepwise, OnFailure::Unwind).unwrap();
            let (end, _) = run(&w, &prep, Some(k), then)
                .unwrap_or_else(|e| panic!("crash at {k}, {then:?}: {e}"));
            let RunEnd::Finished { outcome, .. } = end else {
                panic!("crash at {k}, {then:?}: {end:?}")
            };
            let (p, c) = at(&w.store);
            match (then, outcome) {
                (_, Outcome::ReachedTarget) => {
                    assert_eq!((&p, &c), (&w.target_out, &w.target_out))
                }
                (Next::Unwind, Outcome::Unwound { .. }) => {
                    assert_eq!((&p, &c), (&w.g0_out, &w.g0_out), "crash at {k}")
                }
                other => panic!("crash at {k}: {other:?}"),
            }
            covered += 1;
        }
    }
    eprintln!(
        "model kill points: {} checkpoints × resume/unwind = {covered}",
        total - 1
    );
    assert!(total > 40);
}

/// The intents a run journaled, each as "what gen" (gen: 0 for G0, k for step k; roots by
/// name), from the record after the first `Failed` on: the way back.
fn moves_after_failure(prep: &Prepared, records: &[(u64, Record)]) -> Vec<String> {
    let gen_of = |out: &StorePath| {
        if *out == prep.header.g0_toplevel {
            return "0".to_string();
        }
        let k = prep
            .header
            .plan
            .iter()
            .find(|s| s.toplevel_out == *out)
            .unwrap_or_else(|| panic!("{out} is not a planned generation"));
        k.index.to_string()
    };
    let from = records
        .iter()
        .position(|(_, r)| matches!(r, Record::Failed { .. }))
        .expect("the run failed");
    records[from..]
        .iter()
        .filter_map(|(_, r)| match r {
            Record::Intent { transition } => Some(match transition {
                Transition::Realise { step, .. } => format!("realise {step}"),
                Transition::SetProfile { toplevel, .. } => {
                    format!("set-profile {}", gen_of(toplevel))
                }
                Transition::Activate { toplevel, .. } => format!("activate {}", gen_of(toplevel)),
                Transition::Unpin { root } => format!(
                    "unpin {}",
                    root.file_name().unwrap_or_default().to_string_lossy()
                ),
                t => t.name().to_string(),
            }),
            _ => None,
        })
        .collect()
}

/// The way back from a failure to build step `n` (the last): its partial results removed, then
/// G_{n-1} → … → G1 → G0, each generation realised again, switched to, and its successor
/// dropped, unpinned and collected; then the run's roots released.
fn expected_way_back(n: u32) -> Vec<String> {
    let root = |k: u32| {
        if k == 0 {
            "out-g0-0".to_string()
        } else {
            format!("out-steps-{k}")
        }
    };
    let mut v = vec![format!("unpin {}", root(n)), "collect".into()];
    for k in (1..n).rev() {
        v.extend([
            format!("realise {}", k - 1),
            format!("set-profile {}", k - 1),
            format!("activate {}", k - 1),
            "drop-generation".into(),
            format!("unpin {}", root(k)),
            "collect".into(),
        ]);
    }
    v.push("release-roots".into());
    v
}

/// Unwinding from an intermediate step back through older intermediate steps. Five packages of
/// distinct sizes, none two of which fit in one step under the sequence's peak, so each step
/// upgrades one; the largest fails to build and moves last. The run fails at step 5 and walks
/// back G4 → G3 → G2 → G1 → G0, each intermediate generation rewritten from the target's graph
/// (its `.drv`s went with it), its old packages substituted again. Then crashed at every
/// checkpoint of that walk, and resumed or unwound by a fresh executor: G0 exactly, whole, and
/// no run root left.
#[test]
fn long_unwind_from_the_last_step_crashed_at_every_checkpoint() {
    let sizes = [(100, 100), (110, 110), (120, 120), (130, 130), (140, 140)];
    let broken = Some(4);
    let fresh = || {
        let w = world(&sizes, broken, tight_capacity(&sizes));
        let prep = prepare(&w, Strategy::Stepwise, OnFailure::Unwind).expect("a plan fits");
        (w, prep)
    };
    let (w, prep) = fresh();
    let n = prep.header.plan.len() as u32;
    assert_eq!(n, 5, "one package a step: {:?}", prep.header.plan);
    assert!(
        prep.header.plan[4]
            .units
            .iter()
            .any(|u| u.starts_with("pkg4")),
        "the failing package moves last: {:?}",
        prep.header.plan
    );
    let g0_closure = w.store.closure(std::slice::from_ref(&w.g0_out)).unwrap();

    // The clean failing run: where the failure falls among the checkpoints, and the way back.
    let log = MemLog::default();
    let stop = AtomicBool::new(false);
    let names: Rc<RefCell<Vec<(String, bool)>>> = Rc::default();
    let end = {
        let mut l = log.clone();
        let source = PlannerSource::new(&w.store, prep.masks.clone());
        let mut ex = Executor::new(&w.store, &w.store, &mut l, &source, &stop);
        let (names, log) = (names.clone(), log.clone());
        ex.checkpoint = Box::new(move |name: &str| {
            let failed = log
                .0
                .borrow()
                .iter()
                .any(|(_, r)| matches!(r, Record::Failed { .. }));
            names.borrow_mut().push((name.to_string(), failed));
            false
        });
        ex.start(prep.header.clone(), ROOTS.into(), prep.chain, "test".into())
            .unwrap()
    };
    assert!(
        matches!(
            end,
            RunEnd::Finished {
                outcome: Outcome::Unwound { failed: true },
                ..
            }
        ),
        "{end:?}"
    );
    assert_eq!(at(&w.store), (w.g0_out.clone(), w.g0_out.clone()));
    let records = log.last_run();
    assert!(
        records.iter().any(|(_, r)| matches!(
            r,
            Record::Failed { intent, .. }
                if records.iter().any(|(s, i)| s == intent && matches!(
                    i,
                    Record::Intent { transition: Transition::Realise { step: 5, .. } }
                ))
        )),
        "the realise of step 5 failed"
    );
    assert_eq!(moves_after_failure(&prep, &records), expected_way_back(n));
    let names = names.borrow().clone();
    let first_after = names.iter().position(|(_, f)| *f).expect("a failure") + 1;
    let total = names.len();

    let mut covered = 0;
    for k in first_after..=total {
        for then in [Next::Resume, Next::Unwind] {
            let (w, prep) = fresh();
            let (end, _) = run(&w, &prep, Some(k), then)
                .unwrap_or_else(|e| panic!("crash at {k}, {then:?}: {e}"));
            assert!(
                matches!(
                    end,
                    RunEnd::Finished {
                        outcome: Outcome::Unwound { .. },
                        ..
                    }
                ),
                "crash at {k} ({}), {then:?}: {end:?}",
                names[k - 1].0
            );
            assert_eq!(
                at(&w.store),
                (w.g0_out.clone(), w.g0_out.clone()),
                "crash at {k}"
            );
            let valid = w.store.all_valid();
            assert!(
                g0_closure.iter().all(|p| valid.contains(p)),
                "crash at {k}, {then:?}: G0's closure is whole"
            );
            covered += 1;
        }
    }
    eprintln!(
        "long unwind: {} checkpoints after the failure × resume/unwind = {covered}",
        total + 1 - first_after
    );
    assert!(
        covered >= 2 * 4 * 6,
        "every stage of 4 moves back: {covered}"
    );
}

/// The profile held G0 at two generations before the run (the user switched to another system
/// and back). The first move's `dropGeneration` drops both, and journals the newest
/// (journal-format.md §6); the user's other generations stay.
#[test]
fn dropping_g0_drops_every_generation_that_holds_it() {
    let sizes = [(100, 100), (110, 110), (120, 120)];
    let w = world_with_history(&sizes, None, tight_capacity(&sizes), 1);
    let older = w.store.generations(Path::new(PROFILE)).unwrap()[0]
        .toplevel
        .clone();
    w.store.set_profile(Path::new(PROFILE), &older).unwrap();
    w.store.set_profile(Path::new(PROFILE), &w.g0_out).unwrap();
    let before: Vec<(u64, bool)> = w
        .store
        .generations(Path::new(PROFILE))
        .unwrap()
        .iter()
        .map(|g| (g.number, g.toplevel == w.g0_out))
        .collect();
    assert_eq!(before, [(1, false), (2, true), (3, false), (4, true)]);
    let prep = prepare(&w, Strategy::Stepwise, OnFailure::Unwind).expect("a plan fits");
    // Before each drop: how many non-current generations hold G0.
    let seen: Rc<RefCell<Vec<usize>>> = Rc::default();
    let log = MemLog::default();
    let stop = AtomicBool::new(false);
    let end = {
        let mut l = log.clone();
        let source = PlannerSource::new(&w.store, prep.masks.clone());
        let mut ex = Executor::new(&w.store, &w.store, &mut l, &source, &stop);
        let (seen, ms, g0) = (seen.clone(), w.store.clone(), w.g0_out.clone());
        ex.checkpoint = Box::new(move |name: &str| {
            if name == "before-intent-drop-generation" {
                let gens = ms.generations(Path::new(PROFILE)).unwrap();
                let n = gens
                    .iter()
                    .filter(|g| g.toplevel == g0 && !g.current)
                    .count();
                seen.borrow_mut().push(n);
            }
            false
        });
        ex.start(prep.header.clone(), ROOTS.into(), prep.chain, "test".into())
            .unwrap()
    };
    assert!(
        matches!(
            end,
            RunEnd::Finished {
                outcome: Outcome::ReachedTarget,
                ..
            }
        ),
        "{end:?}"
    );
    assert_eq!(seen.borrow().first(), Some(&2), "{:?}", seen.borrow());
    let numbers: Vec<u64> = log
        .last_run()
        .iter()
        .filter_map(|(_, r)| match r {
            Record::Intent {
                transition: Transition::DropGeneration { number, .. },
            } => Some(*number),
            _ => None,
        })
        .collect();
    assert_eq!(
        numbers.first(),
        Some(&4),
        "the newest is journaled: {numbers:?}"
    );
    let after = w.store.generations(Path::new(PROFILE)).unwrap();
    assert!(
        !after.iter().any(|g| g.toplevel == w.g0_out),
        "no generation holds G0: {after:?}"
    );
    let kept: Vec<u64> = after
        .iter()
        .filter(|g| g.toplevel == older)
        .map(|g| g.number)
        .collect();
    assert_eq!(kept, [1, 3], "the user's generations stay");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random worlds, strategies, failures and crash points.
    #[test]
    fn random_runs_end_at_the_target_or_g0(
        sizes in proptest::collection::vec((20u64..300, 20u64..300), 2..5),
        broken in proptest::option::of(0usize..5),
        activation_fails in any::<bool>(),
        hold in any::<bool>(),
        strategy in prop_oneof![Just(Strategy::Auto), Just(Strategy::Stepwise), Just(Strategy::Direct)],
        crash_at in proptest::option::of(1usize..80),
        unwind_after in any::<bool>(),
        older in 0usize..3,
    ) {
        let broken = broken.filter(|b| *b < sizes.len());
        let roomy = strategy == Strategy::Direct;
        let cap = if roomy {
            (sizes.iter().map(|s| s.0 + s.1).sum::<u64>() + 256) * KIB
        } else {
            tight_capacity(&sizes)
        };
        let w = world_with_history(&sizes, broken, cap, older);
        let history: Vec<StorePath> = w
            .store
            .generations(Path::new(PROFILE))
            .unwrap()
            .into_iter()
            .filter(|g| !g.current)
            .map(|g| g.toplevel)
            .collect();
        let on_failure = if hold { OnFailure::Hold } else { OnFailure::Unwind };
        let Some(prep) = prepare(&w, strategy, on_failure) else { return Ok(()) };
        if activation_fails {
            // The last step's activation fails: walk back (or hold).
            w.store.set_activation_fails(&w.target_out, true);
        }
        let then = if unwind_after { Next::Unwind } else { Next::Resume };
        let (end, _) = run(&w, &prep, crash_at, then).map_err(TestCaseError::fail)?;
        let (p, c) = at(&w.store);
        let failing = broken.is_some() || activation_fails;
        match end {
            RunEnd::Finished { outcome: Outcome::ReachedTarget, .. } => {
                prop_assert!(!failing);
                prop_assert_eq!((&p, &c), (&w.target_out, &w.target_out));
            }
            RunEnd::Finished { outcome: Outcome::Unwound { .. }, .. } => {
                prop_assert_eq!((&p, &c), (&w.g0_out, &w.g0_out));
            }
            RunEnd::Finished { outcome: Outcome::Held { .. }, .. } => {
                prop_assert!(hold && failing);
                prop_assert!(prep.allowed.contains(&p));
                prop_assert_eq!(&p, &c);
            }
            other => prop_assert!(false, "{:?}", other),
        }
        // The user's older generations are untouched; the run leaves exactly one of its own.
        let gens: Vec<StorePath> = w
            .store
            .generations(Path::new(PROFILE))
            .unwrap()
            .into_iter()
            .map(|g| g.toplevel)
            .collect();
        prop_assert_eq!(&gens[..gens.len() - 1], &history[..], "{:?}", gens);
        prop_assert_eq!(gens.last(), Some(&p));
    }
}

/// A run recorded by format 1 (its header without masks; they were in `<journal>.steps.json`),
/// stopped mid-chain: continued when the side file's masks are given, refused (and the journal
/// left as it is) without them.
#[test]
fn a_format_1_run_continues_with_its_side_file_and_is_refused_without() {
    let sizes = [(100, 110), (200, 190), (50, 60)];
    let w = world(&sizes, None, tight_capacity(&sizes));
    let prep = prepare(&w, Strategy::Auto, OnFailure::Unwind).expect("a plan fits");
    assert_eq!(prep.chain, Chain::Steps);
    let log = MemLog::default();
    let stop = AtomicBool::new(false);
    let source = PlannerSource::new(&w.store, prep.masks.clone());
    {
        let mut l = log.clone();
        let mut ex = Executor::new(&w.store, &w.store, &mut l, &source, &stop);
        let mut n = 0;
        ex.checkpoint = Box::new(move |name: &str| {
            n += 1;
            n > 12 && name.starts_with("after-intent")
        });
        let end = ex
            .start(prep.header.clone(), ROOTS.into(), prep.chain, "test".into())
            .unwrap();
        assert!(matches!(end, RunEnd::Crashed { .. }), "{end:?}");
    }
    // What a format-1 header reads back as.
    if let Record::RunStarted(h) = &mut log.0.borrow_mut()[0].1 {
        for s in &mut h.plan {
            s.mask = None;
            s.reboot_after = None;
        }
    }
    let before = log.0.borrow().len();
    let mut l = log.clone();
    let e = match Executor::new(&w.store, &w.store, &mut l, &source, &stop).resume(ROOTS.into()) {
        Err(e) => e,
        Ok(end) => panic!("resumed without masks: {end:?}"),
    };
    assert!(
        matches!(e, stepwise::engine::EngineError::Incomplete(_)),
        "{e}"
    );
    assert!(e.to_string().contains("steps.json"), "{e}");
    assert_eq!(log.0.borrow().len(), before, "nothing was written");
    let mut ex = Executor::new(&w.store, &w.store, &mut l, &source, &stop);
    ex.legacy_masks = Some(prep.masks.clone());
    let end = ex.resume(ROOTS.into()).unwrap();
    assert!(
        matches!(
            end,
            RunEnd::Finished {
                outcome: Outcome::ReachedTarget,
                ..
            }
        ),
        "{end:?}"
    );
    assert_eq!(at(&w.store), (w.target_out.clone(), w.target_out.clone()));
}

/// A clock that says what the test wants.
struct FixedClock(std::cell::Cell<u16>);

impl stepwise::engine::Clock for FixedClock {
    fn local_minute(&self) -> u16 {
        self.0.get()
    }
}

fn api_seams<'a>(w: &'a World, stop: &'a AtomicBool, clock: &'a FixedClock) -> Seams<'a> {
    Seams {
        store: &w.store,
        system: &w.store,
        clock,
        stop,
        reserve: None,
        progress: Box::new(|_| {}),
        checkpoint: None,
    }
}

fn continue_req() -> ContinueRequest {
    ContinueRequest {
        accept_failed_units: false,
        roots_dir: ROOTS.into(),
        legacy_masks: None,
    }
}

/// `resume` and `unwind` with no run, or after a finished one: nothing to do, nothing written.
#[test]
fn resume_and_unwind_with_nothing_to_continue_do_nothing() {
    use stepwise::engine::ContinueOutcome;
    let sizes = [(100, 110), (200, 190), (50, 60)];
    let w = world(&sizes, None, tight_capacity(&sizes));
    let prep = prepare(&w, Strategy::Auto, OnFailure::Unwind).expect("a plan fits");
    let (stop, clock) = (AtomicBool::new(false), FixedClock(0.into()));
    let mut log = MemLog::default();
    for unwind in [false, true] {
        let mut seams = api_seams(&w, &stop, &clock);
        let o = if unwind {
            stepwise::engine::unwind(continue_req(), &mut seams, &mut log)
        } else {
            stepwise::engine::resume(continue_req(), &mut seams, &mut log)
        }
        .unwrap();
        assert!(
            matches!(&o, ContinueOutcome::Nothing(m) if m.contains("no run")),
            "{o:?}"
        );
        assert!(log.0.borrow().is_empty(), "a record was written");
    }
    let end = stepwise::engine::upgrade(&prep.req, &mut api_seams(&w, &stop, &clock), &mut log);
    assert!(
        matches!(end, Ok(UpgradeOutcome::Ran(RunEnd::Finished { .. }))),
        "{end:?}"
    );
    let records = log.0.borrow().len();
    for unwind in [false, true] {
        let mut seams = api_seams(&w, &stop, &clock);
        let o = if unwind {
            stepwise::engine::unwind(continue_req(), &mut seams, &mut log)
        } else {
            stepwise::engine::resume(continue_req(), &mut seams, &mut log)
        }
        .unwrap();
        assert!(
            matches!(&o, ContinueOutcome::Nothing(m) if m.contains("finished")),
            "{o:?}"
        );
        assert_eq!(log.0.borrow().len(), records, "a record was written");
    }
}

/// The hourly `upgrade` finds a run killed mid-chain: it continues it to the end first (no exit 3
/// waiting for a `resume`), then sees the system at the target.
#[test]
fn upgrade_continues_an_unfinished_run_first() {
    let sizes = [(100, 110), (200, 190), (50, 60)];
    let w = world(&sizes, None, tight_capacity(&sizes));
    let prep = prepare(&w, Strategy::Auto, OnFailure::Unwind).expect("a plan fits");
    assert_eq!(prep.chain, Chain::Steps);
    let (stop, clock) = (AtomicBool::new(false), FixedClock(0.into()));
    let mut log = MemLog::default();
    let mut n = 0;
    let mut seams = api_seams(&w, &stop, &clock);
    seams.checkpoint = Some(Box::new(move |_: &str| {
        n += 1;
        n == 15
    }));
    let end = stepwise::engine::upgrade(&prep.req, &mut seams, &mut log).unwrap();
    assert!(
        matches!(end, UpgradeOutcome::Ran(RunEnd::Crashed { .. })),
        "{end:?}"
    );
    assert_ne!(at(&w.store).0, w.target_out, "stopped mid-chain");
    let end =
        stepwise::engine::upgrade(&prep.req, &mut api_seams(&w, &stop, &clock), &mut log).unwrap();
    assert_eq!(
        end,
        UpgradeOutcome::AlreadyThere {
            target_out: w.target_out.clone()
        }
    );
    assert_eq!(at(&w.store), (w.target_out.clone(), w.target_out.clone()));
    let runs = log
        .0
        .borrow()
        .iter()
        .filter(|(_, r)| matches!(r, Record::RunStarted(_)))
        .count();
    assert_eq!(runs, 1, "the unfinished run was continued, not overlaid");
    assert!(matches!(
        log.last_run().last(),
        Some((_, Record::RunFinished { .. }))
    ));
}

/// `--reboot-window`: a run that needs a reboot outside the window stops before it (the step
/// active and complete); a later run inside the window reboots and goes on to the target.
#[test]
fn a_reboot_outside_the_window_waits_for_a_run_inside_it() {
    let sizes = [(100, 110), (200, 190), (50, 60)];
    let w = world(&sizes, None, tight_capacity(&sizes));
    let mut prep = prepare(&w, Strategy::Stepwise, OnFailure::Unwind).expect("a plan fits");
    assert!(prep.header.plan.len() >= 2);
    // Past preflight: a reboot after step 1, allowed from 01:00 to 02:00.
    prep.header.plan[0].reboot_after = Some(true);
    prep.header.reboot = RebootPolicy::WhenNeeded;
    prep.header.reboot_command = vec!["reboot".into()];
    prep.header.reboot_window = Some(stepwise::effects::journal::RebootWindow {
        lower_minute: 60,
        upper_minute: 120,
    });
    let (stop, clock) = (AtomicBool::new(false), FixedClock((12 * 60).into()));
    let mut log = MemLog::default();
    let source = PlannerSource::new(&w.store, prep.masks.clone());
    let end = {
        let mut l = log.clone();
        let mut ex = Executor::new(&w.store, &w.store, &mut l, &source, &stop);
        ex.clock = Some(&clock);
        ex.start(prep.header.clone(), ROOTS.into(), prep.chain, "test".into())
            .unwrap()
    };
    let RunEnd::Stopped { why } = &end else {
        panic!("{end:?}")
    };
    assert!(
        why.contains("outside the reboot window 01:00-02:00"),
        "{why}"
    );
    assert_eq!(w.store.reboots(), 0);
    let step1 = prep.header.plan[0].toplevel_out.clone();
    assert_eq!(at(&w.store), (step1.clone(), step1.clone()));
    check(&w.store, &prep.allowed).unwrap();
    // Still outside: the same stop, nothing done.
    let o = stepwise::engine::resume(continue_req(), &mut api_seams(&w, &stop, &clock), &mut log)
        .unwrap();
    assert!(matches!(
        o,
        stepwise::engine::ContinueOutcome::Ran(RunEnd::Stopped { .. })
    ));
    assert_eq!(w.store.reboots(), 0);
    // Inside the window: the reboot, then (after the boot) the rest of the chain.
    clock.0.set(90);
    let o = stepwise::engine::resume(continue_req(), &mut api_seams(&w, &stop, &clock), &mut log)
        .unwrap();
    assert!(
        matches!(&o, stepwise::engine::ContinueOutcome::Ran(RunEnd::Stopped { why }) if why.contains("rebooting")),
        "{o:?}"
    );
    assert_eq!(w.store.reboots(), 1);
    let o = stepwise::engine::resume(continue_req(), &mut api_seams(&w, &stop, &clock), &mut log)
        .unwrap();
    assert!(
        matches!(
            o,
            stepwise::engine::ContinueOutcome::Ran(RunEnd::Finished {
                outcome: Outcome::ReachedTarget,
                ..
            })
        ),
        "{o:?}"
    );
    assert_eq!(at(&w.store), (w.target_out.clone(), w.target_out.clone()));
}

/// `--keep-previous` asked of an upgrade on `w`: the engine's own preflight, and the line it says.
fn prepare_keeping(w: &World, strategy: Strategy) -> (Prepared, String) {
    let mut req = request(w, strategy, OnFailure::Unwind);
    req.options.keep_previous = true;
    let Ok(Prepared_::Run(run)) = stepwise::engine::prepare(&req, &w.store, &w.store, &mut |_| {})
    else {
        panic!("a run is prepared")
    };
    let why = run.keep.clone().expect("asked to keep G0").why;
    (prepare_with(w, req).expect("a plan fits"), why)
}

/// G0's closure is all valid and a non-current profile generation still holds G0.
fn g0_kept(w: &World) -> bool {
    let Ok(closure) = w.store.closure(std::slice::from_ref(&w.g0_out)) else {
        return false;
    };
    let valid = w.store.all_valid();
    let gens = w.store.generations(Path::new(PROFILE)).unwrap();
    closure.iter().all(|p| valid.contains(p))
        && gens.iter().any(|g| g.toplevel == w.g0_out && !g.current)
}

#[test]
fn keep_previous_keeps_g0_a_generation_when_the_plain_upgrade_fits_even_across_crashes() {
    let sizes = [(100, 110), (200, 190), (50, 60)];
    let roomy = 4096 * KIB;
    let probe = world(&sizes, None, roomy);
    let (prep, why) = prepare_keeping(&probe, Strategy::Auto);
    assert_eq!(prep.chain, Chain::Direct);
    assert!(prep.header.options.keep_previous, "{why}");
    assert!(why.contains("G0 stays a generation"), "{why}");
    let (end, total) = run(&probe, &prep, None, Next::Resume).unwrap();
    assert!(matches!(
        end,
        RunEnd::Finished {
            outcome: Outcome::ReachedTarget,
            ..
        }
    ));
    assert_eq!(
        at(&probe.store),
        (probe.target_out.clone(), probe.target_out.clone())
    );
    assert!(g0_kept(&probe), "G0 kept after a clean run");
    // A fresh executor reads the choice back from the run's header.
    for k in 1..total {
        let w = world(&sizes, None, roomy);
        let (prep, _) = prepare_keeping(&w, Strategy::Auto);
        let (end, _) =
            run(&w, &prep, Some(k), Next::Resume).unwrap_or_else(|e| panic!("crash at {k}: {e}"));
        assert!(
            matches!(
                end,
                RunEnd::Finished {
                    outcome: Outcome::ReachedTarget,
                    ..
                }
            ),
            "crash at {k}: {end:?}"
        );
        assert!(g0_kept(&w), "crash at {k} of {total}: G0 kept after resume");
    }
}

#[test]
fn keep_previous_cannot_keep_g0_in_steps_and_says_why() {
    let sizes = [(100, 110), (200, 190), (50, 60)];
    let w = world(&sizes, None, tight_capacity(&sizes));
    let (prep, why) = prepare_keeping(&w, Strategy::Auto);
    assert_eq!(prep.chain, Chain::Steps);
    assert!(!prep.header.options.keep_previous);
    assert!(why.contains("G0 cannot be kept"), "{why}");
    let (end, _) = run(&w, &prep, None, Next::Resume).unwrap();
    assert!(matches!(
        end,
        RunEnd::Finished {
            outcome: Outcome::ReachedTarget,
            ..
        }
    ));
    assert!(!w.store.all_valid().contains(&w.g0_out), "G0 was collected");
    let gens = w.store.generations(Path::new(PROFILE)).unwrap();
    assert!(!gens.iter().any(|g| g.toplevel == w.g0_out), "{gens:?}");
}

/// A disk that something else fills just before the `nth` realise starts (leaving `leave` bytes
/// free), and the checks after every effect: profile and running system complete generations (a
/// re-plan makes new step generations, so any of the model's systems), no live path deleted.
struct Filler {
    nth: usize,
    leave: u64,
    realises: usize,
    violation: Option<String>,
}

fn filling_hook<'a>(w: &'a World, f: &'a RefCell<Filler>) -> Box<dyn FnMut(&str) -> bool + 'a> {
    Box::new(move |name: &str| {
        let ms = &w.store;
        let mut f = f.borrow_mut();
        if name == "before-intent-realise" {
            f.realises += 1;
            if f.realises == f.nth {
                let free = ms.space().unwrap().free;
                let used_elsewhere = free.saturating_sub(f.leave);
                ms.set_used_elsewhere(used_elsewhere);
            }
        }
        if name == "after-effect-realise" {
            // A re-plan's generations are systems too (activation accepts them).
            for p in ms.all_valid() {
                if p.name().starts_with("nixos-system-model") {
                    ms.mark_system(&p);
                }
            }
        }
        if name.starts_with("after-effect") && f.violation.is_none() {
            let systems: BTreeSet<StorePath> = ms
                .all_valid()
                .into_iter()
                .filter(|p| p.name().starts_with("nixos-system-model"))
                .collect();
            if let Err(e) = check(ms, &systems) {
                f.violation = Some(format!("after {name}: {e}"));
            }
        }
        false
    })
}

fn adapt_seams<'a>(
    w: &'a World,
    stop: &'a AtomicBool,
    hook: Box<dyn FnMut(&str) -> bool + 'a>,
) -> Seams<'a> {
    Seams {
        store: &w.store,
        system: &w.store,
        clock: &SystemClock,
        stop,
        reserve: None,
        progress: Box::new(|_| {}),
        checkpoint: Some(hook),
    }
}

/// `upgrade` with the disk filled before the `nth` realise; then, if the run stopped because
/// nothing fitted, the filler gone and `extra` bytes more disk, `resume`. Returns the first end,
/// the last end and the journal.
fn upgrade_filled(
    w: &World,
    prep: &Prepared,
    nth: usize,
    leave: u64,
    extra: u64,
) -> Result<(RunEnd, RunEnd, MemLog), String> {
    let stop = AtomicBool::new(false);
    let filler = RefCell::new(Filler {
        nth,
        leave,
        realises: 0,
        violation: None,
    });
    let mut log = MemLog::default();
    let first = match stepwise::engine::upgrade(
        &prep.req,
        &mut adapt_seams(w, &stop, filling_hook(w, &filler)),
        &mut log,
    )
    .map_err(|e| e.to_string())?
    {
        UpgradeOutcome::Ran(end) => end,
        other => return Err(format!("{other:?}")),
    };
    if let Some(v) = filler.borrow().violation.clone() {
        return Err(v);
    }
    let last = match &first {
        RunEnd::Stopped { why } if why.contains("no re-plan fits") => {
            // Stopped at a complete generation; with room again, `resume` plans the rest.
            w.store.set_used_elsewhere(0);
            let cap = w.store.space().unwrap().total;
            w.store.set_capacity(cap + extra);
            let o = stepwise::engine::resume(
                continue_req(),
                &mut adapt_seams(w, &stop, filling_hook(w, &filler)),
                &mut log,
            )
            .map_err(|e| e.to_string())?;
            match o {
                stepwise::engine::ContinueOutcome::Ran(end) => end,
                other => return Err(format!("{other:?}")),
            }
        }
        other => other.clone(),
    };
    if let Some(v) = filler.borrow().violation.clone() {
        return Err(v);
    }
    Ok((first, last, log))
}

fn reached(end: &RunEnd) -> bool {
    matches!(
        end,
        RunEnd::Finished {
            outcome: Outcome::ReachedTarget,
            ..
        }
    )
}

fn count(log: &MemLog, kind: &str) -> usize {
    log.last_run()
        .iter()
        .filter(|(_, r)| r.kind_name() == kind)
        .count()
}

/// A step that runs out of space (the disk filled by something else before its realise, leaving
/// half its estimate) is not a build failure: its leftovers go, the rest is planned again from
/// the generation the run stands at, finer, and the run reaches the target. A crash right after
/// the re-plan is journaled resumes on the new plan.
#[test]
fn a_step_out_of_space_replans_and_reaches_the_target() {
    let sizes = [(300, 310), (20, 25), (20, 25), (20, 25), (20, 25)];
    let mut replanned_and_reached = None;
    for nth in 1..=4 {
        let w = world(&sizes, None, tight_capacity(&sizes));
        let prep = prepare(&w, Strategy::Stepwise, OnFailure::Unwind).expect("a plan fits");
        let Some(step) = prep.header.plan.get(nth - 1) else {
            break;
        };
        let (first, last, log) = upgrade_filled(&w, &prep, nth, step.adds / 2, 400 * KIB)
            .unwrap_or_else(|e| panic!("realise {nth}: {e}"));
        assert!(reached(&last), "realise {nth}: {first:?} then {last:?}");
        assert_eq!(at(&w.store), (w.target_out.clone(), w.target_out.clone()));
        assert_eq!(count(&log, "unwindStarted"), 0, "space never unwinds");
        assert!(count(&log, "spaceRanOut") >= 1, "realise {nth}");
        if reached(&first) && count(&log, "replanned") >= 1 {
            replanned_and_reached = Some(nth);
        }
    }
    let nth = replanned_and_reached.expect("no step was split finer and went on without help");

    // A crash right after the re-plan is journaled: `resume` follows the new plan.
    let w = world(&sizes, None, tight_capacity(&sizes));
    let prep = prepare(&w, Strategy::Stepwise, OnFailure::Unwind).expect("a plan fits");
    let filler = RefCell::new(Filler {
        nth,
        leave: prep.header.plan[nth - 1].adds / 2,
        realises: 0,
        violation: None,
    });
    let stop = AtomicBool::new(false);
    let mut fill = filling_hook(&w, &filler);
    let crash = Box::new(move |name: &str| fill(name) || name == "after-replanned");
    let mut log = MemLog::default();
    let end =
        stepwise::engine::upgrade(&prep.req, &mut adapt_seams(&w, &stop, crash), &mut log).unwrap();
    let UpgradeOutcome::Ran(RunEnd::Crashed { at }) = &end else {
        panic!("no crash after a re-plan: {end:?}")
    };
    assert_eq!(at, "after-replanned");
    {
        let o = stepwise::engine::resume(
            continue_req(),
            &mut adapt_seams(&w, &stop, filling_hook(&w, &filler)),
            &mut log,
        )
        .unwrap();
        assert!(
            matches!(&o, stepwise::engine::ContinueOutcome::Ran(e) if reached(e)),
            "{o:?}"
        );
        assert_eq!(count(&log, "replanned"), 1, "the re-plan is not made twice");
        assert!(
            filler.borrow().violation.is_none(),
            "{filler:?}",
            filler = filler.borrow().violation
        );
    }
}

/// Nothing fits after a step ran out of space: the run stops (exit 3) at the complete generation
/// it stands at, saying what is missing, rather than unwinding; `resume` with more room reaches
/// the target.
#[test]
fn nothing_fits_stops_at_a_complete_generation_and_resume_with_room_reaches_the_target() {
    let sizes = [(100, 110), (200, 190), (50, 60)];
    let w = world(&sizes, None, tight_capacity(&sizes));
    let prep = prepare(&w, Strategy::Stepwise, OnFailure::Unwind).expect("a plan fits");
    assert!(prep.header.plan.len() >= 2);
    let (first, last, log) = upgrade_filled(&w, &prep, 2, 0, 400 * KIB).unwrap();
    let RunEnd::Stopped { why } = &first else {
        panic!("{first:?}")
    };
    assert!(why.contains("ran out of space"), "{why}");
    assert!(why.contains("stepwise resume"), "{why}");
    assert!(reached(&last), "{last:?}");
    assert_eq!(at(&w.store), (w.target_out.clone(), w.target_out.clone()));
    assert_eq!(count(&log, "unwindStarted"), 0);
    assert_eq!(count(&log, "spaceRanOut"), 1);
    assert_eq!(count(&log, "replanned"), 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    /// Random systems, the disk filled before a random realise so that a random share of the
    /// step's estimate is left: the run never unwinds a working chain because of space and never
    /// deletes a live path (checked after every effect); it reaches the target, or stops at a
    /// complete generation from which `resume` with more room reaches it.
    #[test]
    fn disk_fills_never_unwind_and_never_delete_a_live_path(
        sizes in proptest::collection::vec((20u64..200, 20u64..200), 2..5),
        nth in 1usize..5,
        leave_percent in 0u64..120,
    ) {
        let w = world(&sizes, None, tight_capacity(&sizes));
        let Some(prep) = prepare(&w, Strategy::Stepwise, OnFailure::Unwind) else {
            return Ok(());
        };
        let adds = prep.header.plan.get(nth - 1).map_or(0, |s| s.adds);
        let (first, last, log) =
            upgrade_filled(&w, &prep, nth, adds * leave_percent / 100, 2000 * KIB)
                .map_err(TestCaseError::fail)?;
        prop_assert!(reached(&last), "{:?} then {:?}", first, last);
        prop_assert_eq!(at(&w.store), (w.target_out.clone(), w.target_out.clone()));
        prop_assert_eq!(count(&log, "unwindStarted"), 0);
        prop_assert_eq!(count(&log, "spaceRanOut"), count(&log, "replanned"));
    }
}

/// A reserve file the last run left on the store's filesystem is part of the used bytes the plan
/// reads; counted there and again in the ceiling, it would be counted twice. With what it holds
/// handed to the plan, the plan is the one of a disk without it.
#[test]
fn the_reserve_on_the_store_filesystem_is_counted_once() {
    let sizes = [(100, 110), (200, 190), (50, 60)];
    let reserve = 96 * KIB;
    let w = world(&sizes, None, tight_capacity(&sizes) + reserve);
    let mut req = request(&w, Strategy::Stepwise, OnFailure::Unwind);
    req.reserve = Some(reserve);
    let plan_of = |held: u64| match stepwise::engine::upgrade::prepare_counting_reserve(
        &req,
        &w.store,
        &w.store,
        held,
        &mut |_| {},
    ) {
        Ok(Prepared_::Run(run)) => Some(run.header.plan),
        Ok(Prepared_::AlreadyThere { .. }) => panic!("G0 is not the target"),
        Err(stepwise::error::Error::NoRoom { .. }) => None,
        Err(e) => panic!("{e}"),
    };
    let without_file = plan_of(0).expect("a plan fits with the reserve counted once");
    // The reserve file is taken: its bytes are used on the store's filesystem.
    w.store.set_used_elsewhere(reserve);
    assert_eq!(plan_of(reserve), Some(without_file.clone()));
    assert_ne!(
        plan_of(0),
        Some(without_file),
        "counted twice, the reserve changes the plan (or nothing fits)"
    );
}
