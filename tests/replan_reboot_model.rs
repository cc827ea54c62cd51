//! A reboot the engine makes for a re-plan, on the model store through the engine's API. The
//! machine still boots r0, older than the run's G0 (r1 was switched to without a reboot); r0
//! pins the first version of the biggest package. The run's plan needs no reboot, but the disk
//! fills (something else takes room) before its second step's realise: the step runs out of
//! space, and from step 1 no re-plan fits while r0 pins its package. Rather than stop there
//! (exit 3, waiting for an operator's reboot), the run reboots into step 1, collects what only
//! r0 pinned (named by the `bootedBefore` record: nothing else names r0 after the boot) and
//! re-plans. Crashed at every checkpoint of that, it still reaches the target.

mod common;

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use common::model::{at, check_system, continue_req, request, FixedClock, Series, BOOTED, KIB};
use stepwise::drv::StorePath;
use stepwise::effects::journal::{RebootPolicy, RebootWindow, Record, Strategy};
use stepwise::effects::{Store, System};
use stepwise::engine::{ContinueOutcome, MemLog, RunEnd, RunLog, Seams, UpgradeOutcome};
use stepwise::transition::Outcome;

/// Bytes left free before the second realise: less than its step adds.
const LEAVE: u64 = 1500 * KIB;

struct World {
    s: Series,
    /// The system booted all along until the run's reboot, older than the run's G0.
    r0: StorePath,
    /// r0's version of pkg0, pinned only by r0 once the run has moved pkg0.
    old_pkg0: StorePath,
    /// The run's G0: r1.
    g0: StorePath,
    target_drv: StorePath,
    target: StorePath,
    /// Fill the disk before step 1's realise already (the re-plan is then from G0).
    fill_at_g0: bool,
}

/// r0 booted; r1 (pkg0 bumped) switched to without a reboot; r2 (pkg0 and pkg1 bumped) the
/// target: two steps that fit without a reboot (pkg0's r1 version is G0's alone).
fn world() -> World {
    let mut s = Series::new(&[4000, 3000, 100], 15_600 * KIB);
    let r0 = at(&s.store).0;
    s.store.set_running_system(&r0, true);
    let old_pkg0 = s.output_named("pkg0-0.0");
    let r1 = s.revise(&[0], |_, b| b);
    let stop = AtomicBool::new(false);
    let clock = FixedClock(0.into());
    let o = stepwise::engine::upgrade(
        &request(&r1, Path::new("/dev/null/journal")),
        &mut common::model::seams(&s.store, &stop, &clock),
        &mut MemLog::default(),
    )
    .unwrap();
    assert!(
        matches!(
            o,
            UpgradeOutcome::Ran(RunEnd::Finished {
                outcome: Outcome::ReachedTarget,
                ..
            })
        ),
        "{o:?}"
    );
    common::model::gc(&s.store);
    let g0 = s.out(&r1);
    let target_drv = s.revise(&[0, 1], |_, b| b);
    let target = s.out(&target_drv);
    World {
        s,
        r0,
        old_pkg0,
        g0,
        target_drv,
        target,
        fill_at_g0: false,
    }
}

fn booted(w: &World) -> Option<StorePath> {
    w.s.store.read_system_link(Path::new(BOOTED)).unwrap()
}

fn valid(w: &World, p: &StorePath) -> bool {
    !w.s.store
        .valid_paths(std::slice::from_ref(p))
        .unwrap()
        .is_empty()
}

/// The checkpoint hook: the disk filled before the first realise once the system has left G0
/// (step 2's), and kept full; a crash at the `crash_at`-th checkpoint counted across every
/// process of the run (`passed`).
fn hook<'a>(
    w: &'a World,
    passed: &'a RefCell<usize>,
    filled: &'a RefCell<bool>,
    crash_at: Option<usize>,
) -> Box<dyn FnMut(&str) -> bool + 'a> {
    Box::new(move |name: &str| {
        if name == "before-intent-realise"
            && !*filled.borrow()
            && (w.fill_at_g0 || at(&w.s.store).1 != w.g0)
        {
            *filled.borrow_mut() = true;
            let free = w.s.store.space().unwrap().free;
            w.s.store.set_used_elsewhere(free.saturating_sub(LEAVE));
        }
        *passed.borrow_mut() += 1;
        crash_at == Some(*passed.borrow())
    })
}

fn seams<'a>(
    w: &'a World,
    stop: &'a AtomicBool,
    clock: &'a FixedClock,
    hook: Box<dyn FnMut(&str) -> bool + 'a>,
) -> Seams<'a> {
    Seams {
        store: &w.s.store,
        system: &w.s.store,
        clock,
        stop,
        reserve: None,
        progress: Box::new(|_| {}),
        checkpoint: Some(hook),
    }
}

