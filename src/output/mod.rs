//! What stepwise tells the user: human lines (with progress bars on a terminal, plain lines under
//! journald) or `--json` output.
//!
//! The one `--json` rule, whatever the command:
//! - a one-shot command (`plan`, `status`, `drv inspect`, `journal verify`) prints exactly one JSON
//!   document, on one line: `{"stepwise": KIND, "version": N, ...}`, so `json.load` reads it;
//!   when it fails, that document is the error: `{"stepwise": "error", "version": N, "event":
//!   "error", "exit": CODE, "message": ...}`. A usage error (no command ran) is that document too.
//! - a streaming command (`upgrade`, `resume`, `unwind`, `journal show`, `journal export`) prints
//!   JSON lines; the first carries `"version"` (the header), every later line is an event (or a
//!   record), and a failure ends the stream with an `"event": "error"` line.

pub mod log_lines;
pub mod progress;

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

/// How a command's `--json` output is framed (see the module's rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One-shot: exactly one versioned document.
    Document,
    /// Streaming: JSON lines, the first one the versioned header.
    Lines,
}

/// The envelope of a one-shot document: kind and version first, then the body's own fields.
#[derive(Serialize)]
struct Document<'a, T: Serialize> {
    stepwise: &'a str,
    version: u32,
    #[serde(flatten)]
    body: &'a T,
}

/// Write `body` (a struct or map) as the one versioned document of a one-shot command, `kind`
/// naming what it is (`"plan"`, `"status"`, ...).
pub fn write_document<T: Serialize>(
    w: &mut (impl Write + ?Sized),
    kind: &str,
    body: &T,
) -> std::io::Result<()> {
    let doc = Document {
        stepwise: kind,
        version: JSON_FORMAT_VERSION,
        body,
    };
    serde_json::to_writer(&mut *w, &doc)?;
    writeln!(w)?;
    w.flush()
}

/// An error writing a command's output to stdout.
pub fn stdout_error(source: std::io::Error) -> Error {
    Error::Io {
        context: "writing to stdout".into(),
        source,
    }
}

/// Whether `e` is stdout gone: its reader closed the pipe (`stepwise journal show | head -1`).
/// Nobody is left to read the rest, so a command that only reads ends quietly and successfully.
pub fn is_stdout_closed(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Print human text on stdout, as an error (not a panic, as `println!` would) if that fails.
pub fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

pub struct Output {
    json: bool,
    framing: Framing,
    /// Whether stderr is a terminal (progress bars) or a log (plain lines).
    pub interactive: bool,
}

impl Output {
    /// Output of a streaming command.
    pub fn new(json: bool) -> Self {
        Self::framed(json, Framing::Lines)
    }

    pub fn framed(json: bool, framing: Framing) -> Self {
        Output {
            json,
            framing,
            interactive: !json && std::io::stderr().is_terminal(),
        }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// The one document of a one-shot command (see [`write_document`]).
    pub fn document<T: Serialize>(
        &mut self,
        w: &mut impl Write,
        kind: &str,
        body: &T,
    ) -> std::io::Result<()> {
        debug_assert_eq!(self.framing, Framing::Document);
        write_document(w, kind, body)
    }

    /// Write one JSON line of a stream to stdout, `w` (the version header first, once per process).
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

    /// A usage error clap found: one error document, since no command ran (clap prints its own
    /// message on stderr).
    pub fn usage_error(message: &str, exit: Exit) {
        Output::framed(true, Framing::Document).json_error(message, exit);
    }

    /// The error as JSON, framed as this command frames its output.
    fn json_error(&mut self, message: &str, exit: Exit) {
        let event = serde_json::json!({
            "event": "error",
            "exit": exit as u8,
            "message": message,
        });
        let mut stdout = std::io::stdout().lock();
        let _ = match self.framing {
            Framing::Document => write_document(&mut stdout, "error", &event),
            Framing::Lines => self.json_line(&mut stdout, &event),
        };
    }

    pub fn error(&mut self, e: &Error) {
        if self.json {
            self.json_error(&e.to_string(), e.exit());
        }
        // A run that stopped to be resumed (a reboot, a signal) did not fail: say so.
        let kind = match e {
            Error::Stopped { .. } => "stopped",
            _ => "error",
        };
        eprintln!("stepwise: {kind}: {e}");
    }
}
