//! What one realise of the whole target (the plain upgrade) uses at its high-water mark, against
//! what stays once it is done and against the plan's estimate of the plain peak: the
//! NixOS-shaped fixture (testbed's `nixos_scale`) on a roomy tmpfs where the store and Nix's
//! state share the disk. The difference is transient: chiefly Nix's SQLite write-ahead log
//! (`db.sqlite-wal`), which grows by every path the process registers until it exits (Nix sets
//! `wal_autocheckpoint = 40000` pages). Disk use and the log's size are sampled every
//! millisecond while `nix-store --realise` runs, so the high-water figures are lower bounds.
//! `STEPWISE_TESTBED_DIR=… [STEPWISE_NIXOS_SCALE=full] cargo bench --profile dev --bench
//! nix_transient` (root); `NIXOS_SCALE_KINDS=glibc` for some kinds only.

use std::process::Stdio;

use stepwise_testbed::bench::{scale_beds, scale_kinds, should_measure, stepwise_bin};
use stepwise_testbed::Bed;

const MIB: u64 = 1024 * 1024;

fn mib(b: u64) -> f64 {
    b as f64 / MIB as f64
}

/// The plan's estimate of the plain upgrade's peak, in bytes.
fn planned_plain_peak(bed: &Bed, drv: &str) -> u64 {
    let o = bed
        .command(stepwise_bin())
        .arg("--journal")
        .arg(bed.journal_path())
        .args(["--json", "plan", "--target", drv])
        .args(bed.system_args())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("plan --json: {e}: {}", String::from_utf8_lossy(&o.stderr)));
    plan["frame"]["plain_peak"].as_u64().unwrap()
}

fn main() {
    if !should_measure("nix_transient") {
        return;
    }
    let (spec, beds) = scale_beds();
    let fx = &beds.fixture;
    println!(
        "fixture: {} packages, {} local derivations; the plain upgrade's realise on a roomy tmpfs (MiB)",
        spec.packages,
        spec.locals()
    );
    println!(
        "| revision | paths added | used before | planned plain peak | high-water | used after | transient | WAL high-water | WAL per path (KiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for bump in scale_kinds() {
        let adds = fx.union_nar[&bump] - fx.old.closure_nar;
        let roomy = (fx.g0_used + 4 * adds).div_ceil(MIB) + 128;
        let (bed, drv) = beds.bed(roomy, bump).expect("a bed");
        let planned = planned_plain_peak(&bed, &drv);
        let paths_before = bed.valid_paths().unwrap().len();
        let before = bed.used_bytes();
        let (realised, seen) = bed.high_water(|| bed.realise(&[&drv]));
        realised.expect("realising the target");
        let (peak, wal) = (seen.used, seen.wal);
        let after = bed.used_bytes();
        let added = bed
            .valid_paths()
            .unwrap()
            .len()
            .saturating_sub(paths_before);
        println!(
            "| {} | {added} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            bump.attr(),
            mib(before),
            mib(planned),
            mib(peak),
            mib(after),
            mib(peak.saturating_sub(after)),
            mib(wal),
            wal as f64 / 1024.0 / added.max(1) as f64
        );
    }
}
