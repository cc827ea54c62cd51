//! What the disk benchmarks share: whether to measure at all, the binary they drive, the
//! bisection over disk sizes, and the NixOS-shaped fixture with the kinds asked for.

use std::path::PathBuf;

/// Whether `name` should measure: only under `cargo bench` (`cargo test --all-targets` runs
/// bench binaries too) and as root (tmpfs and loop devices); says why not otherwise.
pub fn should_measure(name: &str) -> bool {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("{name}: run with `cargo bench --bench {name}`; skipped under cargo test");
        return false;
    }
    if !crate::is_root() {
        eprintln!("{name}: needs root (tmpfs, loop devices); skipped");
        return false;
    }
    assert!(stepwise_bin().exists(), "build the binary first");
    true
}

/// The stepwise binary beside the bench's (`STEPWISE_BIN` for another).
pub fn stepwise_bin() -> PathBuf {
    std::env::var_os("STEPWISE_BIN")
        .map(Into::into)
        .unwrap_or_else(|| {
            let me = std::env::current_exe().unwrap();
            me.parent().unwrap().parent().unwrap().join("stepwise")
        })
}

/// The smallest size in [lo, hi] where `ok` holds (assumed monotone), or None.
pub fn smallest(mut lo: u64, mut hi: u64, ok: impl Fn(u64) -> bool) -> Option<u64> {
    if !ok(hi) {
        return None;
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        if ok(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(hi)
}

/// The revision kinds of the NixOS-shaped fixture that `NIXOS_SCALE_KINDS` (attribute names,
/// comma-separated) asks for; all of them when it is unset.
pub fn scale_kinds() -> Vec<crate::Bump> {
    let kinds = std::env::var("NIXOS_SCALE_KINDS").unwrap_or_default();
    crate::Bump::ALL
        .into_iter()
        .filter(|b| kinds.is_empty() || kinds.split(',').any(|k| k == b.attr()))
        .collect()
}

/// The NixOS-shaped fixture at the scale `STEPWISE_NIXOS_SCALE` asks for, built or read from the
/// test beds' cache.
pub fn scale_beds() -> (crate::ScaleSpec, crate::ScaleBeds) {
    let spec = crate::ScaleSpec::from_env();
    let beds = crate::ScaleBeds::build(&spec).expect("building the fixture");
    (spec, beds)
}
