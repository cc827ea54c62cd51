//! The executor: for each decision of the transition machine, journal the intent durably, run the
//! effect through the `Store`/`System` seams, journal the outcome. A fresh executor over the same
//! journal and world continues where a killed one stopped (`resume`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use super::log::{LogError, RunLog};
use super::record::{self, activation_action, Replayed};
use super::run_plan::{GenPlan, GenSource, Spec, SpecError};
use super::steps::StepMasks;
use crate::drv::StorePath;
use crate::effects::journal::{Record, RunHeader, Seq, Transition};
use crate::effects::store::{Activated, RealiseError, RealiseEvent, StoreError};
use crate::effects::{Store, System};
use crate::transition::{self, Chain, Effect, Event, FailureKind, Gen, Next, Outcome, RunState};

mod replan;

impl EngineError {
    pub fn from_error(e: crate::error::Error) -> Self {
        EngineError::Refused(Box::new(e))
    }
}

/// Space kept free beside the journal, given back when the disk is full.
pub trait Reserve {
    /// The run's reserve is `bytes` (what `restore` makes again), without touching the disk.
    fn set_size(&mut self, bytes: u64);
    /// Hold `bytes` (made before a run starts, and again when it has ended).
    fn hold(&mut self, bytes: u64) -> std::io::Result<()> {
        self.set_size(bytes);
        self.restore()
    }
    fn release(&mut self) -> std::io::Result<()>;
    fn restore(&mut self) -> std::io::Result<()>;
    /// Bytes the reserve holds on the store's filesystem now: part of its used bytes, which the
    /// plan's ceiling must not count a second time (`PlanInput::count_held_reserve`).
    fn held(&self) -> u64 {
        0
    }
    /// Why there is no reserve, when there can be none (no directory on the store's filesystem).
    fn skipped(&self) -> Option<String> {
        None
    }
}

/// What the executor tells the user as it goes.
#[derive(Debug, Clone)]
pub enum Progress<'a> {
    Starting {
        transition: &'a Transition,
        gen: &'a GenPlan,
        chain: Chain,
        /// Generations in the chain after G0.
        of: Gen,
    },
    Done {
        transition: &'a Transition,
        note: &'a str,
        /// Bytes the effect added to or freed from the store, where known (as journaled).
        added: Option<u64>,
        freed: Option<u64>,
    },
    Failed {
        transition: &'a Transition,
        message: &'a str,
    },
    Info(&'a str),
    /// One line of Nix's output while it realises a generation.
    Child(&'a str),
    /// A line of `upgrade`'s preflight for people (not part of the `--json` stream).
    Note(&'a str),
}

/// How a drive of the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    Finished {
        outcome: Outcome,
        /// What turned the run around, if anything (the package, the log tail).
        failure: Option<String>,
        /// Every forward activation that reported failed units (`switch-to-configuration`
        /// exit 4) and which, in order; the last names the target when its own did.
        units_failed: Vec<FailedUnits>,
    },
    /// Stopped before the end; `resume` continues (exit 3).
    Stopped { why: String },
    /// A test's checkpoint hook simulated a crash here.
    Crashed { at: String },
}

/// Units that failed to start when the run switched to a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedUnits {
    /// The generation's label ("step 2 of 5", "target").
    pub generation: String,
    /// Whether that generation is the run's target.
    pub target: bool,
    /// The units, as `switch-to-configuration` named them (empty: it named none).
    pub units: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("journal: {0}")]
    Journal(#[from] LogError),
    #[error("the journal does not replay: {0}")]
    Replay(String),
    #[error("the journal holds no run")]
    NoRun,
    #[error("{0}")]
    Spec(#[from] SpecError),
    #[error("the last run has finished ({0:?}); there is nothing to {1}")]
    Finished(Outcome, &'static str),
    /// The journal could not be opened or read (locked, damaged, newer): the error to report.
    #[error("{0}")]
    Refused(Box<crate::error::Error>),
    /// A format-1 run that cannot be continued safely: its masks are not in the journal.
    #[error(
        "the run was recorded by an older stepwise (journal format 1) and cannot be continued: {0}"
    )]
    Incomplete(String),
}

pub struct Executor<'a> {
    pub store: &'a dyn Store,
    pub system: &'a dyn System,
    pub log: &'a mut dyn RunLog,
    pub source: &'a dyn GenSource,
    /// Set by SIGTERM/SIGINT: finish the current transition, then stop.
    pub stop: &'a AtomicBool,
    pub reserve: Option<&'a mut dyn Reserve>,
    /// Called at each named checkpoint; returning true simulates a crash there (tests). The default
    /// goes to `crash::point`, which aborts the process under the `crash-points` feature.
    pub checkpoint: Box<dyn FnMut(&str) -> bool + 'a>,
    pub progress: Box<dyn FnMut(Progress) + 'a>,
    /// For a format-1 run: the masks format 1 kept beside the journal (`StepMasks::complete`).
    pub legacy_masks: Option<StepMasks>,
    /// The wall clock the reboot window is checked against; `None`: reboot at any time.
    pub clock: Option<&'a dyn super::api::Clock>,
    /// The user accepts the units that failed at the last activation: a run with
    /// `--on-failed-units stop` waiting there goes on (`resume --accept-failed-units`).
    pub accept_failed_units: bool,
    reserve_released: bool,
    /// Free bytes when the last realise started: what a step that ran out of space had.
    free_at_realise: Option<u64>,
}

/// The last run, read back from the journal.
pub struct Loaded {
    pub spec: Spec,
    pub replayed: Replayed,
    pub records: Vec<(Seq, Record)>,
    /// Why the run's header lacks what continuing it needs (a format-1 run without its side
    /// file); `None` when it is complete.
    pub incomplete: Option<String>,
}

/// Rebuild the last run's state from its records alone (and, for a format-1 run, `legacy`: the
/// masks format 1 kept beside the journal).
pub fn load(
    log: &dyn RunLog,
    roots_dir: PathBuf,
    legacy: Option<&StepMasks>,
) -> Result<Loaded, EngineError> {
    let records = log.last_run();
    let Some((_, Record::RunStarted(header))) = records.first() else {
        return Err(EngineError::NoRun);
    };
    let mut header = (**header).clone();
    let incomplete = StepMasks::complete(&mut header, legacy).err();
    let spec = Spec::new(header, roots_dir)?;
    let replayed =
        record::replay(&spec, &records).map_err(|e| EngineError::Replay(e.to_string()))?;
    Ok(Loaded {
        spec: replayed.spec.clone(),
        replayed,
        records,
        incomplete,
    })
}

fn classify_store(e: &StoreError) -> FailureKind {
    match e {
        StoreError::OutOfSpace(_) => FailureKind::OutOfSpace,
        _ => FailureKind::Other,
    }
}

