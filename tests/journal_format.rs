//! The record encoding and the hash chain, property-tested; newer formats and unknown kinds in a
//! real file give exit 4 with a clear message.

use std::path::PathBuf;

use proptest::prelude::*;
use redb::{Database, ReadableDatabase, ReadableTable};

use stepwise::drv::StorePath;
use stepwise::effects::journal::envelope::{self, genesis_link, EnvelopeError, HEADER_LEN};
use stepwise::effects::journal::storage::{LOG, META, META_FORMAT};
use stepwise::effects::journal::{
    sample, Action, ChosenStrategy, Journal, OnFailedUnits, OnFailure, Outcome, PlannedStep,
    RebootPolicy, RebootWindow, Record, RunHeader, RunOptions, Strategy as RunStrategy, Target,
    Transition,
};
use stepwise::error::Exit;
use stepwise::plan::mask::Mask;

fn store_path() -> impl Strategy<Value = StorePath> {
    "[a-z0-9][a-z0-9.+_?=-]{0,30}".prop_map(|n| sample::store_path(&n))
}

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, including empty and multi-byte.
    ".{0,40}"
}

fn path() -> impl Strategy<Value = PathBuf> {
    "/[a-z0-9/._-]{0,40}".prop_map(PathBuf::from)
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![Just(Action::Switch), Just(Action::Boot), Just(Action::Test)]
}

fn transition() -> impl Strategy<Value = Transition> {
    prop_oneof![
        (any::<u32>(), prop::collection::vec(store_path(), 0..5))
            .prop_map(|(step, drvs)| Transition::WriteDerivations { step, drvs }),
        (any::<u32>(), store_path(), path()).prop_map(|(step, drv, root)| Transition::Realise {
            step,
            drv,
            root
        }),
        (path(), store_path())
            .prop_map(|(profile, toplevel)| Transition::SetProfile { profile, toplevel }),
        (store_path(), action())
            .prop_map(|(toplevel, action)| Transition::Activate { toplevel, action }),
        (path(), any::<u64>())
            .prop_map(|(profile, number)| Transition::DropGeneration { profile, number }),
        (prop::collection::vec(store_path(), 0..5), any::<u64>())
            .prop_map(|(paths, bytes)| Transition::Collect { paths, bytes }),
        store_path().prop_map(|expected_booted| Transition::Reboot { expected_booted }),
        path().prop_map(|root| Transition::Unpin { root }),
        prop::collection::vec(store_path(), 0..3)
            .prop_map(|drvs| Transition::PinDerivations { drvs }),
        path().prop_map(|dir| Transition::ReleaseRoots { dir }),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        path().prop_map(|path| Target::Drv { path }),
        (text(), prop::option::of(text()))
            .prop_map(|(reference, host)| Target::Flake { reference, host }),
        (path(), prop::option::of(text())).prop_map(|(file, attr)| Target::File { file, attr }),
    ]
}

