//! The codec between the transition machine and the journal's records: each machine effect is
//! written as a concrete `Transition` (paths, not indices), and a run's records replay into the
//! machine by decoding each intent against the effect the machine expects at that point.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::run_plan::Spec;
use crate::effects::journal::{
    Action, ChosenStrategy, Outcome as JOutcome, Record, Seq, Transition,
};
use crate::transition::{self, Chain, Effect, Event, FailureKind, Outcome, RunState};

pub fn chosen(chain: Chain) -> ChosenStrategy {
    match chain {
        Chain::Direct => ChosenStrategy::Direct,
        Chain::Steps => ChosenStrategy::Stepwise,
    }
}

pub fn outcome(o: Outcome) -> JOutcome {
    match o {
        Outcome::ReachedTarget => JOutcome::ReachedTarget,
        Outcome::Unwound { .. } => JOutcome::UnwoundToG0,
        Outcome::Held { at } => JOutcome::Held { step: at },
    }
}

/// How a failure of `effect` is classified when read back: out of space only when the run said
/// so (`PlainAttemptFailed`), otherwise by what failed. The machine needs no finer distinction.
pub fn kind_of(effect: Effect, out_of_space: bool) -> FailureKind {
    match effect {
        _ if out_of_space => FailureKind::OutOfSpace,
        Effect::Realise { .. } | Effect::WriteDerivations { .. } => FailureKind::BuildFailed,
        Effect::Activate { .. } => FailureKind::Activation,
        _ => FailureKind::Other,
    }
}

/// Whether a recorded transition is the concrete form of the machine's `effect`.
pub fn matches(spec: &Spec, state: &RunState, effect: Effect, t: &Transition) -> bool {
    let g = |gen| spec.gen(state.chain, gen);
    match (effect, t) {
        (Effect::PinDerivations, Transition::PinDerivations { .. }) => true,
        // Format 1 wrote the pin as step 0's derivations.
        (Effect::PinDerivations, Transition::WriteDerivations { step, .. }) => *step == 0,
        (Effect::WriteDerivations { gen }, Transition::WriteDerivations { step, .. }) => {
            *step == g(gen).step && *step != 0
        }
        (Effect::Realise { gen }, Transition::Realise { drv, .. }) => *drv == g(gen).drv,
        (Effect::SetProfile { gen }, Transition::SetProfile { toplevel, .. })
        | (Effect::Activate { gen }, Transition::Activate { toplevel, .. }) => {
            *toplevel == g(gen).out
        }
        (Effect::DropGeneration { .. }, Transition::DropGeneration { .. }) => true,
        (Effect::Unpin { gen }, Transition::Unpin { root }) => {
            same_path(root, &spec.out_root(state.chain, gen))
        }
        (Effect::Collect { .. }, Transition::Collect { .. }) => true,
        (Effect::Release, Transition::ReleaseRoots { dir }) => same_path(dir, &spec.roots_dir),
        // Format 1 wrote the release as an unpin of the roots' directory.
        (Effect::Release, Transition::Unpin { root }) => same_path(root, &spec.roots_dir),
        (Effect::Reboot { gen }, Transition::Reboot { expected_booted }) => {
            *expected_booted == g(gen).out
        }
        _ => false,
    }
}

/// Whether two spellings of a path (relative, through a symlinked directory) name the same
/// file. The last component is compared as written (a root may be gone already); its directory
/// is resolved when it exists.
pub fn same_path(a: &Path, b: &Path) -> bool {
    a == b || canonical(a) == canonical(b)
}

/// `path` with its directory resolved (absolute, no symlinks) where that directory exists.
pub fn canonical(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(d) if d.as_os_str().is_empty() => Path::new("."),
        Some(d) => d,
        None => return path.to_owned(),
    };
    match (std::fs::canonicalize(dir), path.file_name()) {
        (Ok(d), Some(name)) => d.join(name),
        _ => path.to_owned(),
    }
}

/// A run's records replayed: the state, and the transition of each intent by its sequence number.
pub struct Replayed {
    pub state: RunState,
    /// The run as its records leave it: the header's plan with every re-plan applied.
    pub spec: Spec,
    pub intents: BTreeMap<Seq, (Effect, Transition)>,
    /// The failure messages, in order.
    pub failures: Vec<(Effect, String)>,
    /// What activations reported besides success (`activated` records), in order.
    pub activated: Vec<ActivationReport>,
    pub finished: bool,
}

