//! A reboot planned to free what an *older* booted system pins, on the model store through the
//! engine's API. After switches without a reboot, the booted system is not G0 but an earlier
//! generation that shares G0's big packages: G0's toplevel is dead (and collected) at the first
//! step, its packages only after the reboot. The collect after the reboot must still find them
//! (the real-Nix soak on its tightest disk ran out of space there: the collect found nothing,
//! G0's toplevel no longer leading to its packages).

mod common;

use std::sync::atomic::AtomicBool;

use common::model::{at, check_system, continue_req, request, seams, FixedClock, Series, KIB};
use stepwise::drv::StorePath;
use stepwise::effects::Store;
use stepwise::engine::{ContinueOutcome, MemLog, RunEnd, UpgradeOutcome};
use stepwise::transition::Outcome;

/// Whether `p` is in the store.
fn valid(s: &Series, p: &StorePath) -> bool {
    !s.store
        .valid_paths(std::slice::from_ref(p))
        .unwrap()
        .is_empty()
}

#[test]
fn a_reboot_frees_g0s_packages_an_older_booted_system_pinned() {
    // pkg0 and pkg1 big, pkg2 small. Room for the upgrade with one big package's two versions
    // at a time, not both: after the first move the old version, pinned by the booted r0, must
    // go before the second.
    let sizes = [4000, 3000, 100];
    let mut s = Series::new(&sizes, 12_000 * KIB);
    let r0 = at(&s.store).0;
    s.store.set_running_system(&r0, true);
    let clock = FixedClock(std::cell::Cell::new(0));
    let stop = AtomicBool::new(false);
    let journal = std::path::Path::new("/dev/null/journal");
    let mut log = MemLog::default();

    // r1 (the small package bumped) is switched to without a reboot: r0 stays booted.
    let r1 = s.revise(&[2], |_, b| b);
    let o = stepwise::engine::upgrade(
        &request(&r1, journal),
        &mut seams(&s.store, &stop, &clock),
        &mut log,
    )
    .unwrap();
    assert!(
        matches!(o, UpgradeOutcome::Ran(RunEnd::Finished { .. })),
        "{o:?}"
    );
    let old_pkg1 = s.output_named("pkg1-0.0");

    // r2 bumps both big ones: a step, a reboot into it (freeing the old version the step
    // replaced), the next step.
    let r2 = s.revise(&[0, 1], |_, b| b);
    let target = s.out(&r2);
    let mut outcome = match stepwise::engine::upgrade(
        &request(&r2, journal),
        &mut seams(&s.store, &stop, &clock),
        &mut log,
    )
    .unwrap()
    {
        UpgradeOutcome::Ran(end) => end,
        other => panic!("{other:?}"),
    };
    check_system(&s.store).unwrap();
    for _ in 0..4 {
        let RunEnd::Stopped { why } = &outcome else {
            break;
        };
        assert!(why.contains("rebooting"), "{why}");
        assert!(s.store.reboots() > 0);
        outcome = match stepwise::engine::resume(
            continue_req(false),
            &mut seams(&s.store, &stop, &clock),
            &mut log,
        )
        .unwrap()
        {
            ContinueOutcome::Ran(end) => end,
            other => panic!("{other:?}"),
        };
        check_system(&s.store).unwrap();
    }
    assert!(
        matches!(
            outcome,
            RunEnd::Finished {
                outcome: Outcome::ReachedTarget,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(s.store.reboots() >= 1, "the plan needed a reboot");
    assert_eq!(at(&s.store), (target.clone(), target));
    // The step before the reboot moved pkg1; the reboot unpinned its old version.
    assert!(
        !valid(&s, &old_pkg1),
        "the old pkg1 is still in the store: {:#?}",
        stepwise::engine::RunLog::last_run(&log)
    );
}
