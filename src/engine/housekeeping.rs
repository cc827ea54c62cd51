//! Housekeeping before a run: `upgrade` deletes the unrooted leftovers of an earlier attempt and
//! builds the stub probe before the new run's header exists. Both change the store, so both are
//! journaled like a run's effects (an intent before, a `done` after), under the system lock, as
//! format-3 transitions in the last run of the journal (which has finished: an unfinished one is
//! continued first). A crash in the middle leaves the intent open; the next `upgrade` settles it
//! before anything else: it deletes what the intent named that is still valid and dead (never a
//! live path), removes a probe's scratch roots, and journals the `done`.
//! A journal without any run has no run to record in: there the housekeeping is not journaled
//! (a first run's probe killed midway leaves scratch that the next probe, or a GC, removes).

use std::collections::BTreeSet;
use std::path::Path;

use super::log::RunLog;
use crate::drv::StorePath;
use crate::effects::journal::{Record, Seq, Transition};
use crate::effects::store::StoreError;
use crate::effects::Store;
use crate::error::Error;

/// Where housekeeping is journaled.
pub trait Housekeeping {
    /// Journal `t` durably before its effect; the token closes it.
    fn intent(&mut self, t: &Transition) -> Result<Option<Seq>, Error>;
    /// Journal that the effect of `intent` happened, with the bytes it freed.
    fn done(&mut self, intent: Option<Seq>, freed: Option<u64>) -> Result<(), Error>;
}

/// No journal to write to (no run recorded yet, or a plan that changes nothing).
pub struct Unjournaled;

impl Housekeeping for Unjournaled {
    fn intent(&mut self, _: &Transition) -> Result<Option<Seq>, Error> {
        Ok(None)
    }
    fn done(&mut self, _: Option<Seq>, _: Option<u64>) -> Result<(), Error> {
        Ok(())
    }
}

/// Journaled in the last run of `log`.
pub struct Journaled<'a>(pub &'a mut dyn RunLog);

fn log_error(e: super::log::LogError) -> Error {
    Error::Journal {
        path: "the journal".into(),
        what: e.to_string(),
        hint: "`stepwise journal verify` checks it".into(),
    }
}

impl Housekeeping for Journaled<'_> {
    fn intent(&mut self, t: &Transition) -> Result<Option<Seq>, Error> {
        let seq = self
            .0
            .append(Record::Intent {
                transition: t.clone(),
            })
            .map_err(log_error)?;
        super::crash::point("housekeeping-intent");
        Ok(Some(seq))
    }

    fn done(&mut self, intent: Option<Seq>, freed: Option<u64>) -> Result<(), Error> {
        let Some(intent) = intent else { return Ok(()) };
        super::crash::point("housekeeping-before-done");
        self.0
            .append(Record::Done {
                intent,
                added: None,
                freed,
            })
            .map_err(log_error)?;
        Ok(())
    }
}

/// Delete `paths` (dead when chosen) under a journaled intent: each is checked dead again right
/// before, with the dead paths that still refer to it.
pub fn delete_leftovers(
    store: &dyn Store,
    hk: &mut dyn Housekeeping,
    paths: Vec<StorePath>,
    bytes: u64,
) -> Result<(), Error> {
    let intent = hk.intent(&Transition::DeleteLeftovers {
        paths: paths.clone(),
        bytes,
    })?;
    let freed = delete_dead(store, &paths)?;
    hk.done(intent, Some(freed))
}

/// Delete those of `paths` that are valid and not live (with their dead referrers). Returns the
/// bytes freed.
pub fn delete_dead(store: &dyn Store, paths: &[StorePath]) -> Result<u64, StoreError> {
    let live = store.live_paths()?;
    let dead: Vec<StorePath> = store
        .valid_paths(paths)?
        .into_iter()
        .filter(|p| !live.contains(p))
        .collect();
    let dead = super::garbage::with_dead_referrers(store, dead, &live)?;
    if dead.is_empty() {
        return Ok(0);
    }
    let freed = store.path_infos(&dead)?.values().map(|i| i.nar_size).sum();
    store.delete(&dead)?;
    Ok(freed)
}

/// Settle a housekeeping intent of the last run left open by a crash: finish its effect (both
/// are idempotent: delete what is still valid and dead; a probe's scratch roots removed first)
/// and journal the `done`. Returns how many were settled.
pub fn settle(store: &dyn Store, log: &mut dyn RunLog) -> Result<usize, Error> {
    let records = log.last_run();
    let closed: BTreeSet<Seq> = records
        .iter()
        .filter_map(|(_, r)| match r {
            Record::Done { intent, .. } | Record::Failed { intent, .. } => Some(*intent),
            _ => None,
        })
        .collect();
    let open: Vec<(Seq, Transition)> = records
        .into_iter()
        .filter_map(|(seq, r)| match r {
            Record::Intent { transition }
                if transition.is_housekeeping() && !closed.contains(&seq) =>
            {
                Some((seq, transition))
            }
            _ => None,
        })
        .collect();
    for (seq, t) in &open {
        let freed = match t {
            Transition::DeleteLeftovers { paths, .. } => delete_dead(store, paths)?,
            Transition::ProbeStubs { root, scratch } => {
                remove_roots_beside(store, root)?;
                delete_dead(store, scratch)?
            }
            _ => unreachable!("only housekeeping is open here"),
        };
        Journaled(log).done(Some(*seq), Some(freed))?;
    }
    Ok(open.len())
}

/// Remove every root in the directory of `root` (the probe's scratch directory).
pub fn remove_roots_beside(store: &dyn Store, root: &Path) -> Result<(), StoreError> {
    let Some(dir) = root.parent() else {
        return Ok(());
    };
    for link in store.roots(dir)?.into_keys() {
        store.remove_root(&link)?;
    }
    Ok(())
}
