//! `stepwise upgrade | resume | unwind | status`: the arguments turned into the engine's requests
//! (`engine::api`), its progress printed on stderr (or JSON lines on stdout), its outcome mapped
//! to the exit codes of the contract. No orchestration lives here.

use std::path::{Path, PathBuf};

use super::args::{Cli, ResumeArgs, UpgradeArgs};
use crate::effects::fs;
use crate::effects::journal::{Journal, RunOptions};
use crate::effects::nix::NixCli;
use crate::effects::{signals, system_lock, Store};
use crate::engine::api::{engine_error, roots_dir_for};
use crate::engine::plan_inputs::SystemLinks;
use crate::engine::steps::StepMasks;
use crate::engine::{
    self, ContinueOutcome, ContinueRequest, JournalFile, Progress, RunEnd, Seams, SystemClock,
    UpgradeOutcome, UpgradeRequest,
};
use crate::error::{Error, Exit};
use crate::output::log_lines::LogEvent;
use crate::output::progress::TerminalView;
use crate::output::Output;
use crate::transition::{Chain, Outcome};

/// SIGTERM, SIGINT and SIGHUP set `signals::STOP` (checked between transitions); the second
/// cancels the running Nix command (`effects::signals`).
fn install_stop_handlers(nix: &NixCli) -> Result<(), Error> {
    signals::install(nix.cancel_token()).map_err(|e| Error::Io {
        context: "installing the stop-signal handlers".into(),
        source: e,
    })
}

/// One run per system: the lock keyed to the system profile, taken before anything touches the
/// store and held until the run ends (`effects::system_lock`).
fn lock_system(profile: &Path, journal: &Path) -> Result<system_lock::SystemLock, Error> {
    system_lock::acquire(
        Path::new(system_lock::RUN_DIR),
        profile,
        journal,
        crate::effects::journal::now_ms(),
    )
}

/// The profile the journal's last run changes (its header), if it records a run.
fn journaled_profile(journal: &Path) -> Result<Option<PathBuf>, Error> {
    let j = Journal::open_read_only(journal)?;
    Ok(j.runs().last().map(|(_, h)| h.profile.clone()))
}

/// Nix with the user's settings (`--nix-option`).
fn nix(cli: &Cli) -> Result<NixCli, Error> {
    Ok(NixCli::new(super::nix_config(cli))?)
}

/// The reserve file on the store's filesystem, as the engine's port; `None`: no directory there
/// to hold it (the run goes without, and says so).
struct ReserveFile(Option<fs::Reserve>);

impl ReserveFile {
    /// Beside the journal when that is on the store's filesystem, else in Nix's state directory
    /// or the store's parent directory (`<dir>/stepwise.reserve`), whichever is there.
    fn for_run(journal: &Path, nix: &NixCli) -> Self {
        let state_dir = std::env::var_os("NIX_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/nix/var/nix"));
        let store_dir = PathBuf::from(nix.store_dir().as_str());
        ReserveFile(
            fs::reserve_path(journal, &store_dir, Some(&state_dir)).map(|p| fs::Reserve::new(p, 0)),
        )
    }
}

impl engine::Reserve for ReserveFile {
    fn set_size(&mut self, bytes: u64) {
        if let Some(r) = &mut self.0 {
            *r = fs::Reserve::new(r.path().to_owned(), bytes);
        }
    }
    fn release(&mut self) -> std::io::Result<()> {
        match &self.0 {
            Some(r) => r
                .release()
                .map_err(|e| std::io::Error::other(e.to_string())),
            None => Ok(()),
        }
    }
    fn restore(&mut self) -> std::io::Result<()> {
        match &self.0 {
            Some(r) => r.take().map_err(|e| std::io::Error::other(e.to_string())),
            None => Ok(()),
        }
    }
    fn held(&self) -> u64 {
        self.0.as_ref().map_or(0, |r| fs::held_bytes(r.path()))
    }
    fn skipped(&self) -> Option<String> {
        self.0.is_none().then(|| {
            "no reserve file: neither the journal's directory, Nix's state directory nor the              store's parent is on the store's filesystem"
                .to_string()
        })
    }
}

