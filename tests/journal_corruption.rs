//! Damage to a real journal file: flipped bytes at many offsets and truncation at many lengths.
//! Each outcome is detected (an error), harmless (the identical history is read back) or SILENT
//! (a different history read back without error). Silent outcomes must be zero.

use std::path::{Path, PathBuf};

use stepwise::effects::journal::{sample, Journal, Stored};
use stepwise::error::Exit;

/// A journal with two runs (the second interrupted), written and closed cleanly.
fn build(dir: &Path) -> (PathBuf, Vec<Stored>) {
    let path = dir.join("journal.redb");
    let mut j = Journal::open(&path).unwrap();
    let r1 = j.begin_run_at(sample::header(), 1_700_000_000_000).unwrap();
    for (i, r) in sample::records(1).into_iter().enumerate() {
        j.append_at(r1, r, 1_700_000_000_000 + 1000 * i as u64)
            .unwrap();
    }
    let first = j.all_records().len() as u64 + 1;
    let r2 = j.begin_run_at(sample::header(), 1_700_000_100_000).unwrap();
    for (i, r) in sample::interrupted_records(first).into_iter().enumerate() {
        j.append_at(r2, r, 1_700_000_100_000 + 1000 * i as u64)
            .unwrap();
    }
    let records = j.all_records().to_vec();
    drop(j);
    (path, records)
}

#[derive(Debug, Default)]
struct Tally {
    detected: u64,
    harmless: u64,
    silent: Vec<String>,
}

impl Tally {
    fn classify(&mut self, label: &str, original: &[Stored], damaged: &Path, writer: bool) {
        let opened = if writer {
            Journal::open(damaged)
        } else {
            Journal::open_read_only(damaged)
        };
        match opened.and_then(|j| j.verify().map(|_| j)) {
            Err(e) => {
                assert_eq!(e.exit(), Exit::Journal, "{label}: {e}");
                self.detected += 1;
            }
            Ok(j) if j.all_records() == original => self.harmless += 1,
            Ok(j) => self.silent.push(format!(
                "{label} ({} open): read back {} records instead of {}",
                if writer { "writer" } else { "read-only" },
                j.all_records().len(),
                original.len()
            )),
        }
    }
}

fn stride() -> usize {
    std::env::var("STEPWISE_CORRUPTION_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(31)
}

#[test]
fn flipped_bytes_are_never_silent() {
    let dir = tempfile::tempdir().unwrap();
    let (path, original) = build(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let damaged = dir.path().join("damaged.redb");
    let mut tally = [Tally::default(), Tally::default()];
    // Every byte redb or we wrote (non-zero) and the super-header page, and a sample of the zeros.
    let offsets: Vec<usize> = (0..bytes.len())
        .filter(|&i| i < 4096 || bytes[i] != 0 || i % (stride() * 8) == 0)
        .filter(|&i| i % stride() == 0 || std::env::var_os("STEPWISE_CORRUPTION_ALL").is_some())
        .collect();
    for &offset in &offsets {
        for (w, writer) in [false, true].into_iter().enumerate() {
            let mut copy = bytes.clone();
            // A different bit at each offset.
            copy[offset] ^= 1 << (offset % 8);
            std::fs::write(&damaged, &copy).unwrap();
            let _ = std::fs::remove_file(dir.path().join("damaged.redb.lock"));
            tally[w].classify(
                &format!("byte {offset} flipped"),
                &original,
                &damaged,
                writer,
            );
        }
    }
    eprintln!(
        "file {} bytes, {} non-zero, {} offsets flipped; read-only {:?}; writer {:?}",
        bytes.len(),
        bytes.iter().filter(|&&b| b != 0).count(),
        offsets.len(),
        tally[0],
        tally[1]
    );
    for t in &tally {
        assert!(t.silent.is_empty(), "silent: {:#?}", t.silent);
        assert!(t.detected > 0);
    }
}

#[test]
fn truncations_are_never_silent() {
    let dir = tempfile::tempdir().unwrap();
    let (path, original) = build(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let damaged = dir.path().join("damaged.redb");
    let mut tally = [Tally::default(), Tally::default()];
    let mut lengths: Vec<usize> = (0..bytes.len()).step_by(stride() * 13).collect();
    lengths.extend([1, 8, 9, 63, 64, 320, 4095, 4096, 4097, bytes.len() - 1]);
    for len in lengths {
        for (w, writer) in [false, true].into_iter().enumerate() {
            std::fs::write(&damaged, &bytes[..len]).unwrap();
            let _ = std::fs::remove_file(dir.path().join("damaged.redb.lock"));
            tally[w].classify(&format!("truncated to {len}"), &original, &damaged, writer);
        }
    }
    eprintln!(
        "file {} bytes; truncations: read-only {:?}; writer {:?}",
        bytes.len(),
        tally[0],
        tally[1]
    );
    for t in &tally {
        assert!(t.silent.is_empty(), "silent: {:#?}", t.silent);
    }
}
