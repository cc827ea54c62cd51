use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

fn shape(steps: Gen, fall_back: bool, on_failure: FailurePolicy) -> RunShape {
    RunShape {
        steps,
        fall_back,
        on_failure,
        reboot_after: 0,
        keep_g0: false,
    }
}

/// A toy world of whole generations, to check what the machine asks of it.
#[derive(Debug, Default)]
struct World {
    valid: BTreeSet<u32>,
    roots: BTreeSet<u32>,
    generations: BTreeSet<u32>,
    profile: u32,
    current: u32,
    booted: u32,
}

impl World {
    fn new() -> Self {
        World {
            valid: [0].into(),
            generations: [0].into(),
            // Not booted into any of the run's generations (a machine switched since boot).
            booted: u32::MAX,
            ..Default::default()
        }
    }

    /// World id of a chain generation: the target is the same generation in both chains.
    fn id(s: &RunState, gen: Gen) -> u32 {
        match s.chain {
            Chain::Direct if gen == 1 => s.shape.steps.max(1),
            _ => gen,
        }
    }

    fn apply(&mut self, s: &RunState, e: Effect) {
        match e {
            Effect::PinDerivations | Effect::WriteDerivations { .. } => {}
            Effect::Release => self.roots.clear(),
            Effect::Reboot { gen } => self.booted = Self::id(s, gen),
            Effect::Realise { gen } => {
                let g = Self::id(s, gen);
                self.valid.insert(g);
                self.roots.insert(g);
            }
            Effect::SetProfile { gen } => {
                let g = Self::id(s, gen);
                assert!(self.valid.contains(&g), "profile set to an incomplete {g}");
                self.profile = g;
                self.generations.insert(g);
            }
            Effect::Activate { gen } => {
                let g = Self::id(s, gen);
                assert!(self.valid.contains(&g), "activating an incomplete {g}");
                assert_eq!(self.profile, g, "activating what the profile does not hold");
                self.current = g;
            }
            Effect::DropGeneration { gen } => {
                let g = Self::id(s, gen);
                assert_ne!(self.profile, g, "dropping the current generation");
                self.generations.remove(&g);
            }
            Effect::Unpin { gen } => {
                self.roots.remove(&Self::id(s, gen));
            }
            Effect::Collect { gen } => {
                let g = Self::id(s, gen);
                assert_ne!(self.profile, g, "collecting the profile's generation");
                assert_ne!(self.current, g, "collecting the running generation");
                // Like `nix-store --delete`: a live path stays (the booted one too).
                if !self.roots.contains(&g) && !self.generations.contains(&g) && self.booted != g {
                    self.valid.remove(&g);
                }
            }
        }
    }
}

/// Drive the machine: `outcome(i, effect)` answers each effect. Returns the events and final state.
fn drive(
    sh: RunShape,
    chain: Chain,
    mut outcome: impl FnMut(usize, Effect) -> Option<FailureKind>,
    mut unwind_at: Option<usize>,
) -> (Vec<Event>, RunState, World) {
    let mut s = RunState::new(sh);
    let mut world = World::new();
    let mut events = vec![Event::Begin { chain }];
    s = next(&s, events[0]).unwrap();
    let mut i = 0;
    while !s.is_finished() {
        assert!(i < 1000, "the run does not end: {s:?}");
        if unwind_at == Some(i) {
            unwind_at = None;
            let ev = Event::UnwindRequested;
            s = next(&s, ev).unwrap();
            events.push(ev);
            continue;
        }
        let e = match s.next_action() {
            Next::Run(e) | Next::Stop(e, _) => e,
            // A finer split: one generation more than the chain had.
            Next::Replan { at } => {
                let ev = Event::Replanned {
                    at,
                    steps: s.shape.steps.max(at) + 1,
                    reboot_after: 0,
                };
                s = next(&s, ev).unwrap();
                events.push(ev);
                continue;
            }
            other => panic!("unexpected {other:?}"),
        };
        let ev = Event::Intent(e);
        s = next(&s, ev).unwrap();
        events.push(ev);
        let ev = match outcome(i, e) {
            None => {
                world.apply(&s, e);
                Event::Done(e)
            }
            Some(k) => Event::Failed(e, k),
        };
        s = next(&s, ev).unwrap();
        events.push(ev);
        // The profile and the running system are always complete generations.
        assert!(world.valid.contains(&world.profile));
        assert!(world.valid.contains(&world.current));
        i += 1;
    }
    (events, s, world)
}

