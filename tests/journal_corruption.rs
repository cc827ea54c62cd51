//! Damage to a real journal file: flipped bits at many offsets and truncation at many lengths,
//! of a cleanly closed journal and of one whose writer was killed (SIGKILL) mid-run. Each outcome
//! is detected (an error, exit 4), harmless (the identical history read back) or SILENT (a
//! different history read back without error). Silent outcomes must be zero.
//!
//! Every case is read both ways: `open_read_only` (show, status) and `open` (the next writer,
//! which also runs redb's page-checksum check), and `verify()` after.
//!
//! CI samples offsets (`STEPWISE_CORRUPTION_STRIDE`, default 31); `STEPWISE_CORRUPTION_ALL=1`
//! flips every byte (run it in release mode: minutes).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use stepwise::effects::journal::{sample, Journal, Stored};
use stepwise::error::Exit;

const CHILD_ENV: &str = "STEPWISE_CORRUPTION_CHILD";
const T0: u64 = 1_700_000_000_000;

fn write_runs(j: &mut Journal) {
    let r1 = j.begin_run_at(sample::header(), T0).unwrap();
    for (i, r) in sample::records(1).into_iter().enumerate() {
        j.append_at(r1, r, T0 + 1000 * i as u64).unwrap();
    }
    let first = j.all_records().len() as u64 + 1;
    let r2 = j.begin_run_at(sample::header(), T0 + 100_000).unwrap();
    for (i, r) in sample::interrupted_records(first).into_iter().enumerate() {
        j.append_at(r2, r, T0 + 100_000 + 1000 * i as u64).unwrap();
    }
}

/// Runs only as the child: write the runs, say so, and wait to be killed.
#[test]
fn child_writes_and_waits() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let mut j = Journal::open(Path::new(&path)).unwrap();
    write_runs(&mut j);
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    unreachable!("killed before this");
}

/// A cleanly closed journal with two runs.
fn clean(dir: &Path) -> PathBuf {
    let path = dir.join("clean.redb");
    let mut j = Journal::open(&path).unwrap();
    write_runs(&mut j);
    path
}

/// The same runs, its writer killed with SIGKILL after the last commit: the file is unclean.
fn crashed(dir: &Path) -> PathBuf {
    let path = dir.join("crashed.redb");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writes_and_waits",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // libtest may print "test child_writes_and_waits ... " before it on the same line.
    while !line.trim_end().ends_with("ready") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    path
}

#[derive(Debug, Default)]
struct Tally {
    detected: u64,
    harmless: u64,
    silent: Vec<String>,
    /// Damage detected, but the file was written on the way (a damaged journal is evidence).
    rewritten: Vec<String>,
}

struct Campaign {
    dir: tempfile::TempDir,
    original: Vec<Stored>,
    bytes: Vec<u8>,
    /// The lock file with the writer's witness of its last commit.
    lock: Vec<u8>,
    /// [read-only, writer]
    tally: [Tally; 2],
}

impl Campaign {
    fn new(make: fn(&Path) -> PathBuf) -> Campaign {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        let mut lock_name = path.clone().into_os_string();
        lock_name.push(".lock");
        let lock = std::fs::read(PathBuf::from(lock_name)).unwrap();
        assert!(String::from_utf8_lossy(&lock).contains("witness "));
        let original = Journal::open_read_only(&path)
            .unwrap()
            .all_records()
            .to_vec();
        // Both runs' headers and records.
        assert_eq!(
            original.len(),
            2 + sample::records(1).len() + sample::interrupted_records(0).len()
        );
        Campaign {
            dir,
            original,
            bytes,
            lock,
            tally: Default::default(),
        }
    }

    fn try_damaged(&mut self, label: &str, damaged: &[u8]) {
        let path = self.dir.path().join("damaged.redb");
        for (w, writer) in [false, true].into_iter().enumerate() {
            std::fs::write(&path, damaged).unwrap();
            std::fs::write(self.dir.path().join("damaged.redb.lock"), &self.lock).unwrap();
            let opened = if writer {
                Journal::open(&path)
            } else {
                Journal::open_read_only(&path)
            };
            let t = &mut self.tally[w];
            match opened.and_then(|j| j.verify().map(|_| j)) {
                Err(e) => {
                    assert_eq!(e.exit(), Exit::Journal, "{label}: {e}");
                    t.detected += 1;
                    if std::fs::read(&path).unwrap() != damaged {
                        t.rewritten.push(format!("{label} (writer: {writer}): {e}"));
                    }
                }
                Ok(j) if j.all_records() == self.original.as_slice() => t.harmless += 1,
                Ok(j) => t.silent.push(format!(
                    "{label} ({} open): read back {} records instead of {}",
                    if writer { "writer" } else { "read-only" },
                    j.all_records().len(),
                    self.original.len()
                )),
            }
        }
    }

