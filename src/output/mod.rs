//! What stepwise tells the user: human lines (with progress bars on a terminal, plain lines under
//! journald) or `--json` event lines whose first line states the format version.

use std::io::{IsTerminal, Write};

use serde::Serialize;

use crate::error::{Error, Exit};

/// Version of the `--json` line format. Bump on any incompatible change.
pub const JSON_FORMAT_VERSION: u32 = 1;

pub struct Output {
    json: bool,
    header_written: bool,
    /// Whether stderr is a terminal (progress bars) or a log (plain lines).
    pub interactive: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Output {
            json,
            header_written: false,
            interactive: !json && std::io::stderr().is_terminal(),
        }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Write one JSON line (the version header first, once).
    pub fn json_line<T: Serialize>(
        &mut self,
        w: &mut impl Write,
        value: &T,
    ) -> std::io::Result<()> {
        if !self.header_written {
            writeln!(
                w,
                "{}",
                serde_json::json!({ "stepwise": "events", "version": JSON_FORMAT_VERSION })
            )?;
            self.header_written = true;
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
        eprintln!("stepwise: error: {e}");
    }
}
