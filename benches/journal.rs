//! Durable appends per second and the latency of one append (each its own fsynced redb commit),
//! on the disk under STEPWISE_BENCH_DIR (default: the system temporary directory).
//!
//!     cargo bench --bench journal                 # 1000 appends
//!     STEPWISE_BENCH_APPENDS=5000 cargo bench --bench journal

use std::time::{Duration, Instant};

use stepwise::effects::journal::{sample, Journal, Record, Transition};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this once as a smoke test.
    let measuring = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("STEPWISE_BENCH_APPENDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if measuring { 1000 } else { 20 });
    let base = std::env::var_os("STEPWISE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&base).expect("bench directory");
    let path = dir.path().join("journal.redb");

    let t = Instant::now();
    let mut j = Journal::open(&path).unwrap();
    let create = t.elapsed();
    let run = j.begin_run(sample::header()).unwrap();

    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        // A typical pair: an intent naming a few store paths, then its outcome.
        let record = if i % 2 == 0 {
            Record::Intent {
                transition: Transition::Collect {
                    paths: (0..4)
                        .map(|k| sample::store_path(&format!("pkg-{i}-{k}")))
                        .collect(),
                    bytes: 1 << 20,
                },
            }
        } else {
            Record::Done {
                intent: j.all_records().len() as u64,
                added: None,
                freed: Some(1 << 20),
            }
        };
        let t = Instant::now();
        j.append(run, record).unwrap();
        latencies.push(t.elapsed());
    }
    let total = start.elapsed();
    drop(j);
    let size = std::fs::metadata(&path).unwrap().len();

    let t = Instant::now();
    let r = Journal::open_read_only(&path).unwrap();
    let reopen = t.elapsed();
    assert_eq!(r.all_records().len(), n + 1);

    latencies.sort();
    println!(
        "journal append benchmark{}: {n} durable appends in {}",
        if measuring {
            ""
        } else {
            " (smoke run; `cargo bench` measures)"
        },
        base.display()
    );
    println!(
        "  throughput      {:.0} appends/s",
        n as f64 / total.as_secs_f64()
    );
    println!(
        "  latency         p50 {}  p90 {}  p99 {}  max {}",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.90)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap())
    );
    println!("  create journal  {}", ms(create));
    println!(
        "  reopen + check  {} for {} records ({} bytes on disk)",
        ms(reopen),
        n + 1,
        size
    );
}