/// What an activation's outcome adds to its `done` note (the journal has it as an `activated`
/// record).
fn activation_note(action: crate::effects::store::Action, a: &Activated) -> String {
    match a {
        Activated::Done => action.as_str().to_string(),
        Activated::UnitsFailed(units) => format!(
            "{} (units failed: {})",
            action.as_str(),
            if units.is_empty() {
                "not named".into()
            } else {
                units.join(", ")
            }
        ),
        Activated::RebootRequired => format!("{} (takes effect at the next boot)", action.as_str()),
    }
}

/// What an effect did: a note for people, and the bytes it added to or freed from the store
/// where known (journaled in its `done`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effected {
    pub note: String,
    pub added: Option<u64>,
    pub freed: Option<u64>,
}

impl Effected {
    fn note(note: impl Into<String>) -> Self {
        Effected {
            note: note.into(),
            ..Effected::default()
        }
    }
}

/// Why an effect failed, classified for the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectFailure {
    pub kind: FailureKind,
    pub message: String,
    /// A stop reached the effect (a signal to Nix or to us, a cancel): not a failure. Its
    /// intent stays open and the run stops; `resume` probes and redoes it, as after a crash.
    pub interrupted: bool,
}

impl From<(FailureKind, String)> for EffectFailure {
    fn from((kind, message): (FailureKind, String)) -> Self {
        EffectFailure {
            kind,
            message,
            interrupted: false,
        }
    }
}

impl From<StoreError> for EffectFailure {
    fn from(e: StoreError) -> Self {
        EffectFailure {
            kind: classify_store(&e),
            message: e.to_string(),
            interrupted: e.is_interrupted(),
        }
    }
}

type EffectResult = Result<Effected, EffectFailure>;

/// How running an effect ended, when the journal could be written.
enum Ran<T> {
    /// The effect's outcome is journaled: go on with this.
    Outcome(T),
    /// A test's checkpoint simulated a crash at this checkpoint.
    Crashed(String),
    /// A stop interrupted the effect; its intent stays open (`resume` redoes it).
    Interrupted(String),
}

impl<'a> Executor<'a> {
    pub fn new(
        store: &'a dyn Store,
        system: &'a dyn System,
        log: &'a mut dyn RunLog,
        source: &'a dyn GenSource,
        stop: &'a AtomicBool,
    ) -> Self {
        Executor {
            store,
            system,
            log,
            source,
            stop,
            reserve: None,
            checkpoint: Box::new(|name| {
                super::crash::point(name);
                false
            }),
            progress: Box::new(|_| {}),
            legacy_masks: None,
            clock: None,
            accept_failed_units: false,
            reserve_released: false,
            free_at_realise: None,
        }
    }