/// JSON event lines on stdout with `--json`; complete log lines (with journald priorities
/// under systemd) when stderr is not a terminal; a live display on a terminal (none with `-q`).
fn progress_printer(json: bool, quiet: bool) -> Box<dyn FnMut(Progress)> {
    if json {
        return Box::new(json_printer());
    }
    if let Some(log) = crate::output::log_lines::stderr_log() {
        return Box::new(log_printer(log));
    }
    if quiet {
        return Box::new(|_: Progress| {});
    }
    Box::new(terminal_printer())
}

/// The engine's progress as log lines: one complete line per transition start and end, Nix's
/// lines prefixed with the step.
fn log_printer(
    mut log: crate::output::log_lines::LogLines<std::io::Stderr>,
) -> impl FnMut(Progress) {
    use crate::output::log_lines::LogEvent;
    move |p: Progress| {
        let _ = match &p {
            Progress::Note(m) => log.event(LogEvent::Info(m)),
            _ => with_log_event(&p, |ev| log.event(ev)),
        };
    }
}

/// `p` as the event the log lines and the terminal view both read (a preflight note is shown as
/// information).
fn with_log_event<R>(p: &Progress, show: impl FnOnce(LogEvent) -> R) -> R {
    let (label, what);
    let ev = match p {
        Progress::Starting {
            transition, gen, ..
        } => {
            label = gen.label.clone();
            what = transition.describe();
            LogEvent::Starting {
                step: &label,
                what: &what,
            }
        }
        Progress::Done {
            note, added, freed, ..
        } => LogEvent::Done {
            added: *added,
            freed: *freed,
            note,
        },
        Progress::Failed { message, .. } => LogEvent::Failed { message },
        Progress::Info(m) if m.starts_with("interrupted") => LogEvent::Interrupted { why: m },
        Progress::Info(m) | Progress::Note(m) => LogEvent::Info(m),
        Progress::Child(line) => LogEvent::Child { line },
    };
    show(ev)
}

/// JSON event lines on stdout, the first carrying the format version.
fn json_printer() -> impl FnMut(Progress) {
    let mut out = Output::new(true);
    move |p: Progress| {
        let v = match &p {
            Progress::Starting {
                transition, gen, ..
            } => serde_json::json!({"event": "starting", "transition": transition.name(),
                "what": transition.describe(), "generation": gen.label}),
            Progress::Done {
                transition, note, ..
            } => serde_json::json!({"event": "done",
                "transition": transition.name(), "note": note}),
            Progress::Failed {
                transition,
                message,
            } => serde_json::json!({"event": "failed", "transition": transition.name(),
                "message": message}),
            Progress::Info(m) => serde_json::json!({"event": "info", "message": m}),
            // Preflight's lines and Nix's own are for people only.
            Progress::Note(_) | Progress::Child(_) => return,
        };
        let _ = out.json_line(&mut std::io::stdout().lock(), &v);
    }
}

/// A live display for a person at a terminal (indicatif): a spinner naming the step, the
/// transition, the bytes Nix fetched and its latest line, and above it one line for each
/// transition done (`output::progress` renders them). When the run is over (the printer is
/// dropped), a last line says how much Nix fetched.
fn terminal_printer() -> impl FnMut(Progress) {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut display = TerminalDisplay {
        view: TerminalView::new(BarLines(bar.clone(), Vec::new())),
        bar,
    };
    move |p: Progress| display.show(&p)
}

/// The view and the bar it draws on.
struct TerminalDisplay {
    view: TerminalView<BarLines>,
    bar: indicatif::ProgressBar,
}

impl TerminalDisplay {
    fn show(&mut self, p: &Progress) {
        if let Progress::Note(m) = p {
            m.lines()
                .for_each(|l| self.bar.println(format!("stepwise: {l}")));
            return;
        }
        let _ = with_log_event(p, |e| self.view.event(e));
        self.bar.set_prefix(self.view.prefix());
        self.bar.set_message(self.view.message().to_string());
    }
}

impl Drop for TerminalDisplay {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
        if let Some(line) = self.view.summary() {
            eprintln!("stepwise: {line}");
        }
    }
}

/// Lines written to it are printed above the bar.
struct BarLines(indicatif::ProgressBar, Vec<u8>);