/// One `activated` record, read back against the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationReport {
    pub gen: transition::Gen,
    /// The activation moved the run forwards (walking back, it returned to a generation).
    pub forward: bool,
    /// The units that failed (`None`: none did).
    pub units_failed: Option<Vec<String>>,
    pub reboot_required: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("record {seq}: {why}")]
pub struct ReplayError {
    pub seq: Seq,
    pub why: String,
}

/// Fold a run's records (its `RunStarted` first) into the machine's state.
pub fn replay(spec: &Spec, records: &[(Seq, Record)]) -> Result<Replayed, ReplayError> {
    let spec = spec.initial();
    let mut r = Replay {
        state: RunState::new(spec.shape()),
        done: Replayed {
            state: RunState::new(spec.shape()),
            spec,
            intents: BTreeMap::new(),
            failures: Vec::new(),
            activated: Vec::new(),
            finished: false,
        },
        housekeeping: std::collections::BTreeSet::new(),
        out_of_space: false,
    };
    for (seq, record) in records {
        let err = |why: String| ReplayError { seq: *seq, why };
        if let Some(ev) = r.event_of(*seq, record).map_err(err)? {
            r.state = transition::next(&r.state, ev).map_err(|e| err(e.to_string()))?;
        }
    }
    r.done.state = r.state;
    Ok(r.done)
}

/// The fold of [`replay`]: what the records so far have built.
struct Replay {
    state: RunState,
    /// Everything but the state, which is kept apart while the fold runs.
    done: Replayed,
    /// Housekeeping intents (recorded in a finished run; not the machine's).
    housekeeping: std::collections::BTreeSet<Seq>,
    /// The last attempt ran out of space: the next failure is of that kind.
    out_of_space: bool,
}

impl Replay {
    /// The machine's event for one record (`None`: the record does not move the machine).
    fn event_of(&mut self, seq: Seq, r: &Record) -> Result<Option<Event>, String> {
        Ok(match r {
            // What was booted before a reboot for a re-plan: for the collect after it.
            Record::RunStarted(_) | Record::Resumed { .. } | Record::BootedBefore { .. } => None,
            Record::RunFinished { .. } => {
                self.done.finished = true;
                None
            }
            Record::StrategyChosen { strategy, .. } => Some(Event::Begin {
                chain: match strategy {
                    ChosenStrategy::Direct => Chain::Direct,
                    ChosenStrategy::Stepwise => Chain::Steps,
                },
            }),
            Record::PlainAttemptFailed { .. } | Record::SpaceRanOut { .. } => {
                self.out_of_space = true;
                None
            }
            Record::Replanned { at, steps, .. } => {
                let spec = self
                    .done
                    .spec
                    .replanned(*at, steps)
                    .map_err(|e| e.to_string())?;
                self.done.spec = spec;
                Some(Event::Replanned {
                    at: *at,
                    steps: self.done.spec.steps.len() as transition::Gen,
                    reboot_after: self.done.spec.reboot_after,
                })
            }
            Record::UnwindStarted { .. } => Some(Event::UnwindRequested),
            Record::Intent { transition } if transition.is_housekeeping() => {
                self.housekeeping.insert(seq);
                None
            }
            Record::Done { intent, .. } | Record::Failed { intent, .. }
                if self.housekeeping.contains(intent) =>
            {
                None
            }
            Record::Intent { transition } => Some(self.intent(seq, transition)?),
            Record::Done { intent, .. } => Some(Event::Done(self.effect_of(*intent, "done")?)),
            Record::Failed { intent, message } => {
                let e = self.effect_of(*intent, "failed")?;
                let kind = kind_of(e, std::mem::take(&mut self.out_of_space));
                self.done.failures.push((e, message.clone()));
                Some(Event::Failed(e, kind))
            }
            Record::Activated {
                intent,
                units_failed,
                reboot_required,
            } => Some(self.activated(*intent, units_failed, *reboot_required)?),
        })
    }

    /// An intent must be the effect the machine expects next.
    fn intent(&mut self, seq: Seq, transition: &Transition) -> Result<Event, String> {
        let state = &self.state;
        let Some(e) = state
            .expected()
            .or_else(|| state.reboot_to_replan())
            .filter(|e| matches(&self.done.spec, state, *e, transition))
        else {
            return Err(format!(
                "intent {} is not what the run expects here ({:?})",
                transition.describe(),
                state.expected()
            ));
        };
        self.done.intents.insert(seq, (e, transition.clone()));
        Ok(Event::Intent(e))
    }

