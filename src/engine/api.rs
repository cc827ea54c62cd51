//! The engine's operations as a library: `upgrade`, `resume`, `unwind`, `status` (and `plan`),
//! each taking a request and the seams (store, system, journal, clock, stop flag, reserve,
//! progress) and returning a typed outcome. The command line parses, calls these, prints and
//! maps the outcome to an exit code; the model-store tests call the very same functions.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use super::executor::{load, EngineError, Executor, Progress, Reserve, RunEnd};
use super::log::RunLog;
use super::run_plan::{GenSource, NothingToWrite, Spec};
use super::steps::{PlannerSource, StepMasks};
use super::upgrade::{prepare_journaled, Prepared, UpgradeRequest};
use crate::drv::StorePath;
use crate::effects::journal::{Journal, Outcome as JOutcome, Record, RunId, Seq};
use crate::effects::{Store, System};
use crate::error::Error;
use crate::transition::{Chain, Outcome, Phase};

/// Wall-clock time, behind a seam so that tests choose it.
pub trait Clock {
    /// Minutes after local midnight (0 … 1439).
    fn local_minute(&self) -> u16;
}

/// The machine's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn local_minute(&self) -> u16 {
        crate::cli::config::ClockTime::now_local().map_or(0, |t| t.0)
    }
}

/// The journal as the operations need it: read without taking the lock or creating anything
/// (a refused command leaves no trace), and opened for writing only when a run changes state.
pub trait JournalAccess {
    /// The last run's records, its `RunStarted` first; empty when there is none (or no journal).
    fn peek_last_run(&self) -> Result<Vec<(Seq, Record)>, Error>;
    /// Take the writer lock (creating the journal if needed) and give the log to write to.
    fn open(&mut self) -> Result<&mut dyn RunLog, Error>;
}

/// The redb journal at a path.
pub struct JournalFile {
    pub path: PathBuf,
    open: Option<Journal>,
}

impl JournalFile {
    pub fn new(path: PathBuf) -> Self {
        JournalFile { path, open: None }
    }
}

impl JournalAccess for JournalFile {
    fn peek_last_run(&self) -> Result<Vec<(Seq, Record)>, Error> {
        if let Some(j) = &self.open {
            return Ok(RunLog::last_run(j));
        }
        if !self.path.exists() {
            return Ok(vec![]);
        }
        Ok(RunLog::last_run(&Journal::open_read_only(&self.path)?))
    }

    fn open(&mut self) -> Result<&mut dyn RunLog, Error> {
        if self.open.is_none() {
            self.open = Some(Journal::open(&self.path)?);
        }
        Ok(self.open.as_mut().expect("opened above"))
    }
}

impl JournalAccess for super::log::MemLog {
    fn peek_last_run(&self) -> Result<Vec<(Seq, Record)>, Error> {
        Ok(RunLog::last_run(self))
    }
    fn open(&mut self) -> Result<&mut dyn RunLog, Error> {
        Ok(self)
    }
}

/// A test's hook at each named checkpoint: `true` simulates a crash there.
pub type CheckpointHook<'a> = Box<dyn FnMut(&str) -> bool + 'a>;

/// Everything an operation acts through.
pub struct Seams<'a> {
    pub store: &'a dyn Store,
    pub system: &'a dyn System,
    pub clock: &'a dyn Clock,
    /// Set by a signal: finish the current transition, then stop.
    pub stop: &'a AtomicBool,
    pub reserve: Option<&'a mut dyn Reserve>,
    pub progress: Box<dyn FnMut(Progress) + 'a>,
    /// Tests' crash hook at each named checkpoint (`Executor::checkpoint`); `None`: the default.
    pub checkpoint: Option<CheckpointHook<'a>>,
}