fn effects(events: &[Event]) -> Vec<Effect> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Done(e) => Some(*e),
            _ => None,
        })
        .collect()
}

#[test]
fn plain_upgrade_sequence() {
    let (events, s, w) = drive(
        shape(3, true, FailurePolicy::Unwind),
        Chain::Direct,
        |_, _| None,
        None,
    );
    use Effect::*;
    assert_eq!(
        effects(&events),
        vec![
            PinDerivations,
            WriteDerivations { gen: 1 },
            Realise { gen: 1 },
            SetProfile { gen: 1 },
            Activate { gen: 1 },
            DropGeneration { gen: 0 },
            Unpin { gen: 0 },
            Collect { gen: 0 },
            Release,
        ]
    );
    assert_eq!(s.phase, Phase::Finished(Outcome::ReachedTarget));
    assert_eq!((w.profile, w.current), (3, 3));
    assert!(!w.valid.contains(&0));
}

#[test]
fn keep_g0_leaves_g0_a_generation_after_the_plain_upgrade() {
    let sh = RunShape {
        keep_g0: true,
        ..shape(3, true, FailurePolicy::Unwind)
    };
    let (events, s, w) = drive(sh, Chain::Direct, |_, _| None, None);
    use Effect::*;
    assert_eq!(
        effects(&events),
        vec![
            PinDerivations,
            WriteDerivations { gen: 1 },
            Realise { gen: 1 },
            SetProfile { gen: 1 },
            Activate { gen: 1 },
            Unpin { gen: 0 },
            Release,
        ]
    );
    assert_eq!(s.phase, Phase::Finished(Outcome::ReachedTarget));
    assert_eq!((w.profile, w.current), (3, 3));
    assert!(w.valid.contains(&0) && w.generations.contains(&0));
}

#[test]
fn keep_g0_does_not_apply_to_the_steps_chain_after_a_fall_back() {
    let sh = RunShape {
        keep_g0: true,
        ..shape(2, true, FailurePolicy::Unwind)
    };
    let (events, s, w) = drive(
        sh,
        Chain::Direct,
        |i, e| (i == 2 && e == Effect::Realise { gen: 1 }).then_some(FailureKind::OutOfSpace),
        None,
    );
    assert_eq!(s.phase, Phase::Finished(Outcome::ReachedTarget));
    assert!(effects(&events).contains(&Effect::DropGeneration { gen: 0 }));
    assert!(!w.generations.contains(&0) && !w.valid.contains(&0));
}

#[test]
fn keep_g0_unwinds_to_g0_like_any_run() {
    let sh = RunShape {
        keep_g0: true,
        ..shape(1, false, FailurePolicy::Unwind)
    };
    // The user's unwind once the target is active.
    let (_, s, w) = drive(sh, Chain::Direct, |_, _| None, Some(5));
    assert_eq!(s.phase, Phase::Finished(Outcome::Unwound { failed: false }));
    assert_eq!((w.profile, w.current), (0, 0));
}