    fn effect_of(&self, intent: Seq, what: &str) -> Result<Effect, String> {
        self.done
            .intents
            .get(&intent)
            .map(|(e, _)| *e)
            .ok_or_else(|| format!("{what} for unknown intent {intent}"))
    }

    /// An `activated` record: what the activation of its intent reported besides success.
    fn activated(
        &mut self,
        intent: Seq,
        units_failed: &[String],
        reboot_required: bool,
    ) -> Result<Event, String> {
        let Some((Effect::Activate { gen }, _)) = self.done.intents.get(&intent) else {
            return Err(format!("activated for intent {intent}, not an activation"));
        };
        let forward = matches!(
            self.state.phase,
            transition::Phase::Moving(m) if m.direction == transition::Direction::Forward
        );
        self.done.activated.push(ActivationReport {
            gen: *gen,
            forward,
            units_failed: (!reboot_required).then(|| units_failed.to_vec()),
            reboot_required,
        });
        Ok(Event::Activated {
            gen: *gen,
            units_failed: !reboot_required,
            reboot_required,
        })
    }
}

/// The run's header with the chain as its re-plans left it: what the steps' derivations are
/// derived from on `resume` (every mask the run may still need).
pub fn effective_header(
    header: &crate::effects::journal::RunHeader,
    records: &[(Seq, Record)],
) -> crate::effects::journal::RunHeader {
    let mut h = header.clone();
    for (_, r) in records {
        if let Record::Replanned { at, steps, .. } = r {
            h.plan.truncate(*at as usize);
            h.plan.extend(steps.iter().cloned());
        }
    }
    h
}

/// The cost factor (ppm) the run has learnt from its steps that ran out of space: each
/// `spaceRanOut` on top of the factor its step was planned with (the last `replanned` before it).
pub fn learnt_cost_ppm(records: &[(Seq, Record)]) -> u64 {
    use crate::plan::replan::{learnt_cost_ppm, RanOut};
    let (mut planned_with, mut learnt) = (0, 0);
    for (_, r) in records {
        match r {
            Record::Replanned { cost_ppm, .. } => planned_with = *cost_ppm,
            Record::SpaceRanOut {
                estimated, free, ..
            } => {
                let l = learnt_cost_ppm(
                    planned_with,
                    RanOut {
                        estimated: *estimated,
                        free: *free,
                    },
                );
                learnt = learnt.max(l);
            }
            _ => {}
        }
    }
    learnt
}

/// The last `spaceRanOut` of the run: what the step being re-planned failed with.
pub fn last_ran_out(records: &[(Seq, Record)]) -> Option<(u32, crate::plan::replan::RanOut)> {
    records.iter().rev().find_map(|(_, r)| match r {
        Record::SpaceRanOut {
            step,
            estimated,
            free,
        } => Some((
            *step,
            crate::plan::replan::RanOut {
                estimated: *estimated,
                free: *free,
            },
        )),
        _ => None,
    })
}

/// The action an `Activate` of `gen` uses: the user's for the target reached forwards; for the
/// intermediate steps `switch` (they must become current-system to free their predecessor, and
/// the boot loader must never point at a deleted generation), except that `--action test` keeps
/// the boot loader untouched (`test`) all the way; `switch` for every step back (the walk back
/// ends where the run started, booted as before).
pub fn activation_action(spec: &Spec, state: &RunState, gen: transition::Gen) -> Action {
    match state.phase {
        transition::Phase::Moving(m) if m.direction == transition::Direction::Forward => {
            if gen == state.last_gen() || spec.header.action == Action::Test {
                spec.header.action
            } else {
                Action::Switch
            }
        }
        _ => Action::Switch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal reached through a symlinked directory or a relative path names the same roots.
    #[test]
    fn spellings_of_one_path_are_the_same_path() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(same_path(
            &real.join("journal.roots"),
            &link.join("journal.roots")
        ));
        assert!(!same_path(&real.join("a"), &real.join("b")));
        let here = std::env::current_dir().unwrap();
        assert!(same_path(Path::new("x.roots"), &here.join("x.roots")));
    }
}
