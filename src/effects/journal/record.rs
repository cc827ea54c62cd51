//! What the journal records: the run header and the run-level records, and their kind tags.
//!
//! Part of the on-disk format (`journal-format.md`): each record's payload is the postcard
//! encoding of its fields in declaration order. Never reorder or insert fields or variants; a
//! change is a new format version with its own decoder kept forever. The in-memory `RunHeader` is
//! written through `HeaderV2` (or `HeaderV3` when its options are not the defaults) and read
//! through `HeaderV1`, `HeaderV2` or `HeaderV3` by the record's format.
//!
//! Each record is written in the oldest format that has it (`Record::format`), so a journal that
//! never needed anything new stays readable by the stepwise that wrote format 2.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::codes::{Action, OnFailedUnits, OnFailure, RebootPolicy, RebootWindow, Strategy};
use crate::drv::StorePath;
use crate::effects::store::TargetSpec;
use crate::plan::mask::Mask;

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
    /// Format 2: when the run may reboot (`--reboot-window`); `None`: at any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_window: Option<RebootWindow>,
    /// Format 3: the run's options added after format 2. The defaults are what a format-2 run
    /// did, and a header with the defaults is still written as format 2.
    #[serde(default, skip_serializing_if = "RunOptions::is_default")]
    pub options: RunOptions,
    /// Format 3: the target's derivations no substituter had when the run was planned (built
    /// locally, rewritten under each step's mask like glue). Every later derivation of the
    /// steps reads them from here, not from the substituters, so a resume at boot without a
    /// network rewrites exactly the steps that were planned. A header without any is format 2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_derivations: Vec<StorePath>,
}

/// The options of a run that format 2 did not have; each default is format 2's behaviour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOptions {
    /// Keep G0 as a rollback generation (`--keep-previous`) where the plan has room for it.
    pub keep_previous: bool,
    /// What to do when activation switched but some units failed.
    pub on_failed_units: OnFailedUnits,
}

impl RunOptions {
    pub fn is_default(&self) -> bool {
        *self == RunOptions::default()
    }
}

impl RunHeader {
    /// Whether format 2 can hold this header: nothing format 3 added is set.
    pub fn fits_format_2(&self) -> bool {
        self.options.is_default() && self.local_derivations.is_empty()
    }

    /// Whether every step carries its mask and reboot point (format 2, or a format-1 header
    /// completed from its legacy `.steps.json`).
    pub fn is_complete(&self) -> bool {
        self.plan
            .iter()
            .all(|s| s.mask.is_some() && s.reboot_after.is_some())
    }
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
    /// Format 2: what stands in for each of the target's unit outputs in this step (empty for
    /// the target). `None` only in a format-1 header read back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<Mask>,
    /// Format 2: reboot after this step (`--reboot when-needed`, where the plan says so).
    /// `None` only in a format-1 header read back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_after: Option<bool>,
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
    /// Kind 10 (format 3): the realise of step `step` ran out of space. It was estimated to add
    /// `estimated` bytes of the disk and had `free` bytes when it started. Written just before
    /// the realise's `failed` record, which it marks as not a build failure.
    SpaceRanOut {
        step: u32,
        estimated: u64,
        free: u64,
    },
    /// Kind 11 (format 3): the chain after generation `at` (where the system stands) is replaced
    /// by `steps` (indices `at + 1` …, the last the target, each with its mask and reboot point),
    /// planned with `cost_ppm` on every estimate (what the space that ran out taught).
    Replanned {
        at: u32,
        cost_ppm: u64,
        steps: Vec<PlannedStep>,
    },
    /// Kind 12 (format 3): the activation of the intent at `intent` did not simply succeed;
    /// written before its `done`. Either some units failed to start (`switch-to-configuration`
    /// exit 4; `unitsFailed` names them, empty when it named none) or, with `rebootRequired`,
    /// the generation takes effect only after a reboot (exit 100; `unitsFailed` empty).
    Activated {
        intent: Seq,
        units_failed: Vec<String>,
        reboot_required: bool,
    },
    /// Kind 13 (format 3): no re-plan fitted and the run reboots into the generation it stands
    /// at to make room; `toplevel` is the system booted until then. Written just before that
    /// reboot's intent: once booted, what only `toplevel` pinned is dead, and the collect after
    /// the reboot deletes it (nothing else names it after the boot).
    BootedBefore { toplevel: StorePath },
}

/// The highest kind tag of format 1.
pub const MAX_KIND_V1: u16 = 9;
/// The highest kind tag of format 2 (format 2 added none).
pub const MAX_KIND_V2: u16 = 9;
/// The highest kind tag this build knows (format 3 adds kinds from 10 on).
pub const MAX_KIND: u16 = 13;

