//! A journal on a full disk: an append that hits ENOSPC fails cleanly, and once room is made
//! (the engine releases its reserve) the next append reaches the disk. redb refuses every write
//! after an I/O error until the database is reopened; the journal must reopen it itself.

use std::io::Write;
use std::path::Path;

use stepwise::effects::journal::{sample, Journal, Record};
use stepwise_testbed::TmpfsMount;

/// Fill the filesystem holding `dir` with one file, up to the last byte it takes.
fn fill(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0xA5u8; 64 << 10];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    // Smaller writes take the last partial block.
    while f.write(&[0xA5u8; 512]).is_ok_and(|n| n > 0) {}
    path
}

fn big_failure(intent: u64) -> Record {
    Record::Failed {
        intent,
        message: "x".repeat(256 << 10),
    }
}

#[test]
fn an_append_that_hit_enospc_reaches_the_disk_once_room_is_made() {
    if !stepwise_testbed::require_root("journal on a full tmpfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = TmpfsMount::new(&dir.path().join("disk"), 8).unwrap();
    let path = mnt.path().join("journal.redb");
    let mut j = Journal::open(&path).unwrap();
    let run = j.begin_run(sample::header()).unwrap();
    let filler = fill(mnt.path());

    // Intents and big failures until the disk refuses one.
    let mut written = 1u64;
    let refused = loop {
        let intent = match j.append(run, sample::records(1)[0].clone()) {
            Ok(s) => s,
            Err(e) => break e,
        };
        written += 1;
        match j.append(run, big_failure(intent)) {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 1000, "the full disk never refused a record");
    };
    assert_eq!(refused.exit(), stepwise::error::Exit::Journal, "{refused}");

    // Room again (the reserve released): the next append must land, durably.
    std::fs::remove_file(&filler).unwrap();
    let last = j
        .append(
            run,
            Record::Resumed {
                pid: 1,
                command: "resume".into(),
            },
        )
        .unwrap_or_else(|e| panic!("an append after room was made failed: {e}"));
    written += 1;
    assert_eq!(j.records(run).len() as u64, written);
    drop(j);

    let j = Journal::open(&path).unwrap();
    assert_eq!(j.records(run).len() as u64, written);
    assert_eq!(j.records(run).last().unwrap().seq, last);
    j.verify().unwrap();
}