fn header() -> impl Strategy<Value = RunHeader> {
    let step = (
        any::<u32>(),
        store_path(),
        store_path(),
        prop::collection::vec(text(), 0..3),
        any::<u64>(),
        any::<u64>(),
        prop::collection::btree_map(store_path(), store_path(), 0..3),
        any::<bool>(),
    )
        .prop_map(
            |(index, toplevel_drv, toplevel_out, units, adds, frees, mask, reboot_after)| {
                PlannedStep {
                    index,
                    toplevel_drv,
                    toplevel_out,
                    units,
                    adds,
                    frees,
                    mask: Some(Mask(mask)),
                    reboot_after: Some(reboot_after),
                }
            },
        );
    (
        (
            text(),
            any::<u32>(),
            text(),
            target(),
            store_path(),
            path(),
            path(),
            path(),
        ),
        (
            action(),
            prop_oneof![
                Just(RunStrategy::Auto),
                Just(RunStrategy::Direct),
                Just(RunStrategy::Stepwise)
            ],
            prop_oneof![Just(OnFailure::Unwind), Just(OnFailure::Hold)],
            prop_oneof![Just(RebootPolicy::Never), Just(RebootPolicy::WhenNeeded)],
            prop::collection::vec(text(), 0..3),
            prop::collection::vec(text(), 0..3),
            prop::collection::vec(prop::collection::vec(text(), 0..3), 0..3),
            any::<u64>(),
        ),
        (
            store_path(),
            prop::option::of(store_path()),
            prop::collection::vec(step, 0..4),
            prop::option::of((0u16..1440, 0u16..1440)),
            (
                any::<bool>(),
                prop_oneof![Just(OnFailedUnits::Continue), Just(OnFailedUnits::Stop)],
                prop::collection::vec(store_path(), 0..3),
            ),
        ),
    )
        .prop_map(
            |(
                (
                    stepwise_version,
                    pid,
                    store_dir,
                    target,
                    target_drv,
                    profile,
                    current_system,
                    booted_system,
                ),
                (
                    action,
                    strategy,
                    on_failure,
                    reboot,
                    reboot_command,
                    non_vital,
                    together,
                    reserve,
                ),
                (
                    g0_toplevel,
                    g0_drv,
                    plan,
                    window,
                    (keep_previous, on_failed_units, local_derivations),
                ),
            )| RunHeader {
                stepwise_version,
                pid,
                store_dir,
                target,
                target_drv,
                profile,
                current_system,
                booted_system,
                action,
                strategy,
                on_failure,
                reboot,
                reboot_command,
                non_vital,
                together,
                reserve,
                g0_toplevel,
                g0_drv,
                plan,
                reboot_window: window.map(|(lower_minute, upper_minute)| RebootWindow {
                    lower_minute,
                    upper_minute,
                }),
                options: RunOptions {
                    keep_previous,
                    on_failed_units,
                },
                local_derivations,
            },
        )
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::ReachedTarget),
        Just(Outcome::UnwoundToG0),
        any::<u32>().prop_map(|step| Outcome::Held { step }),
        text().prop_map(|why| Outcome::Abandoned { why }),
    ]
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        header().prop_map(|h| Record::RunStarted(Box::new(h))),
        (
            prop_oneof![Just(ChosenStrategy::Direct), Just(ChosenStrategy::Stepwise)],
            text()
        )
            .prop_map(|(strategy, why)| Record::StrategyChosen { strategy, why }),
        text().prop_map(|why| Record::PlainAttemptFailed { why }),
        text().prop_map(|why| Record::UnwindStarted { why }),
        transition().prop_map(|transition| Record::Intent { transition }),
        (
            any::<u64>(),
            prop::option::of(any::<u64>()),
            prop::option::of(any::<u64>())
        )
            .prop_map(|(intent, added, freed)| Record::Done {
                intent,
                added,
                freed
            }),
        (any::<u64>(), text()).prop_map(|(intent, message)| Record::Failed { intent, message }),
        outcome().prop_map(|outcome| Record::RunFinished { outcome }),
        (any::<u32>(), text()).prop_map(|(pid, command)| Record::Resumed { pid, command }),
        (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(step, estimated, free)| {
            Record::SpaceRanOut {
                step,
                estimated,
                free,
            }
        }),
        (
            any::<u32>(),
            any::<u64>(),
            prop::collection::vec(header(), 0..2)
        )
            .prop_map(|(at, cost_ppm, headers)| Record::Replanned {
                at,
                cost_ppm,
                steps: headers.into_iter().flat_map(|h| h.plan).collect(),
            }),
    ]
}

/// Encode `records` as consecutive journal entries from seq 1.
fn chain_of(records: &[Record]) -> Vec<Vec<u8>> {
    let mut prev = genesis_link();
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (bytes, link) =
                envelope::encode(&prev, i as u64 + 1, 1, 1000 + i as u64, r).unwrap();
            prev = link;
            bytes
        })
        .collect()
}

