//! The golden journal `tests/fixtures/journal/v1.redb`, written once by format 1: every future
//! stepwise must read it, byte for byte the same records, rendered as the expected files beside
//! it. Never regenerate an existing fixture; a format change adds a new one (v2.redb, …).
//!
//! `STEPWISE_WRITE_GOLDEN=1 cargo test --test journal_golden` writes the fixtures that are missing.

use std::path::{Path, PathBuf};

use redb::ReadableTable;
use stepwise::effects::journal::envelope::{self, genesis_link};
use stepwise::effects::journal::storage::LOG;
use stepwise::effects::journal::{render, sample, Journal};

const T0: u64 = 1_700_000_000_000;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal")
}

fn writing() -> bool {
    std::env::var_os("STEPWISE_WRITE_GOLDEN").is_some()
}

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

/// A copy of the golden file in a temporary directory (reading never writes, but be sure).
fn golden_copy() -> (tempfile::TempDir, PathBuf) {
    let golden = fixtures().join("v1.redb");
    static GENERATE: std::sync::Once = std::sync::Once::new();
    GENERATE.call_once(|| {
        if !golden.exists() && writing() {
            write_sample(&golden);
            let _ = std::fs::remove_file(fixtures().join("v1.redb.lock"));
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("journal.redb");
    std::fs::copy(&golden, &copy).expect("tests/fixtures/journal/v1.redb is missing");
    (dir, copy)
}

fn check_against(name: &str, actual: &[u8]) {
    let expected_path = fixtures().join(name);
    if !expected_path.exists() && writing() {
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

#[test]
fn golden_v1_verifies() {
    let (_d, path) = golden_copy();
    let j = Journal::open_read_only(&path).unwrap();
    let s = j.verify().unwrap();
    assert_eq!((s.runs, s.records), (2, 37));
}

#[test]
fn golden_v1_export() {
    let (_d, path) = golden_copy();
    let j = Journal::open_read_only(&path).unwrap();
    let mut out = Vec::new();
    render::export(&mut out, &j).unwrap();
    check_against("v1.export.jsonl", &out);
}

#[test]
fn golden_v1_show() {
    let (_d, path) = golden_copy();
    let j = Journal::open_read_only(&path).unwrap();
    let mut out = Vec::new();
    render::show(&mut out, &j, None).unwrap();
    // The path differs per run of the test: only in "no runs" lines, which this has none of.
    check_against("v1.show.txt", &out);
    let mut one = Vec::new();
    render::show(&mut one, &j, Some(2)).unwrap();
    check_against("v1.show-run-2.txt", &one);
}

#[test]
fn golden_v1_show_json() {
    let (_d, path) = golden_copy();
    let j = Journal::open_read_only(&path).unwrap();
    let mut out = Vec::new();
    render::show_json(&mut out, &j, None).unwrap();
    check_against("v1.show.jsonl", &out);
}

/// Today's encoder writes the very bytes format 1 wrote: the encoding has not drifted.
#[test]
fn encoder_still_writes_the_golden_bytes() {
    let (_d, golden) = golden_copy();
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("journal.redb");
    write_sample(&fresh);
    let read = |p: &Path| -> Vec<(u64, Vec<u8>)> {
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
    };
    let (g, f) = (read(&golden), read(&fresh));
    assert_eq!(g.len(), f.len());
    for ((seq, gb), (_, fb)) in g.iter().zip(&f) {
        assert!(
            gb == fb,
            "record {seq} encodes differently than format 1 did"
        );
    }
    // And the chain's first link is the documented genesis.
    let first = envelope::decode(&genesis_link(), 1, &g[0].1).unwrap();
    assert_eq!(first.seq, 1);
}
