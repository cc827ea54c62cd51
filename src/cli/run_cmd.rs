//! `stepwise upgrade | resume | unwind | status`: preflight, the strategy, and the engine's run,
//! with progress on stderr (or JSON lines on stdout) and the exit codes of the contract.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::args::{Cli, RebootPolicy, Strategy, UpgradeArgs};
use crate::effects::fs;
use crate::effects::journal::{self, Journal, PlannedStep, Record, RunHeader};
use crate::effects::nix::NixCli;
use crate::effects::{Store, System};
use crate::engine::plan_inputs::{gather, SystemLinks};
use crate::engine::steps::{PlannerSource, StepMasks};
use crate::engine::{
    self, EngineError, Executor, GenSource, NothingToWrite, Progress, RunEnd, RunLog, Spec,
};
use crate::error::{Error, Exit};
use crate::output::Output;
use crate::plan::PlanOptions;
use crate::transition::{Chain, Outcome, Phase};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGTERM and SIGINT set a flag the executor checks between transitions: the current one
/// finishes and is journaled, then the run stops (exit 3).
fn install_stop_handlers() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

/// Nix with the user's settings (`--nix-option`).
fn nix(cli: &Cli) -> Result<NixCli, Error> {
    Ok(NixCli::new(super::nix_config(cli))?)
}

