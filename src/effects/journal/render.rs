//! `journal show` (a readable audit, or JSON) and `journal export` (JSON lines), over `impl Write`.

use crate::drv::store_path::hex;
use std::io::{self, Write};

use serde_json::{json, Value};

use super::envelope::Stored;
use super::record::{Outcome, Record, RunHeader, RunId, Target};
use super::transition::human_bytes;
use super::{open_intents, Journal, BASE_FORMAT};
use crate::output::JSON_FORMAT_VERSION;

/// `1700000000123` → `2023-11-14 22:13:20 UTC`.
pub fn utc(ms: u64) -> String {
    let (date, time) = civil(ms);
    format!("{date} {} UTC", &time[..8])
}

/// `1700000000123` → `2023-11-14T22:13:20.123Z`.
pub fn rfc3339(ms: u64) -> String {
    let (date, time) = civil(ms);
    format!("{date}T{time}Z")
}

/// (`YYYY-MM-DD`, `HH:MM:SS.mmm`) of a unix time in ms (Howard Hinnant's days-to-civil).
fn civil(ms: u64) -> (String, String) {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            ms % 1000
        ),
    )
}

/// `83_400` → `1m 23.4s`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h {:02}m {:02}s", s / 3600, s / 60 % 60, s % 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{}.{}s", s, ms % 1000 / 100)
    }
}

/// What one run amounted to, for `show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub run: RunId,
    pub started_ms: u64,
    pub last_ms: u64,
    pub outcome: Option<Outcome>,
    pub added: u64,
    pub freed: u64,
    pub transitions_done: u64,
    pub transitions_failed: u64,
    pub open_intents: u64,
}

pub fn summarise(run: RunId, records: &[Stored]) -> RunSummary {
    let mut s = RunSummary {
        run,
        started_ms: records.first().map_or(0, |r| r.at_ms),
        last_ms: records.last().map_or(0, |r| r.at_ms),
        outcome: None,
        added: 0,
        freed: 0,
        transitions_done: 0,
        transitions_failed: 0,
        open_intents: open_intents(records).len() as u64,
    };
    for r in records {
        match &r.record {
            Record::Done { added, freed, .. } => {
                s.transitions_done += 1;
                s.added += added.unwrap_or(0);
                s.freed += freed.unwrap_or(0);
            }
            Record::Failed { .. } => s.transitions_failed += 1,
            Record::RunFinished { outcome } => s.outcome = Some(outcome.clone()),
            _ => {}
        }
    }
    s
}

fn describe_target(t: &Target) -> String {
    match t {
        Target::Drv { path } => format!("--target {}", path.display()),
        Target::Flake { reference, host } => match host {
            Some(h) => format!("--flake {reference}#{h}"),
            None => format!("--flake {reference}"),
        },
        Target::File { file, attr } => match attr {
            Some(a) => format!("--file {} --attr {a}", file.display()),
            None => format!("--file {}", file.display()),
        },
    }
}

fn describe_outcome(o: &Outcome) -> String {
    match o {
        Outcome::ReachedTarget => "reached the target".into(),
        Outcome::UnwoundToG0 => "failed, unwound to G0".into(),
        Outcome::Held { step } => format!("failed, held at step {step}"),
        Outcome::Abandoned { why } => format!("abandoned: {why}"),
    }
}

fn describe_record(r: &Record) -> String {
    match r {
        Record::RunStarted(_) => "run started".into(),
        Record::StrategyChosen { strategy, why } => {
            let s = match strategy {
                super::ChosenStrategy::Direct => "plain upgrade",
                super::ChosenStrategy::Stepwise => "stepwise",
            };
            format!("strategy: {s} ({why})")
        }
        Record::PlainAttemptFailed { why } => format!("plain upgrade failed: {why}"),
        Record::UnwindStarted { why } => format!("unwinding to G0: {why}"),
        Record::Intent { transition } => transition.describe(),
        Record::Done { intent, .. } => format!("done (intent {intent})"),
        Record::Failed { intent, message } => format!("failed (intent {intent}): {message}"),
        Record::RunFinished { outcome } => format!("run finished: {}", describe_outcome(outcome)),
        Record::SpaceRanOut {
            step,
            estimated,
            free,
        } => format!(
            "step {step} ran out of space: estimated to add {}, had {} free",
            human_bytes(*estimated),
            human_bytes(*free)
        ),
        Record::Replanned {
            at,
            cost_ppm,
            steps,
        } => format!(
            "re-planned after step {at}: {} step(s) to the target ({}), estimates × {:.2}",
            steps.len(),
            steps
                .iter()
                .map(|s| if s.units.is_empty() {
                    format!("{}", s.index)
                } else {
                    format!("{}: {}", s.index, s.units.join(", "))
                })
                .collect::<Vec<_>>()
                .join("; "),
            (*cost_ppm).max(1_000_000) as f64 / 1e6
        ),
        Record::Resumed { pid, command } => {
            format!("taken over by `stepwise {command}` (pid {pid})")
        }
        Record::BootedBefore { toplevel } => {
            format!("no re-plan fits: rebooting to make room; {toplevel} was booted until then")
        }
        Record::Activated {
            intent,
            units_failed,
            reboot_required: true,
        } if units_failed.is_empty() => {
            format!("activated (intent {intent}): takes effect after a reboot")
        }
        Record::Activated {
            intent,
            units_failed,
            ..
        } => format!(
            "activated (intent {intent}) with failed units: {}",
            if units_failed.is_empty() {
                "not named".to_string()
            } else {
                units_failed.join(", ")
            }
        ),
    }
}

