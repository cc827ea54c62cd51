//! What a run is about, as the executor needs it: the journal's header (parameters and plan) with
//! every generation resolved, and the run-owned roots' locations. `resume` rebuilds it from the
//! header alone, plus a `GenSource` for what the header does not carry (the step `.drv` bytes).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::drv::StorePath;
use crate::effects::journal::{OnFailure, RunHeader, Strategy};
use crate::transition::{Chain, FailurePolicy, Gen, RunShape};

/// A `.drv` file a step writes, with the path it must get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrvWrite {
    pub path: StorePath,
    pub name: String,
    pub contents: Vec<u8>,
    pub references: Vec<StorePath>,
}

/// What the journal's header does not hold: derived again, deterministically, on resume.
pub trait GenSource {
    /// The `.drv` files to write before realising `toplevel_drv`, bottom-up (the toplevel last).
    /// Empty when it is already in the store (G0, the target).
    fn derivations(&self, toplevel_drv: &StorePath) -> Result<Vec<DrvWrite>, String>;
    /// The closure the generation is expected to have: what a failed realise may leave behind.
    fn planned_closure(&self, toplevel_drv: &StorePath) -> Result<BTreeSet<StorePath>, String>;
    /// A re-plan's new steps: their toplevel `.drv` and `out`, in order; from now on the source
    /// knows their derivations too.
    fn add_steps(&self, masks: &[crate::plan::Mask])
        -> Result<Vec<(StorePath, StorePath)>, String>;
}

/// A source for runs whose generations all exist already (G0 and the target of a plain upgrade).
pub struct NothingToWrite;

impl GenSource for NothingToWrite {
    fn derivations(&self, _: &StorePath) -> Result<Vec<DrvWrite>, String> {
        Ok(vec![])
    }
    fn planned_closure(&self, _: &StorePath) -> Result<BTreeSet<StorePath>, String> {
        Ok(BTreeSet::new())
    }
    fn add_steps(&self, _: &[crate::plan::Mask]) -> Result<Vec<(StorePath, StorePath)>, String> {
        Err("the run has no steps' masks: it cannot be re-planned".into())
    }
}

/// One generation of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenPlan {
    /// For people: "G0", "step 2/5 (openssl, curl)", "target".
    pub label: String,
    /// Its index in the journal's plan (0 for G0).
    pub step: u32,
    pub drv: StorePath,
    pub out: StorePath,
}

/// The run as the executor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub header: RunHeader,
    pub roots_dir: PathBuf,
    pub g0: GenPlan,
    /// G1..Gn, the last being the target; empty for a plain-only run.
    pub steps: Vec<GenPlan>,
    pub target: GenPlan,
    /// Bit k: reboot after step k (from the header's plan).
    pub reboot_after: u64,
    /// The plan the run started with (its header's), before any re-plan: what its records
    /// replay from.
    pub initial_plan: Vec<crate::effects::journal::PlannedStep>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

impl Spec {
    /// The run-owned roots of a journal live beside it.
    /// The journal's directory is resolved first, so that every spelling of the journal's path
    /// (relative, through a symlinked directory) gives the same roots.
    pub fn roots_dir_for(journal: &Path) -> PathBuf {
        crate::effects::fs::beside(&super::record::canonical(journal), ".roots")
    }