fn engine_err(journal: &Path, e: EngineError) -> Error {
    match e {
        EngineError::NoRun => Error::bad_input(
            format!("no run is recorded in {}", journal.display()),
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
        e @ (EngineError::Journal(_) | EngineError::Replay(_)) => Error::Journal {
            path: journal.display().to_string(),
            what: e.to_string(),
            hint: "`stepwise journal verify` checks it; `stepwise journal show` shows the run"
                .into(),
        },
    }
}

fn describe_outcome(o: Outcome) -> String {
    match o {
        Outcome::ReachedTarget => "the target was reached".into(),
        Outcome::Unwound { failed: true } => "it failed and was unwound to G0".into(),
        Outcome::Unwound { failed: false } => "it was unwound to G0".into(),
        Outcome::Held { at } => format!("it failed and holds at step {at}"),
    }
}

/// The reserve file beside the journal, as the engine's port.
struct ReserveFile(fs::Reserve);

impl engine::Reserve for ReserveFile {
    fn release(&mut self) -> std::io::Result<()> {
        self.0
            .release()
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
    fn restore(&mut self) -> std::io::Result<()> {
        self.0
            .take()
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

fn reserve_path(journal: &Path) -> PathBuf {
    fs::beside(journal, ".reserve")
}

/// Human progress lines on stderr; JSON event lines on stdout with `--json`.
fn progress_printer(json: bool) -> impl FnMut(Progress) {
    let mut out = Output::new(json);
    move |p: Progress| {
        if json {
            let v = match &p {
                Progress::Starting {
                    transition, gen, ..
                } => serde_json::json!({"event": "starting", "transition": transition.name(),
                    "what": transition.describe(), "generation": gen.label}),
                Progress::Done { transition, note } => serde_json::json!({"event": "done",
                    "transition": transition.name(), "note": note}),
                Progress::Failed {
                    transition,
                    message,
                } => serde_json::json!({"event": "failed", "transition": transition.name(),
                    "message": message}),
                Progress::Info(m) => serde_json::json!({"event": "info", "message": m}),
            };
            let _ = out.json_line(&mut std::io::stdout().lock(), &v);
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = match &p {
            Progress::Starting {
                transition, gen, ..
            } => write!(err, "[{}] {} … ", gen.label, transition.describe()),
            Progress::Done { note: "", .. } => writeln!(err, "done"),
            Progress::Done { note, .. } => writeln!(err, "done ({note})"),
            Progress::Failed { message, .. } => writeln!(err, "FAILED\n{message}"),
            Progress::Info(m) => writeln!(err, "{m}"),
        };
    }
}

fn finish(end: RunEnd, out: &mut Output, command: &str) -> Result<Exit, Error> {
    let (exit, line) = match &end {
        RunEnd::Finished {
            outcome: Outcome::ReachedTarget,
            ..
        } => (Exit::Done, "the target is reached".to_string()),
        RunEnd::Finished {
            outcome: Outcome::Unwound { failed: false },
            ..
        } => (
            Exit::Done,
            "unwound: back at the exact starting generation G0".to_string(),
        ),
        RunEnd::Finished {
            outcome: o @ (Outcome::Unwound { failed: true } | Outcome::Held { .. }),
            failure,
        } => {
            let what = failure.clone().unwrap_or_else(|| "a step failed".into());
            let done = match o {
                Outcome::Held { at } => format!(
                    "the system stays at step {at}, the last good generation; `stepwise unwind` walks back to G0"
                ),
                _ => "every change was undone: the system is back at the exact starting generation G0".into(),
            };
            return Err(Error::RunFailed {
                what: format!("the run failed: {what}\n{done}"),
            });
        }
        RunEnd::Stopped { why } => {
            return Err(Error::Stopped { what: why.clone() });
        }
        RunEnd::Crashed { at } => {
            return Err(Error::Stopped {
                what: format!("stopped at checkpoint {at}"),
            })
        }
    };
    announce_finished(out, command, &line);
    Ok(exit)
}

/// The last word of a command that ended well: a `finished` event with `--json`, else a line.
fn announce_finished(out: &mut Output, command: &str, line: &str) {
    if out.is_json() {
        let _ = out.json_line(
            &mut std::io::stdout().lock(),
            &serde_json::json!({"event": "finished", "command": command, "message": line}),
        );
    } else {
        eprintln!("stepwise: {line}");
    }
}

/// `stepwise upgrade`.
pub fn upgrade(cli: &Cli, args: &UpgradeArgs, out: &mut Output) -> Result<Exit, Error> {
    let nix = nix(cli)?;
    let store_dir = nix.store_dir().clone();
    let target_drv = nix.resolve_target(&args.target.spec())?;
    crate::cli::checks::target_is_system(&target_drv)?;
    let drv_bytes = nix.read_file(&target_drv)?;
    let parsed = crate::drv::parse(&drv_bytes, &store_dir).map_err(|e| {
        Error::bad_input(
            format!("{target_drv}: not a derivation: {e}"),
            "pass the toplevel .drv of a NixOS system; if the file is damaged, \
             `nix-store --verify --check-contents --repair` restores it",
        )
    })?;
    let Some(target_out) = parsed.outputs.get("out").and_then(|o| o.path.clone()) else {
        return Err(Error::bad_input(
            format!("{target_drv} has no `out` output with a known path"),
            "pass the toplevel .drv of a NixOS system",
        ));
    };

    // G0: the running generation, complete, with a deriver we can keep for an exact unwind.
    let sys = &args.system;
    let Some(g0) = nix.read_system_link(&sys.current_system)? else {
        return Err(Error::bad_input(
            format!(
                "{} does not point at a system",
                sys.current_system.display()
            ),
            "pass --current-system LINK (the running system's link)",
        ));
    };
    if g0 == target_out {
        // Not an error: the hourly timer meets this every hour there is no update.
        return already_there(out, &target_out);
    }
    // A run left unfinished (a reboot pending, a crash) is continued, never overlaid.
    refuse_unfinished_run(&cli.journal)?;
    if args.action == crate::effects::store::Action::Test {
        test_action_keeps_a_bootable_default(&nix, args, &g0)?;
    }
    let target_root = TargetRoot::add(&nix, &cli.journal, &target_drv)?;
    let g0_closure = nix.closure(std::slice::from_ref(&g0)).map_err(|e| {
        Error::bad_input(
            format!("G0 {g0} is not complete in the store: {e}"),
            "repair the store (`nix-store --verify --repair`) before upgrading",
        )
    })?;
    let g0_drv = nix
        .path_infos(std::slice::from_ref(&g0))?
        .get(&g0)
        .and_then(|i| i.deriver.clone());
    let g0_drv = match g0_drv {
        Some(d) if !nix.valid_paths(std::slice::from_ref(&d))?.is_empty() => d,
        other => return Err(Error::bad_input(
            format!(
                "G0 {g0} has no valid deriver ({}): an exact unwind to it would be impossible",
                other.map_or("none recorded".into(), |d| format!(
                    "{d} is not in the store"
                ))
            ),
            "instantiate the running configuration again (so its .drv is in the store), then retry",
        )),
    };

    // The plan: G0's packages matched to the target's, the steps and their peak.
    let links = SystemLinks {
        profile: sys.profile.clone(),
        current_system: sys.current_system.clone(),
        booted_system: sys.booted_system.clone(),
    };
    let options = PlanOptions {
        non_vital: args.room.non_vital.clone(),
        together: args.room.together.clone(),
        reboot_allowed: args.room.reboot == RebootPolicy::WhenNeeded,
        merge_headroom_percent: 0,
    };
    let mut input = gather(
        &nix,
        &nix,
        &target_drv,
        &links,
        args.room.reserve,
        options.clone(),
    )?;
    // Planned once before anything is deleted: bad names (`--non-vital typo`) stop us here.
    let mut planned = crate::plan::plan(&input)?;
    // /boot, when it is its own filesystem: room for the kernels and initrds the run adds,
    // checked before anything changes (deleting leftovers below included).
    if let Some(dir) = &args.boot_dir {
        check_boot_room(&nix, dir, &sys.profile, &g0, planned.boot.as_ref())?;
    }
    // Unrooted results of an earlier attempt (a plain upgrade that ran out of space) take room
    // the plan needs: delete them first. Only dead paths of the target's closure, never a live one.
    let live = nix.live_paths()?;
    let g0_closure_set: std::collections::BTreeSet<_> = g0_closure.iter().collect();
    let leftovers: Vec<_> = input
        .facts
        .iter()
        .filter(|(p, f)| f.present && !live.contains(*p) && !g0_closure_set.contains(p))
        .map(|(p, _)| p.clone())
        .collect();
    if !leftovers.is_empty() {
        let bytes: u64 = leftovers.iter().map(|p| input.facts[p].size).sum();
        nix.delete(&leftovers)?;
        if !out.is_json() {
            eprintln!(
                "stepwise: removed {} unrooted path(s) ({}) left by an earlier attempt",
                leftovers.len(),
                journal::transition::human_bytes(bytes)
            );
        }
        input = gather(&nix, &nix, &target_drv, &links, args.room.reserve, options)?;
        planned = crate::plan::plan(&input)?;
    }
    let space = nix.space()?;
    let reserve_size = input.reserve;
    let frame = planned.frame.clone();
    let human = journal::transition::human_bytes;
    let mut masks = StepMasks {
        target_drv: target_drv.clone(),
        g0_toplevel: g0.clone(),
        masks: BTreeMap::new(),
        reboot_after: 0,
    };
    let mut plan: Vec<PlannedStep> = Vec::new();
    match &planned.outcome {
        Ok(p) if args.strategy != Strategy::Direct => {
            for st in &p.steps {
                masks.masks.insert(st.index as u32, st.mask.clone());
                if st.reboot_after && st.index < 64 {
                    masks.reboot_after |= 1 << st.index;
                }
            }
            let source = PlannerSource::new(&nix, masks.clone());
            let tops = source.toplevels().map_err(|e| {
                Error::bad_input(
                    format!("rewriting the steps' derivations: {e}"),
                    "report this",
                )
            })?;
            for (st, (drv, out)) in p.steps.iter().zip(tops) {
                plan.push(PlannedStep {
                    index: st.index as u32,
                    toplevel_drv: drv,
                    toplevel_out: out,
                    units: st.upgraded.clone(),
                    adds: st.space.adds,
                    frees: st.space.frees,
                });
            }
        }
        _ => {}
    }
    if plan.last().map(|s| &s.toplevel_drv) != Some(&target_drv) {
        // No stepwise plan (direct, or nothing fits): the target is the only step.
        masks.masks.clear();
        masks.reboot_after = 0;
        masks.masks.insert(1, Default::default());
        plan = vec![PlannedStep {
            index: 1,
            toplevel_drv: target_drv.clone(),
            toplevel_out: target_out.clone(),
            units: vec![],
            adds: frame.plain_peak.saturating_sub(frame.used),
            frees: 0,
        }];
    }
    let stepwise_ok = planned.outcome.is_ok();
    let (chain, why) = match args.strategy {
        Strategy::Direct => (Chain::Direct, "--strategy direct".to_string()),
        Strategy::Stepwise if stepwise_ok => (
            Chain::Steps,
            format!("--strategy stepwise: {} step(s)", plan.len()),
        ),
        Strategy::Auto if frame.plain_fits => (
            Chain::Direct,
            format!(
                "the plain upgrade fits: peak {} of a ceiling of {}",
                human(frame.plain_peak),
                human(frame.ceiling)
            ),
        ),
        Strategy::Auto if stepwise_ok => (
            Chain::Steps,
            format!(
                "the plain upgrade needs a peak of {} above the ceiling of {}: {} steps instead",
                human(frame.plain_peak),
                human(frame.ceiling),
                plan.len()
            ),
        ),
        Strategy::Auto | Strategy::Stepwise => {
            return Err(match &planned.outcome {
                Err(sf) => no_room(sf),
                Ok(_) => Error::NoRoom {
                    what: "no plan".into(),
                    help: vec!["`stepwise plan` shows the details".into()],
                },
            });
        }
    };
    let _ = &space;

    // Non-vital packages go out only if every glue derivation builds without them.
    if chain == Chain::Steps {
        let names = crate::plan::probe::stubbed_names(&planned);
        if !names.is_empty() {
            let g0_set: std::collections::BTreeSet<_> = g0_closure.iter().cloned().collect();
            check_stubs(&nix, &input, &planned, &names, &cli.journal, &g0_set, out)?;
        }
    }

    // The lock, and no other run left unfinished (checked again under the lock).
    let mut j = Journal::open(&cli.journal)?;
    refuse_unfinished(&j, &cli.journal)?;
    let reserve = fs::Reserve::new(reserve_path(&cli.journal), reserve_size);
    reserve.take()?;
    let _ = g0_closure;
    masks
        .save(&StepMasks::path_for(&cli.journal))
        .map_err(|e| Error::Io {
            context: format!("writing {}", StepMasks::path_for(&cli.journal).display()),
            source: e,
        })?;

    let header = RunHeader {
        stepwise_version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        target: (&args.target.spec()).into(),
        target_drv: target_drv.clone(),
        profile: sys.profile.clone(),
        current_system: sys.current_system.clone(),
        booted_system: sys.booted_system.clone(),
        action: args.action,
        strategy: args.strategy,
        on_failure: args.on_failure,
        reboot: args.room.reboot,
        reboot_command: args
            .reboot_command
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        non_vital: args.room.non_vital.clone(),
        together: args.room.together.clone(),
        reserve: reserve_size,
        g0_toplevel: g0,
        g0_drv: Some(g0_drv),
        plan,
        store_dir: store_dir.as_str().to_string(),
    };
    if !out.is_json() {
        eprintln!("stepwise: upgrading to {target_out} ({why})");
        if let (Chain::Steps, Some(b)) = (chain, &planned.boot) {
            let installs = if args.action == crate::effects::store::Action::Test {
                b.installs_with_test
            } else {
                b.installs
            };
            eprintln!(
                "stepwise: boot loader: {installs} install(s), at most {} boot entr{} more than now{}",
                b.entries_added_max,
                if b.entries_added_max == 1 { "y" } else { "ies" },
                b.kernel_step
                    .map(|k| format!("; the kernel changes in step {k}"))
                    .unwrap_or_default()
            );
        }
    }
    install_stop_handlers();
    let mut reserve = ReserveFile(reserve);
    let reboot_after = masks.reboot_after;
    let source = PlannerSource::new(&nix, masks);
    // From here the run's records own it: released with the run's other roots at its end.
    target_root.keep();
    let mut ex = Executor::new(&nix, &nix, &mut j, &source, &STOP);
    ex.reboot_after = reboot_after;
    ex.reserve = Some(&mut reserve);
    ex.progress = Box::new(progress_printer(out.is_json()));
    let end = ex
        .start(header, Spec::roots_dir_for(&cli.journal), chain, why)
        .map_err(|e| engine_err(&cli.journal, e))?;
    finish(end, out, "upgrade")
}

fn continue_run(cli: &Cli, out: &mut Output, unwind: bool) -> Result<Exit, Error> {
    if !cli.journal.exists() {
        return Err(engine_err(&cli.journal, EngineError::NoRun));
    }
    let nix = nix(cli)?;
    let mut j = Journal::open(&cli.journal)?;
    let reserve_size = match RunLog::last_run(&j).first() {
        Some((_, Record::RunStarted(h))) => h.reserve,
        _ => return Err(engine_err(&cli.journal, EngineError::NoRun)),
    };
    install_stop_handlers();
    let mut reserve = ReserveFile(fs::Reserve::new(reserve_path(&cli.journal), reserve_size));
    let masks_path = StepMasks::path_for(&cli.journal);
    let planner_source;
    let mut reboot_after = 0;
    let source: &dyn GenSource = match StepMasks::load(&masks_path) {
        Ok(m) => {
            reboot_after = m.reboot_after;
            planner_source = PlannerSource::new(&nix, m);
            &planner_source
        }
        Err(_) => &NothingToWrite,
    };
    let mut ex = Executor::new(&nix, &nix, &mut j, source, &STOP);
    ex.reboot_after = reboot_after;
    ex.reserve = Some(&mut reserve);
    ex.progress = Box::new(progress_printer(out.is_json()));
    let roots = Spec::roots_dir_for(&cli.journal);
    let end = if unwind {
        ex.unwind(roots)
    } else {
        ex.resume(roots)
    }
    .map_err(|e| engine_err(&cli.journal, e))?;
    let exit = finish(end, out, if unwind { "unwind" } else { "resume" });
    // The reserve back in place once the run is over.
    if exit.is_ok() {
        let _ = fs::Reserve::new(reserve_path(&cli.journal), reserve_size).take();
    }
    exit
}

pub fn resume(cli: &Cli, out: &mut Output) -> Result<Exit, Error> {
    continue_run(cli, out, false)
}

pub fn unwind(cli: &Cli, out: &mut Output) -> Result<Exit, Error> {
    continue_run(cli, out, true)
}

/// `stepwise status`: where the last run stands, from the journal alone (read-only, no lock).
pub fn status(cli: &Cli, out: &mut Output) -> Result<Exit, Error> {
    if !cli.journal.exists() {
        if out.is_json() {
            out.document(
                &mut std::io::stdout().lock(),
                "status",
                &serde_json::json!({"run": null}),
            )
            .map_err(crate::output::stdout_error)?;
        } else {
            crate::output::print(&format!("no run recorded at {}\n", cli.journal.display()))?;
        }
        return Ok(Exit::Done);
    }
    let j = Journal::open_read_only(&cli.journal)?;
    let reboot_after = StepMasks::load(&StepMasks::path_for(&cli.journal))
        .map(|m| m.reboot_after)
        .unwrap_or(0);
    let loaded = engine::load_with(&j, Spec::roots_dir_for(&cli.journal), reboot_after)
        .map_err(|e| engine_err(&cli.journal, e))?;
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
        _ => (
            match s.in_flight {
                Some(e) => format!("interrupted during {}", e.name()),
                None => match s.stuck {
                    Some((e, _)) => format!("stopped after {} failed", e.name()),
                    None => "stopped between transitions".into(),
                },
            },
            "`stepwise resume` continues it, `stepwise unwind` walks it back to G0",
        ),
    };
    let at = spec.gen(s.chain, s.profile_at);
    let chain = match s.chain {
        Chain::Direct => "plain upgrade",
        Chain::Steps => "stepwise",
    };
    let failure = loaded.replayed.failures.first().map(|(_, m)| m.clone());
    if out.is_json() {
        let v = serde_json::json!({
            "run": j.last_run(),
            "state": state,
            "finished": matches!(s.phase, Phase::Finished(_)) || loaded.replayed.finished,
            "strategy": chain,
            "profileAt": {"label": at.label, "toplevel": at.out.to_string()},
            "steps": spec.steps.len(),
            "target": spec.target.out.to_string(),
            "g0": spec.g0.out.to_string(),
            "failure": failure,
            "unwinding": s.unwind_requested || s.failure.is_some(),
        });
        out.document(&mut std::io::stdout().lock(), "status", &v)
            .map_err(crate::output::stdout_error)?;
    } else {
        let mut text = format!("run {}: {state}\n", j.last_run().unwrap_or(0));
        text += &format!("  strategy: {chain}, {} step(s)\n", spec.steps.len());
        text += &format!("  profile at: {} ({})\n", at.label, at.out);
        text += &format!("  G0: {}\n", spec.g0.out);
        text += &format!("  target: {}\n", spec.target.out);
        if let Some(f) = failure {
            text += &format!("  failure: {f}\n");
        }
        if !hint.is_empty() {
            text += &format!("  {hint}\n");
        }
        crate::output::print(&text)?;
    }
    Ok(Exit::Done)
}

/// The target's `.drv`, evaluated seconds ago, rooted while the run is planned: a GC (hourly on
/// many machines) could delete it before the run's first transition pins it. A refusal before
/// the run starts takes the root away again, so that nothing is left changed.
struct TargetRoot<'a> {
    nix: &'a NixCli,
    link: Option<PathBuf>,
}

impl<'a> TargetRoot<'a> {
    fn add(nix: &'a NixCli, journal: &Path, drv: &crate::drv::StorePath) -> Result<Self, Error> {
        let link = Spec::roots_dir_for(journal).join("target-drv");
        // The roots live beside the journal: no place for them is the journal's problem.
        nix.add_root(&link, drv).map_err(|e| match e {
            crate::effects::store::StoreError::Io { .. } => Error::Journal {
                path: journal.display().to_string(),
                what: format!("cannot root the target beside it: {e}"),
                hint: "pass --journal PATH in a directory stepwise can create and write".into(),
            },
            other => other.into(),
        })?;
        Ok(TargetRoot {
            nix,
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
            let _ = self.nix.remove_root(&link);
            // Tidy only: the directory was made for this link when no run had roots.
            if let Some(dir) = link.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// `upgrade` when the system already runs the target: done, nothing to do.
fn already_there(out: &mut Output, target_out: &crate::drv::StorePath) -> Result<Exit, Error> {
    let line = format!("the system already runs the target {target_out}: nothing to do");
    announce_finished(out, "upgrade", &line);
    Ok(Exit::Done)
}

fn unfinished(run: journal::RunId, path: &Path) -> Error {
    Error::Stopped {
        what: format!(
            "run {run} in {} has not finished: a new upgrade waits for it (`stepwise unwind` walks it back instead)",
            path.display()
        ),
    }
}

/// `--action test` never installs the boot loader, so its default stays the running system's
/// (G0). The run deletes G0's generation and, unless a pin keeps them, its paths: the default
/// stays bootable only where G0 is the booted system (pinned until the reboot, which returns to
/// it, as after `nixos-rebuild test`). A reboot in the middle would boot G0, not the step.
fn test_action_keeps_a_bootable_default(
    nix: &NixCli,
    args: &UpgradeArgs,
    g0: &crate::drv::StorePath,
) -> Result<(), Error> {
    if args.room.reboot == RebootPolicy::WhenNeeded {
        return Err(Error::bad_input(
            "--action test with --reboot when-needed: a reboot boots the boot loader's default, which --action test leaves at the running system, not at the step to boot into",
            "use --action switch (or boot) to reboot between steps, or --reboot never",
        ));
    }
    let booted = nix.read_system_link(&args.system.booted_system)?;
    if booted.as_ref() != Some(g0) {
        return Err(Error::bad_input(
            format!(
                "--action test leaves the boot loader's default at the running system {g0}, which this upgrade deletes: {} {}, so nothing keeps it until the next boot",
                args.system.booted_system.display(),
                booted.map_or("does not point at a system".to_string(), |b| format!("is {b}"))
            ),
            "use --action switch or --action boot (the boot default moves with the upgrade)",
        ));
    }
    Ok(())
}

/// Exit 3 before anything changes when the journal's last run has not finished (read-only: a
/// missing journal is no run).
fn refuse_unfinished_run(path: &Path) -> Result<(), Error> {
    if !path.exists() {
        return Ok(());
    }
    refuse_unfinished(&Journal::open_read_only(path)?, path)
}

fn refuse_unfinished(j: &Journal, path: &Path) -> Result<(), Error> {
    if let Some(run) = j.last_run() {
        let finished = j
            .records(run)
            .iter()
            .any(|s| matches!(s.record, Record::RunFinished { .. }));
        if !finished {
            return Err(unfinished(run, path));
        }
    }
    Ok(())
}

/// Build the stub probe (`plan::probe`) for the plan's non-vital packages: an error naming the
/// packages that cannot be taken out, before anything changed.
fn check_stubs(
    nix: &NixCli,
    input: &crate::plan::PlanInput,
    planned: &crate::plan::Planned,
    names: &[String],
    journal: &Path,
    g0_closure: &std::collections::BTreeSet<crate::drv::StorePath>,
    out: &Output,
) -> Result<(), Error> {
    use crate::engine::stub_probe::{probe_stubs, ProbeOutcome};
    let scratch = probe_dir(journal);
    let probe = |names: &[String]| {
        use crate::engine::stub_probe::ProbeError;
        probe_stubs(nix, &input.target, planned, names, &scratch, g0_closure).map_err(|e| match e {
            ProbeError::Store(e) => Error::Store(e),
            ProbeError::Rewrite(e) => Error::bad_input(
                format!(
                    "rewriting the derivations without {}: {e}",
                    names.join(", ")
                ),
                "report this with `stepwise drv inspect` of the target's toplevel .drv",
            ),
        })
    };
    if !out.is_json() {
        eprintln!(
            "stepwise: checking that {} can be taken out: building the system's glue without {}",
            names.join(", "),
            if names.len() == 1 { "it" } else { "them" }
        );
    }
    let (drv, log_tail) = match probe(names)? {
        ProbeOutcome::Builds => {
            let _ = std::fs::remove_dir(&scratch);
            return Ok(());
        }
        ProbeOutcome::OutOfSpace { message } => {
            return Err(Error::NoRoom {
                what: format!(
                    "checking that {} can be taken out ran out of space: {message}",
                    names.join(", ")
                ),
                help: vec![
                    "free some space on the store's filesystem (`nix-collect-garbage -d` removes old generations), then retry".into(),
                ],
            })
        }
        ProbeOutcome::Breaks { drv, log_tail } => (drv, log_tail),
    };
    // Name the culprits: each alone, when there are several.
    let mut culprits = Vec::new();
    if names.len() > 1 {
        for n in names {
            if matches!(probe(std::slice::from_ref(n))?, ProbeOutcome::Breaks { .. }) {
                culprits.push(n.clone());
            }
        }
    }
    let _ = std::fs::remove_dir(&scratch);
    let blamed = if culprits.is_empty() {
        names.to_vec()
    } else {
        culprits
    };
    let flags = blamed
        .iter()
        .map(|n| format!("--non-vital {n}"))
        .collect::<Vec<_>>()
        .join(" ");
    Err(Error::bad_input(
        format!(
            "{flags}: {} cannot be taken out for the upgrade: {} does not build with {} replaced by an empty stub (the system's configuration reads {}):\n{log_tail}\nnothing was changed",
            blamed.join(", "),
            nix.store_dir().display(&drv),
            if blamed.len() == 1 { "it" } else { "them" },
            if blamed.len() == 1 { "its files" } else { "their files" },
        ),
        format!(
            "drop {flags} (services.stepwise.nonVital in the NixOS module); `stepwise plan` shows what else would make room"
        ),
    ))
}

/// The probe's scratch directory (its temporary GC root) beside the journal.
fn probe_dir(journal: &Path) -> PathBuf {
    fs::beside(journal, ".probe")
}

/// Whether `dir` (the boot partition) can take the kernel+initrd pairs the run adds beyond what
/// it holds, each sized as G0's `kernel` and `initrd` (through the toplevel's links). Skipped
/// when `dir` is on the store's filesystem (nothing separate to fill) or nothing is added.
fn check_boot_room(
    nix: &NixCli,
    dir: &Path,
    profile: &Path,
    g0: &crate::drv::StorePath,
    boot: Option<&crate::plan::BootPlan>,
) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let human = journal::transition::human_bytes;
    let meta = std::fs::metadata(dir).map_err(|e| {
        Error::bad_input(
            format!("--boot-dir {}: {e}", dir.display()),
            "pass the directory the boot loader installs into (e.g. /boot), or leave --boot-dir out",
        )
    })?;
    if !meta.is_dir() {
        return Err(Error::bad_input(
            format!("--boot-dir {} is not a directory", dir.display()),
            "pass the directory the boot loader installs into (e.g. /boot), or leave --boot-dir out",
        ));
    }
    let store = Path::new(nix.store_dir().as_str());
    let same_fs = std::fs::metadata(store).is_ok_and(|s| s.dev() == meta.dev());
    let Some(boot) = boot else { return Ok(()) };
    if same_fs || boot.pairs_added_max == 0 {
        return Ok(());
    }
    let top = nix.store_dir().to_path(g0);
    let size = |name: &str| std::fs::metadata(top.join(name)).map(|m| m.len());
    let pair = match (size("kernel"), size("initrd")) {
        (Ok(k), Ok(i)) => k + i,
        // Without G0's files there is nothing to size them by: say so, do not guess.
        _ => {
            eprintln!(
                "stepwise: {} has no kernel and initrd to size /boot's needs by: {} not checked",
                top.display(),
                dir.display()
            );
            return Ok(());
        }
    };
    let needed = pair * boot.pairs_added_max as u64;
    let free = crate::effects::fs::space(dir)?.free;
    if free >= needed {
        return Ok(());
    }
    Err(Error::NoRoom {
        what: format!(
            "{} has {} free; the run adds up to {} kernel+initrd pair(s) of about {} each ({}): {} more is needed",
            dir.display(),
            human(free),
            boot.pairs_added_max,
            human(pair),
            human(needed),
            human(needed - free)
        ),
        help: vec![
            format!(
                "delete old generations (`nix-env --profile {} --delete-generations old` deletes all but the current one), then let the boot loader drop their files (`{}/bin/switch-to-configuration boot`)",
                profile.display(),
                top.display()
            ),
            "keep fewer boot entries for good: boot.loader.systemd-boot.configurationLimit (or boot.loader.grub.configurationLimit)".into(),
        ],
    })
}

/// Nothing fits: what is missing and what would help, before anything changed.
fn no_room(sf: &crate::plan::Shortfall) -> Error {
    let human = journal::transition::human_bytes;
    let what = format!(
        "no order of steps fits: {} more would be needed to move {} ({} for the whole upgrade without stubs or reboots)",
        human(sf.missing_next),
        sf.bottleneck.join(", "),
        human(sf.missing_total)
    );
    let mut help = Vec::new();
    if !sf.non_vital_that_fits.is_empty() {
        help.push(format!(
            "--non-vital {} makes the upgrade fit (out for the duration, back upgraded at the end)",
            sf.non_vital_that_fits.join(" --non-vital ")
        ));
    } else if !sf.non_vital_candidates.is_empty() {
        help.push(format!(
            "--non-vital {} would free room",
            sf.non_vital_candidates
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(" / --non-vital ")
        ));
    }
    if sf.reboot_would_free > 0 {
        help.push(format!(
            "a reboot would free {} the booted system pins{}",
            human(sf.reboot_would_free),
            if sf.fits_with_reboot {
                ", enough to fit: --reboot when-needed"
            } else {
                ""
            }
        ));
    }
    help.push(format!(
        "or free at least {} on the store's filesystem (`nix-collect-garbage -d` removes old generations); `stepwise plan` shows the details",
        human(sf.missing_next)
    ));
    Error::NoRoom { what, help }
}