#[test]
fn out_of_space_falls_back_to_steps() {
    let (events, s, w) = drive(
        shape(2, true, FailurePolicy::Unwind),
        Chain::Direct,
        |i, e| (i == 2 && e == Effect::Realise { gen: 1 }).then_some(FailureKind::OutOfSpace),
        None,
    );
    let fx = effects(&events);
    assert_eq!(fx[1], Effect::WriteDerivations { gen: 1 });
    assert_eq!(fx[2], Effect::Unpin { gen: 1 });
    assert_eq!(fx[3], Effect::Collect { gen: 1 });
    assert_eq!(s.chain, Chain::Steps);
    assert_eq!(s.phase, Phase::Finished(Outcome::ReachedTarget));
    assert_eq!(s.failure, None);
    assert_eq!(w.profile, 2);
}

#[test]
fn build_failure_unwinds_to_g0() {
    let (events, s, w) = drive(
        shape(3, true, FailurePolicy::Unwind),
        Chain::Steps,
        |_, e| (e == Effect::Realise { gen: 3 }).then_some(FailureKind::BuildFailed),
        None,
    );
    assert_eq!(s.phase, Phase::Finished(Outcome::Unwound { failed: true }));
    assert_eq!((w.profile, w.current), (0, 0));
    let fx = effects(&events);
    // Back through 2 → 1 → 0, each rebuilt.
    assert!(fx.contains(&Effect::Realise { gen: 1 }));
    assert_eq!(
        fx.iter()
            .filter(|e| **e == Effect::Realise { gen: 0 })
            .count(),
        1
    );
    assert_eq!(fx.last(), Some(&Effect::Release));
}

#[test]
fn build_failure_holds_when_asked() {
    let (events, s, w) = drive(
        shape(3, true, FailurePolicy::Hold),
        Chain::Steps,
        |_, e| (e == Effect::Realise { gen: 3 }).then_some(FailureKind::BuildFailed),
        None,
    );
    assert_eq!(s.phase, Phase::Finished(Outcome::Held { at: 2 }));
    assert_eq!(w.profile, 2);
    assert!(!effects(&events).contains(&Effect::Release));
    // A later `unwind` walks back from the held generation.
    let s2 = next(&s, Event::UnwindRequested).unwrap();
    assert_eq!(s2.expected(), Some(Effect::Realise { gen: 1 }));
}

#[test]
fn activation_failure_returns_to_the_previous_generation() {
    let (_, s, w) = drive(
        shape(3, true, FailurePolicy::Hold),
        Chain::Steps,
        |_, e| (e == Effect::Activate { gen: 2 }).then_some(FailureKind::Activation),
        None,
    );
    assert_eq!(s.phase, Phase::Finished(Outcome::Held { at: 1 }));
    assert_eq!((w.profile, w.current), (1, 1));
}

#[test]
fn stuck_effects_are_retried() {
    let mut failed_once = false;
    let (events, s, _) = drive(
        shape(2, true, FailurePolicy::Unwind),
        Chain::Steps,
        |_, e| {
            if e == (Effect::Collect { gen: 0 }) && !failed_once {
                failed_once = true;
                Some(FailureKind::Other)
            } else {
                None
            }
        },
        None,
    );
    assert!(events.contains(&Event::Failed(
        Effect::Collect { gen: 0 },
        FailureKind::Other
    )));
    assert_eq!(s.phase, Phase::Finished(Outcome::ReachedTarget));
}

#[test]
fn not_allowed_is_typed() {
    let s = RunState::new(shape(2, false, FailurePolicy::Unwind));
    assert!(matches!(
        next(&s, Event::Done(Effect::Release)),
        Err(NotAllowed::UnexpectedOutcome { .. })
    ));
    let s = next(
        &s,
        Event::Begin {
            chain: Chain::Steps,
        },
    )
    .unwrap();
    assert!(matches!(
        next(&s, Event::Intent(Effect::Release)),
        Err(NotAllowed::UnexpectedIntent { .. })
    ));
    assert!(matches!(
        next(
            &s,
            Event::Begin {
                chain: Chain::Steps
            }
        ),
        Err(NotAllowed::Event { .. })
    ));
    let empty = RunState::new(shape(0, false, FailurePolicy::Unwind));
    assert_eq!(
        next(
            &empty,
            Event::Begin {
                chain: Chain::Steps
            }
        ),
        Err(NotAllowed::EmptyChain(Chain::Steps))
    );
}