impl std::io::Write for BarLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(buf);
        while let Some(end) = self.1.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.1.drain(..=end).collect();
            self.0.println(String::from_utf8_lossy(&line[..end]));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn finish(end: RunEnd, out: &mut Output, command: &str) -> Result<Exit, Error> {
    let (exit, line) = match &end {
        RunEnd::Finished {
            outcome: Outcome::ReachedTarget,
            units_failed,
            ..
        } => reached_target(units_failed),
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
            ..
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

/// The target is reached: exit 0, or 5 when switching to the target itself left units failed
/// (failed units of an intermediate step are only reported: the target's switch followed).
fn reached_target(units_failed: &[engine::FailedUnits]) -> (Exit, String) {
    let mut line = "the target is reached".to_string();
    let names = |f: &engine::FailedUnits| {
        if f.units.is_empty() {
            "units not named".to_string()
        } else {
            f.units.join(", ")
        }
    };
    for f in units_failed.iter().filter(|f| !f.target) {
        line += &format!(
            "\nswitching to {} left units failed: {}",
            f.generation,
            names(f)
        );
    }
    match units_failed.iter().rev().find(|f| f.target) {
        Some(f) => {
            line += &format!(
                "\nbut switching to it left units failed: {} (`systemctl --failed`, `journalctl -u UNIT`); the run is over",
                names(f)
            );
            (Exit::UnitsFailed, line)
        }
        None => (Exit::Done, line),
    }
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

/// The seams of a real run: Nix, the system clock, the signal flag, the reserve file.
fn seams<'a>(nix: &'a NixCli, reserve: &'a mut ReserveFile, cli: &Cli) -> Seams<'a> {
    Seams {
        store: nix,
        system: nix,
        clock: &SystemClock,
        stop: &signals::STOP,
        reserve: Some(reserve),
        progress: progress_printer(cli.json, cli.quiet),
        checkpoint: None,
    }
}

/// `stepwise upgrade`.
pub fn upgrade(cli: &Cli, args: &UpgradeArgs, out: &mut Output) -> Result<Exit, Error> {
    let nix = nix(cli)?;
    let resolved = nix
        .resolve_target(&args.target.spec())
        .map_err(Error::from)
        .and_then(|drv| crate::cli::checks::target_is_system(&drv).map(|()| drv));
    let target_drv = match resolved {
        Ok(drv) => drv,
        Err(e) => return continue_before_refusing(cli, out, e),
    };
    let sys = &args.system;
    let req = UpgradeRequest {
        target: (&args.target.spec()).into(),
        target_drv,
        links: SystemLinks {
            profile: sys.profile.clone(),
            current_system: sys.current_system.clone(),
            booted_system: sys.booted_system.clone(),
        },
        action: args.action.into(),
        strategy: args.strategy.into(),
        on_failure: args.on_failure.into(),
        reboot: args.room.reboot.into(),
        reboot_command: args
            .reboot_command
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        non_vital: args.room.non_vital.clone(),
        together: args.room.together.clone(),
        reserve: args.room.reserve,
        reboot_window: args.reboot_window.map(Into::into),
        options: RunOptions {
            on_failed_units: args.on_failed_units.into(),
            keep_previous: args.room.keep_previous,
        },
        boot_dir: args.boot_dir.clone(),
        roots_dir: roots_dir_for(&cli.journal),
        probe_dir: fs::beside(&cli.journal, ".probe"),
        journal: cli.journal.clone(),
        legacy_masks: legacy_masks(&cli.journal),
    };
    let _system = lock_system(&sys.profile, &cli.journal)?;
    install_stop_handlers(&nix)?;
    let mut reserve = ReserveFile::for_run(&cli.journal, &nix);
    let mut journal = JournalFile::new(cli.journal.clone());
    let outcome = engine::upgrade(&req, &mut seams(&nix, &mut reserve, cli), &mut journal)?;
    match outcome {
        UpgradeOutcome::AlreadyThere { target_out } => {
            let line = format!("the system already runs the target {target_out}: nothing to do");
            announce_finished(out, "upgrade", &line);
            Ok(Exit::Done)
        }
        UpgradeOutcome::Ran(end) => finish(end, out, "upgrade"),
    }
}

/// The target did not evaluate (a full store, a broken configuration): a run left unfinished is
/// still continued, as `upgrade` always continues one first, so the hourly timer never leaves the
/// system mid-chain because of the new target. The evaluation's error is then the command's.
fn continue_before_refusing(cli: &Cli, out: &mut Output, e: Error) -> Result<Exit, Error> {
    if !engine::has_unfinished_run(&JournalFile::new(cli.journal.clone()))? {
        return Err(e);
    }
    eprintln!("stepwise: the target did not evaluate; continuing the unfinished run first");
    match continue_run(cli, out, false, false)? {
        Exit::Done => Err(e),
        stopped_or_failed => Ok(stopped_or_failed),
    }
}

fn continue_run(
    cli: &Cli,
    out: &mut Output,
    unwind: bool,
    accept_failed_units: bool,
) -> Result<Exit, Error> {
    let command = if unwind { "unwind" } else { "resume" };
    if !cli.journal.exists() {
        // The boot-time resume of every normal boot: not an error, and nothing is created.
        let line = format!(
            "no run is recorded at {}: nothing to {command}",
            cli.journal.display()
        );
        announce_finished(out, command, &line);
        return Ok(Exit::Done);
    }
    let nix = nix(cli)?;
    // A recorded profile that no longer resolves cannot be changed by the run either: the
    // engine says why (without the lock there is nothing of the system's to guard).
    let _system = match journaled_profile(&cli.journal)? {
        Some(p) if system_lock::canonical_profile(&p).is_ok() => {
            Some(lock_system(&p, &cli.journal)?)
        }
        _ => None,
    };
    install_stop_handlers(&nix)?;
    let mut reserve = ReserveFile::for_run(&cli.journal, &nix);
    let mut journal = JournalFile::new(cli.journal.clone());
    let req = ContinueRequest {
        roots_dir: roots_dir_for(&cli.journal),
        legacy_masks: legacy_masks(&cli.journal),
        accept_failed_units,
    };
    let mut seams = seams(&nix, &mut reserve, cli);
    let outcome = if unwind {
        engine::unwind(req, &mut seams, &mut journal)
    } else {
        engine::resume(req, &mut seams, &mut journal)
    }
    .map_err(|e| engine_error(&cli.journal.display().to_string(), e))?;
    match outcome {
        ContinueOutcome::Nothing(line) => {
            announce_finished(out, command, &line);
            Ok(Exit::Done)
        }
        ContinueOutcome::Ran(end) => finish(end, out, command),
    }
}

/// Format 1's side file of step masks, if it is there and reads (only format-1 runs need it).
fn legacy_masks(journal: &Path) -> Option<StepMasks> {
    StepMasks::load_legacy(&StepMasks::legacy_path_for(journal)).ok()
}

pub fn resume(cli: &Cli, out: &mut Output, args: &ResumeArgs) -> Result<Exit, Error> {
    continue_run(cli, out, false, args.accept_failed_units)
}

pub fn unwind(cli: &Cli, out: &mut Output) -> Result<Exit, Error> {
    continue_run(cli, out, true, false)
}

/// `stepwise status`: where the last run stands, from the journal alone (read-only, no lock).
pub fn status(cli: &Cli, out: &mut Output) -> Result<Exit, Error> {
    let report = if cli.journal.exists() {
        let j = Journal::open_read_only(&cli.journal)?;
        engine::status(
            &j,
            j.last_run().unwrap_or(0),
            roots_dir_for(&cli.journal),
            legacy_masks(&cli.journal).as_ref(),
        )
        .map_err(|e| engine_error(&cli.journal.display().to_string(), e))?
    } else {
        None
    };
    let Some(s) = report else {
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
    };
    let chain = match s.chain {
        Chain::Direct => "plain upgrade",
        Chain::Steps => "stepwise",
    };
    if out.is_json() {
        let v = serde_json::json!({
            "run": s.run,
            "state": s.state,
            "finished": s.finished,
            "strategy": chain,
            "profileAt": {"label": s.profile_at_label, "toplevel": s.profile_at.to_string()},
            "steps": s.steps,
            "target": s.target.to_string(),
            "g0": s.g0.to_string(),
            "failure": s.failure,
            "unwinding": s.unwinding,
        });
        out.document(&mut std::io::stdout().lock(), "status", &v)
            .map_err(crate::output::stdout_error)?;
    } else {
        let mut text = format!("run {}: {}\n", s.run, s.state);
        text += &format!("  strategy: {chain}, {} step(s)\n", s.steps);
        text += &format!("  profile at: {} ({})\n", s.profile_at_label, s.profile_at);
        text += &format!("  G0: {}\n", s.g0);
        text += &format!("  target: {}\n", s.target);
        if let Some(f) = &s.failure {
            text += &format!("  failure: {f}\n");
        }
        if !s.hint.is_empty() {
            text += &format!("  {}\n", s.hint);
        }
        crate::output::print(&text)?;
    }
    Ok(Exit::Done)
}
