//! A writer killed with SIGKILL (as an OOM kill would) at arbitrary moments: every record whose
//! `append` returned is read back, by a reader and by the next writer, and the journal verifies.
//!
//! The child is this test binary itself, run with `STEPWISE_JOURNAL_CHILD=PATH`: it appends
//! records forever, printing each sequence number once `append` has returned.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use stepwise::effects::journal::{open_intents, sample, Journal, Record, Transition};

const CHILD_ENV: &str = "STEPWISE_JOURNAL_CHILD";

/// Runs only as the child: append until killed.
#[test]
fn child_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let mut j = Journal::open(Path::new(&path)).unwrap();
    let run = match j.last_run() {
        Some(r) => r,
        None => j.begin_run(sample::header()).unwrap(),
    };
    println!("seq {}", j.all_records().len());
    let mut n = 0u64;
    loop {
        n += 1;
        let seq = j
            .append(
                run,
                Record::Intent {
                    transition: Transition::Collect {
                        paths: vec![sample::store_path(&format!("p-{n}"))],
                        bytes: n,
                    },
                },
            )
            .unwrap();
        println!("seq {seq}");
    }
}

/// Start the child, let it acknowledge `acks` records, kill it; return the last acknowledged seq.
fn run_child_and_kill(path: &Path, acks: usize) -> u64 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut last = 0;
    let mut seen = 0;
    while seen <= acks {
        let line = lines.next().expect("child ended early").unwrap();
        if let Some(n) = seq_of(&line) {
            last = n;
            seen += 1;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Lines printed between our last read and the kill are acknowledged too.
    for line in lines.map_while(Result::ok) {
        if let Some(n) = seq_of(&line) {
            last = n;
        }
    }
    last
}

/// `seq N`, possibly after libtest's "test child_writer ... " on the same line.
fn seq_of(line: &str) -> Option<u64> {
    let i = line.find("seq ")?;
    line[i + 4..].trim().parse().ok()
}

#[test]
fn killed_writer_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let mut total_acked = 0;
    for round in 0..6 {
        let acked = run_child_and_kill(&path, 3 + round * 5);
        assert!(acked >= total_acked, "a later writer acknowledged less");

        // A reader (status, show) reads a crashed journal without repairing it.
        let r = Journal::open_read_only(&path).unwrap();
        let read = r.all_records().len() as u64;
        assert!(
            read >= acked,
            "round {round}: {read} records, {acked} acknowledged"
        );
        r.verify().unwrap();
        drop(r);

        // The next writer finds them too and sees the trailing intent(s) as open.
        let w = Journal::open(&path).unwrap();
        assert_eq!(w.all_records().len() as u64, read);
        assert!(!open_intents(w.records(1)).is_empty());
        w.verify().unwrap();
        total_acked = read;
    }
}
