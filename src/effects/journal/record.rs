//! What the journal records: the run header and the run-level records, and their kind tags.
//!
//! Part of the on-disk format (`journal-format.md`, format 1): each record's payload is the
//! postcard encoding of its fields in declaration order. Never reorder or insert fields or
//! variants; a change is a new format version with its own decoder kept forever.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cli::args::{OnFailure, RebootPolicy, Strategy};
use crate::drv::StorePath;
use crate::effects::store::{Action, TargetSpec};

use super::transition::Transition;

/// A run's number: 1 for the first run recorded in a journal, then 2, 3, ….
pub type RunId = u64;
/// A record's position in the journal: 1, 2, 3, … over all runs, without gaps.
pub type Seq = u64;

/// Every parameter of a run, written once as the payload of its `RunStarted` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunHeader {
    /// `CARGO_PKG_VERSION` of the stepwise that started the run.
    pub stepwise_version: String,
    /// Process id of the run's first process.
    pub pid: u32,
    /// The store directory the run's store paths live in (`/nix/store`).
    pub store_dir: String,
    /// What the user asked for.
    pub target: Target,
    /// The target resolved to its toplevel `.drv`.
    pub target_drv: StorePath,
    pub profile: PathBuf,
    pub current_system: PathBuf,
    pub booted_system: PathBuf,
    /// How the target is activated at the end.
    pub action: Action,
    pub strategy: Strategy,
    pub on_failure: OnFailure,
    pub reboot: RebootPolicy,
    /// The reboot command's argument vector.
    pub reboot_command: Vec<String>,
    pub non_vital: Vec<String>,
    /// Groups of package names that move in the same step.
    pub together: Vec<Vec<String>>,
    /// Bytes of the reserve file.
    pub reserve: u64,
    /// G0: the toplevel running when the run started, and its deriver if valid.
    pub g0_toplevel: StorePath,
    pub g0_drv: Option<StorePath>,
    /// The steps G1 … Gn = T (empty for a plain upgrade).
    pub plan: Vec<PlannedStep>,
}

/// One generation of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStep {
    /// 1 … n; the last is the target.
    pub index: u32,
    pub toplevel_drv: StorePath,
    pub toplevel_out: StorePath,
    /// The units (package names) this step upgrades.
    pub units: Vec<String>,
    /// Bytes the step is expected to add to the store, and to free after it.
    pub adds: u64,
    pub frees: u64,
}

/// The target as the user gave it (mirrors `store::TargetSpec`, with a stable encoding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Target {
    Drv {
        path: PathBuf,
    },
    Flake {
        reference: String,
        host: Option<String>,
    },
    File {
        file: PathBuf,
        attr: Option<String>,
    },
}

impl From<&TargetSpec> for Target {
    fn from(t: &TargetSpec) -> Self {
        match t {
            TargetSpec::Drv(path) => Target::Drv { path: path.clone() },
            TargetSpec::Flake { reference, host } => Target::Flake {
                reference: reference.clone(),
                host: host.clone(),
            },
            TargetSpec::File { file, attr } => Target::File {
                file: file.clone(),
                attr: attr.clone(),
            },
        }
    }
}

impl From<&Target> for TargetSpec {
    fn from(t: &Target) -> Self {
        match t {
            Target::Drv { path } => TargetSpec::Drv(path.clone()),
            Target::Flake { reference, host } => TargetSpec::Flake {
                reference: reference.clone(),
                host: host.clone(),
            },
            Target::File { file, attr } => TargetSpec::File {
                file: file.clone(),
                attr: attr.clone(),
            },
        }
    }
}

/// The way a run went: the plain upgrade or the chain of steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChosenStrategy {
    Direct,
    Stepwise,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Outcome {
    /// The target is the running (or, for `boot`, the default) system.
    ReachedTarget,
    /// The run failed and walked back to G0.
    UnwoundToG0,
    /// The run failed and stayed at the last good step (`--on-failure hold`).
    Held { step: u32 },
    /// The run was given up without reaching either end (`why` says what to do).
    Abandoned { why: String },
}