    fn report(&self, what: &str) {
        let counts = |t: &Tally| {
            format!(
                "detected {}, harmless {}, SILENT {}, detected but rewritten {}",
                t.detected,
                t.harmless,
                t.silent.len(),
                t.rewritten.len()
            )
        };
        eprintln!(
            "{what}: file {} bytes; read-only: {}; writer: {}",
            self.bytes.len(),
            counts(&self.tally[0]),
            counts(&self.tally[1])
        );
        for t in &self.tally {
            assert!(t.silent.is_empty(), "{what}: silent: {:#?}", t.silent);
            assert!(
                t.rewritten.is_empty(),
                "{what}: rewritten: {:#?}",
                t.rewritten
            );
            assert!(t.detected > 0, "{what}: nothing detected");
        }
    }
}

fn stride() -> usize {
    std::env::var("STEPWISE_CORRUPTION_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(31)
}

fn every_byte() -> bool {
    std::env::var_os("STEPWISE_CORRUPTION_ALL").is_some()
}

/// One bit flipped (a different bit at each offset) at the offsets holding data and a sample of
/// the zero-filled rest; every offset with STEPWISE_CORRUPTION_ALL.
fn flips(make: fn(&Path) -> PathBuf, what: &str) {
    let mut c = Campaign::new(make);
    let offsets: Vec<usize> = (0..c.bytes.len())
        .filter(|&i| {
            every_byte() || (i % stride() == 0 && (c.bytes[i] != 0 || i % (stride() * 8) == 0))
        })
        .collect();
    for &offset in &offsets {
        let mut copy = c.bytes.clone();
        copy[offset] ^= 1 << (offset % 8);
        c.try_damaged(&format!("offset {offset} bit {}", offset % 8), &copy);
    }
    c.report(&format!("{what}, one bit at {} offsets", offsets.len()));
}

/// Bits of redb's super-header (magic, god byte, layout, both commit slots): every bit of the
/// first 64 bytes and two of each slot byte (every bit of all 320 with STEPWISE_CORRUPTION_ALL).
fn header_bits(make: fn(&Path) -> PathBuf, what: &str) {
    let mut c = Campaign::new(make);
    for offset in 0..320 {
        let bits: Vec<usize> = if offset < 64 || every_byte() {
            (0..8).collect()
        } else {
            vec![offset % 8, (offset + 4) % 8]
        };
        for bit in bits {
            let mut copy = c.bytes.clone();
            copy[offset] ^= 1 << bit;
            c.try_damaged(&format!("offset {offset} bit {bit}"), &copy);
        }
    }
    c.report(&format!("{what}, bits of the first 320 bytes"));
}

fn truncations(make: fn(&Path) -> PathBuf, what: &str) {
    let mut c = Campaign::new(make);
    let n = c.bytes.len();
    let step = if every_byte() { 1 } else { stride() * 13 };
    let mut lengths: Vec<usize> = (0..n).step_by(step).collect();
    lengths.extend([
        1,
        8,
        9,
        63,
        64,
        320,
        4095,
        4096,
        4097,
        n / 2,
        n - 4096,
        n - 1,
    ]);
    for &len in &lengths {
        let copy = c.bytes[..len].to_vec();
        c.try_damaged(&format!("truncated to {len}"), &copy);
    }
    c.report(&format!("{what}, truncated at {} lengths", lengths.len()));
}

#[test]
fn flips_of_a_clean_journal_are_never_silent() {
    flips(clean, "clean journal");
}

#[test]
fn flips_of_a_crashed_journal_are_never_silent() {
    flips(crashed, "crashed journal");
}

#[test]
fn header_bits_of_a_clean_journal_are_never_silent() {
    header_bits(clean, "clean journal");
}

#[test]
fn header_bits_of_a_crashed_journal_are_never_silent() {
    header_bits(crashed, "crashed journal");
}

#[test]
fn truncations_of_a_clean_journal_are_never_silent() {
    truncations(clean, "clean journal");
}

#[test]
fn truncations_of_a_crashed_journal_are_never_silent() {
    truncations(crashed, "crashed journal");
}
