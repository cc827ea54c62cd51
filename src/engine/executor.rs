//! The executor: for each decision of the transition machine, journal the intent durably, run the
//! effect through the `Store`/`System` seams, journal the outcome. A fresh executor over the same
//! journal and world continues where a killed one stopped (`resume`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use super::log::{LogError, RunLog};
use super::record::{IntentDetail, Record};
use super::run_plan::{GenPlan, RunHeader};
use crate::drv::StorePath;
use crate::effects::store::{Action, RealiseError, StoreError};
use crate::effects::{Store, System};
use crate::transition::{
    self, Chain, Direction, Effect, FailureKind, Gen, Next, Outcome, Phase, RunState,
};

/// Space kept free beside the journal, given back when the disk is full.
pub trait Reserve {
    fn release(&mut self) -> std::io::Result<()>;
    fn restore(&mut self) -> std::io::Result<()>;
}

/// What the executor tells the user as it goes.
#[derive(Debug, Clone)]
pub enum Progress<'a> {
    Starting {
        effect: Effect,
        gen: &'a GenPlan,
        chain: Chain,
        of: Gen,
    },
    Done {
        effect: Effect,
        note: &'a str,
    },
    Failed {
        effect: Effect,
        message: &'a str,
    },
    Info(&'a str),
}

/// How a drive of the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    Finished {
        outcome: Outcome,
        /// The failure that turned the run around, if any.
        failure: Option<String>,
    },
    /// Stopped before the end; `resume` continues (exit 3).
    Stopped { why: String },
    /// A test's checkpoint hook simulated a crash here.
    Crashed { at: String },
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("journal: {0}")]
    Journal(#[from] LogError),
    #[error("the journal does not replay: record {index}: {why}")]
    Replay { index: usize, why: String },
    #[error("the journal holds no run")]
    NoRun,
    #[error("the last run has finished ({0:?}); nothing to {1}")]
    Finished(Outcome, &'static str),
}

pub struct Executor<'a> {
    pub store: &'a dyn Store,
    pub system: &'a dyn System,
    pub log: &'a mut dyn RunLog,
    /// Set by SIGTERM/SIGINT: finish the current transition, then stop.
    pub stop: &'a AtomicBool,
    pub reserve: Option<&'a mut dyn Reserve>,
    /// Called at each named checkpoint; returning true simulates a crash there (tests). The default
    /// goes to `crash::point`, which aborts the process under the `crash-points` feature.
    pub checkpoint: Box<dyn FnMut(&str) -> bool + 'a>,
    pub progress: Box<dyn FnMut(Progress) + 'a>,
    reserve_released: bool,
}

/// A run read back from the journal.
pub struct Loaded {
    pub header: RunHeader,
    pub state: RunState,
    pub records: Vec<Record>,
}

/// Rebuild the last run's state from its records alone.
pub fn load(records: Vec<Record>) -> Result<Loaded, EngineError> {
    let Some(start) = records
        .iter()
        .rposition(|r| matches!(r, Record::RunStarted(_)))
    else {
        return Err(EngineError::NoRun);
    };
    let records = records[start..].to_vec();
    let Record::RunStarted(header) = &records[0] else {
        unreachable!()
    };
    let header = (**header).clone();
    let mut state = RunState::new(header.shape());
    for (i, r) in records.iter().enumerate() {
        if let Some(ev) = r.event() {
            state = transition::next(&state, ev).map_err(|e| EngineError::Replay {
                index: i,
                why: e.to_string(),
            })?;
        }
    }
    Ok(Loaded {
        header,
        state,
        records,
    })
}

fn classify_store(e: &StoreError) -> FailureKind {
    match e {
        StoreError::OutOfSpace(_) => FailureKind::OutOfSpace,
        _ => FailureKind::Other,
    }
}

impl<'a> Executor<'a> {
    pub fn new(
        store: &'a dyn Store,
        system: &'a dyn System,
        log: &'a mut dyn RunLog,
        stop: &'a AtomicBool,
    ) -> Self {
        Executor {
            store,
            system,
            log,
            stop,
            reserve: None,
            checkpoint: Box::new(|name| {
                super::crash::point(name);
                false
            }),
            progress: Box::new(|_| {}),
            reserve_released: false,
        }
    }