fn stepwise_request(w: &World) -> stepwise::engine::UpgradeRequest {
    let mut req = request(&w.target_drv, Path::new("/dev/null/journal"));
    req.strategy = Strategy::Stepwise;
    req
}

fn reboot_intents(log: &MemLog) -> usize {
    log.last_run()
        .iter()
        .filter(|(_, r)| r.kind_name() == "intent" && format!("{r:?}").contains("Reboot"))
        .count()
}

fn booted_before(log: &MemLog) -> Vec<StorePath> {
    log.last_run()
        .into_iter()
        .filter_map(|(_, r)| match r {
            Record::BootedBefore { toplevel } => Some(toplevel),
            _ => None,
        })
        .collect()
}

/// `upgrade`, then as the machine does: a crash restarts the process (`resume`), a run's reboot
/// boots the machine (its boot default) and the boot's `resume` continues. Returns the last end
/// and the checkpoint crashed at, if any.
fn run_to_the_end(
    w: &World,
    log: &mut MemLog,
    crash_at: Option<usize>,
) -> (RunEnd, Option<String>) {
    let mut crashed = None;
    let (stop, clock) = (AtomicBool::new(false), FixedClock(0.into()));
    let (passed, filled) = (RefCell::new(0), RefCell::new(false));
    let mut end = match stepwise::engine::upgrade(
        &stepwise_request(w),
        &mut seams(w, &stop, &clock, hook(w, &passed, &filled, crash_at)),
        log,
    )
    .unwrap()
    {
        UpgradeOutcome::Ran(end) => end,
        other => panic!("{other:?}"),
    };
    for _ in 0..6 {
        check_system(&w.s.store).unwrap_or_else(|e| panic!("after {end:?}: {e}"));
        match &end {
            RunEnd::Crashed { at } => crashed = Some(at.clone()),
            RunEnd::Stopped { why } if why.contains("rebooting") => {
                w.s.store.reboot(&["reboot".into()]).unwrap()
            }
            _ => return (end, crashed),
        }
        end = match stepwise::engine::resume(
            continue_req(false),
            &mut seams(w, &stop, &clock, hook(w, &passed, &filled, crash_at)),
            log,
        )
        .unwrap()
        {
            ContinueOutcome::Ran(end) => end,
            other => panic!("{other:?}"),
        };
    }
    panic!("the run does not end: {end:?}")
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

#[test]
fn no_replan_fitting_while_an_older_system_is_booted_reboots_and_reaches_the_target() {
    let w = world();
    assert_eq!(booted(&w), Some(w.r0.clone()));
    assert!(valid(&w, &w.old_pkg0), "r0 pins its pkg0");
    let mut log = MemLog::default();
    let (end, crashed) = run_to_the_end(&w, &mut log, None);
    assert!(reached(&end), "{end:?}");
    assert_eq!(crashed, None);
    assert_eq!(at(&w.s.store), (w.target.clone(), w.target.clone()));
    // The plan had no reboot; the re-plan needed one: into step 1, from r0.
    assert_eq!(reboot_intents(&log), 1);
    assert_eq!(booted_before(&log), std::slice::from_ref(&w.r0));
    assert!(!valid(&w, &w.r0), "r0 collected after the reboot");
    assert!(!valid(&w, &w.old_pkg0), "what only r0 pinned collected");
    let kinds: Vec<&str> = log.last_run().iter().map(|(_, r)| r.kind_name()).collect();
    assert!(kinds.contains(&"spaceRanOut") && kinds.contains(&"replanned"));
    assert!(!kinds.contains(&"unwindStarted"));
}

/// The same from G0: the step-1 realise runs out of space, and r0 (booted, older than G0) pins
/// what the re-plan needs. The run's record says G0 booted (it has not rebooted), yet the
/// machine boots r0: the run reboots into G0, collects r0 and re-plans.
#[test]
fn no_replan_fitting_from_g0_while_an_older_system_is_booted_reboots_into_g0() {
    let mut w = world();
    w.fill_at_g0 = true;
    let mut log = MemLog::default();
    let (end, _) = run_to_the_end(&w, &mut log, None);
    assert!(reached(&end), "{end:?}");
    assert_eq!(at(&w.s.store), (w.target.clone(), w.target.clone()));
    assert_eq!(booted_before(&log), std::slice::from_ref(&w.r0));
    assert!(!valid(&w, &w.old_pkg0), "what only r0 pinned collected");
    let replans = log
        .last_run()
        .iter()
        .filter_map(|(_, r)| match r {
            Record::Replanned { at, .. } => Some(*at),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert_eq!(replans, [0]);
}

/// Without the reboot (the run may not reboot, or it is outside the reboot window) the run stops
/// at step 1 as before, exit 3, nothing rebooted or recorded for it; inside the window a later
/// `resume` reboots and reaches the target.
#[test]
fn the_reboot_for_a_replan_keeps_the_reboot_policy_and_window() {
    let w = world();
    let (stop, clock) = (AtomicBool::new(false), FixedClock(0.into()));
    let (passed, filled) = (RefCell::new(0), RefCell::new(false));
    let mut req = stepwise_request(&w);
    req.reboot_window = Some(RebootWindow {
        lower_minute: 120,
        upper_minute: 300,
    });
    let mut log = MemLog::default();
    let why = stopped_upgrade(&w, &req, &clock, &filled, &mut log);
    assert!(why.contains("outside the reboot window"), "{why}");
    check_system(&w.s.store).unwrap();
    // Inside the window: the reboot, then the boot's `resume` reaches the target.
    clock.0.set(150);
    let o = stepwise::engine::resume(
        continue_req(false),
        &mut seams(&w, &stop, &clock, hook(&w, &passed, &filled, None)),
        &mut log,
    )
    .unwrap();
    assert!(
        matches!(&o, ContinueOutcome::Ran(RunEnd::Stopped { why }) if why.contains("rebooting")),
        "{o:?}"
    );
    w.s.store.reboot(&["reboot".into()]).unwrap();
    let o = stepwise::engine::resume(
        continue_req(false),
        &mut seams(&w, &stop, &clock, hook(&w, &passed, &filled, None)),
        &mut log,
    )
    .unwrap();
    assert!(matches!(&o, ContinueOutcome::Ran(e) if reached(e)), "{o:?}");

    let w = world();
    let mut req = stepwise_request(&w);
    req.reboot = RebootPolicy::Never;
    let mut log = MemLog::default();
    let why = stopped_upgrade(&w, &req, &clock, &RefCell::new(false), &mut log);
    assert!(why.contains("no re-plan fits"), "{why}");
}

/// `req`'s run, on `w` with the disk filled before step 2's realise (unless `filled` already),
/// stops without rebooting or naming a booted system: why.
fn stopped_upgrade(
    w: &World,
    req: &stepwise::engine::UpgradeRequest,
    clock: &FixedClock,
    filled: &RefCell<bool>,
    log: &mut MemLog,
) -> String {
    let stop = AtomicBool::new(false);
    let passed = RefCell::new(0);
    let end = stepwise::engine::upgrade(
        req,
        &mut seams(w, &stop, clock, hook(w, &passed, filled, None)),
        log,
    )
    .unwrap();
    let UpgradeOutcome::Ran(RunEnd::Stopped { why }) = end else {
        panic!("{end:?}")
    };
    assert_eq!(w.s.store.reboots(), 0);
    assert!(booted_before(log).is_empty());
    why
}

/// Crashed at every checkpoint of the run in turn (those of the reboot for the re-plan among
/// them: before and after its `bootedBefore`, its intent, the reboot, the collect after the
/// boot, the re-plan), then restarted as the machine would: the target is reached, the system
/// complete after every step, and what only r0 pinned is gone.
#[test]
fn crashed_at_every_checkpoint_of_a_reboot_for_a_replan_then_resumed() {
    let mut crashed_at = Vec::new();
    for k in 1.. {
        let w = world();
        let mut log = MemLog::default();
        let (end, crashed) = run_to_the_end(&w, &mut log, Some(k));
        assert!(reached(&end), "crash at {k} ({crashed:?}): {end:?}");
        assert_eq!(
            at(&w.s.store),
            (w.target.clone(), w.target.clone()),
            "crash at {k} ({crashed:?})"
        );
        assert!(
            !valid(&w, &w.old_pkg0) && !valid(&w, &w.r0),
            "crash at {k} ({crashed:?}): r0 or its pkg0 left"
        );
        assert_eq!(
            booted_before(&log).last(),
            Some(&w.r0),
            "crash at {k} ({crashed:?})"
        );
        match crashed {
            Some(c) => crashed_at.push(c),
            // k is past the last checkpoint.
            None => break,
        }
    }
    assert!(
        crashed_at.len() >= 40,
        "only {} checkpoints",
        crashed_at.len()
    );
    // Among them, every checkpoint of the reboot for the re-plan and what follows it.
    for c in [
        "before-intent-reboot",
        "after-intent-reboot",
        "after-outcome-reboot",
        "after-replanned",
    ] {
        assert!(
            crashed_at.iter().any(|x| x == c),
            "{c} not in {crashed_at:?}"
        );
    }
    let collects = crashed_at
        .iter()
        .filter(|x| *x == "after-intent-collect")
        .count();
    assert!(collects >= 4, "{crashed_at:?}");
}