/// Decode a chain from seq 1; the first error with its seq.
fn read_chain(entries: &[Vec<u8>]) -> Result<Vec<Record>, (u64, EnvelopeError)> {
    let mut prev = genesis_link();
    let mut out = Vec::new();
    for (i, b) in entries.iter().enumerate() {
        let seq = i as u64 + 1;
        let s = envelope::decode(&prev, seq, b).map_err(|e| (seq, e))?;
        prev = s.link;
        out.push(s.record);
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn record_roundtrips(r in record(), seq in 1u64.., run in any::<u64>(), at in any::<u64>()) {
        let prev = [7u8; 32];
        let (bytes, link) = envelope::encode(&prev, seq, run, at, &r).unwrap();
        let s = envelope::decode(&prev, seq, &bytes).unwrap();
        prop_assert_eq!(s.record, r);
        prop_assert_eq!((s.seq, s.run, s.at_ms, s.link), (seq, run, at, link));
        // The same record always encodes to the same bytes.
        prop_assert_eq!(envelope::encode(&prev, seq, run, at, &s_record_clone(&bytes, &prev, seq)).unwrap().0, bytes);
    }

    #[test]
    fn chain_reads_back(records in prop::collection::vec(record(), 1..12)) {
        let entries = chain_of(&records);
        prop_assert_eq!(read_chain(&entries).unwrap(), records);
    }

    /// Any flipped bit anywhere in any entry is caught at that entry.
    #[test]
    fn any_flipped_bit_is_detected(
        records in prop::collection::vec(record(), 1..8),
        which in any::<prop::sample::Index>(),
        bit in any::<prop::sample::Index>(),
    ) {
        let mut entries = chain_of(&records);
        let i = which.index(entries.len());
        let b = bit.index(entries[i].len() * 8);
        entries[i][b / 8] ^= 1 << (b % 8);
        let err = read_chain(&entries).unwrap_err();
        prop_assert_eq!(err.0, i as u64 + 1);
    }

    /// Dropping, swapping or duplicating entries is caught.
    #[test]
    fn reordered_history_is_detected(
        records in prop::collection::vec(record(), 2..8),
        a in any::<prop::sample::Index>(),
        b in any::<prop::sample::Index>(),
        how in 0..3u8,
    ) {
        let mut entries = chain_of(&records);
        let (a, b) = (a.index(entries.len()), b.index(entries.len()));
        match how {
            0 => { entries.remove(a.min(entries.len() - 2)); }
            1 if a != b => entries.swap(a, b),
            1 => entries.swap(0, 1),
            _ => { let e = entries[a].clone(); entries.insert(b, e); }
        }
        prop_assert!(read_chain(&entries).is_err());
    }

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn arbitrary_bytes_do_not_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), kind in 0u16..12) {
        let _ = envelope::decode(&genesis_link(), 1, &bytes);
        let _ = Record::decode_payload(1, kind, &bytes);
        let _ = Record::decode_payload(2, kind, &bytes);
    }
}

fn s_record_clone(bytes: &[u8], prev: &[u8; 32], seq: u64) -> Record {
    envelope::decode(prev, seq, bytes).unwrap().record
}

#[test]
fn trailing_payload_bytes_are_refused() {
    let r = Record::PlainAttemptFailed { why: "x".into() };
    let mut payload = r.encode_payload().unwrap();
    payload.push(0);
    let e = Record::decode_payload(2, r.kind(), &payload).unwrap_err();
    assert!(
        e.to_string().contains("1 byte(s) after its last field"),
        "{e}"
    );
}

/// Bytes 0..20 of an envelope with the given version and kind, relinked so the chain holds.
fn relinked(version: u16, kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut head = Vec::new();
    head.extend_from_slice(&version.to_le_bytes());
    head.extend_from_slice(&kind.to_le_bytes());
    head.extend_from_slice(&1u64.to_le_bytes());
    head.extend_from_slice(&5u64.to_le_bytes());
    let link = envelope::chain(&genesis_link(), 1, &head, payload);
    [head, link.to_vec(), payload.to_vec()].concat()
}

