//! The step generations' derivations, derived again on demand from the target's `.drv` graph
//! and each step's mask (kept in a side file beside the journal, written before the run
//! starts): the `GenSource` of real runs. Derivations are data: a step's `.drv` files may be
//! deleted with the generation they describe (they reference its old packages) and are rewritten,
//! byte for byte, when the run comes back to that step.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan_inputs::StoreDrvs;
use super::run_plan::{DrvWrite, GenSource};
use crate::drv::StorePath;
use crate::effects::Store;
use crate::plan::mask::{Mask, Materialised, Materialiser};
use crate::plan::units::TargetGraph;

/// What the journal's header does not hold: each step's mask.
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
    pub fn path_for(journal: &Path) -> PathBuf {
        crate::effects::fs::beside(journal, ".steps.json")
    }

    /// Write atomically (temp file, fsync, rename, fsync the directory).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        crate::effects::fs::sync_dir(path.parent().unwrap_or(Path::new(".")))
    }

    pub fn load(path: &Path) -> std::io::Result<StepMasks> {
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
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
            let graph = TargetGraph::read(
                self.store.store_dir().clone(),
                self.masks.target_drv.clone(),
                &src,
            )
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