    fn append(&mut self, r: &Record) -> Result<(), EngineError> {
        match self.log.append(r) {
            Ok(()) => Ok(()),
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

    /// Start a new run: journal its header and chosen chain, then drive it.
    pub fn start(
        &mut self,
        header: RunHeader,
        chain: Chain,
        why: String,
    ) -> Result<RunEnd, EngineError> {
        self.append(&Record::RunStarted(Box::new(header)))?;
        if (self.checkpoint)("run-started") {
            return Ok(RunEnd::Crashed {
                at: "run-started".into(),
            });
        }
        self.append(&Record::StrategyChosen { chain, why })?;
        self.continue_run(false)
    }

    /// Continue the last run from the journal (retrying an effect that stopped it).
    pub fn resume(&mut self) -> Result<RunEnd, EngineError> {
        self.continue_run(false)
    }

    /// Walk the last run back to G0.
    pub fn unwind(&mut self) -> Result<RunEnd, EngineError> {
        self.continue_run(true)
    }

    fn continue_run(&mut self, unwind: bool) -> Result<RunEnd, EngineError> {
        let Loaded {
            header,
            mut state,
            records,
        } = load(self.log.records()?)?;
        if let Phase::Finished(o) = state.phase {
            let held = matches!(o, Outcome::Held { .. });
            if !(unwind && held) {
                let what = if unwind { "unwind" } else { "resume" };
                if records
                    .last()
                    .is_some_and(|r| !matches!(r, Record::RunFinished { .. }))
                {
                    // The end was reached but not recorded before the process died.
                    self.append(&Record::RunFinished { outcome: o })?;
                    if !unwind {
                        return Ok(self.finished(o, &records));
                    }
                }
                return Err(EngineError::Finished(o, what));
            }
        }
        // A trailing intent first: did its effect happen? (design §6's probes)
        if let Some(e) = state.in_flight {
            state = match self.settle(&header, state, e, &records)? {
                Ok(s) => s,
                Err(end) => return Ok(end),
            };
        }
        if unwind && !state.unwind_requested {
            if state.phase == Phase::Preflight {
                self.append(&Record::StrategyChosen {
                    chain: Chain::Direct,
                    why: "unwound before starting".into(),
                })?;
                state = self.feed(state, transition::Event::Begin {
                    chain: Chain::Direct,
                })?;
            }
            self.append(&Record::UnwindStarted)?;
            state = self.feed(state, transition::Event::UnwindRequested)?;
        }
        self.drive(&header, state, true)
    }

    fn feed(&self, state: RunState, ev: transition::Event) -> Result<RunState, EngineError> {
        transition::next(&state, ev).map_err(|e| EngineError::Replay {
            index: usize::MAX,
            why: e.to_string(),
        })
    }

    /// Resolve an intent whose outcome was not journaled: probe, or run it again (every effect is
    /// idempotent).
    fn settle(
        &mut self,
        header: &RunHeader,
        state: RunState,
        e: Effect,
        records: &[Record],
    ) -> Result<Result<RunState, RunEnd>, EngineError> {
        let detail = records
            .iter()
            .rev()
            .find_map(|r| match r {
                Record::Intent { effect, detail } if *effect == e => Some(detail.clone()),
                _ => None,
            })
            .unwrap_or_default();
        if self.probe(header, &state, e) {
            let note = "probed: it had happened";
            self.append(&Record::Done {
                effect: e,
                note: note.into(),
            })?;
            (self.progress)(Progress::Done { effect: e, note });
            return self.feed(state, transition::Event::Done(e)).map(Ok);
        }
        match self.run_effect(header, &state, e, &detail)? {
            Err(at) => Ok(Err(RunEnd::Crashed { at })),
            Ok(ev) => self.feed(state, ev).map(Ok),
        }
    }

    /// Whether the world shows that `e` happened (only where that is cheap and certain).
    fn probe(&self, header: &RunHeader, state: &RunState, e: Effect) -> bool {
        match e {
            Effect::Activate { gen } => {
                let g = header.gen(state.chain, gen);
                self.activation_action(header, state, gen) != Action::Boot
                    && self
                        .system
                        .read_system_link(&header.params.current_system)
                        .ok()
                        .flatten()
                        .as_ref()
                        == Some(&g.out)
            }
            _ => false,
        }
    }

    fn activation_action(&self, header: &RunHeader, state: &RunState, gen: Gen) -> Action {
        match state.phase {
            Phase::Moving(m) if m.direction == Direction::Forward && gen == state.last_gen() => {
                header.params.action
            }
            _ => Action::Switch,
        }
    }

    fn finished(&self, outcome: Outcome, records: &[Record]) -> RunEnd {
        let failure = records.iter().find_map(|r| match r {
            Record::Failed { message, kind, .. } if *kind != FailureKind::OutOfSpace => {
                Some(message.clone())
            }
            _ => None,
        });
        RunEnd::Finished { outcome, failure }
    }

    fn drive(
        &mut self,
        header: &RunHeader,
        mut state: RunState,
        mut retry_stuck: bool,
    ) -> Result<RunEnd, EngineError> {
        loop {
            let e = match state.next_action() {
                Next::Run(e) => e,
                Next::Stop(e, _) if retry_stuck => e,
                Next::Stop(e, kind) => {
                    let why = format!(
                        "{} failed ({kind:?}); `stepwise resume` retries it",
                        e.name()
                    );
                    self.append(&Record::Stopped { why: why.clone() })?;
                    return Ok(RunEnd::Stopped { why });
                }
                Next::Finished(o) => {
                    self.append(&Record::RunFinished { outcome: o })?;
                    let records = self.log.records()?;
                    let start = records
                        .iter()
                        .rposition(|r| matches!(r, Record::RunStarted(_)))
                        .unwrap_or(0);
                    return Ok(self.finished(o, &records[start..]));
                }
                Next::Await(e) => unreachable!("settled before driving: {e:?}"),
                Next::Choose => unreachable!("the chain is chosen before driving"),
            };
            retry_stuck = false;
            if self.stop.load(Ordering::SeqCst) {
                let why = "stopped by a signal after finishing the current transition".to_string();
                self.append(&Record::Stopped { why: why.clone() })?;
                return Ok(RunEnd::Stopped { why });
            }
            let detail = self.detail(header, &state, e)?;
            if let Some(RunEnd::Crashed { at }) = self.check(&format!("before-intent-{}", e.name()))
            {
                return Ok(RunEnd::Crashed { at });
            }
            self.append(&Record::Intent { effect: e, detail: detail.clone() })?;
            state = self.feed(state, transition::Event::Intent(e))?;
            if let Some(c) = self.check(&format!("after-intent-{}", e.name())) {
                return Ok(c);
            }
            let ev = match self.run_effect(header, &state, e, &detail)? {
                Ok(ev) => ev,
                Err(at) => return Ok(RunEnd::Crashed { at }),
            };
            state = self.feed(state, ev)?;
            if let Some(c) = self.check(&format!("after-outcome-{}", e.name())) {
                return Ok(c);
            }
        }
    }

    fn check(&mut self, name: &str) -> Option<RunEnd> {
        (self.checkpoint)(name).then(|| RunEnd::Crashed { at: name.into() })
    }

    /// What the intent fixes for a retry.
    fn detail(
        &self,
        header: &RunHeader,
        state: &RunState,
        e: Effect,
    ) -> Result<IntentDetail, EngineError> {
        Ok(match e {
            Effect::Realise { gen } => IntentDetail::Root(header.out_root(state.chain, gen)),
            Effect::Unpin { gen } => IntentDetail::Root(header.out_root(state.chain, gen)),
            Effect::DropGeneration { gen } => {
                let g = header.gen(state.chain, gen);
                match self.system.generations(&header.params.profile) {
                    Ok(gens) => IntentDetail::Generations(
                        gens.iter()
                            .filter(|x| x.toplevel == g.out && !x.current)
                            .map(|x| x.number)
                            .collect(),
                    ),
                    // The effect itself will fail and say why.
                    Err(_) => IntentDetail::None,
                }
            }
            Effect::Collect { gen } => match self.collectable(header, state, gen) {
                Ok(paths) => IntentDetail::Paths(paths.into_iter().collect()),
                Err(_) => IntentDetail::None,
            },
            _ => IntentDetail::None,
        })
    }

    /// The paths of generation `gen` (its closure if it is still valid, and whatever of its
    /// planned closure is on disk) that nothing live needs.
    fn collectable(
        &self,
        header: &RunHeader,
        state: &RunState,
        gen: Gen,
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        let g = header.gen(state.chain, gen);
        let mut cands: BTreeSet<StorePath> = BTreeSet::new();
        if !self.store.valid_paths(std::slice::from_ref(&g.out))?.is_empty() {
            cands.extend(self.store.closure(std::slice::from_ref(&g.out))?);
        }
        let planned: Vec<StorePath> = g.closure.iter().cloned().collect();
        cands.extend(self.store.valid_paths(&planned)?);
        let live = self.store.live_paths()?;
        Ok(cands.difference(&live).cloned().collect())
    }

    /// Run one effect and journal its outcome. `Err(checkpoint)` when a test simulated a crash
    /// between the effect and its outcome record.
    fn run_effect(
        &mut self,
        header: &RunHeader,
        state: &RunState,
        e: Effect,
        detail: &IntentDetail,
    ) -> Result<Result<transition::Event, String>, EngineError> {
        let gen_of = |gen: Gen| header.gen(state.chain, gen);
        let label_gen = match e {
            Effect::PinDerivations | Effect::Release => 0,
            Effect::WriteDerivations { gen }
            | Effect::Realise { gen }
            | Effect::SetProfile { gen }
            | Effect::Activate { gen }
            | Effect::DropGeneration { gen }
            | Effect::Unpin { gen }
            | Effect::Collect { gen } => gen,
        };
        (self.progress)(Progress::Starting {
            effect: e,
            gen: gen_of(label_gen),
            chain: state.chain,
            of: state.last_gen(),
        });
        let result: Result<String, (FailureKind, String)> = match e {
            Effect::PinDerivations => self
                .pin(header, state)
                .map_err(|e| (classify_store(&e), e.to_string())),
            Effect::WriteDerivations { gen } => self
                .write_derivations(header, state.chain, gen)
                .map_err(|e| (classify_store(&e), e.to_string())),
            Effect::Realise { gen } => self.realise(header, state.chain, gen),
            Effect::SetProfile { gen } => self
                .system
                .set_profile(&header.params.profile, &gen_of(gen).out)
                .map(|()| String::new())
                .map_err(|e| (classify_store(&e), e.to_string())),
            Effect::Activate { gen } => {
                let action = self.activation_action(header, state, gen);
                self.system
                    .activate(&gen_of(gen).out, action)
                    .map(|()| action.as_str().to_string())
                    .map_err(|e| match e {
                        StoreError::OutOfSpace(m) => (FailureKind::OutOfSpace, m),
                        e => (FailureKind::Activation, e.to_string()),
                    })
            }
            Effect::DropGeneration { gen } => self
                .drop_generation(header, gen_of(gen), detail)
                .map_err(|e| (classify_store(&e), e.to_string())),
            Effect::Unpin { gen } => self
                .store
                .remove_root(&header.out_root(state.chain, gen))
                .map(|()| String::new())
                .map_err(|e| (classify_store(&e), e.to_string())),
            Effect::Collect { gen } => self
                .collect(header, state, gen, detail)
                .map_err(|e| (classify_store(&e), e.to_string())),
            Effect::Release => self
                .release(header)
                .map_err(|e| (classify_store(&e), e.to_string())),
        };
        if (self.checkpoint)(&format!("after-effect-{}", e.name())) {
            return Ok(Err(format!("after-effect-{}", e.name())));
        }
        match result {
            Ok(note) => {
                self.append(&Record::Done {
                    effect: e,
                    note: note.clone(),
                })?;
                if matches!(e, Effect::Collect { .. }) {
                    self.restore_reserve();
                }
                (self.progress)(Progress::Done { effect: e, note: &note });
                Ok(Ok(transition::Event::Done(e)))
            }
            Err((kind, message)) => {
                if kind == FailureKind::OutOfSpace {
                    self.release_reserve();
                    if state.chain == Chain::Direct && matches!(e, Effect::Realise { .. }) {
                        self.append(&Record::PlainAttemptFailed {
                            message: message.clone(),
                        })?;
                    }
                }
                self.append(&Record::Failed {
                    effect: e,
                    kind,
                    message: message.clone(),
                })?;
                (self.progress)(Progress::Failed {
                    effect: e,
                    message: &message,
                });
                Ok(Ok(transition::Event::Failed(e, kind)))
            }
        }
    }

    fn pin(&self, header: &RunHeader, state: &RunState) -> Result<String, StoreError> {
        // G0's `.drv` closure stays for the whole run: exact unwind rebuilds from it.
        self.store
            .add_root(&header.drv_root(state.chain, 0), &header.g0.drv)?;
        // The target's too: every step is rewritten from it.
        self.store.add_root(
            &header.drv_root(Chain::Direct, 1),
            &header.target.drv,
        )?;
        Ok(String::new())
    }

    fn write_derivations(
        &self,
        header: &RunHeader,
        chain: Chain,
        gen: Gen,
    ) -> Result<String, StoreError> {
        let g = header.gen(chain, gen);
        let paths: Vec<StorePath> = g.derivations.iter().map(|d| d.path.clone()).collect();
        let valid = self.store.valid_paths(&paths)?;
        let mut written = 0;
        for d in &g.derivations {
            if valid.contains(&d.path) {
                continue;
            }
            let got = self.store.add_text(&d.name, &d.contents, &d.references)?;
            if got != d.path {
                return Err(StoreError::Refused(format!(
                    "writing {} gave {got}, not the computed {}",
                    d.name, d.path
                )));
            }
            written += 1;
        }
        self.store.add_root(&header.drv_root(chain, gen), &g.drv)?;
        Ok(format!("{written} written"))
    }

    fn realise(
        &mut self,
        header: &RunHeader,
        chain: Chain,
        gen: Gen,
    ) -> Result<String, (FailureKind, String)> {
        let g = header.gen(chain, gen);
        let root = header.out_root(chain, gen);
        let mut built = 0usize;
        let mut copied = 0usize;
        let outs = self
            .store
            .realise(&g.drv, &root, &mut |ev| match ev {
                crate::effects::store::RealiseEvent::Building(_) => built += 1,
                crate::effects::store::RealiseEvent::Copying(_) => copied += 1,
                crate::effects::store::RealiseEvent::Message(_) => {}
            })
            .map_err(|e| match e {
                RealiseError::OutOfSpace { message } => (FailureKind::OutOfSpace, message),
                RealiseError::BuildFailed { drv, log_tail } => (
                    FailureKind::BuildFailed,
                    format!("building {drv} failed:\n{log_tail}"),
                ),
                RealiseError::Other(e) => (classify_store(&e), e.to_string()),
            })?;
        match outs.get("out") {
            Some(p) if *p == g.out => Ok(format!("{built} built, {copied} copied")),
            other => Err((
                FailureKind::Other,
                format!(
                    "realising {} gave {other:?}, not the planned {}",
                    g.drv, g.out
                ),
            )),
        }
    }

    fn drop_generation(
        &self,
        header: &RunHeader,
        g: &GenPlan,
        detail: &IntentDetail,
    ) -> Result<String, StoreError> {
        // Recheck: only generations that still hold this toplevel and are not current.
        let gens = self.system.generations(&header.params.profile)?;
        let planned: Option<&Vec<u64>> = match detail {
            IntentDetail::Generations(n) => Some(n),
            _ => None,
        };
        let numbers: Vec<u64> = gens
            .iter()
            .filter(|x| x.toplevel == g.out && !x.current)
            .filter(|x| planned.map_or(true, |p| p.contains(&x.number)))
            .map(|x| x.number)
            .collect();
        if !numbers.is_empty() {
            self.system
                .delete_generations(&header.params.profile, &numbers)?;
        }
        Ok(format!("generations {numbers:?}"))
    }

    fn collect(
        &self,
        header: &RunHeader,
        state: &RunState,
        gen: Gen,
        detail: &IntentDetail,
    ) -> Result<String, StoreError> {
        let planned: Vec<StorePath> = match detail {
            IntentDetail::Paths(p) => p.clone(),
            _ => self.collectable(header, state, gen)?.into_iter().collect(),
        };
        // Never a live path: recheck right before deleting.
        let live = self.store.live_paths()?;
        let valid = self.store.valid_paths(&planned)?;
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
        Ok(format!("{} paths deleted, {freed} bytes freed", dead.len()))
    }

    fn release(&self, header: &RunHeader) -> Result<String, StoreError> {
        for chain in [Chain::Direct, Chain::Steps] {
            let last = match chain {
                Chain::Direct => 1,
                Chain::Steps => header.steps.len() as Gen,
            };
            for gen in 0..=last {
                self.store.remove_root(&header.out_root(chain, gen))?;
                self.store.remove_root(&header.drv_root(chain, gen))?;
            }
        }
        Ok(String::new())
    }
}
