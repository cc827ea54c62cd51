//! The one error type of the test bed: a command that failed, or an I/O step that did.

use std::fmt;
use std::process::{Command, Output};

/// What went wrong in the bed, with the failing command's output when there is one.
#[derive(Debug, Clone)]
pub struct BedError {
    /// What was being done, e.g. `nix-store --realise /…-nixos-system-….drv`.
    pub what: String,
    /// Exit code of the command (None: killed by a signal, or not a command).
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl BedError {
    pub fn msg(what: impl Into<String>) -> BedError {
        BedError {
            what: what.into(),
            status: None,
            stdout: String::new(),
            stderr: String::new(),
        }
    }

    pub fn io(what: impl Into<String>, e: std::io::Error) -> BedError {
        BedError {
            what: what.into(),
            status: None,
            stdout: String::new(),
            stderr: e.to_string(),
        }
    }

    /// Whether the failure was the disk running full (the kernel's or SQLite's wording).
    pub fn is_out_of_space(&self) -> bool {
        is_out_of_space_message(&self.stderr) || is_out_of_space_message(&self.stdout)
    }
}

/// Whether `text` carries one of the messages Nix prints when the store's disk is full.
pub fn is_out_of_space_message(text: &str) -> bool {
    text.contains("No space left on device") || text.contains("database or disk is full")
}

impl fmt::Display for BedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.what)?;
        if let Some(code) = self.status {
            write!(f, " (exit {code})")?;
        }
        if !self.stderr.trim().is_empty() {
            write!(f, ":\n{}", self.stderr.trim_end())?;
        }
        Ok(())
    }
}

impl std::error::Error for BedError {}

pub type Result<T, E = BedError> = std::result::Result<T, E>;

/// Describes a command for messages: program and arguments.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion; a non-zero exit becomes a `BedError` carrying its output.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let what = describe(cmd);
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| BedError::io(format!("starting {what}"), e))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(BedError {
            what,
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Runs `cmd` and returns its stdout, trimmed.
pub fn run_stdout(cmd: &mut Command) -> Result<String> {
    let out = run(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