fn kind() -> impl Strategy<Value = FailureKind> {
    prop_oneof![
        Just(FailureKind::OutOfSpace),
        Just(FailureKind::BuildFailed),
        Just(FailureKind::Activation),
        Just(FailureKind::Other),
    ]
}

proptest! {
    /// Random plans, random failures (each effect fails at most a few times in a row, as a retry
    /// would eventually succeed), random unwind requests: the run always ends, at the target, at G0
    /// or held at a step, with the world consistent; replaying the events gives the same state.
    #[test]
    fn runs_end_at_target_or_g0(
        steps in 1u32..6,
        direct in any::<bool>(),
        fall_back in any::<bool>(),
        hold in any::<bool>(),
        faults in proptest::collection::vec((0usize..60, kind()), 0..4),
        unwind_at in proptest::option::of(0usize..60),
        reboot_after in any::<u64>(),
    ) {
        let policy = if hold { FailurePolicy::Hold } else { FailurePolicy::Unwind };
        let mut sh = shape(steps, fall_back, policy);
        sh.reboot_after = reboot_after & 0b11110;
        let chain = if direct { Chain::Direct } else { Chain::Steps };
        let (events, s, w) = drive(
            sh,
            chain,
            |i, _| faults.iter().find(|(at, _)| *at == i).map(|(_, k)| *k),
            unwind_at,
        );
        let Phase::Finished(outcome) = s.phase else { unreachable!() };
        match outcome {
            Outcome::ReachedTarget => {
                prop_assert_eq!(World::id(&s, s.last_gen()), w.profile);
                prop_assert_eq!(w.current, w.profile);
            }
            Outcome::Unwound { failed } => {
                prop_assert_eq!((w.profile, w.current), (0, 0));
                prop_assert_eq!(failed, s.failure.is_some());
                prop_assert!(w.roots.is_empty());
            }
            Outcome::Held { at } => {
                prop_assert!(hold);
                prop_assert!(s.failure.is_some());
                prop_assert_eq!(World::id(&s, at), w.profile);
            }
        }
        // Only what the run is at (and what is booted) stays complete on disk, apart from a held
        // run's kept roots.
        if outcome != (Outcome::Held { at: s.profile_at }) {
            let mut expect: BTreeSet<u32> = [w.profile, w.current].into();
            if w.booted != u32::MAX {
                expect.insert(w.booted);
            }
            prop_assert_eq!(&w.valid, &expect, "{:?}", w);
        }
        // The fold is deterministic and every prefix replays.
        let replayed = replay(sh, events.iter().copied()).unwrap();
        prop_assert_eq!(&replayed, &s);
        for k in 0..events.len() {
            let a = replay(sh, events[..k].iter().copied()).unwrap();
            let b = replay(sh, events[..k].iter().copied()).unwrap();
            prop_assert_eq!(a, b);
        }
    }
}

#[test]
fn reboots_where_the_plan_says() {
    let mut sh = shape(3, false, FailurePolicy::Unwind);
    sh.reboot_after = 1 << 1;
    let (events, s, w) = drive(sh, Chain::Steps, |_, _| None, None);
    let fx = effects(&events);
    let i = fx
        .iter()
        .position(|e| *e == Effect::Reboot { gen: 1 })
        .unwrap();
    assert_eq!(fx[i - 1], Effect::Collect { gen: 0 });
    // After the reboot, what G0 (booted before) pinned is collected.
    assert_eq!(fx[i + 1], Effect::Collect { gen: 0 });
    assert_eq!(
        fx.iter()
            .filter(|e| matches!(e, Effect::Reboot { .. }))
            .count(),
        1
    );
    assert_eq!(s.phase, Phase::Finished(Outcome::ReachedTarget));
    assert_eq!(w.booted, 1);
}

