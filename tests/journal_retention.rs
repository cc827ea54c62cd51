//! Retention: finished runs beyond the bound are compacted away when a run begins; the chain
//! still verifies from the recorded base, run ids go on, and what is kept reads as before.

use std::path::PathBuf;

use stepwise::effects::journal::{sample, verify_file, Journal, Outcome, Record, Retention};

const HOUR_MS: u64 = 3_600_000;

fn temp_journal() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    (dir, path)
}

/// One run's records at hour `h`, finished unless `finish` is false.
fn add_run(j: &mut Journal, h: u64, finish: bool) -> u64 {
    let at = h * HOUR_MS;
    let run = j.begin_run_at(sample::header(), at).unwrap();
    let first = j.records(run)[0].seq;
    for r in sample::records(first) {
        if !finish && matches!(r, Record::RunFinished { .. }) {
            continue;
        }
        j.append_at(run, r, at + 1).unwrap();
    }
    if finish
        && !j
            .records(run)
            .iter()
            .any(|r| matches!(r.record, Record::RunFinished { .. }))
    {
        j.append_at(
            run,
            Record::RunFinished {
                outcome: Outcome::ReachedTarget,
            },
            at + 2,
        )
        .unwrap();
    }
    run
}

#[test]
fn only_the_newest_runs_are_kept_and_the_chain_verifies() {
    let (_dir, path) = temp_journal();
    let mut j = Journal::open(&path).unwrap();
    j.set_retention(Retention {
        max_runs: 10,
        max_age_days: 10_000,
    });
    for h in 0..60 {
        add_run(&mut j, h, true);
    }
    let ids: Vec<u64> = j.runs().iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (51..=60).collect::<Vec<_>>());
    assert_eq!(j.base().run, 50);
    let kept = j.all_records().to_vec();
    assert_eq!(kept[0].seq, j.base().seq + 1);
    drop(j);

    let j = Journal::open(&path).unwrap();
    assert_eq!(j.all_records(), &kept[..]);
    let summary = j.verify().unwrap();
    assert_eq!(summary.runs, 10);
    assert_eq!(summary.compacted.unwrap().run, 50);
    drop(j);
    verify_file(&path).unwrap();
    // The next run takes the next id.
    let mut j = Journal::open(&path).unwrap();
    assert_eq!(add_run(&mut j, 61, true), 61);
}

#[test]
fn runs_older_than_the_age_bound_go_but_the_last_run_stays() {
    let (_dir, path) = temp_journal();
    let mut j = Journal::open(&path).unwrap();
    j.set_retention(Retention {
        max_runs: 1000,
        max_age_days: 2,
    });
    for h in [0, 10, 30, 50] {
        add_run(&mut j, h, true);
    }
    // A run 200 days later: all earlier ones are older than 2 days, but the one before the new
    // run is kept (status speaks of it).
    add_run(&mut j, 200 * 24, true);
    let ids: Vec<u64> = j.runs().iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![4, 5]);
    j.verify().unwrap();
}

#[test]
fn an_unfinished_run_and_everything_after_it_are_kept() {
    let (_dir, path) = temp_journal();
    let mut j = Journal::open(&path).unwrap();
    j.set_retention(Retention {
        max_runs: 2,
        max_age_days: 10_000,
    });
    add_run(&mut j, 0, true);
    add_run(&mut j, 1, false);
    for h in 2..8 {
        add_run(&mut j, h, true);
    }
    let ids: Vec<u64> = j.runs().iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        (2..=8).collect::<Vec<_>>(),
        "run 1 goes, the unfinished run 2 stays"
    );
    drop(j);
    verify_file(&path).unwrap();
}

#[test]
fn a_damaged_record_after_compaction_is_still_found() {
    let (_dir, path) = temp_journal();
    let mut j = Journal::open(&path).unwrap();
    j.set_retention(Retention {
        max_runs: 2,
        max_age_days: 10_000,
    });
    for h in 0..5 {
        add_run(&mut j, h, true);
    }
    let base = j.base();
    drop(j);
    // Rewrite the base link: the first retained record no longer chains to it.
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let meta_def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
        let mut meta = txn.open_table(meta_def).unwrap();
        let mut b = Vec::new();
        b.extend_from_slice(&base.seq.to_le_bytes());
        b.extend_from_slice(&[7u8; 32]);
        b.extend_from_slice(&base.run.to_le_bytes());
        meta.insert("base", b.as_slice()).unwrap();
    }
    txn.commit().unwrap();
    drop(db);
    let e = Journal::open_read_only(&path).map(|_| ()).unwrap_err();
    assert_eq!(e.exit(), stepwise::error::Exit::Journal, "{e}");
}
