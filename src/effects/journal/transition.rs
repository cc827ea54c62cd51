//! The transitions of a run (doc/design.md, "Transitions"), as the engine performs them and the journal records them.
//!
//! Every value here is part of the journal's on-disk format (`journal-format.md`, format 1): the
//! postcard encoding follows the field order and the variant order. Never reorder, rename the
//! variants' meaning, or insert fields; add a new format version instead.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::codes::Action;
use crate::drv::StorePath;

/// One effect on the world, recorded as an intent before it runs and as done or failed after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Transition {
    /// Write the `.drv` files of step `step` as text store objects. Probe: the paths are valid.
    WriteDerivations { step: u32, drvs: Vec<StorePath> },
    /// Realise step `step`'s toplevel `drv`, holding it with the run-owned GC root `root`.
    /// Probe: the root exists and its target is valid.
    Realise {
        step: u32,
        drv: StorePath,
        root: PathBuf,
    },
    /// Point `profile` at `toplevel` (a new generation unless it already points there).
    /// Probe: the profile resolves to `toplevel`.
    SetProfile {
        profile: PathBuf,
        toplevel: StorePath,
    },
    /// `toplevel/bin/switch-to-configuration action`. Probe: current-system → toplevel (switch,
    /// test).
    Activate { toplevel: StorePath, action: Action },
    /// Delete every generation of `profile` that is not current and holds the toplevel the move
    /// leaves; `number` is the newest of them (0: none left). Format 1 names only that one
    /// (journal-format.md §6). Probe: no such generation is left.
    DropGeneration { profile: PathBuf, number: u64 },
    /// Delete exactly `paths` (no longer live), `bytes` in total by their NAR sizes.
    /// Probe: the paths are invalid.
    Collect { paths: Vec<StorePath>, bytes: u64 },
    /// Run the reboot command; the boot-time resume expects booted-system → `expected_booted`.
    Reboot { expected_booted: StorePath },
    /// Remove the run-owned GC root `root`. Probe: the root is gone.
    Unpin { root: PathBuf },
    /// Format 2: hold G0's and the target's `.drv` closures with run-owned roots for the whole
    /// run (exact unwind rebuilds from G0's). Format 1 wrote this as `WriteDerivations { step: 0 }`.
    PinDerivations { drvs: Vec<StorePath> },
    /// Format 2: remove every run-owned root in `dir`, the run's last effect. Format 1 wrote this
    /// as `Unpin { root: dir }`.
    ReleaseRoots { dir: PathBuf },
}

impl Transition {
    /// The oldest journal format that has this kind of transition: an intent holding it is
    /// written in that format (`Record::format`). Variants added after format 2 return 3.
    pub fn format(&self) -> u16 {
        if self.in_format_1() {
            1
        } else {
            2
        }
    }

    /// Whether format 1 had this kind of transition.
    pub fn in_format_1(&self) -> bool {
        !matches!(
            self,
            Transition::PinDerivations { .. } | Transition::ReleaseRoots { .. }
        )
    }

    /// A short name for audits: `realise`, `set-profile`, ….
    pub fn name(&self) -> &'static str {
        match self {
            Transition::WriteDerivations { .. } => "write-derivations",
            Transition::Realise { .. } => "realise",
            Transition::SetProfile { .. } => "set-profile",
            Transition::Activate { .. } => "activate",
            Transition::DropGeneration { .. } => "drop-generation",
            Transition::Collect { .. } => "collect",
            Transition::Reboot { .. } => "reboot",
            Transition::Unpin { .. } => "unpin",
            Transition::PinDerivations { .. } => "pin-derivations",
            Transition::ReleaseRoots { .. } => "release-roots",
        }
    }

    /// One line describing the effect, for `journal show`.
    pub fn describe(&self) -> String {
        match self {
            Transition::WriteDerivations { step, drvs } => {
                format!("write {} derivation(s) of step {step}", drvs.len())
            }
            Transition::Realise { step, drv, root } => {
                format!("realise step {step}: {drv} (root {})", root.display())
            }
            Transition::SetProfile { profile, toplevel } => {
                format!("set profile {} → {toplevel}", profile.display())
            }
            Transition::Activate { toplevel, action } => {
                format!("activate {toplevel} ({})", action.as_str())
            }
            Transition::DropGeneration { profile, number } => {
                format!("drop generation {number} of {}", profile.display())
            }
            Transition::Collect { paths, bytes } => {
                format!("collect {} path(s), {}", paths.len(), human_bytes(*bytes))
            }
            Transition::Reboot { expected_booted } => {
                format!("reboot into {expected_booted}")
            }
            Transition::Unpin { root } => format!("unpin {}", root.display()),
            Transition::PinDerivations { drvs } => {
                format!("pin {} derivation(s) of G0 and the target", drvs.len())
            }
            Transition::ReleaseRoots { dir } => {
                format!("release the run's roots in {}", dir.display())
            }
        }
    }
}

/// The one byte formatter of plan and run output (`1536` → `1.5 KiB`).
pub use crate::plan::report::human_bytes;