/// Run the forward effects of a Steps run until `stop` says so, answering each with `Done`; an
/// activation of `gen` reports `report` first.
fn forward_until(
    s: &mut RunState,
    report: Option<(Gen, bool, bool)>,
    stop: impl Fn(&RunState) -> bool,
) -> Vec<Effect> {
    let mut ran = Vec::new();
    while !stop(s) {
        let Next::Run(e) = s.next_action() else {
            panic!("{s:?}")
        };
        *s = next(s, Event::Intent(e)).unwrap();
        if let (Effect::Activate { gen }, Some((g, units_failed, reboot_required))) = (e, report) {
            if gen == g {
                *s = next(
                    s,
                    Event::Activated {
                        gen,
                        units_failed,
                        reboot_required,
                    },
                )
                .unwrap();
            }
        }
        *s = next(s, Event::Done(e)).unwrap();
        ran.push(e);
    }
    ran
}

/// Exit 4 at a step: the run waits right after the activation (for `--on-failed-units stop`),
/// and the mark goes once the run moves on.
#[test]
fn failed_units_mark_the_step_just_activated() {
    let mut s = RunState::new(shape(3, false, FailurePolicy::Unwind));
    s = next(
        &s,
        Event::Begin {
            chain: Chain::Steps,
        },
    )
    .unwrap();
    forward_until(&mut s, Some((1, true, false)), |s| s.active == 1);
    assert_eq!(s.just_activated_with_failed_units(), Some(1));
    assert_eq!(
        s.next_action(),
        Next::Run(Effect::DropGeneration { gen: 0 })
    );
    forward_until(&mut s, None, |s| {
        s.in_flight.is_none() && s.active == 1 && {
            matches!(s.phase, Phase::Moving(m) if m.stage != Stage::DropGeneration)
        }
    });
    assert_eq!(s.just_activated_with_failed_units(), None);
}

/// Exit 100 at a step of a run that planned no reboot: the move into it ends with a reboot, then
/// the collection of what the previously booted generation pinned.
#[test]
fn reboot_required_ends_the_move_with_a_reboot() {
    let mut s = RunState::new(shape(2, false, FailurePolicy::Unwind));
    s = next(
        &s,
        Event::Begin {
            chain: Chain::Steps,
        },
    )
    .unwrap();
    let ran = forward_until(
        &mut s,
        Some((1, false, true)),
        |s| matches!(s.phase, Phase::Moving(m) if m.to == 2),
    );
    let tail: Vec<Effect> = ran.iter().rev().take(3).rev().copied().collect();
    assert_eq!(
        tail,
        [
            Effect::Collect { gen: 0 },
            Effect::Reboot { gen: 1 },
            Effect::Collect { gen: 0 }
        ]
    );
    assert_eq!(s.booted, 1);
    assert_eq!(s.just_activated_with_failed_units(), None);
}

/// Walking back, an activation's report changes nothing: the run returns where it came from.
#[test]
fn reports_of_activations_walking_back_are_ignored() {
    let mut s = RunState::new(shape(1, false, FailurePolicy::Unwind));
    s = next(
        &s,
        Event::Begin {
            chain: Chain::Steps,
        },
    )
    .unwrap();
    forward_until(&mut s, None, |s| s.active == 1);
    s = next(&s, Event::UnwindRequested).unwrap();
    forward_until(&mut s, Some((0, true, true)), |s| s.is_finished());
    assert_eq!((s.reboot_for, s.units_failed_at), (None, None));
    assert_eq!(s.phase, Phase::Finished(Outcome::Unwound { failed: false }));
}

