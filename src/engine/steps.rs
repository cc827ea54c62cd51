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
use crate::plan::units::TargetGraph;

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
    /// The target's local derivations as the run recorded them (`RunHeader::local_derivations`);
    /// `None`: ask the substituters (format 1's side file, tests).
    #[serde(default)]
    pub local: Option<BTreeSet<StorePath>>,
}

impl StepMasks {
    /// The masks a complete header carries; `None` for a format-1 header.
    pub fn from_header(header: &RunHeader) -> Option<StepMasks> {
        let mut masks = StepMasks {
            target_drv: header.target_drv.clone(),
            g0_toplevel: header.g0_toplevel.clone(),
            masks: BTreeMap::new(),
            reboot_after: 0,
            local: Some(header.local_derivations.iter().cloned().collect()),
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

/// One step as materialised: its mask and its derivations.
#[derive(Debug, Clone)]
struct MaterialisedStep {
    mask: Mask,
    m: Materialised,
}

/// What the planner source derived from the target's graph: every step, and the target's unit
/// outputs (what a step that upgrades them may have fetched or built).
#[derive(Debug, Clone)]
struct Derived {
    steps: Vec<MaterialisedStep>,
    unit_outputs: BTreeSet<StorePath>,
}

/// Materialises steps through the planner's rewriting, lazily, once; a re-plan adds steps.
pub struct PlannerSource<'a> {
    store: &'a dyn Store,
    masks: StepMasks,
    done: RefCell<Option<Result<Derived, String>>>,
    /// The steps derived without restart-trigger marks, made only when a run's recorded step is
    /// not among this version's (a run planned before the marks).
    unmarked: RefCell<Option<Result<Vec<MaterialisedStep>, String>>>,
}

impl<'a> PlannerSource<'a> {
    pub fn new(store: &'a dyn Store, masks: StepMasks) -> Self {
        PlannerSource {
            store,
            masks,
            done: RefCell::new(None),
            unmarked: RefCell::new(None),
        }
    }

    /// The target's graph: with the local derivations the run recorded, or (not recorded)
    /// as the substituters say now.
    fn graph(&self) -> Result<TargetGraph, String> {
        let target = &self.masks.target_drv;
        match &self.masks.local {
            Some(local) => super::plan_inputs::read_target_recorded(self.store, target, local),
            None => super::plan_inputs::read_target(self.store, target),
        }
        .map_err(|e| e.to_string())
    }

    fn materialise(
        &self,
        graph: &TargetGraph,
        masks: &[Mask],
    ) -> Result<Vec<MaterialisedStep>, String> {
        self.materialise_with(graph, masks, true)
    }

    fn materialise_with(
        &self,
        graph: &TargetGraph,
        masks: &[Mask],
        mark_triggers: bool,
    ) -> Result<Vec<MaterialisedStep>, String> {
        let src = StoreDrvs(self.store);
        let mut m = Materialiser::new(graph, &src);
        if !mark_triggers {
            m = m.without_trigger_marks();
        }
        masks
            .iter()
            .map(|mask| {
                Ok(MaterialisedStep {
                    mask: mask.clone(),
                    m: m.materialise(mask).map_err(|e| e.to_string())?,
                })
            })
            .collect()
    }

    fn all(&self) -> Result<Derived, String> {
        if let Some(r) = &*self.done.borrow() {
            return r.clone();
        }
        let r = (|| {
            let graph = self.graph()?;
            let masks: Vec<Mask> = self.masks.masks.values().cloned().collect();
            Ok(Derived {
                steps: self.materialise(&graph, &masks)?,
                unit_outputs: graph
                    .unit_outputs()
                    .into_values()
                    .flat_map(|m| m.into_values())
                    .collect(),
            })
        })();
        *self.done.borrow_mut() = Some(r.clone());
        r
    }

    /// The toplevel `.drv`/out of each step, in order (for the journal's header).
    pub fn toplevels(&self) -> Result<Vec<(StorePath, StorePath)>, String> {
        Ok(self
            .all()?
            .steps
            .into_iter()
            .map(|s| (s.m.toplevel_drv, s.m.toplevel_out))
            .collect())
    }

    /// The glue and package outputs of a generation that is not a step (G0), read from its own
    /// `.drv` graph (which the run pins), once its toplevel is gone: after a planned reboot,
    /// G0's packages that an older booted system pinned are dead only now, and G0's toplevel,
    /// collected before the reboot, no longer leads to them. Outputs only the glue's builds used
    /// are left out (the next steps' glue builds need them again). Empty while the toplevel is
    /// valid (its closure says it all) or when the graph cannot be read.
    fn graph_outputs(&self, toplevel_drv: &StorePath) -> BTreeSet<StorePath> {
        let store_dir = self.store.store_dir().clone();
        let Ok(graph) = TargetGraph::read(store_dir, toplevel_drv.clone(), &StoreDrvs(self.store))
        else {
            return BTreeSet::new();
        };
        let top_valid = graph.root_out().is_some_and(|out| {
            self.store
                .valid_paths(std::slice::from_ref(out))
                .map_or(true, |v| !v.is_empty())
        });
        if top_valid {
            return BTreeSet::new();
        }
        let build_only = graph.build_only_outputs();
        let mut outs = graph.glue_outputs();
        outs.extend(
            graph
                .unit_outputs()
                .into_values()
                .flat_map(|m| m.into_values())
                .filter(|p| !build_only.contains(p)),
        );
        outs
    }

    fn step(&self, toplevel_drv: &StorePath) -> Result<Option<MaterialisedStep>, String> {
        let found = |steps: Vec<MaterialisedStep>| {
            steps
                .into_iter()
                .rev()
                .find(|s| &s.m.toplevel_drv == toplevel_drv)
        };
        if let Some(s) = found(self.all()?.steps) {
            return Ok(Some(s));
        }
        // A run planned by a stepwise that did not mark restart triggers (the module's timer
        // runs the new stepwise mid-chain once a step has upgraded it): its steps as it derived
        // them. G0 (not a step) is found in neither.
        if self.unmarked.borrow().is_none() {
            let masks: Vec<Mask> = self.masks.masks.values().cloned().collect();
            let r = self.graph().and_then(|g| {
                if crate::plan::triggers::any_marked(&g) {
                    self.materialise_with(&g, &masks, false)
                } else {
                    Ok(Vec::new())
                }
            });
            *self.unmarked.borrow_mut() = Some(r);
        }
        let unmarked = self.unmarked.borrow().clone().expect("just made");
        Ok(found(unmarked?))
    }
}

impl GenSource for PlannerSource<'_> {
    fn derivations(&self, toplevel_drv: &StorePath) -> Result<Vec<DrvWrite>, String> {
        let Some(s) = self.step(toplevel_drv)? else {
            return Ok(vec![]);
        };
        Ok(s.m
            .drvs
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
        // The step's own glue outputs and the target's packages it upgrades: what a failed
        // realise of it may have left.
        let Some(s) = self.step(toplevel_drv)? else {
            return Ok(self.graph_outputs(toplevel_drv));
        };
        let mut paths: BTreeSet<StorePath> =
            s.m.drvs
                .iter()
                .flat_map(|d| d.drv.outputs.values().filter_map(|o| o.path.clone()))
                .collect();
        paths.extend(
            self.all()?
                .unit_outputs
                .into_iter()
                .filter(|p| !s.mask.0.contains_key(p)),
        );
        Ok(paths)
    }

    fn add_steps(&self, masks: &[Mask]) -> Result<Vec<(StorePath, StorePath)>, String> {
        self.all()?;
        let graph = self.graph()?;
        let new = self.materialise(&graph, masks)?;
        let tops = new
            .iter()
            .map(|s| (s.m.toplevel_drv.clone(), s.m.toplevel_out.clone()))
            .collect();
        if let Some(Ok(d)) = self.done.borrow_mut().as_mut() {
            d.steps.extend(new);
        }
        Ok(tops)
    }
}