impl Record {
    /// The journal format this record is written in: the oldest that has it. Kinds 1–9 are format
    /// 2 (format 2's encodings of them), unless they hold something format 2 did not have: a
    /// header with non-default options, an intent with a transition added later.
    pub fn format(&self) -> u16 {
        match self {
            Record::RunStarted(h) if !h.fits_format_2() => 3,
            Record::Intent { transition } => transition.format().max(2),
            Record::SpaceRanOut { .. } | Record::Replanned { .. } => 3,
            Record::Activated { .. } | Record::BootedBefore { .. } => 3,
            _ => 2,
        }
    }

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
            Record::SpaceRanOut { .. } => 10,
            Record::Replanned { .. } => 11,
            Record::Activated { .. } => 12,
            Record::BootedBefore { .. } => 13,
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
            Record::SpaceRanOut { .. } => "spaceRanOut",
            Record::Replanned { .. } => "replanned",
            Record::Activated { .. } => "activated",
            Record::BootedBefore { .. } => "bootedBefore",
        }
    }

    /// The postcard payload: the variant's fields, without a variant tag (the envelope has it).
    pub fn encode_payload(&self) -> Result<Vec<u8>, postcard::Error> {
        match self {
            Record::RunStarted(h) if h.fits_format_2() => {
                postcard::to_stdvec(&HeaderV2::from(&**h))
            }
            Record::RunStarted(h) => postcard::to_stdvec(&HeaderV3 {
                v2: HeaderV2::from(&**h),
                options: h.options,
                local_derivations: h.local_derivations.clone(),
            }),
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
            Record::SpaceRanOut {
                step,
                estimated,
                free,
            } => postcard::to_stdvec(&(step, estimated, free)),
            Record::Replanned {
                at,
                cost_ppm,
                steps,
            } => {
                let steps: Vec<StepV3> = steps.iter().map(StepV3::from).collect();
                postcard::to_stdvec(&(at, cost_ppm, steps))
            }
            Record::Activated {
                intent,
                units_failed,
                reboot_required,
            } => postcard::to_stdvec(&(intent, units_failed, reboot_required)),
            Record::BootedBefore { toplevel } => postcard::to_stdvec(toplevel),
        }
    }

    /// Decode the payload of a record of kind `kind` written in format `format` (1, 2 or 3).
    /// `Ok(None)`: unknown kind.
    pub fn decode_payload(
        format: u16,
        kind: u16,
        payload: &[u8],
    ) -> Result<Option<Record>, DecodeError> {
        if kind > MAX_KIND_V2 && format < 3 {
            return Err(DecodeError::Postcard(format!(
                "a kind-{kind} record in format {format}, which has no such kind"
            )));
        }
        Ok(Some(match kind {
            1 if format == 1 => Record::RunStarted(Box::new(all::<HeaderV1>(payload)?.into())),
            1 if format == 2 => Record::RunStarted(Box::new(all::<HeaderV2>(payload)?.into())),
            1 => Record::RunStarted(Box::new(all::<HeaderV3>(payload)?.into())),
            2 => {
                let (strategy, why) = all(payload)?;
                Record::StrategyChosen { strategy, why }
            }
            3 => Record::PlainAttemptFailed { why: all(payload)? },
            4 => Record::UnwindStarted { why: all(payload)? },
            5 => {
                let transition: Transition = all(payload)?;
                if transition.format() > format {
                    return Err(DecodeError::Postcard(format!(
                        "a {} intent in a format-{format} record",
                        transition.name()
                    )));
                }
                Record::Intent { transition }
            }
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
            10 => {
                let (step, estimated, free) = all(payload)?;
                Record::SpaceRanOut {
                    step,
                    estimated,
                    free,
                }
            }
            11 => {
                let (at, cost_ppm, steps): (u32, u64, Vec<StepV3>) = all(payload)?;
                Record::Replanned {
                    at,
                    cost_ppm,
                    steps: steps.into_iter().map(PlannedStep::from).collect(),
                }
            }
            12 => {
                let (intent, units_failed, reboot_required) = all(payload)?;
                Record::Activated {
                    intent,
                    units_failed,
                    reboot_required,
                }
            }
            13 => Record::BootedBefore {
                toplevel: all(payload)?,
            },
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

/// A step of a `replanned` record (format 3): every field, the mask and reboot point always.
#[derive(Serialize, Deserialize)]
struct StepV3 {
    index: u32,
    toplevel_drv: StorePath,
    toplevel_out: StorePath,
    units: Vec<String>,
    adds: u64,
    frees: u64,
    mask: Mask,
    reboot_after: bool,
}

impl From<&PlannedStep> for StepV3 {
    fn from(s: &PlannedStep) -> Self {
        StepV3 {
            index: s.index,
            toplevel_drv: s.toplevel_drv.clone(),
            toplevel_out: s.toplevel_out.clone(),
            units: s.units.clone(),
            adds: s.adds,
            frees: s.frees,
            mask: s.mask.clone().unwrap_or_default(),
            reboot_after: s.reboot_after.unwrap_or(false),
        }
    }
}

impl From<StepV3> for PlannedStep {
    fn from(s: StepV3) -> Self {
        PlannedStep {
            index: s.index,
            toplevel_drv: s.toplevel_drv,
            toplevel_out: s.toplevel_out,
            units: s.units,
            adds: s.adds,
            frees: s.frees,
            mask: Some(s.mask),
            reboot_after: Some(s.reboot_after),
        }
    }
}

/// The format-1 payload of `runStarted`, field for field.
#[derive(Serialize, Deserialize)]
struct HeaderV1 {
    stepwise_version: String,
    pid: u32,
    store_dir: String,
    target: Target,
    target_drv: StorePath,
    profile: PathBuf,
    current_system: PathBuf,
    booted_system: PathBuf,
    action: Action,
    strategy: Strategy,
    on_failure: OnFailure,
    reboot: RebootPolicy,
    reboot_command: Vec<String>,
    non_vital: Vec<String>,
    together: Vec<Vec<String>>,
    reserve: u64,
    g0_toplevel: StorePath,
    g0_drv: Option<StorePath>,
    plan: Vec<StepV1>,
}

#[derive(Serialize, Deserialize)]
struct StepV1 {
    index: u32,
    toplevel_drv: StorePath,
    toplevel_out: StorePath,
    units: Vec<String>,
    adds: u64,
    frees: u64,
}

/// The format-2 payload of `runStarted`: the format-1 fields, then per step its mask and reboot
/// point (in plan order), then the reboot window.
#[derive(Serialize, Deserialize)]
struct HeaderV2 {
    v1: HeaderV1,
    steps: Vec<StepV2>,
    reboot_window: Option<RebootWindow>,
}

/// The format-3 payload of `runStarted` (written only when something format 3 added is set):
/// the format-2 payload, then the options and the local derivations.
#[derive(Serialize, Deserialize)]
struct HeaderV3 {
    v2: HeaderV2,
    options: RunOptions,
    local_derivations: Vec<StorePath>,
}

#[derive(Serialize, Deserialize)]
struct StepV2 {
    mask: Mask,
    reboot_after: bool,
}

impl From<&RunHeader> for HeaderV2 {
    fn from(h: &RunHeader) -> Self {
        HeaderV2 {
            v1: HeaderV1 {
                stepwise_version: h.stepwise_version.clone(),
                pid: h.pid,
                store_dir: h.store_dir.clone(),
                target: h.target.clone(),
                target_drv: h.target_drv.clone(),
                profile: h.profile.clone(),
                current_system: h.current_system.clone(),
                booted_system: h.booted_system.clone(),
                action: h.action,
                strategy: h.strategy,
                on_failure: h.on_failure,
                reboot: h.reboot,
                reboot_command: h.reboot_command.clone(),
                non_vital: h.non_vital.clone(),
                together: h.together.clone(),
                reserve: h.reserve,
                g0_toplevel: h.g0_toplevel.clone(),
                g0_drv: h.g0_drv.clone(),
                plan: h
                    .plan
                    .iter()
                    .map(|s| StepV1 {
                        index: s.index,
                        toplevel_drv: s.toplevel_drv.clone(),
                        toplevel_out: s.toplevel_out.clone(),
                        units: s.units.clone(),
                        adds: s.adds,
                        frees: s.frees,
                    })
                    .collect(),
            },
            // A header built without them (tests) says: nothing masked, no reboot.
            steps: h
                .plan
                .iter()
                .map(|s| StepV2 {
                    mask: s.mask.clone().unwrap_or_default(),
                    reboot_after: s.reboot_after.unwrap_or(false),
                })
                .collect(),
            reboot_window: h.reboot_window,
        }
    }
}

impl From<HeaderV1> for RunHeader {
    fn from(h: HeaderV1) -> Self {
        RunHeader {
            stepwise_version: h.stepwise_version,
            pid: h.pid,
            store_dir: h.store_dir,
            target: h.target,
            target_drv: h.target_drv,
            profile: h.profile,
            current_system: h.current_system,
            booted_system: h.booted_system,
            action: h.action,
            strategy: h.strategy,
            on_failure: h.on_failure,
            reboot: h.reboot,
            reboot_command: h.reboot_command,
            non_vital: h.non_vital,
            together: h.together,
            reserve: h.reserve,
            g0_toplevel: h.g0_toplevel,
            g0_drv: h.g0_drv,
            plan: h
                .plan
                .into_iter()
                .map(|s| PlannedStep {
                    index: s.index,
                    toplevel_drv: s.toplevel_drv,
                    toplevel_out: s.toplevel_out,
                    units: s.units,
                    adds: s.adds,
                    frees: s.frees,
                    mask: None,
                    reboot_after: None,
                })
                .collect(),
            reboot_window: None,
            options: RunOptions::default(),
            local_derivations: Vec::new(),
        }
    }
}

impl From<HeaderV2> for RunHeader {
    fn from(h: HeaderV2) -> Self {
        let mut header = RunHeader::from(h.v1);
        // A count mismatch leaves the tail `None`: the run is then refused as incomplete.
        for (step, extra) in header.plan.iter_mut().zip(h.steps) {
            step.mask = Some(extra.mask);
            step.reboot_after = Some(extra.reboot_after);
        }
        header.reboot_window = h.reboot_window;
        header
    }
}

impl From<HeaderV3> for RunHeader {
    fn from(h: HeaderV3) -> Self {
        let mut header = RunHeader::from(h.v2);
        header.options = h.options;
        header.local_derivations = h.local_derivations;
        header
    }
}