#[test]
fn unknown_kind_and_newer_version_are_named() {
    let e = envelope::decode(&genesis_link(), 1, &relinked(3, 99, b"")).unwrap_err();
    assert_eq!(e, EnvelopeError::UnknownKind(99));
    assert!(e.to_string().contains("unknown kind 99"));
    let e = envelope::decode(&genesis_link(), 1, &relinked(4, 1, b"whatever")).unwrap_err();
    assert_eq!(e, EnvelopeError::NewerFormat(4));
    // A newer format may link differently: still "newer", not "broken".
    let mut b = relinked(4, 1, b"x");
    b[HEADER_LEN - 1] ^= 1;
    assert_eq!(
        envelope::decode(&genesis_link(), 1, &b).unwrap_err(),
        EnvelopeError::NewerFormat(4)
    );
    assert_eq!(
        envelope::decode(&genesis_link(), 1, &relinked(0, 1, b"")).unwrap_err(),
        EnvelopeError::BadFormat(0)
    );
}

/// A real journal edited behind stepwise's back with redb itself.
fn tamper(edit: impl FnOnce(&redb::WriteTransaction)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let mut j = Journal::open(&path).unwrap();
    let run = j.begin_run(sample::header()).unwrap();
    for r in sample::records(1).into_iter().take(5) {
        j.append(run, r).unwrap();
    }
    drop(j);
    let mut b = redb::Builder::new();
    b.set_concurrency_mode(redb::ConcurrencyMode::SingleWriter);
    let db: Database = b.open(&path).unwrap();
    let txn = db.begin_write().unwrap();
    edit(&txn);
    txn.commit().unwrap();
    drop(db);
    (dir, path)
}

fn journal_error(path: &std::path::Path) -> String {
    for writer in [false, true] {
        let opened = if writer {
            Journal::open(path)
        } else {
            Journal::open_read_only(path)
        };
        match opened {
            Ok(_) => panic!("opened a tampered journal (writer: {writer})"),
            Err(e) => assert_eq!(e.exit(), Exit::Journal, "{e}"),
        }
    }
    Journal::open_read_only(path).err().unwrap().to_string()
}

#[test]
fn newer_format_marker_is_exit_4() {
    let (_d, path) = tamper(|t| {
        t.open_table(META)
            .unwrap()
            .insert(META_FORMAT, 4u16.to_le_bytes().as_slice())
            .unwrap();
    });
    let e = journal_error(&path);
    assert!(e.contains("journal format 4 by a newer stepwise"), "{e}");
    assert!(e.contains("reads up to format 3"), "{e}");
}

#[test]
fn newer_record_is_exit_4() {
    let (_d, path) = tamper(|t| {
        let mut log = t.open_table(LOG).unwrap();
        let mut v = log.get(6).unwrap().unwrap().value().to_vec();
        v[0] = 4;
        log.insert(6, v.as_slice()).unwrap();
    });
    let e = journal_error(&path);
    assert!(e.contains("journal format 4"), "{e}");
}

/// The format of every record in `path`'s log (byte 0 of its envelope), and the file's marker.
fn formats(path: &std::path::Path) -> (Vec<u16>, u16) {
    let db = Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let log = txn.open_table(LOG).unwrap();
    let records = log
        .iter()
        .unwrap()
        .map(|e| {
            let v = e.unwrap().1.value().to_vec();
            u16::from_le_bytes([v[0], v[1]])
        })
        .collect();
    let meta = txn.open_table(META).unwrap();
    let m = meta.get(META_FORMAT).unwrap().unwrap().value().to_vec();
    (records, u16::from_le_bytes([m[0], m[1]]))
}

