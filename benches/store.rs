//! Time of a closure-and-sizes query on the NixOS-shaped fixture (real Nix on a test bed), and
//! of the batched substituter query, beside the model store doing the same. Prints figures.
//!
//! Run: `cargo bench --bench store` (root: the bed mounts a tmpfs). `STEPWISE_BENCH_RUNS=N` sets
//! the repetitions (default 10).

use std::time::{Duration, Instant};

use stepwise::drv::{StoreDir, StorePath};
use stepwise::effects::model_store::ModelStore;
use stepwise::effects::nix::{NixCli, NixCliConfig};
use stepwise::effects::store::Store;
use stepwise_testbed::{is_root, Bed, Disk, Fixture, FixtureSpec};

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (T, Duration, Duration) {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        last = Some(f());
        times.push(t.elapsed());
    }
    times.sort();
    (last.expect("runs > 0"), times[0], times[times.len() / 2])
}

fn row(what: &str, n: usize, bytes: u64, min: Duration, median: Duration) {
    println!(
        "{what:<58} {n:>5} paths {:>8.1} MiB   min {:>8.2} ms   median {:>8.2} ms",
        bytes as f64 / (1 << 20) as f64,
        min.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this as a test: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if !is_root() {
        eprintln!("store bench: skipped, needs root for the test bed's tmpfs");
        return;
    }
    let runs: usize = std::env::var("STEPWISE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .max(1);
    let spec = FixtureSpec::standard();
    let (bed, fx) = Bed::prepared_with(&spec, |fx: &Fixture| {
        Disk::TmpfsMib((fx.union_bytes >> 20) + 96)
    });
    let g0 = bed
        .install(&fx.old.drv)
        .expect("installing the old generation");
    let cli = NixCli::new(NixCliConfig {
        env: bed.env(),
        ..Default::default()
    })
    .expect("detecting Nix");
    let sd: StoreDir = cli.store_dir().clone();
    let g0 = sd.parse(&g0).unwrap();
    println!(
        "{:?} {}.{}.{}; fixture `standard`: |G0| {:.1} MiB, |T| {:.1} MiB, {runs} runs each",
        cli.nix_info().implementation,
        cli.nix_info().version.0,
        cli.nix_info().version.1,
        cli.nix_info().version.2,
        Fixture::mib(fx.old_bytes),
        Fixture::mib(fx.new_bytes),
    );

    let roots = [g0.clone()];
    let (infos, min, med) = time(runs, || cli.closure_infos(&roots).unwrap());
    let bytes: u64 = infos.values().map(|i| i.nar_size).sum();
    row(
        "NixCli closure_infos (1 call: path-info --json -r)",
        infos.len(),
        bytes,
        min,
        med,
    );

    let (infos2, min, med) = time(runs, || {
        let c: Vec<StorePath> = cli.closure(&roots).unwrap().into_iter().collect();
        cli.path_infos(&c).unwrap()
    });
    assert_eq!(infos2, infos);
    row(
        "NixCli closure + path_infos (3 calls)",
        infos2.len(),
        bytes,
        min,
        med,
    );

    // The target's new package outputs, as the planner asks the cache about them.
    let new_outs: Vec<StorePath> = fx
        .packages
        .iter()
        .filter_map(|p| p.new.as_ref())
        .flat_map(|v| v.outputs.values())
        .map(|p| sd.parse(p).unwrap())
        .collect();
    let (subs, min, med) = time(runs, || cli.substitute_infos(&new_outs).unwrap());
    row(
        "NixCli substitute_infos (1 batched call, file:// cache)",
        subs.len(),
        subs.values().map(|s| s.nar_size).sum(),
        min,
        med,
    );

    // A bigger closure: text objects made at evaluation time (no builds), each referencing the
    // previous one and up to two earlier ones.
    let n = std::env::var("STEPWISE_BENCH_PATHS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000u32);
    let expr = format!(
        "let nodes = builtins.genList (i: builtins.toFile \"node-${{toString i}}\" (\"node ${{toString i}}\" + (if i >= 1 then \" \" + builtins.elemAt nodes (i - 1) else \"\") + (if i >= 7 then \" \" + builtins.elemAt nodes (i - 7) else \"\") + (if i >= 31 then \" \" + builtins.elemAt nodes (i / 2) else \"\"))) {n}; in builtins.elemAt nodes {}",
        n - 1
    );
    let made = bed
        .command("nix-instantiate")
        .args(["--eval", "--json", "--read-write-mode", "--expr", &expr])
        .output()
        .expect("running nix-instantiate");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let last: String = serde_json::from_slice(&made.stdout).unwrap();
    let big_roots = [sd.parse(&last).unwrap()];
    let (big, min, med) = time(runs, || cli.closure_infos(&big_roots).unwrap());
    let big_bytes: u64 = big.values().map(|i| i.nar_size).sum();
    row(
        "NixCli closure_infos, synthetic closure",
        big.len(),
        big_bytes,
        min,
        med,
    );
    let (big2, min, med) = time(runs, || {
        let c: Vec<StorePath> = cli.closure(&big_roots).unwrap().into_iter().collect();
        cli.path_infos(&c).unwrap()
    });
    assert_eq!(big2.len(), big.len());
    row(
        "NixCli closure + path_infos, synthetic closure",
        big2.len(),
        big_bytes,
        min,
        med,
    );
    let bigmodel = ModelStore::new(sd.clone(), 1 << 40);
    for i in big.values() {
        let refs: Vec<StorePath> = i.references.iter().cloned().collect();
        bigmodel.add_valid(&i.path, i.nar_size, &refs);
    }
    let (m, min, med) = time(runs, || bigmodel.closure_infos(&big_roots).unwrap());
    row(
        "ModelStore closure_infos, synthetic closure",
        m.len(),
        big_bytes,
        min,
        med,
    );

    // The same closure in the model.
    let model = ModelStore::new(sd.clone(), 1 << 40);
    for i in infos.values() {
        let refs: Vec<StorePath> = i.references.iter().cloned().collect();
        model.add_valid(&i.path, i.nar_size, &refs);
    }
    let (minfos, min, med) = time(runs.max(100), || model.closure_infos(&roots).unwrap());
    assert_eq!(minfos.len(), infos.len());
    row("ModelStore closure_infos", minfos.len(), bytes, min, med);
}