    pub fn new(header: RunHeader, roots_dir: PathBuf) -> Result<Spec, SpecError> {
        let Some(g0_drv) = header.g0_drv.clone() else {
            return Err(SpecError(
                "the run has no G0 derivation: exact unwind is impossible".into(),
            ));
        };
        let n = header.plan.len();
        let steps: Vec<GenPlan> = header
            .plan
            .iter()
            .map(|s| GenPlan {
                label: if s.index as usize == n {
                    format!("step {}/{n} (the target)", s.index)
                } else if s.units.is_empty() {
                    format!("step {}/{n}", s.index)
                } else {
                    format!("step {}/{n} ({})", s.index, s.units.join(", "))
                },
                step: s.index,
                drv: s.toplevel_drv.clone(),
                out: s.toplevel_out.clone(),
            })
            .collect();
        let target = match header.plan.last() {
            Some(last) if last.toplevel_drv == header.target_drv => GenPlan {
                label: "the target".into(),
                step: last.index,
                drv: last.toplevel_drv.clone(),
                out: last.toplevel_out.clone(),
            },
            Some(_) => return Err(SpecError("the plan's last step is not the target".into())),
            None => {
                return Err(SpecError(
                    "the run's plan is empty: the target's output path is unknown".into(),
                ))
            }
        };
        Ok(Spec {
            g0: GenPlan {
                label: "G0 (the starting generation)".into(),
                step: 0,
                drv: g0_drv,
                out: header.g0_toplevel.clone(),
            },
            steps,
            target,
            reboot_after: header
                .plan
                .iter()
                .filter(|s| s.index < 64 && s.reboot_after == Some(true))
                .fold(0, |bits, s| bits | 1 << s.index),
            initial_plan: header.plan.clone(),
            header,
            roots_dir,
        })
    }

    /// The run as it started, before any re-plan.
    pub fn initial(&self) -> Spec {
        if self.header.plan == self.initial_plan {
            return self.clone();
        }
        let mut header = self.header.clone();
        header.plan = self.initial_plan.clone();
        Spec::new(header, self.roots_dir.clone()).expect("the run started from this plan")
    }

    /// The run after a re-plan: the chain up to `at` kept, `steps` after it (indices `at + 1` …,
    /// the last the target).
    pub fn replanned(
        &self,
        at: Gen,
        steps: &[crate::effects::journal::PlannedStep],
    ) -> Result<Spec, SpecError> {
        if at as usize > self.steps.len() {
            return Err(SpecError(format!(
                "a re-plan after step {at} of a chain of {}",
                self.steps.len()
            )));
        }
        let mut header = self.header.clone();
        header.plan.truncate(at as usize);
        header.plan.extend(steps.iter().cloned());
        let initial_plan = self.initial_plan.clone();
        if !header.is_complete()
            || header
                .plan
                .iter()
                .enumerate()
                .any(|(i, s)| s.index as usize != i + 1)
        {
            return Err(SpecError(format!(
                "the re-plan after step {at} is not a complete chain numbered from {}",
                at + 1
            )));
        }
        let mut spec = Spec::new(header, self.roots_dir.clone())?;
        spec.initial_plan = initial_plan;
        Ok(spec)
    }

    pub fn shape(&self) -> RunShape {
        RunShape {
            // A one-step plan is the plain upgrade: no separate chain to fall back to.
            steps: self.steps.len() as Gen,
            fall_back: self.header.strategy == Strategy::Auto,
            on_failure: match self.header.on_failure {
                OnFailure::Unwind => FailurePolicy::Unwind,
                OnFailure::Hold => FailurePolicy::Hold,
            },
            reboot_after: self.reboot_after,
            keep_g0: self.header.options.keep_previous,
        }
    }

    pub fn gen(&self, chain: Chain, gen: Gen) -> &GenPlan {
        match (chain, gen) {
            (_, 0) => &self.g0,
            (Chain::Direct, _) => &self.target,
            (Chain::Steps, k) => &self.steps[k as usize - 1],
        }
    }

    /// The run-owned root of a generation's output.
    pub fn out_root(&self, chain: Chain, gen: Gen) -> PathBuf {
        root(&self.roots_dir, "out", chain, gen)
    }

    /// The run-owned root of a generation's toplevel `.drv`.
    pub fn drv_root(&self, chain: Chain, gen: Gen) -> PathBuf {
        root(&self.roots_dir, "drv", chain, gen)
    }
}

fn root(dir: &Path, kind: &str, chain: Chain, gen: Gen) -> PathBuf {
    let chain = match (gen, chain) {
        (0, _) => "g0",
        (_, Chain::Direct) => "direct",
        (_, Chain::Steps) => "steps",
    };
    dir.join(format!("{kind}-{chain}-{gen}"))
}
