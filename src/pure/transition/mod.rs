//! The run as a state machine: `match (state, event)` with a typed "not allowed" error.
//!
//! A run moves the system along a chain of generations. Generation 0 is G0 (where the run started);
//! in the `Steps` chain generations 1..=n are the planned steps, n being the target; in the `Direct`
//! chain (the plain upgrade) generation 1 is the target. Every move from one generation to the next
//! goes through the same stages, forwards and backwards:
//!
//! | stage            | effect                                          | inverse                          |
//! |------------------|-------------------------------------------------|----------------------------------|
//! | WriteDerivations | write the step's `.drv`s, root them             | none: kept until the run ends    |
//! | Realise          | build `to` under a run-owned root               | Unpin + Collect `to`             |
//! | SetProfile       | profile → `to` (its generation if one is left)  | SetProfile `from`                |
//! | Activate         | `switch-to-configuration` of `to`               | Activate `from`                  |
//! | DropGeneration   | delete the profile generations of `from`        | SetProfile `from` (recreates it) |
//! | Unpin            | remove `from`'s run-owned root                  | Realise `from` (roots it again)  |
//! | Collect          | delete `from`'s closure minus the live set      | Realise `from` (from its `.drv`) |
//!
//! Activate installs the boot loader (one entry per profile generation) and DropGeneration of
//! `from` follows it, so every install sees the user's generations plus `from` and `to`: one
//! entry more than before the run at most (`plan::boot`). Walking back, SetProfile returns to
//! `to`'s generation when it is still there rather than adding one, to keep that bound.
//!
//! With `RunShape::keep_g0` the `Direct` chain's move G0 → T skips DropGeneration and Collect of
//! G0: G0 stays the generation before the target (one boot entry more, by the user's choice).
//!
//! Unpin comes before Collect (the brief had it last) so that the superseded generation's own root
//! never keeps it alive; the new generation's root stays until the next move supersedes it.
//!
//! A step of the `Steps` chain whose realise runs out of space is not a build failure: what it
//! left is removed (Unpin + Collect of `to`, as after any failed realise), then the machine waits
//! in [`Phase::Replanning`] at `from`, a complete generation, for the executor to re-plan the rest
//! of the chain from the disk as it is now ([`Event::Replanned`]: the chain from `from` on is
//! replaced, nothing before it changes). When nothing fits, the run stops there (exit 3) and
//! `resume` re-plans again, with whatever room there is then. A re-plan has no effect on the world,
//! so it has no inverse: walking back from a replanned chain is walking back any chain.
//!
//! The planner plans reboots only into steps it makes, never into the generation a re-plan starts
//! from; yet an older generation still booted may pin what the rest of the chain needs. So when
//! nothing fits while the run stands at `at`, the executor may make the move `at → at`
//! ([`RunState::reboot_to_replan`]): only its Reboot and CollectBooted stages (the inverse
//! table's rows: nothing undoes a reboot; the collect is undone by realising `at`, which is
//! complete), then [`Phase::Replanning`] at `at` again. Whether a reboot can help is the world's
//! question, not the machine's (the machine's `booted` is G0 until the run's first reboot, even
//! on a machine that booted an older system): the executor makes it only while the machine has
//! not booted `at`, so after it the next re-plan that does not fit stops.
//!
//! The journal records Intent/Done/Failed around each effect; replaying those records through
//! [`next`] rebuilds the state exactly ([`replay`]), which is how `resume` knows where it stands.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Index of a generation in the current chain: 0 is G0.
pub type Gen = u32;

/// Which chain of generations the run walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Chain {
    /// The plain upgrade: G0 → T.
    Direct,
    /// G0 → G1 → … → Gn = T.
    Steps,
}

/// What to do on a build or activation failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailurePolicy {
    Unwind,
    Hold,
}

