//! `upgrade`'s housekeeping before its run (deleting an earlier attempt's unrooted leftovers)
//! is journaled, and a crash at any effect, before or after it, is recovered by the next
//! `upgrade`: it settles the open housekeeping intent (never deleting a live path) and reaches
//! the target. On the model store, through the engine's API.

mod common;

use std::sync::atomic::AtomicBool;

use common::model::{at, check_system, request, seams, FixedClock, Series, KIB};
use stepwise::effects::journal::{Record, Transition};
use stepwise::engine::{MemLog, RunLog, UpgradeOutcome};

/// Revision 1 reached; revision 2's bumped packages half fetched by an attempt that died.
fn world() -> (Series, MemLog, stepwise::drv::StorePath) {
    let mut s = Series::new(&[300, 200, 100, 50], 2000 * KIB);
    let (mut log, clock, stop) = (
        MemLog::default(),
        FixedClock(0.into()),
        AtomicBool::new(false),
    );
    let t1 = s.revise(&[0, 3], |_, b| b + b / 10);
    let o = stepwise::engine::upgrade(
        &request(&t1, "model".as_ref()),
        &mut seams(&s.store, &stop, &clock),
        &mut log,
    )
    .unwrap();
    assert!(matches!(o, UpgradeOutcome::Ran(_)), "{o:?}");
    let t2 = s.revise(&[1, 2], |_, b| b + b / 10);
    s.leave_unrooted(&[1, 2]);
    (s, log, t2)
}

/// Housekeeping intents of the journal with no `done`.
fn open_housekeeping(log: &MemLog) -> Vec<Transition> {
    let records = log.0.borrow().clone();
    records
        .iter()
        .filter_map(|(seq, r)| match r {
            Record::Intent { transition } if transition.is_housekeeping() => {
                let closed = records
                    .iter()
                    .any(|(_, d)| matches!(d, Record::Done { intent, .. } if intent == seq));
                (!closed).then(|| transition.clone())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn leftovers_are_deleted_under_a_journaled_intent() {
    let (s, mut log, t2) = world();
    let (clock, stop) = (FixedClock(0.into()), AtomicBool::new(false));
    let o = stepwise::engine::upgrade(
        &request(&t2, "model".as_ref()),
        &mut seams(&s.store, &stop, &clock),
        &mut log,
    )
    .unwrap();
    assert!(matches!(o, UpgradeOutcome::Ran(_)), "{o:?}");
    let records = log.0.borrow().clone();
    let (i, paths) = records
        .iter()
        .find_map(|(seq, r)| match r {
            Record::Intent {
                transition: Transition::DeleteLeftovers { paths, .. },
            } => Some((*seq, paths.clone())),
            _ => None,
        })
        .expect("the deletion was journaled");
    assert!(!paths.is_empty());
    let started: Vec<u64> = records
        .iter()
        .filter(|(_, r)| matches!(r, Record::RunStarted(_)))
        .map(|(seq, _)| *seq)
        .collect();
    assert!(
        started[0] < i && i < started[1],
        "in the first run, before the second"
    );
    assert!(open_housekeeping(&log).is_empty());
    let out = s.out(&t2);
    assert_eq!(at(&s.store), (out.clone(), out));
}

/// A crash after every effect of the housekeeping and the run that follows, and a stop before
/// every effect: the next `upgrade` settles what was open and reaches the target; the system
/// is complete and nothing live was deleted at every step.
#[test]
fn a_crash_at_every_effect_is_recovered_by_the_next_upgrade() {
    let (clock, stop) = (FixedClock(0.into()), AtomicBool::new(false));
    let (mut settled, mut crashes) = (0, 0);
    for before in [false, true] {
        for n in 1.. {
            let (s, mut log, t2) = world();
            let start = s.store.effect_count();
            if before {
                s.store.stop_after(start + n - 1);
            } else {
                s.store.crash_after_effect(start + n);
            }
            let req = request(&t2, "model".as_ref());
            let first =
                stepwise::engine::upgrade(&req, &mut seams(&s.store, &stop, &clock), &mut log);
            check_system(&s.store).unwrap_or_else(|e| panic!("n={n} before={before}: {e}"));
            if s.store.effect_count() < start + n {
                // The run ended before its n-th effect: every effect has had its crash.
                assert!(first.is_ok(), "{first:?}");
                break;
            }
            settled += open_housekeeping(&log).len();
            crashes += 1;
            s.store.revive();
            // The next ticks: the first continues (or walks back) what the crash left, or
            // starts the run again; at the latest the third sees the target running.
            let mut end = first;
            for _ in 0..3 {
                end =
                    stepwise::engine::upgrade(&req, &mut seams(&s.store, &stop, &clock), &mut log);
                check_system(&s.store).unwrap_or_else(|e| panic!("n={n} before={before}: {e}"));
                if !matches!(end, Ok(UpgradeOutcome::Ran(_))) {
                    break;
                }
            }
            let out = s.out(&t2);
            assert!(
                matches!(&end, Ok(UpgradeOutcome::AlreadyThere { target_out }) if *target_out == out),
                "n={n} before={before}: {end:?}"
            );
            check_system(&s.store).unwrap_or_else(|e| panic!("n={n} before={before}: {e}"));
            assert!(open_housekeeping(&log).is_empty(), "n={n}");
            assert!(!log.last_run().is_empty());
            assert!(n < 500, "the run does not end");
        }
    }
    assert!(settled > 0, "no crash left a housekeeping intent open");
    eprintln!("{crashes} crashes, {settled} left a housekeeping intent open");
}
