//! The journal's API as the engine uses it: runs, records, durability across reopen, the lock,
//! read-only opens beside a writer, file mode, and the errors of misuse.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use stepwise::effects::journal::{open_intents, sample, Journal, Outcome, Record, Transition};
use stepwise::error::{Error, Exit};

fn temp_journal() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/journal.redb");
    (dir, path)
}

#[test]
fn records_survive_reopen_in_order() {
    let (_dir, path) = temp_journal();
    let mut j = Journal::open(&path).unwrap();
    assert_eq!(j.last_run(), None);
    let run = j.begin_run(sample::header()).unwrap();
    assert_eq!(run, 1);
    let mut seqs = vec![1];
    for r in sample::records(1) {
        seqs.push(j.append(run, r).unwrap());
    }
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let written: Vec<_> = j.records(run).to_vec();
    drop(j);

    let j = Journal::open(&path).unwrap();
    assert_eq!(j.records(run), &written[..]);
    assert_eq!(j.runs().len(), 1);
    assert_eq!(j.runs()[0].1, &sample::header());
    assert_eq!(j.last_run(), Some(1));
    assert!(open_intents(j.records(run)).is_empty());
    j.verify().unwrap();
}

#[test]
fn second_run_and_trailing_intent() {
    let (_dir, path) = temp_journal();
    let mut j = Journal::open(&path).unwrap();
    let r1 = j.begin_run(sample::header()).unwrap();
    for r in sample::records(1) {
        j.append(r1, r).unwrap();
    }
    let first = j.all_records().len() as u64 + 1;
    let r2 = j.begin_run(sample::header()).unwrap();
    assert_eq!(r2, 2);
    for r in sample::interrupted_records(first) {
        j.append(r2, r).unwrap();
    }
    drop(j);
    let j = Journal::open_read_only(&path).unwrap();
    assert_eq!(j.last_run(), Some(2));
    let open = open_intents(j.records(2));
    assert_eq!(open.len(), 1);
    assert!(matches!(
        &open[0].record,
        Record::Intent {
            transition: Transition::Reboot { .. }
        }
    ));
    assert_eq!(j.records(1).len(), sample::records(1).len() + 1);
    assert!(j.records(3).is_empty());
}

#[test]
fn appending_to_an_old_run_or_a_reader_is_refused() {
    let (_dir, path) = temp_journal();
    let mut j = Journal::open(&path).unwrap();
    let r1 = j.begin_run(sample::header()).unwrap();
    j.begin_run(sample::header()).unwrap();
    let e = j
        .append(
            r1,
            Record::RunFinished {
                outcome: Outcome::ReachedTarget,
            },
        )
        .unwrap_err();
    assert_eq!(e.exit(), Exit::Journal, "{e}");
    let e = j
        .append(2, Record::RunStarted(Box::new(sample::header())))
        .unwrap_err();
    assert_eq!(e.exit(), Exit::Journal, "{e}");
    drop(j);
    let mut r = Journal::open_read_only(&path).unwrap();
    let e = r
        .append(
            2,
            Record::RunFinished {
                outcome: Outcome::ReachedTarget,
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    // Nothing of the refused appends reached the file.
    assert_eq!(
        Journal::open_read_only(&path).unwrap().all_records().len(),
        2
    );
}

#[test]
fn file_is_created_0600_with_its_directory() {
    let (_dir, path) = temp_journal();
    let _j = Journal::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let lock = std::fs::metadata(path.with_extension("redb.lock")).unwrap();
    assert_eq!(lock.permissions().mode() & 0o777, 0o600);
}

#[test]
fn second_writer_is_refused_naming_the_holder() {
    let (_dir, path) = temp_journal();
    let _holder = Journal::open(&path).unwrap();
    let e = match Journal::open(&path) {
        Err(e) => e,
        Ok(_) => panic!("a second writer was let in"),
    };
    assert_eq!(e.exit(), Exit::Journal);
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("locked by pid {} since ", std::process::id())),
        "{msg}"
    );
    assert!(msg.contains("UTC"), "{msg}");
}

#[test]
fn lock_is_released_when_the_writer_goes() {
    let (_dir, path) = temp_journal();
    drop(Journal::open(&path).unwrap());
    Journal::open(&path).unwrap();
}