    fn append(&mut self, r: Record) -> Result<Seq, EngineError> {
        match self.log.append(r.clone()) {
            Ok(seq) => Ok(seq),
            // The disk may be full: give the reserve back and try once more.
            Err(e) if !self.reserve_released && self.reserve.is_some() => {
                self.release_reserve();
                self.log.append(r).map_err(|_| e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn release_reserve(&mut self) {
        if let Some(r) = self.reserve.as_deref_mut() {
            if r.release().is_ok() {
                self.reserve_released = true;
                (self.progress)(Progress::Info(
                    "disk full: released the reserve file so that the journal and deletions can proceed",
                ));
            }
        }
    }

    fn restore_reserve(&mut self) {
        if self.reserve_released {
            if let Some(r) = self.reserve.as_deref_mut() {
                if r.restore().is_ok() {
                    self.reserve_released = false;
                }
            }
        }
    }

    fn check(&mut self, name: &str) -> Option<RunEnd> {
        (self.checkpoint)(name).then(|| RunEnd::Crashed { at: name.into() })
    }

    /// Start a new run: journal its header and chosen chain, then drive it.
    pub fn start(
        &mut self,
        header: RunHeader,
        roots_dir: PathBuf,
        chain: Chain,
        why: String,
    ) -> Result<RunEnd, EngineError> {
        if !header.is_complete() {
            return Err(EngineError::Spec(SpecError(
                "the run's header lacks a step's mask or reboot point".into(),
            )));
        }
        let spec = Spec::new(header.clone(), roots_dir.clone())?;
        if chain == Chain::Steps && spec.steps.is_empty() {
            return Err(EngineError::Spec(SpecError("no steps planned".into())));
        }
        self.log.begin_run(header)?;
        if let Some(c) = self.check("run-started") {
            return Ok(c);
        }
        self.append(Record::StrategyChosen {
            strategy: record::chosen(chain),
            why,
        })?;
        self.continue_run(roots_dir, false, false)
    }

    /// Continue the last run from the journal (retrying an effect that stopped it).
    pub fn resume(&mut self, roots_dir: PathBuf) -> Result<RunEnd, EngineError> {
        self.continue_run(roots_dir, false, true)
    }

    /// Walk the last run back to G0.
    pub fn unwind(&mut self, roots_dir: PathBuf) -> Result<RunEnd, EngineError> {
        self.continue_run(roots_dir, true, true)
    }

    fn continue_run(
        &mut self,
        roots_dir: PathBuf,
        unwind: bool,
        resumed: bool,
    ) -> Result<RunEnd, EngineError> {
        self.refuse_incomplete_unfinished()?;
        let Loaded {
            spec,
            replayed,
            incomplete,
            ..
        } = load(&*self.log, roots_dir, self.legacy_masks.as_ref())?;
        let mut state = replayed.state.clone();
        let what = if unwind { "unwind" } else { "resume" };

        if let transition::Phase::Finished(o) = state.phase {
            let held = matches!(o, Outcome::Held { .. });
            if !(unwind && held) {
                if !replayed.finished {
                    // The end was reached but not recorded before the process died.
                    self.append(Record::RunFinished {
                        outcome: record::outcome(o),
                    })?;
                    if !unwind {
                        return Ok(self.finished(&spec, o, &replayed));
                    }
                }
                return Err(EngineError::Finished(o, what));
            }
        }
        // Checked before anything is written: a run that cannot be continued stays as it is.
        if let Some(why) = incomplete {
            return Err(EngineError::Incomplete(why));
        }
        if !unwind {
            if let Some(wait) = self
                .waiting_for_reboot(&spec, &state)
                .or_else(|| self.waiting_for_acceptance(&spec, &state))
                .or_else(|| self.waiting_for_a_users_reboot(&spec, &state))
            {
                return Ok(wait);
            }
        }
        if resumed {
            self.append(Record::Resumed {
                pid: std::process::id(),
                command: what.into(),
            })?;
        }
        // A trailing intent first: did its effect happen? (doc/design.md, "Crash windows")
        if let Some(e) = state.in_flight {
            let (seq, t) = replayed
                .intents
                .iter()
                .next_back()
                .map(|(s, (_, t))| (*s, t.clone()))
                .expect("an in-flight effect has its intent");
            match self.settle(&spec, state, e, seq, &t)? {
                Ran::Outcome(s) => state = s,
                Ran::Crashed(at) => return Ok(RunEnd::Crashed { at }),
                Ran::Interrupted(why) => return Ok(RunEnd::Stopped { why }),
            }
            if let transition::Phase::Finished(o) = state.phase {
                if !(unwind && matches!(o, Outcome::Held { .. })) {
                    // The trailing effect was the last one: the run is over.
                    self.append(Record::RunFinished {
                        outcome: record::outcome(o),
                    })?;
                    if unwind {
                        return Err(EngineError::Finished(o, what));
                    }
                    let replayed = record::replay(&spec, &self.log.last_run())
                        .map_err(|e| EngineError::Replay(e.to_string()))?;
                    return Ok(self.finished(&spec, o, &replayed));
                }
            }
        }
        let state = self.begin_where_unstarted(&spec, state, unwind)?;
        if let Some(wait) = self.waiting_for_reboot(&spec, &state) {
            return Ok(wait);
        }
        self.drive(spec, state, true)
    }

    /// A run killed before its strategy was recorded gets one (`resume`), and an `unwind` is
    /// journaled as started; returns the state after both.
    fn begin_where_unstarted(
        &mut self,
        spec: &Spec,
        mut state: RunState,
        unwind: bool,
    ) -> Result<RunState, EngineError> {
        if state.phase == transition::Phase::Preflight && !unwind {
            // Killed between the header and the strategy: nothing was done. `auto` takes the
            // recorded stepwise plan when there is one: it is the way that was planned to fit,
            // while a plain attempt on a disk it does not fit would end in an unwind.
            use crate::effects::journal::Strategy;
            let chain = match spec.header.strategy {
                Strategy::Stepwise => Chain::Steps,
                // G0 was to be kept: only the plain upgrade keeps it, and the plan showed it fits.
                Strategy::Auto if spec.header.options.keep_previous => Chain::Direct,
                Strategy::Auto if spec.steps.len() > 1 => Chain::Steps,
                Strategy::Auto | Strategy::Direct => Chain::Direct,
            };
            self.append(Record::StrategyChosen {
                strategy: record::chosen(chain),
                why: "resumed before a strategy was recorded".into(),
            })?;
            state = feed(state, Event::Begin { chain })?;
        }
        if unwind && !state.unwind_requested {
            if state.phase == transition::Phase::Preflight {
                self.append(Record::StrategyChosen {
                    strategy: record::chosen(Chain::Direct),
                    why: "unwound before starting".into(),
                })?;
                state = feed(
                    state,
                    Event::Begin {
                        chain: Chain::Direct,
                    },
                )?;
            }
            self.append(Record::UnwindStarted {
                why: "requested by `stepwise unwind`".into(),
            })?;
            state = feed(state, Event::UnwindRequested)?;
        }
        Ok(state)
    }

    /// Back from a reboot: only go on in the generation the run rebooted into; until then the run
    /// waits (exit 3) and writes nothing.
    fn waiting_for_reboot(&self, spec: &Spec, state: &RunState) -> Option<RunEnd> {
        let (transition::Phase::Moving(m), None) = (state.phase, state.in_flight) else {
            return None;
        };
        if m.stage != transition::Stage::CollectBooted {
            return None;
        }
        let want = &spec.gen(state.chain, m.to).out;
        let booted = self
            .system
            .read_system_link(&spec.header.booted_system)
            .ok()
            .flatten();
        (booted.as_ref() != Some(want)).then(|| RunEnd::Stopped {
            why: format!(
                "waiting for the reboot into {want} (booted: {}); run `stepwise resume` once it has booted",
                booted.map_or("unknown".into(), |b| b.to_string())
            ),
        })
    }

    /// An unfinished format-1 run whose masks cannot be found is refused before its records are
    /// even replayed: what it lacks is the clearer message.
    fn refuse_incomplete_unfinished(&self) -> Result<(), EngineError> {
        let records = self.log.last_run();
        let Some((_, Record::RunStarted(header))) = records.first() else {
            return Ok(());
        };
        if records
            .iter()
            .any(|(_, r)| matches!(r, Record::RunFinished { .. }))
        {
            return Ok(());
        }
        let mut header = (**header).clone();
        StepMasks::complete(&mut header, self.legacy_masks.as_ref())
            .map_err(EngineError::Incomplete)
    }

    /// Resolve an intent whose outcome was not journaled: probe the world, or run the effect again
    /// (every effect is idempotent, and collects recheck liveness).
    fn settle(
        &mut self,
        spec: &Spec,
        state: RunState,
        e: Effect,
        seq: Seq,
        t: &Transition,
    ) -> Result<Ran<RunState>, EngineError> {
        if self.probe(spec, &state, e) {
            self.append(Record::Done {
                intent: seq,
                added: None,
                freed: None,
            })?;
            (self.progress)(Progress::Done {
                transition: t,
                note: "probed: it had happened",
                added: None,
                freed: None,
            });
            return feed(state, Event::Done(e)).map(Ran::Outcome);
        }
        match self.run_effect(spec, &state, e, seq, t)? {
            Ran::Crashed(at) => Ok(Ran::Crashed(at)),
            Ran::Interrupted(why) => Ok(Ran::Interrupted(why)),
            Ran::Outcome(evs) => feed_all(state, evs).map(Ran::Outcome),
        }
    }

    /// Journal `e` as done because the world shows it happened (intent, then done).
    fn journal_probed(
        &mut self,
        spec: &Spec,
        state: RunState,
        e: Effect,
    ) -> Result<RunState, EngineError> {
        let t = self
            .concretise(spec, &state, e)
            .map_err(|why| EngineError::Replay(format!("cannot record {}: {why}", e.name())))?;
        let seq = self.append(Record::Intent {
            transition: t.clone(),
        })?;
        let state = feed(state, Event::Intent(e))?;
        self.append(Record::Done {
            intent: seq,
            added: None,
            freed: None,
        })?;
        (self.progress)(Progress::Done {
            transition: &t,
            note: "probed: it had happened",
            added: None,
            freed: None,
        });
        feed(state, Event::Done(e))
    }

    /// Whether the world shows that `e` happened, where that is cheap and certain.
    fn probe(&self, spec: &Spec, state: &RunState, e: Effect) -> bool {
        match e {
            Effect::Reboot { gen } => {
                self.system
                    .read_system_link(&spec.header.booted_system)
                    .ok()
                    .flatten()
                    .as_ref()
                    == Some(&spec.gen(state.chain, gen).out)
            }
            Effect::Activate { gen } => {
                let g = spec.gen(state.chain, gen);
                activation_action(spec, state, gen) != crate::effects::journal::Action::Boot
                    && self
                        .system
                        .read_system_link(&spec.header.current_system)
                        .ok()
                        .flatten()
                        .as_ref()
                        == Some(&g.out)
            }
            _ => false,
        }
    }

    /// Journal what an activation reported besides success (`activated`, before its `done`),
    /// and give the machine's event for it.
    fn journal_activated(
        &mut self,
        intent: Seq,
        activated: Option<(Gen, Activated)>,
    ) -> Result<Vec<Event>, EngineError> {
        let (gen, units, reboot_required) = match activated {
            Some((gen, Activated::UnitsFailed(units))) => (gen, units, false),
            Some((gen, Activated::RebootRequired)) => (gen, vec![], true),
            Some((_, Activated::Done)) | None => return Ok(vec![]),
        };
        let units_failed = !reboot_required;
        self.append(Record::Activated {
            intent,
            units_failed: units,
            reboot_required,
        })?;
        Ok(vec![Event::Activated {
            gen,
            units_failed,
            reboot_required,
        }])
    }

    /// The forward activations that reported failed units, from the replayed journal.
    fn failed_units(spec: &Spec, state: &RunState, replayed: &Replayed) -> Vec<FailedUnits> {
        replayed
            .activated
            .iter()
            .filter(|a| a.forward && a.units_failed.is_some())
            .map(|a| {
                let g = spec.gen(state.chain, a.gen);
                FailedUnits {
                    generation: g.label.clone(),
                    target: a.gen == state.last_gen(),
                    units: a.units_failed.clone().unwrap_or_default(),
                }
            })
            .collect()
    }

    /// A run with `--on-failed-units stop` that switched to a generation whose units failed waits
    /// there, at a complete generation, until the user accepts (`resume --accept-failed-units`)
    /// or walks back (`unwind`). Nothing is written while it waits: an hourly tick is a no-op.
    fn waiting_for_acceptance(&self, spec: &Spec, state: &RunState) -> Option<RunEnd> {
        use crate::effects::journal::OnFailedUnits;
        let gen = state.just_activated_with_failed_units()?;
        if self.accept_failed_units || spec.header.options.on_failed_units != OnFailedUnits::Stop {
            return None;
        }
        let replayed = record::replay(spec, &self.log.last_run()).ok()?;
        let units = Self::failed_units(spec, state, &replayed)
            .pop()
            .map_or_else(Vec::new, |f| f.units);
        let g = spec.gen(state.chain, gen);
        Some(RunEnd::Stopped {
            why: format!(
                "switching to {} ({}) left units failed: {}; the run stops there (--on-failed-units stop). \
                 `stepwise resume --accept-failed-units` goes on, `stepwise unwind` walks back",
                g.label,
                g.out,
                if units.is_empty() {
                    "not named".to_string()
                } else {
                    units.join(", ")
                }
            ),
        })
    }

    /// A reboot that is due but that the run may not make: `--reboot never` and the generation
    /// asked for one (`switch-to-configuration` exit 100). The run stops at that complete
    /// generation until the machine has booted it; nothing is written while it waits.
    fn waiting_for_a_users_reboot(&self, spec: &Spec, state: &RunState) -> Option<RunEnd> {
        use crate::effects::journal::RebootPolicy;
        let Next::Run(e @ Effect::Reboot { gen }) = state.next_action() else {
            return None;
        };
        if spec.header.reboot != RebootPolicy::Never || self.probe(spec, state, e) {
            return None;
        }
        let g = spec.gen(state.chain, gen);
        Some(RunEnd::Stopped {
            why: format!(
                "{} ({}) takes effect only after a reboot (switch-to-configuration exit 100) and the run may not reboot (--reboot never): reboot the machine; `stepwise resume` at boot continues",
                g.label, g.out
            ),
        })
    }

    fn finished(&self, spec: &Spec, outcome: Outcome, replayed: &Replayed) -> RunEnd {
        let units_failed = Self::failed_units(spec, &replayed.state, replayed);
        let failure = match outcome {
            Outcome::ReachedTarget | Outcome::Unwound { failed: false } => None,
            _ => replayed
                .state
                .failure
                .and_then(|(e, _)| {
                    replayed
                        .failures
                        .iter()
                        .find(|(f, _)| *f == e)
                        .map(|(_, m)| m.clone())
                })
                .or_else(|| replayed.failures.first().map(|(_, m)| m.clone())),
        };
        RunEnd::Finished {
            outcome,
            failure,
            units_failed,
        }
    }

    fn drive(
        &mut self,
        mut spec: Spec,
        mut state: RunState,
        mut retry_stuck: bool,
    ) -> Result<RunEnd, EngineError> {
        let spec = &mut spec;
        loop {
            let e = match state.next_action() {
                Next::Run(e) => e,
                Next::Stop(e, _) if retry_stuck => e,
                Next::Stop(e, kind) => {
                    return Ok(RunEnd::Stopped {
                        why: format!("{} failed ({kind:?})", e.name()),
                    });
                }
                Next::Finished(o) => return self.journal_finished(spec, o),
                Next::Replan { at } => match self.replan(spec, &state, at)? {
                    replan::Replan::Fits(new_spec, ev) => {
                        *spec = *new_spec;
                        state = feed(state, ev)?;
                        if let Some(c) = self.check("after-replanned") {
                            return Ok(c);
                        }
                        continue;
                    }
                    replan::Replan::NothingFits(why) => return Ok(RunEnd::Stopped { why }),
                    replan::Replan::RebootFirst(e, why) => {
                        self.reboot_first(spec, &state, e, &why)?
                    }
                },
                Next::Await(e) => unreachable!("settled before driving: {e:?}"),
                Next::Choose => unreachable!("the chain is chosen before driving"),
            };
            retry_stuck = false;
            if self.stop.load(Ordering::SeqCst) {
                return Ok(RunEnd::Stopped {
                    why: "stopped by a signal after finishing the current transition".into(),
                });
            }
            if let Some(end) = self
                .waiting_for_acceptance(spec, &state)
                .or_else(|| self.waiting_for_a_users_reboot(spec, &state))
            {
                return Ok(end);
            }
            if matches!(e, Effect::Reboot { .. }) && self.probe(spec, &state, e) {
                // The machine booted the generation already (the user rebooted it): journal the
                // reboot as done without rebooting again.
                state = self.journal_probed(spec, state, e)?;
                continue;
            }
            if let Some(end) = self.outside_reboot_window(spec, &state, e) {
                return Ok(end);
            }
            let t = match self.concretise(spec, &state, e) {
                Ok(t) => t,
                Err(why) => {
                    return Ok(RunEnd::Stopped {
                        why: format!("cannot prepare {}: {why}", e.name()),
                    })
                }
            };
            if let Some(c) = self.check(&format!("before-intent-{}", e.name())) {
                return Ok(c);
            }
            let seq = self.append(Record::Intent {
                transition: t.clone(),
            })?;
            state = feed(state, Event::Intent(e))?;
            if let Some(c) = self.check(&format!("after-intent-{}", e.name())) {
                return Ok(c);
            }
            let evs = match self.run_effect(spec, &state, e, seq, &t)? {
                Ran::Outcome(evs) => evs,
                Ran::Crashed(at) => return Ok(RunEnd::Crashed { at }),
                Ran::Interrupted(why) => return Ok(RunEnd::Stopped { why }),
            };
            let ev = *evs.last().expect("an outcome ends with its event");
            state = feed_all(state, evs)?;
            if let Some(c) = self.check(&format!("after-outcome-{}", e.name())) {
                return Ok(c);
            }
            if ev == Event::Done(e) {
                if let Effect::Reboot { gen } = e {
                    return Ok(RunEnd::Stopped {
                        why: format!(
                            "rebooting into {} ({})",
                            spec.gen(state.chain, gen).out,
                            spec.gen(state.chain, gen).label
                        ),
                    });
                }
            }
        }
    }

    /// The run's end, journaled (`runFinished`), and what it did, read back from the journal.
    fn journal_finished(&mut self, spec: &Spec, o: Outcome) -> Result<RunEnd, EngineError> {
        self.append(Record::RunFinished {
            outcome: record::outcome(o),
        })?;
        let replayed = record::replay(spec, &self.log.last_run())
            .map_err(|e| EngineError::Replay(e.to_string()))?;
        Ok(self.finished(spec, o, &replayed))
    }

    /// A reboot outside the run's window does not happen: the run stops before it, at a complete
    /// generation (the step is active, its predecessor collected), and a later run inside the
    /// window continues with the reboot.
    fn outside_reboot_window(&self, spec: &Spec, state: &RunState, e: Effect) -> Option<RunEnd> {
        let Effect::Reboot { gen } = e else {
            return None;
        };
        let (window, clock) = (spec.header.reboot_window?, self.clock?);
        let now = clock.local_minute();
        if window.contains(now) {
            return None;
        }
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        Some(RunEnd::Stopped {
            why: format!(
                "the run needs a reboot into {} but it is {} here, outside the reboot window {}-{}: the system stays at that complete generation; a run inside the window continues",
                spec.gen(state.chain, gen).label,
                hm(now),
                hm(window.lower_minute),
                hm(window.upper_minute)
            ),
        })
    }

    /// The concrete transition an intent records: what a retry must do again.
    fn concretise(&self, spec: &Spec, state: &RunState, e: Effect) -> Result<Transition, String> {
        let g = |gen| spec.gen(state.chain, gen);
        Ok(match e {
            Effect::PinDerivations => Transition::PinDerivations {
                drvs: vec![spec.g0.drv.clone(), spec.target.drv.clone()],
            },
            Effect::WriteDerivations { gen } => {
                let mut drvs: Vec<StorePath> = self
                    .source
                    .derivations(&g(gen).drv)?
                    .into_iter()
                    .map(|d| d.path)
                    .collect();
                if drvs.last() != Some(&g(gen).drv) {
                    drvs.push(g(gen).drv.clone());
                }
                Transition::WriteDerivations {
                    step: g(gen).step,
                    drvs,
                }
            }
            Effect::Realise { gen } => Transition::Realise {
                step: g(gen).step,
                drv: g(gen).drv.clone(),
                root: spec.out_root(state.chain, gen),
            },
            Effect::SetProfile { gen } => Transition::SetProfile {
                profile: spec.header.profile.clone(),
                toplevel: g(gen).out.clone(),
            },
            Effect::Activate { gen } => Transition::Activate {
                toplevel: g(gen).out.clone(),
                action: activation_action(spec, state, gen),
            },
            Effect::DropGeneration { gen } => {
                let gens = self
                    .system
                    .generations(&spec.header.profile)
                    .map_err(|e| e.to_string())?;
                Transition::DropGeneration {
                    profile: spec.header.profile.clone(),
                    // The executor drops every non-current generation holding this toplevel;
                    // the record names the newest (0: none left).
                    number: gens
                        .iter()
                        .filter(|x| x.toplevel == g(gen).out && !x.current)
                        .map(|x| x.number)
                        .max()
                        .unwrap_or(0),
                }
            }
            Effect::Unpin { gen } => Transition::Unpin {
                root: spec.out_root(state.chain, gen),
            },
            Effect::Collect { gen } => {
                let mut paths = self
                    .collectable(spec, state, gen)
                    .map_err(|e| e.to_string())?;
                if let transition::Phase::Moving(m) = state.phase {
                    // After a reboot that the activation asked for (exit 100), the generation
                    // the move left was still running when it was collected: it is dead only now.
                    if m.stage == transition::Stage::CollectBooted
                        && m.from != gen
                        && m.from != m.to
                    {
                        paths.extend(
                            self.collectable(spec, state, m.from)
                                .map_err(|e| e.to_string())?,
                        );
                    }
                    // After a reboot for a re-plan: what the system booted until then pinned.
                    if m.stage == transition::Stage::CollectBooted && m.from == m.to {
                        paths.extend(self.left_by_the_old_boot().map_err(|e| e.to_string())?);
                    }
                }
                let paths: Vec<StorePath> = paths.into_iter().collect();
                let bytes = self
                    .store
                    .path_infos(&paths)
                    .map_err(|e| e.to_string())?
                    .values()
                    .map(|i| i.nar_size)
                    .sum();
                Transition::Collect { paths, bytes }
            }
            Effect::Release => Transition::ReleaseRoots {
                dir: spec.roots_dir.clone(),
            },
            Effect::Reboot { gen } => Transition::Reboot {
                expected_booted: g(gen).out.clone(),
            },
        })
    }

    /// No re-plan fits (`why`) and the run reboots first (`e`, the reboot into the generation it
    /// stands at). When the reboot will happen now (the machine has not booted that generation
    /// already and the window allows it), journal the system booted until then (`bootedBefore`):
    /// the only record of it once the machine has booted another. Returns the effect to drive.
    fn reboot_first(
        &mut self,
        spec: &Spec,
        state: &RunState,
        e: Effect,
        why: &str,
    ) -> Result<Effect, EngineError> {
        (self.progress)(Progress::Info(&format!(
            "no re-plan fits ({why}) while another system was booted: booting the generation the \
             run stands at (unless it is booted already) and collecting what the old one pinned \
             first"
        )));
        if self.probe(spec, state, e) || self.outside_reboot_window(spec, state, e).is_some() {
            return Ok(e);
        }
        let booted = self
            .system
            .read_system_link(&spec.header.booted_system)
            .ok()
            .flatten();
        if let Some(toplevel) = booted {
            self.append(Record::BootedBefore { toplevel })?;
        }
        Ok(e)
    }

    /// The closure of the system booted before the run's last reboot for a re-plan (its
    /// `bootedBefore`), where nothing live needs it.
    fn left_by_the_old_boot(&self) -> Result<BTreeSet<StorePath>, StoreError> {
        let records = self.log.last_run();
        let Some(old) = records.iter().rev().find_map(|(_, r)| match r {
            Record::BootedBefore { toplevel } => Some(toplevel.clone()),
            _ => None,
        }) else {
            return Ok(BTreeSet::new());
        };
        if self
            .store
            .valid_paths(std::slice::from_ref(&old))?
            .is_empty()
        {
            return Ok(BTreeSet::new());
        }
        let live = self.store.live_paths()?;
        let dead: Vec<StorePath> = self
            .store
            .closure(std::slice::from_ref(&old))?
            .into_iter()
            .filter(|p| !live.contains(p))
            .collect();
        Ok(
            super::garbage::with_dead_referrers(self.store, dead, &live)?
                .into_iter()
                .collect(),
        )
    }

    /// The paths of generation `gen` (its closure if it is still valid, and whatever of its
    /// planned closure is on disk) that nothing live needs.
    fn collectable(
        &self,
        spec: &Spec,
        state: &RunState,
        gen: Gen,
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        let g = spec.gen(state.chain, gen);
        let mut cands: BTreeSet<StorePath> = BTreeSet::new();
        if !self
            .store
            .valid_paths(std::slice::from_ref(&g.out))?
            .is_empty()
        {
            cands.extend(self.store.closure(std::slice::from_ref(&g.out))?);
        }
        let planned: Vec<StorePath> = self
            .source
            .planned_closure(&g.drv)
            .unwrap_or_default()
            .into_iter()
            .collect();
        // With what they need: a failed realise may have fetched a new package's libraries.
        let valid: Vec<StorePath> = self.store.valid_paths(&planned)?.into_iter().collect();
        cands.extend(self.store.closure(&valid)?);
        cands.retain(|p| !p.is_derivation());
        // Its own rewritten `.drv`s reference the old packages it kept: they go with them.
        if !(gen == 0 || (state.chain == Chain::Direct) || gen as usize == spec.steps.len()) {
            let drvs: Vec<StorePath> = self
                .source
                .derivations(&g.drv)
                .unwrap_or_default()
                .into_iter()
                .map(|d| d.path)
                .collect();
            cands.extend(self.store.valid_paths(&drvs)?);
        }
        let live = self.store.live_paths()?;
        let dead: Vec<StorePath> = cands.into_iter().filter(|p| !live.contains(p)).collect();
        Ok(
            super::garbage::with_dead_referrers(self.store, dead, &live)?
                .into_iter()
                .collect(),
        )
    }

    /// Run one effect and journal its outcome. `Err(checkpoint)` when a test simulated a crash
    /// between the effect and its outcome record.
    fn run_effect(
        &mut self,
        spec: &Spec,
        state: &RunState,
        e: Effect,
        seq: Seq,
        t: &Transition,
    ) -> Result<Ran<Vec<Event>>, EngineError> {
        let gen_of = |gen: Gen| spec.gen(state.chain, gen);
        let label_gen = gen_of_effect(e);
        (self.progress)(Progress::Starting {
            transition: t,
            gen: gen_of(label_gen),
            chain: state.chain,
            of: state.last_gen(),
        });
        let mut activated = None;
        let result = self.effect_result(spec, state, e, t, &mut activated);
        if let Some(RunEnd::Crashed { at }) = self.check(&format!("after-effect-{}", e.name())) {
            return Ok(Ran::Crashed(at));
        }
        match result {
            Ok(Effected { note, added, freed }) => {
                // What the activation reported besides success goes in before its `done`: a
                // crash between the two probes the activation (or runs it again), which
                // reports it again.
                let mut events = self.journal_activated(seq, activated)?;
                self.append(Record::Done {
                    intent: seq,
                    added,
                    freed,
                })?;
                if matches!(e, Effect::Collect { .. }) {
                    self.restore_reserve();
                }
                (self.progress)(Progress::Done {
                    transition: t,
                    note: &note,
                    added,
                    freed,
                });
                events.push(Event::Done(e));
                Ok(Ran::Outcome(events))
            }
            Err(EffectFailure {
                interrupted: true,
                message,
                ..
            }) => {
                (self.progress)(Progress::Info(&format!("interrupted: {message}")));
                Ok(Ran::Interrupted(format!(
                    "{} was interrupted by a stop ({message}); it runs again on resume",
                    t.describe()
                )))
            }
            Err(EffectFailure { kind, message, .. }) => {
                let kind = self.journal_failure(spec, state, (e, seq, t), kind, &message)?;
                Ok(Ran::Outcome(vec![Event::Failed(e, kind)]))
            }
        }
    }

    /// Run the effect itself (nothing journaled); an activation's report goes to `activated`.
    fn effect_result(
        &mut self,
        spec: &Spec,
        state: &RunState,
        e: Effect,
        t: &Transition,
        activated: &mut Option<(Gen, Activated)>,
    ) -> EffectResult {
        let store_err = EffectFailure::from;
        let gen_of = |gen: Gen| spec.gen(state.chain, gen);
        match (e, t) {
            (Effect::PinDerivations, _) => self.pin(spec, state).map_err(store_err),
            (Effect::WriteDerivations { gen }, _) => self
                .write_derivations(spec, state.chain, gen)
                .map_err(store_err),
            (Effect::Realise { gen }, _) => {
                self.free_at_realise = self.store.space().ok().map(|s| s.free);
                self.realise(spec, state.chain, gen)
            }
            (Effect::SetProfile { gen }, _) => {
                self.set_profile(spec, gen_of(gen)).map_err(store_err)
            }
            (Effect::Activate { gen }, Transition::Activate { action, .. }) => self
                .system
                .activate(&gen_of(gen).out, (*action).into(), &mut |_| {})
                .map(|a| {
                    let note = activation_note((*action).into(), &a);
                    *activated = Some((gen, a));
                    Effected::note(note)
                })
                .map_err(|e| {
                    EffectFailure::from(match e {
                        StoreError::OutOfSpace(m) => (FailureKind::OutOfSpace, m),
                        e => (FailureKind::Activation, e.to_string()),
                    })
                }),
            (Effect::DropGeneration { gen }, _) => {
                self.drop_generation(spec, gen_of(gen)).map_err(store_err)
            }
            (Effect::Unpin { gen }, _) => self
                .unpin(spec, state.chain, gen)
                .map(|()| Effected::default())
                .map_err(store_err),
            (Effect::Collect { .. }, Transition::Collect { paths, .. }) => {
                self.collect(paths).map_err(store_err)
            }
            (Effect::Release, _) => self.release(spec).map_err(store_err),
            (Effect::Reboot { .. }, _) => self
                .system
                .reboot(&spec.header.reboot_command)
                .map(|()| Effected::note("reboot command run"))
                .map_err(store_err),
            (e, t) => unreachable!("{e:?} was recorded as {t:?}"),
        }
    }

    /// Journal a failed effect (out of space recorded as such first) and return its kind as
    /// `record::replay` reads it back.
    fn journal_failure(
        &mut self,
        spec: &Spec,
        state: &RunState,
        (e, seq, t): (Effect, Seq, &Transition),
        kind: FailureKind,
        message: &str,
    ) -> Result<FailureKind, EngineError> {
        if kind == FailureKind::OutOfSpace {
            self.release_reserve();
        }
        // Only these failures are read back as out of space (the machine's fall-back,
        // and a step's re-plan).
        let out_of_space = kind == FailureKind::OutOfSpace
            && matches!(e, Effect::Realise { .. } | Effect::WriteDerivations { .. });
        let kind = if out_of_space && state.chain == Chain::Direct {
            self.append(Record::PlainAttemptFailed {
                why: message.to_string(),
            })?;
            FailureKind::OutOfSpace
        } else if out_of_space {
            let g = spec.gen(state.chain, gen_of_effect(e));
            let estimated = spec
                .header
                .plan
                .iter()
                .find(|s| s.index == g.step)
                .map_or(0, |s| s.adds);
            self.append(Record::SpaceRanOut {
                step: g.step,
                estimated,
                free: self.free_at_realise.unwrap_or(0),
            })?;
            FailureKind::OutOfSpace
        } else if kind == FailureKind::OutOfSpace {
            FailureKind::Other
        } else {
            kind
        };
        self.append(Record::Failed {
            intent: seq,
            message: message.to_string(),
        })?;
        (self.progress)(Progress::Failed {
            transition: t,
            message,
        });
        // Classified as `record::replay` reads it back: one place decides.
        Ok(record::kind_of(e, kind == FailureKind::OutOfSpace))
    }

    fn pin(&self, spec: &Spec, state: &RunState) -> Result<Effected, StoreError> {
        // The store makes the roots' directory (`Store::add_root`): the executor itself never
        // touches the filesystem for roots, so the in-memory model sees every root it makes.
        // G0's `.drv` closure stays for the whole run: exact unwind rebuilds from it.
        self.store
            .add_root(&spec.drv_root(state.chain, 0), &spec.g0.drv)?;
        // The target's too: the steps are rewritten from it and it is the last step.
        self.store
            .add_root(&spec.drv_root(Chain::Direct, 1), &spec.target.drv)?;
        Ok(Effected::note("G0 and target derivations pinned"))
    }

    fn write_derivations(
        &self,
        spec: &Spec,
        chain: Chain,
        gen: Gen,
    ) -> Result<Effected, StoreError> {
        let g = spec.gen(chain, gen);
        let drvs = self
            .source
            .derivations(&g.drv)
            .map_err(StoreError::Refused)?;
        let paths: Vec<StorePath> = drvs.iter().map(|d| d.path.clone()).collect();
        let valid = self.store.valid_paths(&paths)?;
        let mut written = 0;
        let mut stubs = 0;
        let mut bytes = 0u64;
        let ours: BTreeSet<&StorePath> = paths.iter().collect();
        for d in &drvs {
            if valid.contains(&d.path) {
                continue;
            }
            // Walking back, the old packages a step keeps may be gone: bring them back first.
            let needed: Vec<StorePath> = d
                .references
                .iter()
                .filter(|r| !ours.contains(r))
                .cloned()
                .collect();
            let present = self.store.valid_paths(&needed)?;
            let mut missing: Vec<StorePath> = needed
                .into_iter()
                .filter(|r| !present.contains(r))
                .collect();
            // Stubs standing in for non-vital packages are made here, where the first `.drv`
            // naming them needs them valid; the step's realise root keeps them once built.
            for p in &missing {
                if let Some(stub) = stub_for(self.store.store_dir(), p) {
                    self.store.add_stub(&stub)?;
                    stubs += 1;
                }
            }
            missing.retain(|p| stub_for(self.store.store_dir(), p).is_none());
            if !missing.is_empty() {
                self.substitute_old(spec, chain, gen, &missing)?;
            }
            let got = self.store.add_text(&d.name, &d.contents, &d.references)?;
            if got != d.path {
                return Err(StoreError::Refused(format!(
                    "writing {} gave {got}, not the computed {}",
                    d.name, d.path
                )));
            }
            written += 1;
            bytes += d.contents.len() as u64;
        }
        // Not rooted: a step's `.drv`s reference the old packages it keeps, and must go with
        // them; they are rewritten from the target's graph when needed again.
        let note = if stubs > 0 {
            format!("{written} derivation(s) written, {stubs} stub(s) added")
        } else {
            format!("{written} derivation(s) written")
        };
        Ok(Effected {
            note,
            added: Some(bytes),
            freed: None,
        })
    }

    fn realise(&mut self, spec: &Spec, chain: Chain, gen: Gen) -> EffectResult {
        let g = spec.gen(chain, gen);
        let root = spec.out_root(chain, gen);
        if self
            .store
            .valid_paths(std::slice::from_ref(&g.drv))
            .map_err(EffectFailure::from)?
            .is_empty()
        {
            self.write_derivations(spec, chain, gen)
                .map_err(EffectFailure::from)?;
        }
        let mut built = 0usize;
        let mut copied = 0usize;
        let outs = self
            .store
            .realise(&g.drv, &root, &mut |ev| match ev {
                RealiseEvent::Building(p) => {
                    built += 1;
                    (self.progress)(Progress::Child(&format!("building {p}")));
                }
                RealiseEvent::Copying(p) => {
                    copied += 1;
                    (self.progress)(Progress::Child(&format!("copying {p}")));
                }
                RealiseEvent::Message(line) => (self.progress)(Progress::Child(&line)),
            })
            .map_err(|e| {
                match e {
                    RealiseError::OutOfSpace { message } => (FailureKind::OutOfSpace, message),
                    RealiseError::BuildFailed { drv, log_tail } => (
                        FailureKind::BuildFailed,
                        format!("building {drv} failed:\n{log_tail}"),
                    ),
                    RealiseError::Other(e) => return EffectFailure::from(e),
                }
                .into()
            })?;
        match outs.get("out") {
            Some(p) if *p == g.out => Ok(Effected::note(format!("{built} built, {copied} copied"))),
            other => Err(EffectFailure {
                interrupted: false,
                kind: FailureKind::Other,
                message: format!(
                    "realising {} gave {other:?}, not the planned {}",
                    g.drv, g.out
                ),
            }),
        }
    }

    /// Bring back old package outputs (walking back): realise their derivations from G0's
    /// pinned `.drv` closure, under run roots released with this generation.
    fn substitute_old(
        &self,
        spec: &Spec,
        chain: Chain,
        gen: Gen,
        missing: &[StorePath],
    ) -> Result<(), StoreError> {
        let derivers = self.g0_derivers(spec)?;
        let mut drvs: BTreeSet<StorePath> = BTreeSet::new();
        for p in missing {
            match derivers.get(p) {
                Some(d) => {
                    drvs.insert(d.clone());
                }
                None => {
                    return Err(StoreError::Refused(format!(
                        "{p} is gone and no derivation of G0 produces it: cannot rebuild this step"
                    )))
                }
            }
        }
        for (i, d) in drvs.iter().enumerate() {
            let root = spec.out_root(chain, gen).with_extension(format!("src{i}"));
            self.store
                .realise(d, &root, &mut |_| {})
                .map_err(|e| match e {
                    RealiseError::OutOfSpace { message } => StoreError::OutOfSpace(message),
                    RealiseError::BuildFailed { drv, log_tail } => {
                        StoreError::Refused(format!("rebuilding {drv} failed:\n{log_tail}"))
                    }
                    RealiseError::Other(e) => e,
                })?;
        }
        Ok(())
    }

    /// Output path → derivation, over G0's `.drv` graph (pinned for the whole run).
    fn g0_derivers(&self, spec: &Spec) -> Result<BTreeMap<StorePath, StorePath>, StoreError> {
        let sd = self.store.store_dir().clone();
        let mut map = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let mut todo = vec![spec.g0.drv.clone()];
        while let Some(d) = todo.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            let bytes = self.store.read_file(&d)?;
            let drv = crate::drv::parse(&bytes, &sd)
                .map_err(|e| StoreError::Refused(format!("{d}: {e}")))?;
            for o in drv.outputs.values() {
                if let Some(p) = &o.path {
                    map.insert(p.clone(), d.clone());
                }
            }
            todo.extend(drv.input_drvs.keys().cloned());
        }
        Ok(map)
    }

    /// Point the profile at `g`. Walking back, `g`'s own generation may still be there (its
    /// DropGeneration had not run): switch to it rather than add one, so that the next
    /// boot-loader install sees no more generations than any other (one entry per generation).
    fn set_profile(&self, spec: &Spec, g: &GenPlan) -> Result<Effected, StoreError> {
        let profile = &spec.header.profile;
        let gens = self.system.generations(profile)?;
        if gens.iter().any(|x| x.current && x.toplevel == g.out) {
            return Ok(Effected::default());
        }
        match gens
            .iter()
            .filter(|x| x.toplevel == g.out)
            .map(|x| x.number)
            .max()
        {
            Some(n) => {
                self.system.switch_generation(profile, n)?;
                Ok(Effected::note(format!("back to generation {n}")))
            }
            None => {
                self.system.set_profile(profile, &g.out)?;
                Ok(Effected::default())
            }
        }
    }

    fn drop_generation(&self, spec: &Spec, g: &GenPlan) -> Result<Effected, StoreError> {
        // Only generations that still hold this toplevel and are not current.
        let gens = self.system.generations(&spec.header.profile)?;
        let numbers: Vec<u64> = gens
            .iter()
            .filter(|x| x.toplevel == g.out && !x.current)
            .map(|x| x.number)
            .collect();
        if !numbers.is_empty() {
            self.system
                .delete_generations(&spec.header.profile, &numbers)?;
        }
        Ok(Effected::note(format!("generations {numbers:?} dropped")))
    }

    fn collect(&self, planned: &[StorePath]) -> Result<Effected, StoreError> {
        // Never a live path: recheck right before deleting.
        let live = self.store.live_paths()?;
        let valid = self.store.valid_paths(planned)?;
        let dead: Vec<StorePath> = valid.into_iter().filter(|p| !live.contains(p)).collect();
        let freed: u64 = self
            .store
            .path_infos(&dead)?
            .values()
            .map(|i| i.nar_size)
            .sum();
        if !dead.is_empty() {
            self.store.delete(&dead)?;
        }
        Ok(Effected {
            note: format!("{} path(s) deleted", dead.len()),
            added: None,
            freed: Some(freed),
        })
    }

    fn unpin(&self, spec: &Spec, chain: Chain, gen: Gen) -> Result<(), StoreError> {
        let root = spec.out_root(chain, gen);
        self.store.remove_root(&root)?;
        let prefix = format!(
            "{}.src",
            root.file_name().unwrap_or_default().to_string_lossy()
        );
        // Asked of the store, not the filesystem (a missing directory lists as empty): a check
        // of the real directory left the `.src` roots of an in-memory store behind whenever
        // another run had removed the directory meanwhile.
        for link in self.store.roots(&spec.roots_dir)?.into_keys() {
            let name = link.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with(&prefix) {
                self.store.remove_root(&link)?;
            }
        }
        Ok(())
    }

    fn release(&self, spec: &Spec) -> Result<Effected, StoreError> {
        for chain in [Chain::Direct, Chain::Steps] {
            let last = match chain {
                Chain::Direct => 1,
                Chain::Steps => spec.steps.len() as Gen,
            };
            for gen in 0..=last {
                self.store.remove_root(&spec.out_root(chain, gen))?;
                self.store.remove_root(&spec.drv_root(chain, gen))?;
            }
        }
        for link in self.store.roots(&spec.roots_dir)?.into_keys() {
            self.store.remove_root(&link)?;
        }
        // Tidy only: the directory is empty now (or was never made, with an in-memory store).
        let _ = std::fs::remove_dir(&spec.roots_dir);
        Ok(Effected::note("run roots removed"))
    }
}

/// The generation an effect acts on (0 for the run-wide ones).
fn gen_of_effect(e: Effect) -> Gen {
    match e {
        Effect::PinDerivations | Effect::Release => 0,
        Effect::WriteDerivations { gen }
        | Effect::Realise { gen }
        | Effect::SetProfile { gen }
        | Effect::Activate { gen }
        | Effect::DropGeneration { gen }
        | Effect::Unpin { gen }
        | Effect::Collect { gen }
        | Effect::Reboot { gen } => gen,
    }
}

fn feed(state: RunState, ev: Event) -> Result<RunState, EngineError> {
    transition::next(&state, ev).map_err(|e| EngineError::Replay(e.to_string()))
}

fn feed_all(mut state: RunState, evs: Vec<Event>) -> Result<RunState, EngineError> {
    for ev in evs {
        state = feed(state, ev)?;
    }
    Ok(state)
}

/// The stub `p` is, if it is one: named `stepwise-stub-…` and at the path the planner computes
/// for that name (an empty directory).
fn stub_for(sd: &crate::drv::StoreDir, p: &StorePath) -> Option<crate::plan::Stub> {
    let pname = p.name().strip_prefix("stepwise-stub-")?;
    let stub = crate::plan::Stub::for_package(sd, pname);
    (stub.path == *p && stub.name == p.name()).then_some(stub)
}
