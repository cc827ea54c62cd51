//! Building the stub probe (see `plan::probe`) before a run that takes non-vital packages out:
//! write the probe generation's `.drv`s and its stubs, realise its toplevel under a scratch
//! root, and delete what it added. The run has not started: the probe is journaled as
//! housekeeping (`engine::housekeeping`), and what it adds is scratch no generation uses, which it
//! removes itself; a kill in the middle leaves a scratch root link and dead paths, which the next
//! `upgrade` removes when it settles the open intent.

use std::collections::BTreeSet;
use std::path::Path;

use super::plan_inputs::StoreDrvs;
use crate::drv::StorePath;
use crate::effects::journal::Transition;
use crate::effects::store::{RealiseError, StoreError};
use crate::effects::Store;
use crate::plan::mask::{Materialiser, Stub};
use crate::plan::probe::stub_probe_mask;
use crate::plan::{Planned, TargetGraph};

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Every glue derivation builds with the stubs.
    Builds,
    /// A glue build failed with the stubs in place.
    Breaks { drv: StorePath, log_tail: String },
    /// The probe itself ran out of room.
    OutOfSpace { message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("rewriting the probe's derivations: {0}")]
    Rewrite(String),
    #[error("{0}")]
    Journal(crate::error::Error),
}

/// Build the probe generation for the stubs of `names`; `scratch` is a directory for its
/// temporary GC root (created if missing). `g0_closure` is never deleted, whatever happens.
pub fn probe_stubs(
    store: &dyn Store,
    graph: &TargetGraph,
    planned: &Planned,
    names: &[String],
    scratch: &Path,
    g0_closure: &BTreeSet<StorePath>,
    hk: &mut dyn super::housekeeping::Housekeeping,
) -> Result<ProbeOutcome, ProbeError> {
    let sd = store.store_dir().clone();
    let Some(mask) = stub_probe_mask(planned, &sd, names) else {
        return Ok(ProbeOutcome::Builds);
    };
    let src = StoreDrvs(store);
    let generation = Materialiser::new(graph, &src)
        .materialise(&mask)
        .map_err(|e| ProbeError::Rewrite(e.to_string()))?;
    let stubs: Vec<Stub> = names.iter().map(|n| Stub::for_package(&sd, n)).collect();

    // What only the probe makes: its derivations and their outputs, and the stubs (a killed
    // probe may have left them; nothing else names them). The target's packages are the
    // probe's only if it fetched them: those valid before are not its to delete.
    let mut candidates: BTreeSet<StorePath> = BTreeSet::new();
    for d in &generation.drvs {
        candidates.insert(d.path.clone());
        candidates.extend(d.drv.outputs.values().filter_map(|o| o.path.clone()));
    }
    candidates.extend(stubs.iter().map(|s| s.path.clone()));
    let packages: Vec<StorePath> = planned
        .units
        .units
        .iter()
        .flat_map(|u| u.new.values().cloned())
        .collect();
    let packages_before = store.valid_paths(&packages)?;
    candidates.extend(
        packages
            .into_iter()
            .filter(|p| !packages_before.contains(p)),
    );
    let candidate_list: Vec<StorePath> = candidates.iter().cloned().collect();

    // Roots through the Store seam only (as the executor's): a probe killed earlier left its
    // root, which kept nothing but scratch alive.
    let release = || -> Result<(), StoreError> {
        for link in store.roots(scratch)?.into_keys() {
            store.remove_root(&link)?;
        }
        Ok(())
    };
    release()?;
    let root = scratch.join("probe");
    let intent = hk
        .intent(&Transition::ProbeStubs {
            root: root.clone(),
            scratch: candidate_list.clone(),
        })
        .map_err(ProbeError::Journal)?;
    let outcome = build(store, &generation, &stubs, &root);
    super::crash::point("probe-built");
    // Clean up whatever the build did, also when it failed.
    release()?;
    let live = store.live_paths()?;
    let now = store.valid_paths(&candidate_list)?;
    let scratch_paths: Vec<StorePath> = now
        .into_iter()
        .filter(|p| !live.contains(p) && !g0_closure.contains(p))
        .collect();
    let scratch_paths = super::garbage::with_dead_referrers(store, scratch_paths, &live)?;
    let freed = store
        .path_infos(&scratch_paths)?
        .values()
        .map(|i| i.nar_size)
        .sum();
    store.delete(&scratch_paths)?;
    hk.done(intent, Some(freed)).map_err(ProbeError::Journal)?;
    outcome
}

fn build(
    store: &dyn Store,
    generation: &crate::plan::Materialised,
    stubs: &[Stub],
    root: &Path,
) -> Result<ProbeOutcome, ProbeError> {
    let needed: Vec<StorePath> = stubs.iter().map(|s| s.path.clone()).collect();
    let present = store.valid_paths(&needed)?;
    for s in stubs {
        if !present.contains(&s.path) {
            store.add_stub(s)?;
        }
    }
    for d in &generation.drvs {
        let got = store.add_text(&format!("{}.drv", d.name), &d.aterm, &d.references())?;
        if got != d.path {
            return Err(StoreError::Refused(format!(
                "writing {}.drv gave {got}, not the computed {}",
                d.name, d.path
            ))
            .into());
        }
    }
    super::crash::point("probe-written");
    match store.realise(&generation.toplevel_drv, root, &mut |_| {}) {
        Ok(_) => Ok(ProbeOutcome::Builds),
        Err(RealiseError::BuildFailed { drv, log_tail }) => {
            Ok(ProbeOutcome::Breaks { drv, log_tail })
        }
        Err(RealiseError::OutOfSpace { message }) => Ok(ProbeOutcome::OutOfSpace { message }),
        Err(RealiseError::Other(e)) => Err(e.into()),
    }
}
