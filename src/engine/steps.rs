//! The step generations' derivations, derived again on demand from the target's `.drv` graph
//! and each step's mask (in the run's header): the `GenSource` of real runs. Derivations are data: a step's `.drv` files may be
//! deleted with the generation they describe (they reference its old packages) and are rewritten,
//! byte for byte, when the run comes back to that step.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan_inputs::StoreDrvs;
use super::run_plan::{DrvWrite, GenSource};
use crate::drv::StorePath;
use crate::effects::journal::RunHeader;
use crate::effects::Store;
use crate::plan::mask::{Mask, Materialised, Materialiser};

/// Each step's mask, as the planner's rewriting needs it: from the run's header (format 2), or for
/// a format-1 run from the side file format 1 kept beside the journal (`<journal>.steps.json`),
/// which nothing writes any more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepMasks {
    pub target_drv: StorePath,
    pub g0_toplevel: StorePath,
    /// Step index (1-based) → its mask; the last step (the target) has an empty mask.
    pub masks: BTreeMap<u32, Mask>,
    /// Bit k: reboot after step k (`--reboot when-needed`, where the plan says so).
    #[serde(default)]
    pub reboot_after: u64,
}

impl StepMasks {
    /// The masks a complete header carries; `None` for a format-1 header.
    pub fn from_header(header: &RunHeader) -> Option<StepMasks> {
        let mut masks = StepMasks {
            target_drv: header.target_drv.clone(),
            g0_toplevel: header.g0_toplevel.clone(),
            masks: BTreeMap::new(),
            reboot_after: 0,
        };
        for step in &header.plan {
            masks.masks.insert(step.index, step.mask.clone()?);
            if step.reboot_after? && step.index < 64 {
                masks.reboot_after |= 1 << step.index;
            }
        }
        Some(masks)
    }

    /// Where format 1 kept the masks of the journal at `journal`.
    pub fn legacy_path_for(journal: &Path) -> PathBuf {
        crate::effects::fs::beside(journal, ".steps.json")
    }

    /// Read format 1's side file.
    pub fn load_legacy(path: &Path) -> std::io::Result<StepMasks> {
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }

    /// Fill a format-1 header's missing masks and reboot points: from `legacy` (format 1's side
    /// file) when it describes this run, or, for a plan whose only step is the target, with
    /// nothing masked and no reboot. `Err`: why the run cannot be completed.
    pub fn complete(header: &mut RunHeader, legacy: Option<&StepMasks>) -> Result<(), String> {
        if header.is_complete() {
            return Ok(());
        }
        let only_the_target =
            header.plan.len() == 1 && header.plan[0].toplevel_drv == header.target_drv;
        if only_the_target {
            header.plan[0].mask = Some(Mask::default());
            header.plan[0].reboot_after = Some(false);
            return Ok(());
        }
        let Some(legacy) = legacy else {
            return Err(
                "its steps' masks were kept in the side file `<journal>.steps.json`, \
                        which is missing or unreadable"
                    .into(),
            );
        };
        if legacy.target_drv != header.target_drv || legacy.g0_toplevel != header.g0_toplevel {
            return Err(format!(
                "the side file `<journal>.steps.json` describes another run (target {}, G0 {})",
                legacy.target_drv, legacy.g0_toplevel
            ));
        }
        for step in &mut header.plan {
            let Some(mask) = legacy.masks.get(&step.index) else {
                return Err(format!(
                    "the side file `<journal>.steps.json` has no mask for step {}",
                    step.index
                ));
            };
            step.mask = Some(mask.clone());
            step.reboot_after =
                Some(step.index < 64 && legacy.reboot_after & (1 << step.index) != 0);
        }
        Ok(())
    }
}

/// Materialises steps through the planner's rewriting, lazily, once.
pub struct PlannerSource<'a> {
    store: &'a dyn Store,
    masks: StepMasks,
    done: RefCell<Option<Result<Vec<Materialised>, String>>>,
}

impl<'a> PlannerSource<'a> {
    pub fn new(store: &'a dyn Store, masks: StepMasks) -> Self {
        PlannerSource {
            store,
            masks,
            done: RefCell::new(None),
        }
    }

    fn all(&self) -> Result<Vec<Materialised>, String> {
        if let Some(r) = &*self.done.borrow() {
            return r.clone();
        }
        let r = (|| {
            let src = StoreDrvs(self.store);
            let graph = super::plan_inputs::read_target(self.store, &self.masks.target_drv)
                .map_err(|e| e.to_string())?;
            let mut m = Materialiser::new(&graph, &src);
            self.masks
                .masks
                .values()
                .map(|mask| m.materialise(mask).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()
        })();
        *self.done.borrow_mut() = Some(r.clone());
        r
    }

    /// The toplevel `.drv`/out of each step, in order (for the journal's header).
    pub fn toplevels(&self) -> Result<Vec<(StorePath, StorePath)>, String> {
        Ok(self
            .all()?
            .into_iter()
            .map(|m| (m.toplevel_drv, m.toplevel_out))
            .collect())
    }
}

impl GenSource for PlannerSource<'_> {
    fn derivations(&self, toplevel_drv: &StorePath) -> Result<Vec<DrvWrite>, String> {
        let all = self.all()?;
        let Some(m) = all.iter().find(|m| &m.toplevel_drv == toplevel_drv) else {
            return Ok(vec![]);
        };
        Ok(m.drvs
            .iter()
            .map(|d| DrvWrite {
                path: d.path.clone(),
                name: format!("{}.drv", d.name),
                contents: d.aterm.clone(),
                references: d.references(),
            })
            .collect())
    }

    fn planned_closure(&self, toplevel_drv: &StorePath) -> Result<BTreeSet<StorePath>, String> {
        // The step's own glue outputs: what a failed realise of it may have left.
        let all = self.all()?;
        Ok(all
            .iter()
            .find(|m| &m.toplevel_drv == toplevel_drv)
            .map(|m| {
                m.drvs
                    .iter()
                    .flat_map(|d| d.drv.outputs.values().filter_map(|o| o.path.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }
}