/// A journal that never needed format 3 stays format 2, record by record and in its marker, so
/// the stepwise that wrote format 2 still reads it.
#[test]
fn runs_with_default_options_stay_format_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let mut j = Journal::open(&path).unwrap();
    let run = j.begin_run(sample::header()).unwrap();
    for r in sample::records(1) {
        j.append(run, r).unwrap();
    }
    drop(j);
    let (records, marker) = formats(&path);
    assert!(records.iter().all(|&f| f == 2), "{records:?}");
    assert_eq!(marker, 2);
}

/// A header with non-default options is format 3: the marker is raised with it, the records
/// before it keep their format, and the options read back.
#[test]
fn options_make_the_header_format_3_and_raise_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let mut j = Journal::open(&path).unwrap();
    let first = j.begin_run(sample::header()).unwrap();
    j.append(first, sample::records(1).remove(0)).unwrap();
    let mut header = sample::header();
    header.options = RunOptions {
        keep_previous: true,
        on_failed_units: OnFailedUnits::Stop,
    };
    j.begin_run(header.clone()).unwrap();
    drop(j);
    let (records, marker) = formats(&path);
    assert_eq!(records, [2, 2, 3]);
    assert_eq!(marker, 3);
    let j = Journal::open_read_only(&path).unwrap();
    let (_, read) = *j.runs().last().unwrap();
    assert_eq!(read, &header);
}

/// `written` appended to a new run: the formats of the records and the file's marker, the
/// records read back, and the first record's JSON.
fn write_and_read_back(written: &[Record]) -> (Vec<u16>, u16, Vec<Record>, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let mut j = Journal::open(&path).unwrap();
    let run = j.begin_run(sample::header()).unwrap();
    for r in written {
        j.append(run, r.clone()).unwrap();
    }
    drop(j);
    let (records, marker) = formats(&path);
    let j = Journal::open_read_only(&path).unwrap();
    let all = j.all_records();
    let read = all.iter().skip(1).map(|r| r.record.clone()).collect();
    let json = stepwise::effects::journal::render::record_json(&all[1]);
    (records, marker, read, json)
}

/// A format-3 record of `kind` is damage in a record claiming format 2 and reads back in one
/// claiming format 3.
fn only_format_3_decodes(kind: u16, r: &Record) {
    let payload = r.encode_payload().unwrap();
    assert!(Record::decode_payload(2, kind, &payload).is_err());
    assert_eq!(
        Record::decode_payload(3, kind, &payload),
        Ok(Some(r.clone()))
    );
}

/// `activated` (kind 12) is a format-3 record: it raises the marker, reads back as written, and
/// in a record claiming format 2 it is damage.
#[test]
fn activated_records_are_format_3_and_read_back() {
    let written = sample::activated_records(2);
    let (records, marker, read, _) = write_and_read_back(&written);
    assert_eq!(records, [2, 2, 3, 2, 2, 3, 2]);
    assert_eq!(marker, 3);
    assert_eq!(read, written);
    only_format_3_decodes(12, &written[1]);
}

/// `bootedBefore` (kind 13) is a format-3 record: it raises the marker, reads back as written
/// (the JSON export names it), and in a record claiming format 2 it is damage.
#[test]
fn booted_before_records_are_format_3_and_read_back() {
    let written = sample::booted_before_records(2);
    let (records, marker, read, json) = write_and_read_back(&written);
    assert_eq!(records, [2, 3, 2, 2]);
    assert_eq!(marker, 3);
    assert_eq!(read, written);
    assert_eq!(json["kind"], "bootedBefore");
    assert!(json["data"]["toplevel"]
        .as_str()
        .is_some_and(|t| t.ends_with("nixos-system-web-old")));
    only_format_3_decodes(13, &written[0]);
}

/// A kind format 2 did not have, in a record that claims format 2, is damage, not an unknown
/// kind of a newer stepwise.
#[test]
fn a_new_kind_in_an_older_format_is_damage() {
    assert!(Record::decode_payload(2, 10, b"").is_err());
    assert!(Record::decode_payload(1, 10, b"").is_err());
    assert_eq!(Record::decode_payload(3, 999, b""), Ok(None));
}

