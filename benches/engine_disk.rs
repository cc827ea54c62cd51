//! The smallest disk on which the fixture's upgrade completes: `stepwise upgrade` against the
//! plain upgrade (realise + set profile + switch), found by bisection over tmpfs sizes (MiB), with
//! the lower bound max(|G0|, |T|) beside them. The store and Nix's database share the tmpfs, as on
//! a VPS; and with `--non-vital big-b` (issue 8). Prints figures; needs root.
//! `cargo bench --bench engine_disk` (`--profile dev` to reuse the debug build)
//! (`STEPWISE_BIN` for another binary).

use stepwise_testbed::{is_root, Bed, Disk, Fixture, FixtureSpec, NIX_STATE_ALLOWANCE_MIB};

const MIB: u64 = 1024 * 1024;

fn stepwise_bin() -> std::path::PathBuf {
    std::env::var_os("STEPWISE_BIN")
        .map(Into::into)
        .unwrap_or_else(|| {
            let me = std::env::current_exe().unwrap();
            me.parent().unwrap().parent().unwrap().join("stepwise")
        })
}

/// Does the upgrade complete on a tmpfs of `mib` MiB? `stepwise`: with these extra arguments
/// (None: the plain upgrade).
fn completes(spec: &FixtureSpec, mib: u64, stepwise: Option<&[&str]>) -> bool {
    let Ok((bed, fx)) = Bed::try_prepared_with(spec, |_| Disk::TmpfsMib(mib)) else {
        return false;
    };
    if bed.install(&fx.old.drv).is_err() {
        return false;
    }
    // A machine switched since boot (the booted pin is issue 8's reboot).
    let _ = std::fs::remove_file(bed.booted_system_link());
    if let Some(extra) = stepwise {
        let o = bed
            .command(stepwise_bin())
            .arg("--journal")
            .arg(bed.journal_path())
            .args(["-q", "upgrade", "--target", &fx.new.drv])
            .args(bed.system_args())
            .args(extra)
            .output()
            .unwrap();
        o.status.success() && bed.current_system().as_deref() == Some(fx.new.out.as_str())
    } else {
        bed.install(&fx.new.drv).is_ok()
    }
}

/// The smallest size in [lo, hi] where `ok` holds (assumed monotone), or None.
fn smallest(mut lo: u64, mut hi: u64, ok: impl Fn(u64) -> bool) -> Option<u64> {
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

fn main() {
    // `cargo test --all-targets` runs bench binaries too: measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "engine_disk: run with `cargo bench --bench engine_disk`; skipped under cargo test"
        );
        return;
    }
    if !is_root() {
        eprintln!("engine_disk: needs root (tmpfs); skipped");
        return;
    }
    assert!(stepwise_bin().exists(), "build the binary first");
    let spec = FixtureSpec::standard();
    let (bed, fx): (Bed, Fixture) = Bed::prepared_with(&spec, |_| Disk::Unlimited);
    drop(bed);
    let old = fx.old_bytes.div_ceil(MIB);
    let new = fx.new_bytes.div_ceil(MIB);
    let union = fx.union_bytes.div_ceil(MIB);
    let lower = old.max(new) + NIX_STATE_ALLOWANCE_MIB;
    let hi = union + 2 * NIX_STATE_ALLOWANCE_MIB;
    println!("fixture: {}", fx.sizes_line());
    println!(
        "lower bound max(|G0|, |T|) + Nix state allowance: {lower} MiB ({} + {NIX_STATE_ALLOWANCE_MIB})",
        old.max(new)
    );
    let plain = smallest(old, hi, |m| completes(&spec, m, None));
    let steps = smallest(old, hi, |m| completes(&spec, m, Some(&[])));
    // Issue 8: big-b out for the duration (a stub), back upgraded at the end.
    let non_vital = smallest(old, hi, |m| {
        completes(&spec, m, Some(&["--non-vital", "big-b"]))
    });
    let show =
        |x: Option<u64>| x.map_or("none up to the search's top".into(), |m| format!("{m} MiB"));
    println!(
        "smallest tmpfs where the plain upgrade completes: {}",
        show(plain)
    );
    println!(
        "smallest tmpfs where stepwise upgrade completes:  {}",
        show(steps)
    );
    println!(
        "smallest tmpfs where stepwise upgrade --non-vital big-b completes: {}",
        show(non_vital)
    );
    if let (Some(p), Some(s)) = (plain, steps) {
        println!(
            "stepwise needs {} MiB less ({:.0}% of the plain upgrade's disk)",
            p.saturating_sub(s),
            100.0 * s as f64 / p as f64
        );
    }
}