fn space(added: Option<u64>, freed: Option<u64>) -> String {
    let mut parts = Vec::new();
    if let Some(a) = added {
        parts.push(format!("added {}", human_bytes(a)));
    }
    if let Some(f) = freed {
        parts.push(format!("freed {}", human_bytes(f)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(", {}", parts.join(", "))
    }
}

fn write_header(w: &mut impl Write, h: &RunHeader) -> io::Result<()> {
    writeln!(w, "  store     {}", h.store_dir)?;
    writeln!(
        w,
        "  target    {} → {}",
        describe_target(&h.target),
        h.target_drv
    )?;
    writeln!(
        w,
        "  from G0   {}{}",
        h.g0_toplevel,
        match &h.g0_drv {
            Some(d) => format!(" (deriver {d})"),
            None => " (no valid deriver)".into(),
        }
    )?;
    writeln!(
        w,
        "  system    profile {}, current {}, booted {}",
        h.profile.display(),
        h.current_system.display(),
        h.booted_system.display()
    )?;
    let kebab = |v: &dyn erased::Kebab| v.kebab();
    writeln!(
        w,
        "  options   action {}, strategy {}, on failure {}, reboot {} ({}), reserve {}",
        h.action.as_str(),
        kebab(&h.strategy),
        kebab(&h.on_failure),
        kebab(&h.reboot),
        h.reboot_command.join(" "),
        human_bytes(h.reserve)
    )?;
    if !h.options.is_default() {
        writeln!(
            w,
            "  options   keep previous {}, on failed units {}",
            if h.options.keep_previous { "yes" } else { "no" },
            h.options.on_failed_units.as_str()
        )?;
    }
    if !h.non_vital.is_empty() {
        writeln!(w, "  non-vital {}", h.non_vital.join(", "))?;
    }
    for g in &h.together {
        writeln!(w, "  together  {}", g.join(", "))?;
    }
    if h.plan.is_empty() {
        writeln!(w, "  plan      no steps")?;
    } else {
        writeln!(w, "  plan      {} step(s)", h.plan.len())?;
        for s in &h.plan {
            writeln!(
                w,
                "    {:>3}  {}  upgrades {}  (adds {}, frees {})",
                s.index,
                s.toplevel_out,
                if s.units.is_empty() {
                    "nothing".to_string()
                } else {
                    s.units.join(", ")
                },
                human_bytes(s.adds),
                human_bytes(s.frees)
            )?;
        }
    }
    Ok(())
}

/// Serde's kebab-case name of a unit enum value (`on-failure unwind` → `unwind`).
mod erased {
    pub trait Kebab {
        fn kebab(&self) -> String;
    }
    impl<T: serde::Serialize> Kebab for T {
        fn kebab(&self) -> String {
            match serde_json::to_value(self) {
                Ok(serde_json::Value::String(s)) => s,
                other => format!("{other:?}"),
            }
        }
    }
}

/// The readable audit of `runs` (all when `only` is None).
pub fn show(w: &mut impl Write, journal: &Journal, only: Option<RunId>) -> io::Result<()> {
    let mut first = true;
    for (run, header) in journal.runs() {
        if only.is_some_and(|o| o != run) {
            continue;
        }
        if !first {
            writeln!(w)?;
        }
        first = false;
        let records = journal.records(run);
        let s = summarise(run, records);
        writeln!(
            w,
            "run {run}: started {} by stepwise {} (pid {})",
            utc(s.started_ms),
            header.stepwise_version,
            header.pid
        )?;
        write_header(w, header)?;
        writeln!(w, "  records")?;
        let open = open_intents(records);
        for r in records.iter().skip(1) {
            match &r.record {
                Record::Done { .. } | Record::Failed { .. } => continue,
                Record::Intent { transition } => {
                    let close = records.iter().find(|c| {
                        matches!(&c.record, Record::Done { intent, .. } | Record::Failed { intent, .. } if *intent == r.seq)
                    });
                    let result = match close {
                        Some(c) => match &c.record {
                            Record::Done { added, freed, .. } => format!(
                                "done in {}{}",
                                duration(c.at_ms.saturating_sub(r.at_ms)),
                                space(*added, *freed)
                            ),
                            Record::Failed { message, .. } => format!(
                                "FAILED after {}: {message}",
                                duration(c.at_ms.saturating_sub(r.at_ms))
                            ),
                            _ => unreachable!(),
                        },
                        None if open.iter().any(|o| o.seq == r.seq) => {
                            "NO OUTCOME RECORDED: interrupted; the effect may or may not have happened".into()
                        }
                        None => String::new(),
                    };
                    writeln!(
                        w,
                        "    {:>4}  {}  {}: {result}",
                        r.seq,
                        &civil(r.at_ms).1,
                        transition.describe()
                    )?;
                }
                other => {
                    writeln!(
                        w,
                        "    {:>4}  {}  {}",
                        r.seq,
                        &civil(r.at_ms).1,
                        describe_record(other)
                    )?;
                }
            }
        }
        writeln!(
            w,
            "  outcome   {}",
            match &s.outcome {
                Some(o) => describe_outcome(o),
                None =>
                    "unfinished: `stepwise resume` continues it, `stepwise unwind` walks it back"
                        .into(),
            }
        )?;
        writeln!(
            w,
            "  totals    {} transition(s) done, {} failed, {} interrupted; added {}, freed {}; {} from first to last record",
            s.transitions_done,
            s.transitions_failed,
            s.open_intents,
            human_bytes(s.added),
            human_bytes(s.freed),
            duration(s.last_ms.saturating_sub(s.started_ms))
        )?;
    }
    if first {
        match only {
            Some(r) => writeln!(w, "no run {r} in {}", journal.path().display())?,
            None => writeln!(w, "no runs recorded at {}", journal.path().display())?,
        }
    }
    Ok(())
}

/// The first line of `show --json` and `export` where there is no journal: the format of a
/// journal this build would create.
pub fn json_header(kind: &str) -> Value {
    json_header_at(kind, BASE_FORMAT)
}

/// The first line of `show --json` and `export` of `journal`: the format it is in.
pub fn json_header_at(kind: &str, journal_format: u16) -> Value {
    json!({ "stepwise": kind, "version": JSON_FORMAT_VERSION, "journalFormat": journal_format })
}

/// One record as JSON: position, time, kind, link, and the record's fields under `data`.
pub fn record_json(r: &Stored) -> Value {
    let data = match serde_json::to_value(&r.record) {
        // Externally tagged: {"kind": fields}.
        Ok(Value::Object(m)) if m.len() == 1 => {
            m.into_iter().next().map(|(_, v)| v).unwrap_or(Value::Null)
        }
        Ok(other) => other,
        Err(e) => json!({ "error": e.to_string() }),
    };
    json!({
        "seq": r.seq,
        "run": r.run,
        "atMs": r.at_ms,
        "at": rfc3339(r.at_ms),
        "kind": r.record.kind_name(),
        "link": hex(&r.link),
        "data": data,
    })
}

/// `journal export`: the header line, then one record per line, oldest first.
pub fn export(w: &mut impl Write, journal: &Journal) -> io::Result<()> {
    writeln!(w, "{}", json_header_at("journal-export", journal.format()))?;
    for r in journal.all_records() {
        writeln!(w, "{}", record_json(r))?;
    }
    Ok(())
}

/// `journal show --json`: the header line, then one line per run with its summary and records.
pub fn show_json(w: &mut impl Write, journal: &Journal, only: Option<RunId>) -> io::Result<()> {
    writeln!(w, "{}", json_header_at("journal-show", journal.format()))?;
    for (run, _) in journal.runs() {
        if only.is_some_and(|o| o != run) {
            continue;
        }
        let records = journal.records(run);
        let s = summarise(run, records);
        let line = json!({
            "run": run,
            "startedAtMs": s.started_ms,
            "lastAtMs": s.last_ms,
            "outcome": s.outcome,
            "added": s.added,
            "freed": s.freed,
            "transitionsDone": s.transitions_done,
            "transitionsFailed": s.transitions_failed,
            "openIntents": s.open_intents,
            "records": records.iter().map(record_json).collect::<Vec<_>>(),
        });
        writeln!(w, "{line}")?;
    }
    Ok(())
}