#[test]
fn reader_follows_a_running_writer() {
    let (_dir, path) = temp_journal();
    let mut w = Journal::open(&path).unwrap();
    let run = w.begin_run(sample::header()).unwrap();
    let r = Journal::open_read_only(&path).unwrap();
    assert_eq!(r.last_run(), Some(run));
    w.append(run, Record::UnwindStarted { why: "test".into() })
        .unwrap();
    // A fresh reader sees the new record while the writer is still open.
    let r2 = Journal::open_read_only(&path).unwrap();
    assert_eq!(r2.all_records().len(), 2);
    r2.verify().unwrap();
}

#[test]
fn missing_file_read_only_is_a_journal_error() {
    let (_dir, path) = temp_journal();
    let e = match Journal::open_read_only(&path) {
        Err(e) => e,
        Ok(_) => panic!("opened a missing file"),
    };
    assert!(matches!(e, Error::Journal { .. }));
    assert!(!path.exists(), "a read-only open created the file");
}

/// Runs only as the child of `lock_holder_in_another_process`: hold the writer lock until
/// stdin closes.
#[test]
fn child_holds_the_lock() {
    let Some(path) = std::env::var_os("STEPWISE_LOCK_CHILD") else {
        return;
    };
    let _j = Journal::open(std::path::Path::new(&path)).unwrap();
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
}

#[test]
fn lock_holder_in_another_process() {
    let (_dir, path) = temp_journal();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_holds_the_lock",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("STEPWISE_LOCK_CHILD", &path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // libtest may print "test child_holds_the_lock ... " before it.
    while !line.trim_end().ends_with("ready") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0);
    }
    let e = match Journal::open(&path) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("lock not honoured"),
    };
    let readers_see = Journal::open_read_only(&path).map(|j| j.all_records().len());
    drop(child.stdin.take());
    child.wait().unwrap();
    assert!(
        e.contains(&format!("locked by pid {} since ", child.id())),
        "{e}"
    );
    assert!(e.contains(" UTC"), "{e}");
    // Readers are not held off by a writer.
    assert_eq!(readers_see.unwrap(), 0);
    // Gone with its process.
    Journal::open(&path).unwrap();
}

#[test]
fn witness_catches_a_rolled_back_journal() {
    // A journal file replaced by an older state of itself (as redb would serve after losing its
    // last commit): internally consistent, but the lock file's witness knows better.
    let (_dir, path) = temp_journal();
    let mut j = Journal::open(&path).unwrap();
    let run = j.begin_run(sample::header()).unwrap();
    j.append(run, Record::UnwindStarted { why: "a".into() })
        .unwrap();
    drop(j);
    let older = std::fs::read(&path).unwrap();
    let mut j = Journal::open(&path).unwrap();
    j.append(run, Record::UnwindStarted { why: "b".into() })
        .unwrap();
    drop(j);
    std::fs::write(&path, older).unwrap();
    for writer in [false, true] {
        let e = if writer {
            Journal::open(&path).err()
        } else {
            Journal::open_read_only(&path).err()
        };
        let e = e.expect("a rolled-back journal was accepted");
        assert_eq!(e.exit(), Exit::Journal);
        assert!(
            e.to_string()
                .contains("it holds 2 records, but record 3 was committed"),
            "{e}"
        );
    }
}

#[test]
fn a_replaced_journal_is_not_judged_by_the_old_witness() {
    // The damage hint says to move a broken journal aside: the next run starts a new one beside
    // the old lock file.
    let (_dir, path) = temp_journal();
    let mut j = Journal::open(&path).unwrap();
    let run = j.begin_run(sample::header()).unwrap();
    j.append(run, Record::UnwindStarted { why: "a".into() })
        .unwrap();
    drop(j);
    std::fs::rename(&path, path.with_extension("redb.damaged")).unwrap();
    let mut j = Journal::open(&path).unwrap();
    assert!(j.all_records().is_empty());
    j.begin_run(sample::header()).unwrap();
    drop(j);
    let r = Journal::open_read_only(&path).unwrap();
    assert_eq!(r.all_records().len(), 1);
    r.verify().unwrap();
}