/// The fixed parameters of a run, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunShape {
    /// Number of generations after G0 in the `Steps` chain (the last is the target). 0 when the run
    /// has no stepwise plan (strategy direct).
    pub steps: Gen,
    /// A real out-of-space failure of the direct chain falls back to the steps (strategy auto).
    pub fall_back: bool,
    pub on_failure: FailurePolicy,
    /// Bit k set: reboot into step k once it is active and its predecessor collected (only a
    /// reboot frees what the booted system pins). `--reboot when-needed`.
    pub reboot_after: u64,
    /// `--keep-previous`, where the plan showed room for it: the `Direct` chain leaves G0 a
    /// generation (no DropGeneration, no Collect of G0), so a rollback has something to go to.
    pub keep_g0: bool,
}

impl RunShape {
    pub fn reboots_after(&self, gen: Gen) -> bool {
        gen < 64 && self.reboot_after & (1 << gen) != 0
    }
}

/// One effect on the world. Generations are indices into the chain current when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Effect {
    /// Root G0's `.drv` closure for the whole run (exact unwind rebuilds from it).
    PinDerivations,
    WriteDerivations {
        gen: Gen,
    },
    Realise {
        gen: Gen,
    },
    SetProfile {
        gen: Gen,
    },
    Activate {
        gen: Gen,
    },
    DropGeneration {
        gen: Gen,
    },
    Unpin {
        gen: Gen,
    },
    Collect {
        gen: Gen,
    },
    /// Remove every root the run owns (the end of the run).
    Release,
    /// Run the reboot command to boot into `gen`; the run stops until `resume` at boot.
    Reboot {
        gen: Gen,
    },
}

impl Effect {
    pub fn name(&self) -> &'static str {
        match self {
            Effect::PinDerivations => "pin-derivations",
            Effect::WriteDerivations { .. } => "write-derivations",
            Effect::Realise { .. } => "realise",
            Effect::SetProfile { .. } => "set-profile",
            Effect::Activate { .. } => "activate",
            Effect::DropGeneration { .. } => "drop-generation",
            Effect::Unpin { .. } => "unpin",
            Effect::Collect { .. } => "collect",
            Effect::Release => "release",
            Effect::Reboot { .. } => "reboot",
        }
    }
}

/// Stages of a move, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Stage {
    WriteDerivations,
    Realise,
    SetProfile,
    Activate,
    DropGeneration,
    Unpin,
    Collect,
    /// Boot into `to` (when the plan says only a reboot frees what the booted system pins).
    Reboot,
    /// After the reboot: collect what the previously booted generation pinned.
    CollectBooted,
}

impl Stage {
    fn after(self) -> Option<Stage> {
        use Stage::*;
        Some(match self {
            WriteDerivations => Realise,
            Realise => SetProfile,
            SetProfile => Activate,
            Activate => DropGeneration,
            DropGeneration => Unpin,
            Unpin => Collect,
            Collect => Reboot,
            Reboot => CollectBooted,
            CollectBooted => return None,
        })
    }