/// One entry of the journal. The kind tag in the envelope names the variant
/// (`Record::kind`); the payload is the postcard encoding of the variant's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Record {
    /// Kind 1: the first record of every run.
    RunStarted(Box<RunHeader>),
    /// Kind 2: the way the run goes, and why.
    StrategyChosen {
        strategy: ChosenStrategy,
        why: String,
    },
    /// Kind 3: the plain upgrade did not work (out of space, typically); steps follow.
    PlainAttemptFailed { why: String },
    /// Kind 4: the run turns back towards G0.
    UnwindStarted { why: String },
    /// Kind 5: an effect is about to run. Written durably before it starts.
    Intent { transition: Transition },
    /// Kind 6: the effect of the intent at `intent` happened. Space in bytes where known.
    Done {
        intent: Seq,
        added: Option<u64>,
        freed: Option<u64>,
    },
    /// Kind 7: the effect of the intent at `intent` failed.
    Failed { intent: Seq, message: String },
    /// Kind 8: the run is over.
    RunFinished { outcome: Outcome },
    /// Kind 9: a later process (`resume`, `unwind`, a boot-time resume) took the run over.
    Resumed { pid: u32, command: String },
}

/// The highest kind tag of format 1.
pub const MAX_KIND_V1: u16 = 9;

impl Record {
    /// The kind tag written in the envelope.
    pub fn kind(&self) -> u16 {
        match self {
            Record::RunStarted(_) => 1,
            Record::StrategyChosen { .. } => 2,
            Record::PlainAttemptFailed { .. } => 3,
            Record::UnwindStarted { .. } => 4,
            Record::Intent { .. } => 5,
            Record::Done { .. } => 6,
            Record::Failed { .. } => 7,
            Record::RunFinished { .. } => 8,
            Record::Resumed { .. } => 9,
        }
    }

    /// The stable camelCase name of the kind, as in `journal export`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Record::RunStarted(_) => "runStarted",
            Record::StrategyChosen { .. } => "strategyChosen",
            Record::PlainAttemptFailed { .. } => "plainAttemptFailed",
            Record::UnwindStarted { .. } => "unwindStarted",
            Record::Intent { .. } => "intent",
            Record::Done { .. } => "done",
            Record::Failed { .. } => "failed",
            Record::RunFinished { .. } => "runFinished",
            Record::Resumed { .. } => "resumed",
        }
    }

    /// The postcard payload: the variant's fields, without a variant tag (the envelope has it).
    pub fn encode_payload(&self) -> Result<Vec<u8>, postcard::Error> {
        match self {
            Record::RunStarted(h) => postcard::to_stdvec(h),
            Record::StrategyChosen { strategy, why } => postcard::to_stdvec(&(strategy, why)),
            Record::PlainAttemptFailed { why } => postcard::to_stdvec(why),
            Record::UnwindStarted { why } => postcard::to_stdvec(why),
            Record::Intent { transition } => postcard::to_stdvec(transition),
            Record::Done {
                intent,
                added,
                freed,
            } => postcard::to_stdvec(&(intent, added, freed)),
            Record::Failed { intent, message } => postcard::to_stdvec(&(intent, message)),
            Record::RunFinished { outcome } => postcard::to_stdvec(outcome),
            Record::Resumed { pid, command } => postcard::to_stdvec(&(pid, command)),
        }
    }

    /// Decode the payload of a format-1 record of kind `kind`. `Ok(None)`: unknown kind.
    pub fn decode_payload(kind: u16, payload: &[u8]) -> Result<Option<Record>, DecodeError> {
        Ok(Some(match kind {
            1 => Record::RunStarted(Box::new(all(payload)?)),
            2 => {
                let (strategy, why) = all(payload)?;
                Record::StrategyChosen { strategy, why }
            }
            3 => Record::PlainAttemptFailed { why: all(payload)? },
            4 => Record::UnwindStarted { why: all(payload)? },
            5 => Record::Intent {
                transition: all(payload)?,
            },
            6 => {
                let (intent, added, freed) = all(payload)?;
                Record::Done {
                    intent,
                    added,
                    freed,
                }
            }
            7 => {
                let (intent, message) = all(payload)?;
                Record::Failed { intent, message }
            }
            8 => Record::RunFinished {
                outcome: all(payload)?,
            },
            9 => {
                let (pid, command) = all(payload)?;
                Record::Resumed { pid, command }
            }
            _ => return Ok(None),
        }))
    }
}

/// Why a payload did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// postcard refused it (bad varint, bad UTF-8, bad variant, truncated, a bad store path).
    Postcard(String),
    /// The value ended before the payload did.
    TrailingBytes(usize),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Postcard(e) => write!(f, "payload does not decode: {e}"),
            DecodeError::TrailingBytes(n) => {
                write!(f, "payload has {n} byte(s) after its last field")
            }
        }
    }
}

/// Decode exactly the whole of `bytes`.
fn all<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| DecodeError::Postcard(e.to_string()))?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError::TrailingBytes(rest.len()))
    }
}