#[test]
fn unknown_record_kind_is_exit_4() {
    let (_d, path) = tamper(|t| {
        let mut log = t.open_table(LOG).unwrap();
        // The last record, relinked so only the kind is wrong (and the head updated to match).
        let prev_bytes = log.get(5).unwrap().unwrap().value().to_vec();
        let mut prev = [0u8; 32];
        prev.copy_from_slice(&prev_bytes[20..52]);
        let old = log.get(6).unwrap().unwrap().value().to_vec();
        let mut head = old[..20].to_vec();
        // A format-3 record (kinds above 9 exist only from format 3 on) of a kind this build
        // does not know.
        head[0..2].copy_from_slice(&3u16.to_le_bytes());
        head[2..4].copy_from_slice(&42u16.to_le_bytes());
        let link = envelope::chain(&prev, 6, &head, &old[52..]);
        let new = [head, link.to_vec(), old[52..].to_vec()].concat();
        log.insert(6, new.as_slice()).unwrap();
        let mut h = 6u64.to_le_bytes().to_vec();
        h.extend_from_slice(&link);
        t.open_table(META)
            .unwrap()
            .insert("head", h.as_slice())
            .unwrap();
    });
    let e = journal_error(&path);
    assert!(e.contains("record 6: record has unknown kind 42"), "{e}");
}

#[test]
fn edited_record_breaks_the_chain() {
    let (_d, path) = tamper(|t| {
        let mut log = t.open_table(LOG).unwrap();
        let mut v = log.get(3).unwrap().unwrap().value().to_vec();
        let last = v.len() - 1;
        v[last] ^= 1;
        log.insert(3, v.as_slice()).unwrap();
    });
    let e = journal_error(&path);
    assert!(e.contains("record 3: hash chain broken"), "{e}");
}

#[test]
fn lost_tail_is_detected_by_the_head() {
    let (_d, path) = tamper(|t| {
        t.open_table(LOG).unwrap().remove(6).unwrap();
    });
    let e = journal_error(&path);
    assert!(
        e.contains("head marker says 6 records were written, the log holds up to 5"),
        "{e}"
    );
}

#[test]
fn lost_middle_is_detected() {
    let (_d, path) = tamper(|t| {
        t.open_table(LOG).unwrap().remove(3).unwrap();
    });
    let e = journal_error(&path);
    assert!(e.contains("record 3 is missing"), "{e}");
}

#[test]
fn empty_file_is_damage_not_a_fresh_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    std::fs::write(&path, b"").unwrap();
    let e = journal_error(&path);
    assert!(e.contains("journal"), "{e}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "the empty file was initialised"
    );
}

#[test]
fn not_a_redb_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    std::fs::write(&path, b"hello, I am not a journal\n").unwrap();
    journal_error(&path);
}

/// Seeds for the fuzz target (`fuzz/corpus/journal_record`): each sample record as
/// kind (u16 LE) ‖ payload, and as a whole envelope. Run with `--ignored` to write them.
#[test]
#[ignore]
fn write_fuzz_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/journal_record");
    std::fs::create_dir_all(&dir).unwrap();
    let mut records = vec![Record::RunStarted(Box::new(sample::header()))];
    records.extend(sample::records(1));
    records.extend(sample::interrupted_records(30));
    for (i, r) in records.iter().enumerate() {
        let mut b = r.kind().to_le_bytes().to_vec();
        b.extend(r.encode_payload().unwrap());
        std::fs::write(dir.join(format!("payload-{i:02}")), b).unwrap();
        let (env, _) = envelope::encode(&genesis_link(), 1, 1, 5, r).unwrap();
        std::fs::write(dir.join(format!("envelope-{i:02}")), env).unwrap();
    }
}
