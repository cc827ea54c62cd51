//! Errors of each layer meet here and are mapped to the exit codes of the command contract, in
//! this one place.

use thiserror::Error;

use crate::effects::store::{RealiseError, StoreError};

/// The exit codes of the command contract (README.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Target reached, unwind finished, journal verified.
    Done = 0,
    /// The run failed and was unwound to G0 (or held, if asked).
    RunFailed = 1,
    /// Bad usage or bad input; nothing changed.
    BadInput = 2,
    /// Stopped before the end (signal, reboot pending, no room even stepwise): `resume` continues.
    Stopped = 3,
    /// Journal unusable: corrupt, locked by another run, newer format.
    Journal = 4,
    /// The target was reached, but switching to it left units failed (`switch-to-configuration`
    /// exit 4): the run is over, the units need looking at.
    UnitsFailed = 5,
}

/// A failure with what went wrong, where, and what the user can do.
#[derive(Debug, Error)]
pub enum Error {
    /// Bad flags, paths, targets or derivations: exit 2, nothing changed.
    #[error("{what}\n  hint: {hint}")]
    BadInput { what: String, hint: String },

    /// The run stopped and can be resumed.
    #[error("{what}\n  `stepwise resume` continues the run")]
    Stopped { what: String },

    /// No order of steps fits and nothing was changed: there is no run to resume. Says what is
    /// missing (`what`) and what would help (`help`, one way a line).
    #[error("{what}\nnothing was changed{help}", help = no_room_help(help))]
    NoRoom { what: String, help: Vec<String> },

    /// The run failed and was unwound or held.
    #[error("{what}")]
    RunFailed { what: String },

    /// The journal cannot be used.
    #[error("journal {path}: {what}\n  hint: {hint}")]
    Journal {
        path: String,
        what: String,
        hint: String,
    },

    #[error("{0}{hint}", hint = store_hint(.0))]
    Store(#[from] StoreError),

    #[error("{0}{hint}", hint = realise_hint(.0))]
    Realise(#[from] RealiseError),

    #[error("{context}: {source}{hint}", hint = io_hint(source))]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl Error {
    pub fn bad_input(what: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::BadInput {
            what: what.into(),
            hint: hint.into(),
        }
    }

    pub fn exit(&self) -> Exit {
        match self {
            Error::BadInput { .. } => Exit::BadInput,
            Error::Stopped { .. } | Error::NoRoom { .. } => Exit::Stopped,
            Error::RunFailed { .. } => Exit::RunFailed,
            Error::Journal { .. } => Exit::Journal,
            Error::Store(StoreError::Target(_)) => Exit::BadInput,
            // Anything else stopped us before the end; the journal says where, `resume` continues.
            Error::Store(_) | Error::Realise(_) | Error::Io { .. } => Exit::Stopped,
        }
    }
}

fn no_room_help(help: &[String]) -> String {
    help.iter().map(|h| format!("\n  hint: {h}")).collect()
}

/// What the user can do about a store error (the message says what and where). Target errors
/// carry their own hint.
fn store_hint(e: &StoreError) -> String {
    let hint = match e {
        StoreError::Target(_) => return String::new(),
        StoreError::Command { .. } => {
            "Nix's message says why; fix its cause and run stepwise again (an interrupted run continues with `stepwise resume`)"
        }
        StoreError::Spawn { .. } => {
            "stepwise runs nix-store, nix-env, nix-instantiate and nix: check that Nix is installed and on PATH"
        }
        StoreError::Output { .. } => {
            "this Nix answered in a shape stepwise does not know: please report it with the output of `nix --version`"
        }
        StoreError::Refused(_) => "stepwise stopped rather than risk the system; `stepwise status` shows where the run stands",
        StoreError::OutOfSpace(_) => OUT_OF_SPACE_HINT,
        StoreError::Interrupted { .. } => {
            "nothing failed: the run was stopped; `stepwise resume` redoes what was interrupted"
        }
        StoreError::Io { source, .. } => return io_hint(source),
        StoreError::Injected(_) => return String::new(),
    };
    format!("\n  hint: {hint}")
}

const OUT_OF_SPACE_HINT: &str = "free space on the store's filesystem (`nix-collect-garbage -d` removes old generations), then `stepwise resume`";

fn realise_hint(e: &RealiseError) -> String {
    match e {
        RealiseError::OutOfSpace { .. } => format!("\n  hint: {OUT_OF_SPACE_HINT}"),
        RealiseError::BuildFailed { .. } => {
            "\n  hint: the build log says why; `stepwise unwind` walks back to the generation the run started from".into()
        }
        RealiseError::Other(e) => store_hint(e),
    }
}

fn io_hint(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let hint = match e.kind() {
        ErrorKind::PermissionDenied => "stepwise changes the system profile and the store: run it as root",
        ErrorKind::NotFound => "check the path (pass --journal, --profile, --current-system or --booted-system if yours differ)",
        ErrorKind::StorageFull => OUT_OF_SPACE_HINT,
        _ => return String::new(),
    };
    format!("\n  hint: {hint}")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> std::io::Error {
        std::io::Error::from(kind)
    }

    /// Every error a user can meet says what to do, not only what went wrong.
    #[test]
    fn every_error_says_what_to_do() {
        let cases = [
            Error::bad_input("x", "do y"),
            Error::Stopped { what: "x".into() },
            Error::Journal {
                path: "/j".into(),
                what: "x".into(),
                hint: "do y".into(),
            },
            Error::Store(StoreError::Command {
                command: "nix-store --realise".into(),
                status: "exit 1".into(),
                stderr_tail: "error: x".into(),
            }),
            Error::Store(StoreError::Spawn {
                command: "nix-store".into(),
                why: "No such file or directory".into(),
            }),
            Error::Store(StoreError::Output {
                command: "nix path-info".into(),
                why: "x".into(),
            }),
            Error::Store(StoreError::Refused("x".into())),
            Error::Store(StoreError::OutOfSpace("x".into())),
            Error::Store(StoreError::Io {
                path: "/p".into(),
                source: io(std::io::ErrorKind::PermissionDenied),
            }),
            Error::Realise(RealiseError::OutOfSpace {
                message: "x".into(),
            }),
            Error::Io {
                context: "reading /p".into(),
                source: io(std::io::ErrorKind::NotFound),
            },
        ];
        for e in cases {
            let shown = e.to_string();
            assert!(
                shown.contains("hint:")
                    || shown.contains("stepwise resume")
                    || shown.contains("nothing was changed"),
                "{shown:?} does not say what to do"
            );
        }
    }

    #[test]
    fn exit_codes_of_the_contract() {
        assert_eq!(Error::bad_input("x", "y").exit() as u8, 2);
        assert_eq!(Error::Store(StoreError::Target("x".into())).exit() as u8, 2);
        assert_eq!(Error::Stopped { what: "x".into() }.exit() as u8, 3);
        let no_room = Error::NoRoom {
            what: "no order of steps fits".into(),
            help: vec!["--non-vital big-b makes the upgrade fit".into()],
        };
        assert_eq!(no_room.exit() as u8, 3);
        let shown = no_room.to_string();
        assert!(shown.contains("nothing was changed") && shown.contains("hint: --non-vital big-b"));
        assert!(!shown.contains("resume"), "no run to resume: {shown}");
        assert_eq!(Error::RunFailed { what: "x".into() }.exit() as u8, 1);
        let journal = Error::Journal {
            path: "/j".into(),
            what: "locked".into(),
            hint: "wait".into(),
        };
        assert_eq!(journal.exit() as u8, 4);
    }
}
