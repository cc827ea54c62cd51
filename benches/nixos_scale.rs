//! The smallest tmpfs (MiB) on which each revision kind of the NixOS-shaped fixture at scale
//! (testbed's `nixos_scale`) completes: `stepwise upgrade` against the plain upgrade (realise,
//! set the profile, switch), each found by bisection, from G0 as an hourly GC left it with the
//! target instantiated. The store and Nix's database share the disk. Prints a table; needs root.
//! `STEPWISE_TESTBED_DIR=… cargo bench --bench nixos_scale` (reduced scale: 260 packages, 40
//! local derivations); `STEPWISE_NIXOS_SCALE=full` for real scale (1,300 packages, 200 local
//! derivations); `NIXOS_SCALE_KINDS=glibc,kernel` for some kinds only; `NIXOS_SCALE_MIB=LO-HI`
//! to bisect within LO–HI MiB only (a full-scale run takes minutes a trial);
//! `NIXOS_SCALE_WHICH=plain` or `stepwise` for one of the two; `STEPWISE_BIN` for another binary.

use stepwise_testbed::bench::{scale_beds, scale_kinds, should_measure, smallest, stepwise_bin};
use stepwise_testbed::{Bump, ScaleBeds};

const MIB: u64 = 1024 * 1024;

/// Does the upgrade to `bump`'s target complete on a tmpfs of `mib` MiB?
fn completes(beds: &ScaleBeds, bump: Bump, mib: u64, stepwise: bool) -> bool {
    let Ok((bed, drv)) = beds.bed(mib, bump) else {
        return false;
    };
    let out = &beds.fixture.targets[&bump].out;
    if !stepwise {
        return bed.install(&drv).is_ok();
    }
    let o = bed
        .command(stepwise_bin())
        .arg("--journal")
        .arg(bed.journal_path())
        .args(["-q", "upgrade", "--target", &drv])
        .args(bed.system_args())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    o.status.success() && bed.current_system().as_deref() == Some(out.as_str())
}

/// `NIXOS_SCALE_MIB=LO-HI`, when set.
fn range() -> Option<(u64, u64)> {
    let v = std::env::var("NIXOS_SCALE_MIB").ok()?;
    let (lo, hi) = v.split_once('-')?;
    Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?))
}

fn show(x: Option<u64>) -> String {
    x.map_or("none".into(), |m| m.to_string())
}

fn main() {
    if !should_measure("nixos_scale") {
        return;
    }
    let (spec, beds) = scale_beds();
    let fx = &beds.fixture;
    println!(
        "fixture: {} packages, {} local derivations, sizes scaled 1:{}; G0: {} paths, {:.1} MiB NAR, {:.1} MiB on tmpfs after a GC",
        spec.packages,
        spec.locals(),
        stepwise_testbed::SCALE_DOWN,
        fx.old.closure_paths,
        fx.old.closure_nar as f64 / MIB as f64,
        fx.g0_used as f64 / MIB as f64
    );
    println!("smallest tmpfs (MiB) on which each completes");
    println!(
        "| {:<8} | {:>11} | {:>9} | {:>8} | {:>16} |",
        "revision", "|old ∪ new|", "plain", "stepwise", "stepwise / plain"
    );
    println!("|---|---|---|---|---|");
    for bump in scale_kinds() {
        let union = fx.union_nar[&bump];
        let (lo, hi) = range().unwrap_or((
            fx.g0_used / MIB,
            (fx.g0_used + 2 * (union - fx.old.closure_nar)).div_ceil(MIB) + 32,
        ));
        let which = std::env::var("NIXOS_SCALE_WHICH").unwrap_or_default();
        let run = |stepwise: bool| {
            let name = if stepwise { "stepwise" } else { "plain" };
            (which.is_empty() || which == name)
                .then(|| smallest(lo, hi, |m| completes(&beds, bump, m, stepwise)))
                .flatten()
        };
        let plain = run(false);
        let steps = run(true);
        let ratio = match (steps, plain) {
            (Some(s), Some(p)) => format!("{:.2}", s as f64 / p as f64),
            _ => "-".into(),
        };
        println!(
            "| {:<8} | {:>11.1} | {:>9} | {:>8} | {:>16} |",
            bump.attr(),
            union as f64 / MIB as f64,
            show(plain),
            show(steps),
            ratio
        );
    }
}
