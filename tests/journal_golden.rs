//! The golden journals in `tests/fixtures/journal`: `v1.redb`, written once by format 1 and
//! frozen (this build cannot write format 1 any more); `v2.redb`, runs that need nothing of
//! format 3 (today's encoder still writes them as format 2); and `v3.redb`, the same runs and then
//! runs with everything format 3 added. Every future stepwise must read them all, byte for byte the
//! same records, rendered as the expected files beside them; and today's encoder must write
//! exactly `v2.redb`'s and `v3.redb`'s records.
//!
//! `STEPWISE_BLESS=1 cargo test --test journal_golden` (the convention of every golden test)
//! rewrites the fixtures of v2 and v3 after a deliberate change; the format-1 ones are never
//! rewritten.

use std::path::{Path, PathBuf};

use redb::ReadableTable;
use stepwise::effects::journal::envelope::{self, genesis_link};
use stepwise::effects::journal::storage::LOG;
use stepwise::effects::journal::{render, sample, Journal, Outcome, Record};

const T0: u64 = 1_700_000_000_000;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal")
}

fn blessing() -> bool {
    std::env::var("STEPWISE_BLESS").is_ok_and(|v| v == "1")
}

/// The formats whose fixtures this build writes.
const WRITTEN: [&str; 2] = ["v2", "v3"];
const DAY: u64 = 86_400_000;

/// The sample runs of `format` with fixed times: two format-2 runs, and for v3 two more.
fn write_sample(path: &Path, format: &str) {
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
    if format == "v3" {
        write_format_3_runs(&mut j);
    }
}

/// Run 3: a header with options and local derivations, a step that ran out of space and a
/// re-plan. Run 4: activations that left a unit failed and asked for a reboot, finished; then the
/// housekeeping the next `upgrade` journals in it.
fn write_format_3_runs(j: &mut Journal) {
    let first = j.all_records().len() as u64 + 1;
    let r3 = j.begin_run_at(sample::header_v3(), T0 + 2 * DAY).unwrap();
    for (i, r) in sample::replanned_records(first).into_iter().enumerate() {
        j.append_at(r3, r, T0 + 2 * DAY + 47_000 * (i as u64 + 1))
            .unwrap();
    }
    let r4 = j.begin_run_at(sample::header(), T0 + 3 * DAY).unwrap();
    let mut records = sample::activated_records(j.all_records().len() as u64 + 1);
    records.push(Record::RunFinished {
        outcome: Outcome::ReachedTarget,
    });
    for (i, r) in records.into_iter().enumerate() {
        j.append_at(r4, r, T0 + 3 * DAY + 5_000 * (i as u64 + 1))
            .unwrap();
    }
    let last = j.all_records().len() as u64;
    for (i, r) in sample::housekeeping_records(last).into_iter().enumerate() {
        j.append_at(r4, r, T0 + 4 * DAY + 3_000 * (i as u64 + 1))
            .unwrap();
    }
}

/// A copy of the golden file of `format` in a temporary directory (reading never writes, but
/// be sure).
fn golden_copy(format: &str) -> (tempfile::TempDir, PathBuf) {
    let golden = fixtures().join(format!("{format}.redb"));
    static GENERATE: std::sync::Once = std::sync::Once::new();
    GENERATE.call_once(|| {
        for format in WRITTEN.into_iter().filter(|_| blessing()) {
            let file = fixtures().join(format!("{format}.redb"));
            let _ = std::fs::remove_file(&file);
            write_sample(&file, format);
            let _ = std::fs::remove_file(fixtures().join(format!("{format}.redb.lock")));
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("journal.redb");
    std::fs::copy(&golden, &copy).unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
    (dir, copy)
}

fn check_against(name: &str, actual: &[u8]) {
    let expected_path = fixtures().join(name);
    if blessing() && WRITTEN.iter().any(|f| name.starts_with(f)) {
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

#[test]
fn golden_v3_verifies() {
    verifies("v3", (4, 67));
}

#[test]
fn golden_v3_export() {
    export("v3");
}

#[test]
fn golden_v3_show() {
    show("v3");
}

#[test]
fn golden_v3_show_json() {
    show_json("v3");
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

/// Today's encoder writes the very bytes of the v2 and v3 goldens: the encoding has not drifted.
#[test]
fn encoder_still_writes_the_golden_bytes() {
    for format in WRITTEN {
        let (_d, golden) = golden_copy(format);
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("journal.redb");
        write_sample(&fresh, format);
        let (g, f) = (log_table(&golden), log_table(&fresh));
        assert_eq!(g.len(), f.len(), "{format}");
        for ((seq, gb), (_, fb)) in g.iter().zip(&f) {
            assert!(
                gb == fb,
                "record {seq} encodes differently than the {format} golden"
            );
        }
        // And the chain's first link is the documented genesis.
        let first = envelope::decode(&genesis_link(), 1, &g[0].1).unwrap();
        assert_eq!(first.seq, 1);
    }
}

/// The v3 golden: the first two runs' records are still format 2, the file's marker is 3, and
/// what format 3 added reads back.
#[test]
fn golden_v3_mixes_format_2_and_format_3_records() {
    let (_d, path) = golden_copy("v3");
    let formats: Vec<u16> = log_table(&path)
        .iter()
        .map(|(_, b)| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    let (_d2, v2) = golden_copy("v2");
    let format_2_records = log_table(&v2).len();
    assert!(formats[..format_2_records].iter().all(|&f| f == 2));
    assert!(formats[format_2_records..].contains(&3));
    let j = Journal::open_read_only(&path).unwrap();
    assert_eq!(j.format(), 3);
    assert_eq!(j.runs()[2].1, &sample::header_v3());
    let kinds: Vec<&str> = j
        .all_records()
        .iter()
        .map(|r| r.record.kind_name())
        .collect();
    for kind in ["spaceRanOut", "replanned", "activated"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
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