impl<'a> Seams<'a> {
    fn executor<'b>(
        &'b mut self,
        log: &'b mut dyn RunLog,
        source: &'b dyn GenSource,
    ) -> Executor<'b>
    where
        'a: 'b,
    {
        let mut ex = Executor::new(self.store, self.system, log, source, self.stop);
        ex.clock = Some(self.clock);
        ex.reserve = self.reserve.as_deref_mut().map(|r| r as &mut dyn Reserve);
        ex.progress = Box::new(|p| (self.progress)(p));
        if let Some(hook) = self.checkpoint.as_mut() {
            ex.checkpoint = Box::new(|name| hook(name));
        }
        ex
    }

    fn note(&mut self, line: &str) {
        (self.progress)(Progress::Note(line))
    }
}

/// How `upgrade` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeOutcome {
    /// The system already runs the target: nothing was done.
    AlreadyThere { target_out: StorePath },
    /// A run was started and driven until it ended or stopped.
    Ran(RunEnd),
}

/// `stepwise upgrade`: preflight (nothing changes on a refusal), then the run.
pub fn upgrade(
    req: &UpgradeRequest,
    seams: &mut Seams,
    journal: &mut dyn JournalAccess,
) -> Result<UpgradeOutcome, Error> {
    // A run left unfinished (a crash, a stop, a reboot outside its window) is continued first,
    // never overlaid: the hourly timer must not wait for someone to run `resume`.
    if is_unfinished(&journal.peek_last_run()?) {
        seams.note("the last run has not finished: continuing it first");
        // An hourly tick never accepts failed units for the user.
        let cont = ContinueRequest {
            roots_dir: req.roots_dir.clone(),
            legacy_masks: req.legacy_masks.clone(),
            accept_failed_units: false,
        };
        match continue_run(cont, seams, journal, false) {
            Ok(RunEnd::Finished { .. }) | Err(EngineError::Finished(..)) => {}
            Ok(end) => return Ok(UpgradeOutcome::Ran(end)),
            Err(e) => return Err(engine_error(req.journal_name(), e)),
        }
    }
    // A target that is not a derivation is refused before anything is rooted.
    super::upgrade::target_out(seams.store, &req.target_drv)?;
    let target_root = TargetRoot::add(seams.store, req)?;
    let held = seams.reserve.as_deref().map_or(0, |r| r.held());
    if let Some(why) = seams.reserve.as_deref().and_then(|r| r.skipped()) {
        seams.note(&why);
    }
    // Housekeeping is journaled in the last (finished) run; one a crash left open is settled
    // first. A journal without a run has nowhere to record it.
    let (store, system) = (seams.store, seams.system);
    let prepared = if journal.peek_last_run()?.is_empty() {
        let mut hk = super::housekeeping::Unjournaled;
        prepare_journaled(req, store, system, held, &mut |l| seams.note(l), &mut hk)?
    } else {
        let log = journal.open()?;
        super::housekeeping::settle(store, log)?;
        let mut hk = super::housekeeping::Journaled(log);
        prepare_journaled(req, store, system, held, &mut |l| seams.note(l), &mut hk)?
    };
    let run = match prepared {
        Prepared::AlreadyThere { target_out } => {
            return Ok(UpgradeOutcome::AlreadyThere { target_out })
        }
        Prepared::Run(run) => run,
    };
    // The lock, and no other run left unfinished (checked again under the lock).
    let log = journal.open()?;
    refuse_unfinished(&log.last_run(), req)?;
    if let Some(r) = seams.reserve.as_deref_mut() {
        r.hold(run.header.reserve).map_err(|e| Error::Io {
            context: "making the reserve file beside the journal".into(),
            source: e,
        })?;
    }
    seams.note(&run.announcement());
    let source = PlannerSource::new(seams.store, run.masks.clone());
    let roots = req.roots_dir.clone();
    // From here the run owns the root: its release removes it with the run's other roots.
    target_root.keep();
    let end = seams
        .executor(log, &source)
        .start(run.header, roots, run.chain, run.why)
        .map_err(|e| engine_error(req.journal_name(), e))?;
    Ok(UpgradeOutcome::Ran(end))
}

