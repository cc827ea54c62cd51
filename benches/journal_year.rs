//! A year of hourly runs in one journal: its size and the cost of opening it, with the default
//! retention and with none. Each run is the sample run of `journal show` (two steps, ~40
//! records), the worst case of an update every hour; the journal lives under STEPWISE_BENCH_DIR
//! (default /dev/shm, where an fsync costs nothing, so that the figures are the journal's own).
//!
//!     cargo bench --bench journal_year                   # 8760 runs each way
//!     STEPWISE_BENCH_RUNS=2000 cargo bench --bench journal_year

use std::path::Path;
use std::time::Instant;

use stepwise::effects::journal::{sample, Journal, Outcome, Record, Retention};

const HOUR_MS: u64 = 3_600_000;

fn one_run(j: &mut Journal, hour: u64) {
    let at = hour * HOUR_MS;
    let run = j.begin_run_at(sample::header(), at).unwrap();
    let first = j.records(run)[0].seq;
    let mut finished = false;
    for r in sample::records(first) {
        finished |= matches!(r, Record::RunFinished { .. });
        j.append_at(run, r, at + 1).unwrap();
    }
    if !finished {
        let done = Record::RunFinished {
            outcome: Outcome::ReachedTarget,
        };
        j.append_at(run, done, at + 2).unwrap();
    }
}

fn year(dir: &Path, name: &str, runs: u64, retention: Retention) {
    let path = dir.join(format!("{name}.redb"));
    let started = Instant::now();
    let mut j = Journal::open(&path).unwrap();
    j.set_retention(retention);
    for hour in 0..runs {
        one_run(&mut j, hour);
    }
    let kept_runs = j.runs().len();
    let kept_records = j.all_records().len();
    drop(j);
    let writing = started.elapsed();
    let size = std::fs::metadata(&path).unwrap().len();
    let t = Instant::now();
    let j = Journal::open(&path).unwrap();
    let open = t.elapsed();
    j.verify().unwrap();
    println!(
        "{name:>14}: {runs} runs written in {:.1} s; kept {kept_runs} runs, {kept_records} records; \
         file {:.2} MiB ({} bytes per run written); open + check {:.1} ms",
        writing.as_secs_f64(),
        size as f64 / (1 << 20) as f64,
        size / runs.max(1),
        open.as_secs_f64() * 1e3
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this once as a smoke test.
    let measuring = std::env::args().any(|a| a == "--bench");
    let runs: u64 = std::env::var("STEPWISE_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if measuring { 8760 } else { 60 });
    let base = std::env::var_os("STEPWISE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let shm = std::path::PathBuf::from("/dev/shm");
            if shm.is_dir() {
                shm
            } else {
                std::env::temp_dir()
            }
        });
    let dir = tempfile::tempdir_in(&base).expect("bench directory");
    year(dir.path(), "default", runs, Retention::default());
    let none = Retention {
        max_runs: u64::MAX,
        max_age_days: u64::MAX / 86_400_001,
    };
    year(dir.path(), "no retention", runs, none);
}
