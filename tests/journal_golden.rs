//! The golden journals in `tests/fixtures/journal`: `v1.redb`, written once by format 1 and
//! frozen (this build cannot write format 1 any more), and `v2.redb`, written by today's encoder.
//! Every future stepwise must read both, byte for byte the same records, rendered as the expected
//! files beside them; and today's encoder must write exactly `v2.redb`'s records.
//!
//! `STEPWISE_BLESS=1 cargo test --test journal_golden` (the convention of every golden test)
//! rewrites the format-2 fixtures after a deliberate change; the format-1 ones are never rewritten.

use std::path::{Path, PathBuf};

use redb::ReadableTable;
use stepwise::effects::journal::envelope::{self, genesis_link};
use stepwise::effects::journal::storage::LOG;
use stepwise::effects::journal::{render, sample, Journal};

const T0: u64 = 1_700_000_000_000;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal")
}

fn blessing() -> bool {
    std::env::var("STEPWISE_BLESS").is_ok_and(|v| v == "1")
}

/// The format whose fixtures this build writes.
const CURRENT: &str = "v2";

/// The two sample runs with fixed times.
fn write_sample(path: &Path) {
    let mut j = Journal::open(path).unwrap();
    let r1 = j.begin_run_at(sample::header(), T0).unwrap();
    for (i, r) in sample::records(1).into_iter().enumerate() {
        j.append_at(r1, r, T0 + 1_500 * (i as u64 + 1) + 37 * i as u64)
            .unwrap();
    }
    let first = j.all_records().len() as u64 + 1;
    let r2 = j.begin_run_at(sample::header(), T0 + 86_400_000).unwrap();
    for (i, r) in sample::interrupted_records(first).into_iter().enumerate() {
        j.append_at(r2, r, T0 + 86_400_000 + 61_000 * (i as u64 + 1))
            .unwrap();
    }
}

/// A copy of the golden file of `format` in a temporary directory (reading never writes, but
/// be sure).
fn golden_copy(format: &str) -> (tempfile::TempDir, PathBuf) {
    let golden = fixtures().join(format!("{format}.redb"));
    static GENERATE: std::sync::Once = std::sync::Once::new();
    GENERATE.call_once(|| {
        let current = fixtures().join(format!("{CURRENT}.redb"));
        if blessing() {
            let _ = std::fs::remove_file(&current);
            write_sample(&current);
            let _ = std::fs::remove_file(fixtures().join(format!("{CURRENT}.redb.lock")));
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("journal.redb");
    std::fs::copy(&golden, &copy).unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
    (dir, copy)
}

fn check_against(name: &str, actual: &[u8]) {
    let expected_path = fixtures().join(name);
    if blessing() && name.starts_with(CURRENT) {
        std::fs::write(&expected_path, actual).unwrap();
    }
    let expected = std::fs::read(&expected_path)
        .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
    assert!(
        expected == actual,
        "{name} differs from the golden output:\n--- expected\n{}\n--- actual\n{}",
        String::from_utf8_lossy(&expected),
        String::from_utf8_lossy(actual)
    );
}

fn verifies(format: &str, expected: (u64, u64)) {
    let (_d, path) = golden_copy(format);
    let j = Journal::open_read_only(&path).unwrap();
    let s = j.verify().unwrap();
    assert_eq!((s.runs, s.records), expected);
}

fn export(format: &str) {
    let (_d, path) = golden_copy(format);
    let j = Journal::open_read_only(&path).unwrap();
    let mut out = Vec::new();
    render::export(&mut out, &j).unwrap();
    check_against(&format!("{format}.export.jsonl"), &out);
}

fn show(format: &str) {
    let (_d, path) = golden_copy(format);
    let j = Journal::open_read_only(&path).unwrap();
    let mut out = Vec::new();
    render::show(&mut out, &j, None).unwrap();
    // The path differs per run of the test: only in "no runs" lines, which this has none of.
    check_against(&format!("{format}.show.txt"), &out);
    let mut one = Vec::new();
    render::show(&mut one, &j, Some(2)).unwrap();
    check_against(&format!("{format}.show-run-2.txt"), &one);
}

fn show_json(format: &str) {
    let (_d, path) = golden_copy(format);
    let j = Journal::open_read_only(&path).unwrap();
    let mut out = Vec::new();
    render::show_json(&mut out, &j, None).unwrap();
    check_against(&format!("{format}.show.jsonl"), &out);
}

#[test]
fn golden_v1_verifies() {
    verifies("v1", (2, 37));
}

#[test]
fn golden_v1_export() {
    export("v1");
}

#[test]
fn golden_v1_show() {
    show("v1");
}

#[test]
fn golden_v1_show_json() {
    show_json("v1");
}

#[test]
fn golden_v2_verifies() {
    verifies("v2", (2, 39));
}

#[test]
fn golden_v2_export() {
    export("v2");
}

#[test]
fn golden_v2_show() {
    show("v2");
}

#[test]
fn golden_v2_show_json() {
    show_json("v2");
}

/// Format 1's run headers read back without masks (they were in a side file), format 2's with.
#[test]
fn format_1_headers_lack_what_format_2_headers_carry() {
    let (_d1, v1) = golden_copy("v1");
    let (_d2, v2) = golden_copy("v2");
    let j1 = Journal::open_read_only(&v1).unwrap();
    let j2 = Journal::open_read_only(&v2).unwrap();
    assert!(j1.runs().iter().all(|(_, h)| !h.is_complete()));
    assert!(j2.runs().iter().all(|(_, h)| h.is_complete()));
    assert_eq!(j2.runs()[0].1, &sample::header());
}

fn log_table(p: &Path) -> Vec<(u64, Vec<u8>)> {
    let mut b = redb::Builder::new();
    b.set_concurrency_mode(redb::ConcurrencyMode::SingleWriter);
    let db = b.open_read_only(p).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let t = txn.open_table(LOG).unwrap();
    t.iter()
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.value(), v.value().to_vec())
        })
        .collect()
}

/// Today's encoder writes the very bytes of the format-2 golden: the encoding has not drifted.
#[test]
fn encoder_still_writes_the_golden_bytes() {
    let (_d, golden) = golden_copy(CURRENT);
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("journal.redb");
    write_sample(&fresh);
    let (g, f) = (log_table(&golden), log_table(&fresh));
    assert_eq!(g.len(), f.len());
    for ((seq, gb), (_, fb)) in g.iter().zip(&f) {
        assert!(
            gb == fb,
            "record {seq} encodes differently than the format-2 golden"
        );
    }
    // And the chain's first link is the documented genesis.
    let first = envelope::decode(&genesis_link(), 1, &g[0].1).unwrap();
    assert_eq!(first.seq, 1);
}

/// A format-1 journal takes format-2 runs: its marker is raised with the first one, and every
/// run, old and new, reads back.
#[test]
fn a_format_1_journal_takes_format_2_runs() {
    let (_d, path) = golden_copy("v1");
    assert_eq!(Journal::open_read_only(&path).unwrap().format(), 1);
    {
        let mut j = Journal::open(&path).unwrap();
        j.begin_run_at(sample::header(), T0 + 2 * 86_400_000)
            .unwrap();
    }
    let j = Journal::open_read_only(&path).unwrap();
    assert_eq!(j.format(), 2);
    assert_eq!(j.verify().unwrap().runs, 3);
    let runs = j.runs();
    assert!(!runs[0].1.is_complete() && !runs[1].1.is_complete());
    assert_eq!(runs[2].1, &sample::header());
}