/// A report for another generation than the activation in flight is not allowed.
#[test]
fn a_report_must_name_the_activation_in_flight() {
    let mut s = RunState::new(shape(1, false, FailurePolicy::Unwind));
    s = next(
        &s,
        Event::Begin {
            chain: Chain::Steps,
        },
    )
    .unwrap();
    let report = Event::Activated {
        gen: 1,
        units_failed: true,
        reboot_required: false,
    };
    assert!(next(&s, report).is_err());
    forward_until(&mut s, None, |s| {
        s.in_flight.is_none() && s.next_action() == Next::Run(Effect::Activate { gen: 1 })
    });
    s = next(&s, Event::Intent(Effect::Activate { gen: 1 })).unwrap();
    let other = Event::Activated {
        gen: 0,
        units_failed: true,
        reboot_required: false,
    };
    assert!(next(&s, other).is_err());
    assert!(next(&s, report).is_ok());
}

#[test]
fn out_of_space_in_a_step_replans_from_the_complete_generation() {
    let sh = shape(3, true, FailurePolicy::Unwind);
    let mut s = RunState::new(sh);
    let mut world = World::new();
    s = next(
        &s,
        Event::Begin {
            chain: Chain::Steps,
        },
    )
    .unwrap();
    let mut failed = false;
    while s.next_action() != (Next::Replan { at: 1 }) {
        let Next::Run(e) = s.next_action() else {
            panic!("unexpected {:?}", s.next_action())
        };
        s = next(&s, Event::Intent(e)).unwrap();
        if e == (Effect::Realise { gen: 2 }) && !failed {
            failed = true;
            s = next(&s, Event::Failed(e, FailureKind::OutOfSpace)).unwrap();
        } else {
            world.apply(&s, e);
            s = next(&s, Event::Done(e)).unwrap();
        }
    }
    // The failed step's leftovers went (Unpin + Collect of 2); the system stands at 1, complete.
    assert_eq!(s.phase, Phase::Replanning { at: 1 });
    assert_eq!((world.profile, world.current), (1, 1));
    assert!(!world.valid.contains(&2));
    assert_eq!(s.expected(), None);
    assert!(s.failure.is_some());
    // Nothing runs before the re-plan is recorded.
    assert!(matches!(
        next(&s, Event::Intent(Effect::WriteDerivations { gen: 2 })),
        Err(NotAllowed::UnexpectedIntent { .. })
    ));
    let replanned = Event::Replanned {
        at: 1,
        steps: 5,
        reboot_after: 1 << 3,
    };
    let r = next(&s, replanned).unwrap();
    assert_eq!(r.expected(), Some(Effect::WriteDerivations { gen: 2 }));
    assert_eq!((r.shape.steps, r.shape.reboot_after), (5, 1 << 3));
    assert_eq!(r.failure, None);
    assert_eq!(r.last_gen(), 5);
}

#[test]
fn a_replan_must_be_for_where_the_run_stands_and_end_after_it() {
    let mut s = RunState::new(shape(3, false, FailurePolicy::Unwind));
    s.chain = Chain::Steps;
    s.phase = Phase::Replanning { at: 2 };
    s.profile_at = 2;
    let wrong_at = Event::Replanned {
        at: 1,
        steps: 4,
        reboot_after: 0,
    };
    assert!(matches!(next(&s, wrong_at), Err(NotAllowed::Event { .. })));
    let short = Event::Replanned {
        at: 2,
        steps: 2,
        reboot_after: 0,
    };
    assert_eq!(
        next(&s, short),
        Err(NotAllowed::ShortReplan { at: 2, steps: 2 })
    );
    // A re-plan anywhere else is refused.
    let mut moving = s.clone();
    moving.phase = moving.forward(2);
    let ev = Event::Replanned {
        at: 2,
        steps: 4,
        reboot_after: 0,
    };
    assert!(matches!(next(&moving, ev), Err(NotAllowed::Event { .. })));
}