/// The target's `.drv`, evaluated seconds ago, rooted while the run is planned: an hourly GC
/// could delete it before the run's first transition pins it. A refusal before the run starts
/// takes the root away again, so that nothing is left changed.
struct TargetRoot<'a> {
    store: &'a dyn Store,
    link: Option<PathBuf>,
}

impl<'a> TargetRoot<'a> {
    fn add(store: &'a dyn Store, req: &UpgradeRequest) -> Result<Self, Error> {
        let link = req.roots_dir.join("target-drv");
        store
            .add_root(&link, &req.target_drv)
            .map_err(|e| match e {
                // The roots live beside the journal: no place for them is the journal's problem.
                crate::effects::store::StoreError::Io { .. } => Error::Journal {
                    path: req.journal_name().to_string(),
                    what: format!("cannot root the target beside it: {e}"),
                    hint: "pass --journal PATH in a directory stepwise can create and write".into(),
                },
                other => other.into(),
            })?;
        Ok(TargetRoot {
            store,
            link: Some(link),
        })
    }

    fn keep(mut self) {
        self.link = None;
    }
}

impl Drop for TargetRoot<'_> {
    fn drop(&mut self) {
        if let Some(link) = self.link.take() {
            let _ = self.store.remove_root(&link);
            // Tidy only: the directory was made for this link when no run had roots.
            if let Some(dir) = link.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// Whether the journal's last run has not finished (a crash, a stop, a reboot outside its
/// window): `upgrade` continues it before anything else.
pub fn has_unfinished_run(journal: &dyn JournalAccess) -> Result<bool, Error> {
    Ok(is_unfinished(&journal.peek_last_run()?))
}

fn is_unfinished(records: &[(Seq, Record)]) -> bool {
    let started = matches!(records.first(), Some((_, Record::RunStarted(_))));
    let finished = records
        .iter()
        .any(|(_, r)| matches!(r, Record::RunFinished { .. }));
    started && !finished
}

/// Under the lock: another process may have started a run since the look without it.
fn refuse_unfinished(records: &[(Seq, Record)], req: &UpgradeRequest) -> Result<(), Error> {
    if is_unfinished(records) {
        return Err(Error::Stopped {
            what: format!(
                "the last run in {} has not finished: a new upgrade waits for it (`stepwise resume` continues it, `stepwise unwind` walks it back)",
                req.journal_name()
            ),
        });
    }
    Ok(())
}

/// What `resume` and `unwind` act on.
pub struct ContinueRequest {
    pub roots_dir: PathBuf,
    /// For a format-1 run: the masks format 1 kept beside the journal, if that file is there.
    pub legacy_masks: Option<StepMasks>,
    /// Go on past a generation whose switch left units failed (`--on-failed-units stop`).
    pub accept_failed_units: bool,
}

/// How `resume` or `unwind` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContinueOutcome {
    /// No run to continue (none recorded, or the last one finished): nothing was done or
    /// created. The text says which, for one line of output.
    Nothing(String),
    Ran(RunEnd),
}

/// `stepwise resume`: continue the last run from the journal.
pub fn resume(
    req: ContinueRequest,
    seams: &mut Seams,
    journal: &mut dyn JournalAccess,
) -> Result<ContinueOutcome, EngineError> {
    continue_or_nothing(req, seams, journal, false)
}

/// `stepwise unwind`: walk the last run back to G0 (a run held at a step included).
pub fn unwind(
    req: ContinueRequest,
    seams: &mut Seams,
    journal: &mut dyn JournalAccess,
) -> Result<ContinueOutcome, EngineError> {
    continue_or_nothing(req, seams, journal, true)
}

/// A boot-time `resume` on a machine with nothing to resume is the normal case, not an error.
fn continue_or_nothing(
    req: ContinueRequest,
    seams: &mut Seams,
    journal: &mut dyn JournalAccess,
    unwind: bool,
) -> Result<ContinueOutcome, EngineError> {
    let what = if unwind { "unwind" } else { "resume" };
    let records = journal.peek_last_run().map_err(EngineError::from_error)?;
    if records.is_empty() {
        return Ok(ContinueOutcome::Nothing(format!(
            "no run is recorded: nothing to {what}"
        )));
    }
    // A finished run is seen without the lock (a held run is still there for `unwind`).
    let finished = records.iter().find_map(|(_, r)| match r {
        Record::RunFinished { outcome } => Some(outcome.clone()),
        _ => None,
    });
    match finished {
        Some(JOutcome::Held { .. }) if unwind => {}
        Some(o) => {
            return Ok(ContinueOutcome::Nothing(format!(
                "the last run has finished ({}): nothing to {what}",
                describe_recorded(&o)
            )))
        }
        None => {}
    }
    match continue_run(req, seams, journal, unwind) {
        Err(EngineError::Finished(o, _)) => Ok(ContinueOutcome::Nothing(format!(
            "the last run has finished ({}): nothing to {what}",
            describe_outcome(o)
        ))),
        other => other.map(ContinueOutcome::Ran),
    }
}

fn continue_run(
    req: ContinueRequest,
    seams: &mut Seams,
    journal: &mut dyn JournalAccess,
    unwind: bool,
) -> Result<RunEnd, EngineError> {
    let records = journal.peek_last_run().map_err(EngineError::from_error)?;
    let Some((_, Record::RunStarted(header))) = records.first() else {
        return Err(EngineError::NoRun);
    };
    // The masks of every step the run may still need: its re-plans' included.
    let mut header = super::record::effective_header(header, &records);
    if let Some(r) = seams.reserve.as_deref_mut() {
        r.set_size(header.reserve);
    }
    let source_masks = StepMasks::complete(&mut header, req.legacy_masks.as_ref())
        .ok()
        .and_then(|()| StepMasks::from_header(&header));
    let planner;
    let source: &dyn GenSource = match source_masks {
        Some(m) => {
            planner = PlannerSource::new(seams.store, m);
            &planner
        }
        // The executor refuses such a run before it does anything.
        None => &NothingToWrite,
    };
    let log = journal.open().map_err(EngineError::from_error)?;
    let end = {
        let mut ex = seams.executor(log, source);
        ex.legacy_masks = req.legacy_masks;
        ex.accept_failed_units = req.accept_failed_units;
        if unwind {
            ex.unwind(req.roots_dir)
        } else {
            ex.resume(req.roots_dir)
        }
    }?;
    // The reserve back in place once the run is over.
    if matches!(end, RunEnd::Finished { .. }) {
        if let Some(r) = seams.reserve.as_deref_mut() {
            let _ = r.hold(header.reserve);
        }
    }
    Ok(end)
}

/// Where the last run stands, from the journal alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub run: RunId,
    /// One phrase: "the target was reached", "interrupted during realise", ….
    pub state: String,
    /// What to do next, if anything.
    pub hint: &'static str,
    pub finished: bool,
    pub chain: Chain,
    pub steps: usize,
    pub profile_at_label: String,
    pub profile_at: StorePath,
    pub g0: StorePath,
    pub target: StorePath,
    pub failure: Option<String>,
    pub unwinding: bool,
}

