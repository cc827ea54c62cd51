//! What stepwise tells the user: human lines (with progress bars on a terminal, plain lines under
//! journald) or `--json` event lines whose first line states the format version.

pub mod log_lines;

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::error::{Error, Exit};

/// Version of the `--json` line format. Bump on any incompatible change.
pub const JSON_FORMAT_VERSION: u32 = 1;

/// Whether this process has written the `--json` version header. Every JSON line goes to stdout,
/// one stream per process, so the header is written once per process whichever `Output` writes
/// first (a command's progress printer and its final error event share it).
static HEADER_WRITTEN: AtomicBool = AtomicBool::new(false);

pub struct Output {
    json: bool,
    /// Whether stderr is a terminal (progress bars) or a log (plain lines).
    pub interactive: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Output {
            json,
            interactive: !json && std::io::stderr().is_terminal(),
        }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Write one JSON line to stdout, `w` (the version header first, once per process).
    pub fn json_line<T: Serialize>(
        &mut self,
        w: &mut impl Write,
        value: &T,
    ) -> std::io::Result<()> {
        if !HEADER_WRITTEN.swap(true, Ordering::SeqCst) {
            writeln!(
                w,
                "{}",
                serde_json::json!({ "stepwise": "events", "version": JSON_FORMAT_VERSION })
            )?;
        }
        serde_json::to_writer(&mut *w, value)?;
        writeln!(w)
    }

    /// A usage error clap found: the error event only (clap prints its own message on stderr).
    pub fn usage_error(&mut self, message: &str, exit: Exit) {
        if self.json {
            let line = serde_json::json!({
                "event": "error",
                "exit": exit as u8,
                "message": message,
            });
            let _ = self.json_line(&mut std::io::stdout().lock(), &line);
        }
    }

    pub fn error(&mut self, e: &Error) {
        if self.json {
            let line = serde_json::json!({
                "event": "error",
                "exit": e.exit() as u8,
                "message": e.to_string(),
            });
            let _ = self.json_line(&mut std::io::stdout().lock(), &line);
        }
        // A run that stopped to be resumed (a reboot, a signal) did not fail: say so.
        let kind = match e {
            Error::Stopped { .. } => "stopped",
            _ => "error",
        };
        eprintln!("stepwise: {kind}: {e}");
    }
}