#[test]
fn out_of_space_in_a_step_is_not_held_and_an_unwind_walks_back_from_the_replan() {
    let sh = shape(3, true, FailurePolicy::Hold);
    let mut ran_out = false;
    let (events, s, w) = drive(
        sh,
        Chain::Steps,
        |_, e| {
            let fail = e == (Effect::Realise { gen: 2 }) && !ran_out;
            ran_out |= fail;
            fail.then_some(FailureKind::OutOfSpace)
        },
        None,
    );
    assert_eq!(s.phase, Phase::Finished(Outcome::ReachedTarget));
    assert_eq!(w.profile, 4, "one generation more after the re-plan");
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Replanned { at: 1, .. })));
    // A user's unwind while re-planning walks back from the generation the run stands at.
    let mut r = RunState::new(sh);
    r.chain = Chain::Steps;
    r.phase = Phase::Replanning { at: 1 };
    r.profile_at = 1;
    r.active = 1;
    r.failure = Some((Effect::Realise { gen: 2 }, FailureKind::OutOfSpace));
    let u = next(&r, Event::UnwindRequested).unwrap();
    assert_eq!(u.expected(), Some(Effect::Realise { gen: 0 }));
}

proptest! {
    /// Steps running out of space, at random places and as often as they like: the run re-plans
    /// from a complete generation each time and reaches the target; it never unwinds or holds a
    /// working chain because of space, and the profile is always complete (checked by `drive`).
    #[test]
    fn space_never_unwinds_a_working_chain(
        steps in 1u32..6,
        hold in any::<bool>(),
        faults in proptest::collection::btree_set(0usize..80, 0..6),
    ) {
        let policy = if hold { FailurePolicy::Hold } else { FailurePolicy::Unwind };
        let sh = shape(steps, false, policy);
        let mut realises = 0usize;
        let (events, s, w) = drive(
            sh,
            Chain::Steps,
            |_, e| {
                if !matches!(e, Effect::Realise { .. } | Effect::WriteDerivations { .. }) {
                    return None;
                }
                realises += 1;
                faults.contains(&realises).then_some(FailureKind::OutOfSpace)
            },
            None,
        );
        prop_assert_eq!(s.phase, Phase::Finished(Outcome::ReachedTarget));
        prop_assert_eq!(w.profile, s.last_gen());
        let failures = events.iter().filter(|e| matches!(e, Event::Failed(..))).count();
        let replans = events.iter().filter(|e| matches!(e, Event::Replanned { .. })).count();
        prop_assert_eq!(failures, replans);
        prop_assert_eq!(replay(sh, events.iter().copied()).unwrap(), s);
    }
}

/// A run at 1 after step 2 ran out of space, G0 still booted: where no re-plan may fit.
fn replanning_at_1_with_g0_booted() -> (RunState, World, Vec<Event>) {
    let mut s = RunState::new(shape(3, false, FailurePolicy::Unwind));
    let mut world = World::new();
    world.booted = 0;
    let mut events = vec![Event::Begin {
        chain: Chain::Steps,
    }];
    s = next(&s, events[0]).unwrap();
    while s.next_action() != (Next::Replan { at: 1 }) {
        let Next::Run(e) = s.next_action() else {
            panic!("unexpected {:?}", s.next_action())
        };
        s = next(&s, Event::Intent(e)).unwrap();
        events.push(Event::Intent(e));
        let ev = if e == (Effect::Realise { gen: 2 }) {
            Event::Failed(e, FailureKind::OutOfSpace)
        } else {
            world.apply(&s, e);
            Event::Done(e)
        };
        s = next(&s, ev).unwrap();
        events.push(ev);
    }
    (s, world, events)
}

