//! Deleting dead paths the way Nix lets us: with every dead path that still refers to them.

use std::collections::BTreeSet;

use crate::drv::StorePath;
use crate::effects::store::StoreError;
use crate::effects::Store;

/// `dead` and every path that refers to one of them, transitively, that is not `live` either:
/// what `nix-store --delete` needs together. Garbage that still refers to what a run deletes (a
/// glue output of a build a stop cut short, an unrooted `.drv`, a killed probe's scratch) would
/// otherwise make Nix refuse, run after run; a GC would take it all the same. Nothing live is
/// ever added.
pub fn with_dead_referrers(
    store: &dyn Store,
    dead: Vec<StorePath>,
    live: &BTreeSet<StorePath>,
) -> Result<Vec<StorePath>, StoreError> {
    let referrers = store.referrers_closure(&dead)?;
    let mut all: BTreeSet<StorePath> = dead.into_iter().collect();
    all.extend(referrers.into_iter().filter(|p| !live.contains(p)));
    Ok(all.into_iter().collect())
}
