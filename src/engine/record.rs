//! The engine's journal records and how they replay into the transition machine.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::run_plan::RunHeader;
use crate::drv::StorePath;
use crate::transition::{Chain, Effect, Event, FailureKind, Outcome};

/// What an intent fixes before its effect runs, so that a retry does the same thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum IntentDetail {
    #[default]
    None,
    /// The exact paths a collect deletes (each rechecked against the live set before deletion).
    Paths(Vec<StorePath>),
    /// The profile generations a drop deletes.
    Generations(Vec<u64>),
    /// The root a realise registers or an unpin removes.
    Root(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    RunStarted(Box<RunHeader>),
    StrategyChosen {
        chain: Chain,
        /// Why (the estimate against the free space), for people.
        why: String,
    },
    Intent {
        effect: Effect,
        detail: IntentDetail,
    },
    Done {
        effect: Effect,
        /// "probed" when resume found the effect had happened; sizes freed, etc.
        note: String,
    },
    Failed {
        effect: Effect,
        kind: FailureKind,
        /// What failed: the package, the log tail.
        message: String,
    },
    /// The plain upgrade ran out of space; the run falls back to steps (informative: the Failed
    /// record drives the machine).
    PlainAttemptFailed { message: String },
    UnwindStarted,
    /// The run stopped (signal, a failure only a retry fixes); `resume` continues.
    Stopped { why: String },
    RunFinished { outcome: Outcome },
}

impl Record {
    /// The machine event this record stands for, if any.
    pub fn event(&self) -> Option<Event> {
        match self {
            Record::StrategyChosen { chain, .. } => Some(Event::Begin { chain: *chain }),
            Record::Intent { effect, .. } => Some(Event::Intent(*effect)),
            Record::Done { effect, .. } => Some(Event::Done(*effect)),
            Record::Failed { effect, kind, .. } => Some(Event::Failed(*effect, *kind)),
            Record::UnwindStarted => Some(Event::UnwindRequested),
            Record::RunStarted(_)
            | Record::PlainAttemptFailed { .. }
            | Record::Stopped { .. }
            | Record::RunFinished { .. } => None,
        }
    }
}