/// `stepwise status`: `None` when no run is recorded.
pub fn status(
    log: &dyn RunLog,
    run: RunId,
    roots_dir: PathBuf,
    legacy: Option<&StepMasks>,
) -> Result<Option<Status>, EngineError> {
    if log.last_run().is_empty() {
        return Ok(None);
    }
    let loaded = load(log, roots_dir, legacy)?;
    let s = &loaded.replayed.state;
    let spec = &loaded.spec;
    let (state, hint) = match s.phase {
        Phase::Finished(o) => (
            describe_outcome(o),
            match o {
                Outcome::Held { .. } => "`stepwise unwind` walks back to G0",
                _ => "",
            },
        ),
        _ if loaded.replayed.finished => ("finished".into(), ""),
        Phase::Preflight => (
            "started, no strategy yet".into(),
            "`stepwise resume` continues",
        ),
        _ if s.just_activated_with_failed_units().is_some()
            && spec.header.options.on_failed_units
                == crate::effects::journal::OnFailedUnits::Stop =>
        {
            (
                "waiting: switching to the generation left units failed".into(),
                "`stepwise resume --accept-failed-units` goes on, `stepwise unwind` walks it back to G0",
            )
        }
        Phase::Replanning { .. } => (
            "stopped at a complete generation: a step ran out of space and the rest of the chain did not fit".into(),
            "free room on the store's filesystem, then `stepwise resume` plans the rest again; `stepwise unwind` walks back to G0",
        ),
        _ => (
            match (s.in_flight, s.stuck) {
                (Some(e), _) => format!("interrupted during {}", e.name()),
                (None, Some((e, _))) => format!("stopped after {} failed", e.name()),
                (None, None) => "stopped between transitions".into(),
            },
            "`stepwise resume` continues it, `stepwise unwind` walks it back to G0",
        ),
    };
    let at = spec.gen(s.chain, s.profile_at);
    Ok(Some(Status {
        run,
        state,
        hint,
        finished: matches!(s.phase, Phase::Finished(_)) || loaded.replayed.finished,
        chain: s.chain,
        steps: spec.steps.len(),
        profile_at_label: at.label.clone(),
        profile_at: at.out.clone(),
        g0: spec.g0.out.clone(),
        target: spec.target.out.clone(),
        failure: loaded.replayed.failures.first().map(|(_, m)| m.clone()),
        unwinding: s.unwind_requested
            || (s.failure.is_some() && !matches!(s.phase, Phase::Replanning { .. })),
    }))
}

