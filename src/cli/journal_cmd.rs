//! `stepwise journal show | verify | export`: read-only; never takes the writer lock.

use std::io::Write;
use std::path::Path;

use crate::effects::journal::{self, render, Journal};
use crate::error::{Error, Exit};

use super::args::JournalCommand;

pub fn run(journal: &Path, json: bool, command: &JournalCommand) -> Result<Exit, Error> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let io = |e: std::io::Error| Error::Io {
        context: "writing to stdout".into(),
        source: e,
    };
    let missing = !journal.exists();
    match command {
        JournalCommand::Show { run } => {
            if missing {
                if json {
                    writeln!(out, "{}", render::json_header("journal-show")).map_err(io)?;
                }
                eprintln!("no runs recorded at {}", journal.display());
                return Ok(Exit::Done);
            }
            let j = Journal::open_read_only(journal)?;
            if let Some(r) = run {
                if !j.runs().iter().any(|(id, _)| id == r) {
                    return Err(Error::bad_input(
                        format!("no run {r} in {}", journal.display()),
                        format!(
                            "the runs recorded are {}; `stepwise journal show` lists them",
                            describe_ids(&j)
                        ),
                    ));
                }
            }
            if json {
                render::show_json(&mut out, &j, *run).map_err(io)?;
            } else {
                render::show(&mut out, &j, *run).map_err(io)?;
            }
            Ok(Exit::Done)
        }
        JournalCommand::Verify => {
            if missing {
                return Err(Error::bad_input(
                    format!("journal {}: no such file", journal.display()),
                    "nothing to verify there; pass --journal PATH (or STEPWISE_JOURNAL) for the journal to check",
                ));
            }
            let s = journal::verify_file(journal)?;
            if json {
                let body = serde_json::json!({
                    "journalFormat": s.format,
                    "journal": journal.display().to_string(),
                    "ok": true,
                    "runs": s.runs,
                    "records": s.records,
                    "head": s.head.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                });
                crate::output::write_document(&mut out, "journal-verify", &body).map_err(io)?;
            } else {
                writeln!(
                    out,
                    "journal {}: sound ({} run(s), {} record(s), hash chain intact)",
                    journal.display(),
                    s.runs,
                    s.records
                )
                .map_err(io)?;
            }
            Ok(Exit::Done)
        }
        JournalCommand::Export => {
            if missing {
                writeln!(out, "{}", render::json_header("journal-export")).map_err(io)?;
                eprintln!("no runs recorded at {}", journal.display());
                return Ok(Exit::Done);
            }
            let j = Journal::open_read_only(journal)?;
            render::export(&mut out, &j).map_err(io)?;
            Ok(Exit::Done)
        }
    }
}

fn describe_ids(j: &Journal) -> String {
    let ids: Vec<String> = j.runs().iter().map(|(id, _)| id.to_string()).collect();
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
    }
}
