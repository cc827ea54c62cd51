//! The stub probe (issue 8): before a run that takes non-vital packages out changes anything,
//! their stubs must be known not to break a glue build. A stub is an empty directory; glue that
//! only links a package (`system-path`, unit files naming `${pkg}/bin/…`) builds with it, glue
//! that reads the package's files (copies its config, indexes its fonts) fails.
//!
//! The probe generation is the target with every package at its G0 version and the stubbed
//! ones replaced by their stubs: the user's own workaround ("rebuild without the non-vital
//! packages") with nothing upgraded. Its new paths are the rewritten glue, the stubs, and the
//! packages that have no G0 counterpart (those move in the first step of any plan anyway), so
//! building it needs no more room than the plan's first step. Building it is an effect; this
//! module only says what to build.

use std::collections::BTreeSet;

use super::mask::{Mask, Stub};
use super::planner::Planned;
use crate::drv::StoreDir;

/// The mask of the probe generation for the stubs of `names` (package names as in the plan).
/// `None` when no unit of those names is in the target (nothing to probe).
pub fn stub_probe_mask(planned: &Planned, store_dir: &StoreDir, names: &[String]) -> Option<Mask> {
    let stubbed: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let mut mask = Mask::default();
    let mut any_stub = false;
    for unit in &planned.units.units {
        if stubbed.contains(unit.name.as_str()) {
            let stub = Stub::for_package(store_dir, &unit.name);
            for p in unit.new.values() {
                mask.0.insert(p.clone(), stub.path.clone());
                any_stub = true;
            }
        } else if unit.maskable() {
            for (a, b) in unit.old_mask() {
                mask.0.insert(a.clone(), b.clone());
            }
        }
        // Neither: no G0 counterpart, so the probe takes its new version, as step 1 would.
    }
    any_stub.then_some(mask)
}

/// The package names the plan replaces by stubs in any step, sorted.
pub fn stubbed_names(planned: &Planned) -> Vec<String> {
    let mut names = BTreeSet::new();
    if let Ok(p) = &planned.outcome {
        for s in &p.steps {
            names.extend(s.stubbed.iter().cloned());
        }
    }
    names.into_iter().collect()
}