    /// The effects that undo this stage of a move `from → to`.
    pub fn inverse(self, from: Gen, to: Gen) -> Vec<Effect> {
        match self {
            Stage::WriteDerivations => vec![],
            Stage::Realise => vec![Effect::Unpin { gen: to }, Effect::Collect { gen: to }],
            Stage::SetProfile => vec![Effect::SetProfile { gen: from }],
            Stage::Activate => vec![Effect::Activate { gen: from }],
            Stage::DropGeneration => vec![Effect::SetProfile { gen: from }],
            Stage::Unpin | Stage::Collect | Stage::CollectBooted => {
                vec![Effect::Realise { gen: from }]
            }
            // A reboot is not undone: the unwind switches back; the next boot follows the profile.
            Stage::Reboot => vec![],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    Forward,
    Back,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Move {
    pub from: Gen,
    pub to: Gen,
    pub direction: Direction,
    pub stage: Stage,
}

impl Move {
    fn effect(&self, booted_before: Gen) -> Effect {
        let (from, to) = (self.from, self.to);
        match self.stage {
            Stage::WriteDerivations => Effect::WriteDerivations { gen: to },
            Stage::Realise => Effect::Realise { gen: to },
            Stage::SetProfile => Effect::SetProfile { gen: to },
            Stage::Activate => Effect::Activate { gen: to },
            Stage::DropGeneration => Effect::DropGeneration { gen: from },
            Stage::Unpin => Effect::Unpin { gen: from },
            Stage::Collect => Effect::Collect { gen: from },
            Stage::Reboot => Effect::Reboot { gen: to },
            Stage::CollectBooted => Effect::Collect { gen: booted_before },
        }
    }
}

/// What follows the removal of a failed generation's partial results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AfterCleanup {
    /// The plain upgrade ran out of space: walk the steps instead.
    FallBack,
    Unwind,
    Hold,
    /// A step ran out of space: re-plan the rest of the chain from where the system stands.
    Replan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CleanupStage {
    Unpin,
    Collect,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    ReachedTarget,
    /// Back at G0; `failed` when a failure caused it (exit 1), not a user's `unwind` (exit 0).
    Unwound {
        failed: bool,
    },
    /// Stopped at a good generation after a failure (`--on-failure hold`; exit 1). The run's roots
    /// stay, so `stepwise unwind` can still walk back.
    Held {
        at: Gen,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Before the strategy is chosen.
    Preflight,
    Pinning,
    Moving(Move),
    /// Remove what a failed realise of `gen` left behind.
    Cleanup {
        gen: Gen,
        stage: CleanupStage,
        then: AfterCleanup,
    },
    Releasing(Outcome),
    Finished(Outcome),
    /// A step's realise ran out of space and its partial results are gone; the system stands at
    /// `at` (complete). The executor re-plans the chain after `at` ([`Event::Replanned`]) or stops
    /// there when nothing fits.
    Replanning {
        at: Gen,
    },
}

/// Why an effect failed, as far as the decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureKind {
    /// ENOSPC / "database or disk is full".
    OutOfSpace,
    /// A derivation failed to build.
    BuildFailed,
    /// `switch-to-configuration` failed.
    Activation,
    /// Anything else (a Nix command failing for another reason, an I/O error).
    Other,
}

/// An input to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Event {
    /// Preflight passed; walk this chain.
    Begin {
        chain: Chain,
    },
    /// The effect is about to run (journaled before it does).
    Intent(Effect),
    Done(Effect),
    Failed(Effect, FailureKind),
    /// The user asked to walk back to G0 (`stepwise unwind`).
    UnwindRequested,
    /// In [`Phase::Replanning`]: the chain after `at` is replaced; it now has `steps` generations
    /// after G0 (the last the target) and reboots after the generations in `reboot_after`.
    Replanned {
        at: Gen,
        steps: Gen,
        reboot_after: u64,
    },
    /// What the in-flight activation of `gen` reported besides success, journaled before its
    /// `Done`: some units failed to start, or the generation takes effect only after a reboot.
    Activated {
        gen: Gen,
        units_failed: bool,
        reboot_required: bool,
    },
}

/// Where a run stands. Pure data: rebuilt from the journal by [`replay`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunState {
    pub shape: RunShape,
    pub chain: Chain,
    pub phase: Phase,
    /// The effect whose intent is journaled and whose outcome is not (yet).
    pub in_flight: Option<Effect>,
    /// The generation the profile points at (a complete one once its SetProfile is done).
    pub profile_at: Gen,
    /// The generation last activated.
    pub active: Gen,
    /// The first failure that turned the run around, if any.
    pub failure: Option<(Effect, FailureKind)>,
    /// The last effect failed in a way that only a retry (`resume`) can fix.
    pub stuck: Option<(Effect, FailureKind)>,
    /// The user asked to unwind.
    pub unwind_requested: bool,
    /// The generation booted (0: G0, as far as the run knows), and the one booted before it.
    pub booted: Gen,
    pub booted_before: Gen,
    /// The generation whose forward activation said it takes effect only after a reboot
    /// (`switch-to-configuration` exit 100): the move into it ends with a reboot.
    pub reboot_for: Option<Gen>,
    /// The generation whose last forward activation reported failed units (exit 4).
    pub units_failed_at: Option<Gen>,
    /// That activation is the last effect so far: the run has not gone on from it.
    pub units_failed_waiting: bool,
}

/// What the executor does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Run(Effect),
    /// The outcome of the in-flight effect is awaited.
    Await(Effect),
    /// An effect failed and only a retry can fix it: stop (exit 3); `resume` retries.
    Stop(Effect, FailureKind),
    Finished(Outcome),
    /// Preflight: the executor chooses the chain.
    Choose,
    /// The executor re-plans the chain after `at` (or stops there when nothing fits).
    Replan {
        at: Gen,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NotAllowed {
    #[error("{event:?} is not allowed in {phase:?} (in flight: {in_flight:?})")]
    Event {
        phase: Phase,
        in_flight: Option<Effect>,
        event: Event,
    },
    #[error("intent {got:?} does not match the expected effect {expected:?}")]
    UnexpectedIntent {
        expected: Option<Effect>,
        got: Effect,
    },
    #[error("outcome for {got:?} while {in_flight:?} is in flight")]
    UnexpectedOutcome {
        in_flight: Option<Effect>,
        got: Effect,
    },
    #[error("the run has finished ({0:?})")]
    Finished(Outcome),
    #[error("the chain {0:?} has no generations (the run has no stepwise plan)")]
    EmptyChain(Chain),
    #[error("a re-plan after generation {at} must end after it, not at {steps}")]
    ShortReplan { at: Gen, steps: Gen },
}

impl RunState {
    pub fn new(shape: RunShape) -> Self {
        RunState {
            shape,
            chain: Chain::Direct,
            phase: Phase::Preflight,
            in_flight: None,
            profile_at: 0,
            active: 0,
            failure: None,
            stuck: None,
            unwind_requested: false,
            booted: 0,
            booted_before: 0,
            reboot_for: None,
            units_failed_at: None,
            units_failed_waiting: false,
        }
    }

    /// Whether the system has just switched, forwards, to generation `to` with failed units and
    /// nothing since: where a run with `--on-failed-units stop` waits for the user.
    pub fn just_activated_with_failed_units(&self) -> Option<Gen> {
        match (self.phase, self.in_flight) {
            (Phase::Moving(m), None)
                if m.direction == Direction::Forward
                    && self.units_failed_waiting
                    && self.units_failed_at == Some(m.to)
                    && !self.unwind_requested =>
            {
                Some(m.to)
            }
            _ => None,
        }
    }

    /// In [`Phase::Replanning`] at `at`: the reboot into `at` the executor may make when no
    /// re-plan fits and the machine has not booted `at` (only a reboot frees what the booted
    /// system pins). The move `at → at` it starts has only its Reboot and CollectBooted stages
    /// and returns to re-planning.
    pub fn reboot_to_replan(&self) -> Option<Effect> {
        match (self.phase, self.in_flight) {
            (Phase::Replanning { at }, None) => Some(Effect::Reboot { gen: at }),
            _ => None,
        }
    }

    /// The last generation of the current chain: the target.
    pub fn last_gen(&self) -> Gen {
        match self.chain {
            Chain::Direct => 1,
            Chain::Steps => self.shape.steps,
        }
    }

    /// The effect the machine expects next, if it expects one.
    pub fn expected(&self) -> Option<Effect> {
        match self.phase {
            Phase::Preflight | Phase::Finished(_) | Phase::Replanning { .. } => None,
            Phase::Pinning => Some(Effect::PinDerivations),
            Phase::Moving(m) => Some(m.effect(self.booted_before)),
            Phase::Cleanup { gen, stage, .. } => Some(match stage {
                CleanupStage::Unpin => Effect::Unpin { gen },
                CleanupStage::Collect => Effect::Collect { gen },
            }),
            Phase::Releasing(_) => Some(Effect::Release),
        }
    }

    pub fn next_action(&self) -> Next {
        if let Some(e) = self.in_flight {
            return Next::Await(e);
        }
        if let Some((e, k)) = self.stuck {
            return Next::Stop(e, k);
        }
        match self.phase {
            Phase::Preflight => Next::Choose,
            Phase::Finished(o) => Next::Finished(o),
            Phase::Replanning { at } => Next::Replan { at },
            _ => Next::Run(
                self.expected()
                    .expect("every other phase expects an effect"),
            ),
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished(_))
    }

    /// Where the unwind goes from generation `at`, once the system stands there.
    fn back_from(&self, at: Gen, failed: bool) -> Phase {
        if at == 0 {
            Phase::Releasing(Outcome::Unwound { failed })
        } else {
            Phase::Moving(Move {
                from: at,
                to: at - 1,
                direction: Direction::Back,
                stage: Stage::Realise,
            })
        }
    }

    /// The phase after a failure, or a user's unwind, turned the run around while the system
    /// stands at `at`.
    fn turn_around(&self, at: Gen) -> Phase {
        let failed = self.failure.is_some();
        if failed && !self.unwind_requested && self.shape.on_failure == FailurePolicy::Hold {
            self.hold(at)
        } else {
            self.back_from(at, failed)
        }
    }

    /// Stop at `at` after a failure, keeping the run's roots for a later `unwind`; at G0 there is
    /// nothing to hold.
    fn hold(&self, at: Gen) -> Phase {
        if at == 0 {
            Phase::Releasing(Outcome::Unwound { failed: true })
        } else {
            Phase::Finished(Outcome::Held { at })
        }
    }

    fn forward(&self, from: Gen) -> Phase {
        Phase::Moving(Move {
            from,
            to: from + 1,
            direction: Direction::Forward,
            stage: Stage::WriteDerivations,
        })
    }

    /// Where an unwind requested in `phase` (nothing in flight) goes next.
    fn unwinding_from(&self, phase: Phase) -> Phase {
        match phase {
            Phase::Preflight | Phase::Finished(_) => unreachable!("handled above"),
            Phase::Pinning => Phase::Releasing(Outcome::Unwound { failed: false }),
            Phase::Moving(m) => match (m.direction, m.stage) {
                (Direction::Back, _) => phase,
                (Direction::Forward, Stage::WriteDerivations | Stage::Realise) => Phase::Cleanup {
                    gen: m.to,
                    stage: CleanupStage::Unpin,
                    then: AfterCleanup::Unwind,
                },
                // The profile may already point at `to`: walk back from it.
                (Direction::Forward, Stage::SetProfile | Stage::Activate) => Phase::Moving(Move {
                    from: m.to,
                    to: m.from,
                    direction: Direction::Back,
                    stage: Stage::Realise,
                }),
                // The system stands at `to`; finishing the move frees space, then it turns.
                (Direction::Forward, _) => phase,
            },
            Phase::Cleanup { gen, stage, .. } => Phase::Cleanup {
                gen,
                stage,
                then: AfterCleanup::Unwind,
            },
            Phase::Releasing(Outcome::Unwound { failed }) => {
                Phase::Releasing(Outcome::Unwound { failed })
            }
            Phase::Releasing(Outcome::ReachedTarget) => self.back_from(self.active, false),
            Phase::Releasing(Outcome::Held { at }) => self.back_from(at, true),
            Phase::Replanning { at } => self.back_from(at, self.failure.is_some()),
        }
    }

    fn not_allowed(&self, event: Event) -> NotAllowed {
        NotAllowed::Event {
            phase: self.phase,
            in_flight: self.in_flight,
            event,
        }
    }
}

/// The transition function. Returns the new state, or why the event is not allowed in this state
/// (a journal that does not replay is corrupt or was written by a different version).
pub fn next(state: &RunState, event: Event) -> Result<RunState, NotAllowed> {
    let mut s = state.clone();
    match (s.phase, event) {
        (Phase::Finished(Outcome::Held { at }), Event::UnwindRequested) => {
            s.unwind_requested = true;
            s.phase = s.back_from(at, true);
            return Ok(s);
        }
        (Phase::Finished(o), _) => return Err(NotAllowed::Finished(o)),
        _ => {}
    }
    match (state.phase, state.in_flight, event) {
        (Phase::Preflight, None, Event::Begin { chain }) => {
            if chain == Chain::Steps && s.shape.steps == 0 {
                return Err(NotAllowed::EmptyChain(chain));
            }
            s.chain = chain;
            s.phase = Phase::Pinning;
        }
        (
            Phase::Replanning { at },
            None,
            Event::Replanned {
                at: a,
                steps,
                reboot_after,
            },
        ) if a == at => replanned(&mut s, at, steps, reboot_after)?,
        (Phase::Replanning { at }, None, Event::Intent(e)) if Some(e) == s.reboot_to_replan() => {
            s.in_flight = Some(e);
            s.phase = Phase::Moving(Move {
                from: at,
                to: at,
                direction: Direction::Forward,
                stage: Stage::Reboot,
            });
        }
        (Phase::Preflight, None, Event::UnwindRequested) => {
            s.unwind_requested = true;
            s.phase = Phase::Releasing(Outcome::Unwound { failed: false });
        }
        (_, None, Event::Intent(e)) => {
            let expected = s.expected();
            if expected != Some(e) {
                return Err(NotAllowed::UnexpectedIntent { expected, got: e });
            }
            s.in_flight = Some(e);
            // The run has gone on past the activation whose units failed.
            s.units_failed_waiting = false;
        }
        (_, Some(f), Event::Done(e)) | (_, Some(f), Event::Failed(e, _)) if f != e => {
            return Err(NotAllowed::UnexpectedOutcome {
                in_flight: Some(f),
                got: e,
            });
        }
        (
            Phase::Moving(m),
            Some(Effect::Activate { gen }),
            Event::Activated {
                gen: g,
                units_failed,
                reboot_required,
            },
        ) if g == gen => activated(&mut s, m, gen, units_failed, reboot_required),
        (_, None, Event::Done(e)) | (_, None, Event::Failed(e, _)) => {
            return Err(NotAllowed::UnexpectedOutcome {
                in_flight: None,
                got: e,
            });
        }
        (phase, Some(_), Event::Done(e)) => {
            s.in_flight = None;
            s.stuck = None;
            done(&mut s, phase, e);
        }
        (phase, Some(_), Event::Failed(e, kind)) => {
            s.in_flight = None;
            failed(&mut s, phase, e, kind);
        }
        (phase, None, Event::UnwindRequested) => {
            s.unwind_requested = true;
            s.stuck = None;
            s.phase = s.unwinding_from(phase);
        }
        (_, _, event) => return Err(s.not_allowed(event)),
    }
    Ok(s)
}

/// A re-plan from the complete generation `at`: the chain now has `steps` generations.
fn replanned(s: &mut RunState, at: Gen, steps: Gen, reboot_after: u64) -> Result<(), NotAllowed> {
    if steps <= at {
        return Err(NotAllowed::ShortReplan { at, steps });
    }
    s.shape.steps = steps;
    s.shape.reboot_after = reboot_after;
    s.failure = None;
    s.phase = s.forward(at);
    Ok(())
}

/// `switch-to-configuration` reported failed units or a required reboot for `gen`.
fn activated(s: &mut RunState, m: Move, gen: Gen, units_failed: bool, reboot_required: bool) {
    // Walking back the system returns where it came from: nothing to wait for there.
    if m.direction == Direction::Forward && m.to == gen {
        if units_failed {
            s.units_failed_at = Some(gen);
            s.units_failed_waiting = true;
        }
        if reboot_required {
            s.reboot_for = Some(gen);
        }
    }
}

fn done(s: &mut RunState, phase: Phase, e: Effect) {
    match phase {
        Phase::Pinning => s.phase = s.forward(0),
        Phase::Moving(mut m) => {
            match e {
                Effect::SetProfile { gen } => s.profile_at = gen,
                Effect::Activate { gen } => s.active = gen,
                _ => {}
            }
            if e == (Effect::Reboot { gen: m.to }) {
                s.booted_before = s.booted;
                s.booted = m.to;
            }
            let reboot_here = m.direction == Direction::Forward
                && ((s.chain == Chain::Steps && s.shape.reboots_after(m.to))
                    || s.reboot_for == Some(m.to));
            let keep_g0 = m.direction == Direction::Forward
                && s.chain == Chain::Direct
                && m.from == 0
                && s.shape.keep_g0;
            let next_stage = match m.stage.after() {
                Some(Stage::Reboot) if !reboot_here => None,
                // G0 stays a generation: nothing of it is dropped; its run-owned root goes.
                Some(Stage::DropGeneration) if keep_g0 => Some(Stage::Unpin),
                Some(Stage::Collect) if keep_g0 => None,
                n => n,
            };
            match next_stage {
                Some(next) => {
                    m.stage = next;
                    s.phase = Phase::Moving(m);
                }
                None => {
                    s.phase = match m.direction {
                        Direction::Forward if s.unwind_requested => s.turn_around(m.to),
                        // The reboot that made room for a re-plan (`reboot_to_replan`).
                        Direction::Forward if m.from == m.to => Phase::Replanning { at: m.to },
                        Direction::Forward if m.to == s.last_gen() => {
                            Phase::Releasing(Outcome::ReachedTarget)
                        }
                        Direction::Forward => s.forward(m.to),
                        Direction::Back
                            if !s.unwind_requested && s.shape.on_failure == FailurePolicy::Hold =>
                        {
                            s.hold(m.to)
                        }
                        Direction::Back => s.back_from(m.to, s.failure.is_some()),
                    }
                }
            }
        }
        Phase::Cleanup { gen, stage, then } => {
            s.phase = match stage {
                CleanupStage::Unpin => Phase::Cleanup {
                    gen,
                    stage: CleanupStage::Collect,
                    then,
                },
                CleanupStage::Collect => match then {
                    AfterCleanup::FallBack => {
                        s.chain = Chain::Steps;
                        s.failure = None;
                        s.forward(0)
                    }
                    AfterCleanup::Unwind | AfterCleanup::Hold => s.turn_around(s.profile_at),
                    AfterCleanup::Replan => Phase::Replanning { at: s.profile_at },
                },
            }
        }
        Phase::Releasing(o) => s.phase = Phase::Finished(o),
        Phase::Preflight | Phase::Finished(_) | Phase::Replanning { .. } => {
            unreachable!("no effect runs there")
        }
    }
}

fn failed(s: &mut RunState, phase: Phase, e: Effect, kind: FailureKind) {
    let turn = |s: &mut RunState| {
        if s.failure.is_none() {
            s.failure = Some((e, kind));
        }
    };
    match phase {
        Phase::Moving(m) if m.direction == Direction::Forward && !s.unwind_requested => {
            match m.stage {
                Stage::WriteDerivations | Stage::Realise => {
                    let then = if kind == FailureKind::OutOfSpace
                        && s.chain == Chain::Direct
                        && s.shape.fall_back
                        && s.shape.steps > 0
                    {
                        AfterCleanup::FallBack
                    } else if kind == FailureKind::OutOfSpace && s.chain == Chain::Steps {
                        // Not a build failure: the estimate was wrong. Never unwind a working
                        // chain for it; re-plan from the complete generation at `from`.
                        AfterCleanup::Replan
                    } else if s.shape.on_failure == FailurePolicy::Hold {
                        AfterCleanup::Hold
                    } else {
                        AfterCleanup::Unwind
                    };
                    turn(s);
                    s.phase = Phase::Cleanup {
                        gen: m.to,
                        stage: CleanupStage::Unpin,
                        then,
                    };
                }
                Stage::SetProfile | Stage::Activate => {
                    // Half switched: return to `from`, which is still complete on disk.
                    turn(s);
                    s.phase = Phase::Moving(Move {
                        from: m.to,
                        to: m.from,
                        direction: Direction::Back,
                        stage: Stage::Realise,
                    });
                }
                Stage::DropGeneration
                | Stage::Unpin
                | Stage::Collect
                | Stage::Reboot
                | Stage::CollectBooted => s.stuck = Some((e, kind)),
            }
        }
        _ => s.stuck = Some((e, kind)),
    }
}

/// Fold events from the initial state: the state a journal describes.
pub fn replay(
    shape: RunShape,
    events: impl IntoIterator<Item = Event>,
) -> Result<RunState, (usize, NotAllowed)> {
    let mut s = RunState::new(shape);
    for (i, e) in events.into_iter().enumerate() {
        s = next(&s, e).map_err(|n| (i, n))?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests;
