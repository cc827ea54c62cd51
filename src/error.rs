//! Errors of each layer meet here and are mapped to the exit codes of the command contract, in
//! this one place.

use thiserror::Error;

use crate::effects::store::{RealiseError, StoreError};

/// The exit codes of the command contract (README, design §7).
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
}

/// A failure with what went wrong, where, and what the user can do.
#[derive(Debug, Error)]
pub enum Error {
    /// Bad flags, paths, targets or derivations: exit 2, nothing changed.
    #[error("{what}\n  hint: {hint}")]
    BadInput { what: String, hint: String },

    /// A capability of a later milestone: say so, change nothing.
    #[error("`{0}` is not available in this build of stepwise yet; nothing was changed")]
    NotYet(&'static str),

    /// The run stopped and can be resumed.
    #[error("{what}\n  `stepwise resume` continues the run")]
    Stopped { what: String },

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

    #[error(transparent)]
    Store(#[from] StoreError),

    #[error(transparent)]
    Realise(#[from] RealiseError),

    #[error("{context}: {source}")]
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
            Error::BadInput { .. } | Error::NotYet(_) => Exit::BadInput,
            Error::Stopped { .. } => Exit::Stopped,
            Error::RunFailed { .. } => Exit::RunFailed,
            Error::Journal { .. } => Exit::Journal,
            Error::Store(StoreError::Target(_)) => Exit::BadInput,
            // Anything else stopped us before the end; the journal says where, `resume` continues.
            Error::Store(_) | Error::Realise(_) | Error::Io { .. } => Exit::Stopped,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