#[test]
fn no_replan_fitting_reboots_into_the_generation_the_run_stands_at_then_replans() {
    let (mut s, mut world, mut events) = replanning_at_1_with_g0_booted();
    // G0 stayed booted: it pins what it shared with the generations the run left.
    assert!(world.valid.contains(&0), "the booted G0 stays on disk");
    assert_eq!(s.expected(), None, "a re-plan comes first");
    assert_eq!(s.reboot_to_replan(), Some(Effect::Reboot { gen: 1 }));
    // The executor makes the reboot only when no re-plan fits: the machine still asks to re-plan.
    assert_eq!(s.next_action(), Next::Replan { at: 1 });
    for e in [Effect::Reboot { gen: 1 }, Effect::Collect { gen: 0 }] {
        s = next(&s, Event::Intent(e)).unwrap();
        assert_eq!(s.in_flight, Some(e));
        assert!(matches!(
            s.phase,
            Phase::Moving(Move {
                from: 1,
                to: 1,
                direction: Direction::Forward,
                ..
            })
        ));
        world.apply(&s, e);
        s = next(&s, Event::Done(e)).unwrap();
        events.extend([Event::Intent(e), Event::Done(e)]);
        if e == (Effect::Reboot { gen: 1 }) {
            assert_eq!(s.next_action(), Next::Run(Effect::Collect { gen: 0 }));
        }
    }
    // Booted into 1, what G0 pinned collected: the run re-plans from 1.
    assert_eq!((s.booted, s.booted_before), (1, 0));
    assert!(!world.valid.contains(&0), "G0 collected after the reboot");
    assert_eq!(s.phase, Phase::Replanning { at: 1 });
    assert_eq!((world.profile, world.current), (1, 1));
    let ev = Event::Replanned {
        at: 1,
        steps: 4,
        reboot_after: 0,
    };
    s = next(&s, ev).unwrap();
    events.push(ev);
    assert_eq!(s.expected(), Some(Effect::WriteDerivations { gen: 2 }));
    let sh = shape(3, false, FailurePolicy::Unwind);
    assert_eq!(replay(sh, events.iter().copied()).unwrap(), s);
}

#[test]
fn the_reboot_for_a_replan_is_only_into_the_generation_the_run_stands_at() {
    let (s, _, _) = replanning_at_1_with_g0_booted();
    for wrong in [Effect::Reboot { gen: 0 }, Effect::Reboot { gen: 2 }] {
        assert!(matches!(
            next(&s, Event::Intent(wrong)),
            Err(NotAllowed::UnexpectedIntent { .. })
        ));
    }
    // At G0 too: the machine booted before the run may be older than G0.
    let mut at_g0 = s.clone();
    at_g0.phase = Phase::Replanning { at: 0 };
    assert_eq!(at_g0.reboot_to_replan(), Some(Effect::Reboot { gen: 0 }));
    let r = next(&at_g0, Event::Intent(Effect::Reboot { gen: 0 })).unwrap();
    let r = next(&r, Event::Done(Effect::Reboot { gen: 0 })).unwrap();
    assert_eq!(r.next_action(), Next::Run(Effect::Collect { gen: 0 }));
    // Nowhere but in re-planning.
    let mut moving = s.clone();
    moving.phase = moving.forward(1);
    assert_eq!(moving.reboot_to_replan(), None);
    assert!(next(&moving, Event::Intent(Effect::Reboot { gen: 1 })).is_err());
}

#[test]
fn the_reboot_for_a_replan_fails_stuck_and_an_unwind_walks_back_after_its_collect() {
    let (s, _, _) = replanning_at_1_with_g0_booted();
    let reboot = Effect::Reboot { gen: 1 };
    let s = next(&s, Event::Intent(reboot)).unwrap();
    // The reboot command failed: only a retry helps (`resume`), the chain is not walked back.
    let f = next(&s, Event::Failed(reboot, FailureKind::Other)).unwrap();
    assert_eq!(f.next_action(), Next::Stop(reboot, FailureKind::Other));
    let s = next(&s, Event::Done(reboot)).unwrap();
    // An unwind asked before the collect finishes the move, then walks back from 1.
    let mut u = next(&s, Event::UnwindRequested).unwrap();
    let collect = Effect::Collect { gen: 0 };
    assert_eq!(u.next_action(), Next::Run(collect));
    u = next(&u, Event::Intent(collect)).unwrap();
    u = next(&u, Event::Done(collect)).unwrap();
    assert_eq!(u.expected(), Some(Effect::Realise { gen: 0 }));
}