/// How a finished run ended, in words.
pub fn describe_outcome(o: Outcome) -> String {
    match o {
        Outcome::ReachedTarget => "the target was reached".into(),
        Outcome::Unwound { failed: true } => "it failed and was unwound to G0".into(),
        Outcome::Unwound { failed: false } => "it was unwound to G0".into(),
        Outcome::Held { at } => format!("it failed and holds at step {at}"),
    }
}

fn describe_recorded(o: &JOutcome) -> String {
    match o {
        JOutcome::ReachedTarget => "the target was reached".into(),
        JOutcome::UnwoundToG0 => "it was unwound to G0".into(),
        JOutcome::Held { step } => format!("it holds at step {step}"),
        JOutcome::Abandoned { why } => format!("it was abandoned: {why}"),
    }
}

/// An engine error as the command line reports it (exit 2 or 4).
pub fn engine_error(journal: &str, e: EngineError) -> Error {
    match e {
        EngineError::NoRun => Error::bad_input(
            format!("no run is recorded in {journal}"),
            "start one with `stepwise upgrade`",
        ),
        EngineError::Finished(o, what) => Error::bad_input(
            format!(
                "the last run has already finished ({}); there is nothing to {what}",
                describe_outcome(o)
            ),
            "start a new run with `stepwise upgrade`",
        ),
        EngineError::Spec(s) => Error::bad_input(s.to_string(), "check the plan and the system"),
        e @ EngineError::Incomplete(_) => Error::Journal {
            path: journal.to_string(),
            what: e.to_string(),
            hint: "finish it with the stepwise that started it (`stepwise journal show` names \
                   its version), or restore `<journal>.steps.json` beside the journal"
                .into(),
        },
        EngineError::Refused(e) => *e,
        e @ (EngineError::Journal(_) | EngineError::Replay(_)) => Error::Journal {
            path: journal.to_string(),
            what: e.to_string(),
            hint: "`stepwise journal verify` checks it; `stepwise journal show` shows the run"
                .into(),
        },
    }
}

/// The roots of a run whose journal is at `journal`.
pub fn roots_dir_for(journal: &std::path::Path) -> PathBuf {
    Spec::roots_dir_for(journal)
}
