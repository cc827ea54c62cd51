//! The crash-safe write-ahead journal of runs (redb). On-disk format: `journal-format.md`.
//!
//! After a crash the journal is the only truth, so it never loses a committed record and never
//! hides damage: every record is committed with immediate durability before `append` returns,
//! carries a SHA-256 chain link over everything before it, and every read checks the whole chain.
//! Damage of any kind, a newer format or an unknown record kind is an `Error::Journal` (exit 4).
//!
//! # API for the engine
//!
//! ```no_run
//! # use stepwise::effects::journal::*;
//! # fn header() -> RunHeader { unimplemented!() }
//! # fn transition() -> Transition { unimplemented!() }
//! # fn main() -> stepwise::error::Result<()> {
//! // Creates the file (0600) and its directory, takes the writer lock (a second writer gets
//! // exit 4 "locked by pid N since T"), reads and checks everything written so far.
//! let mut j = Journal::open("/var/lib/stepwise/journal.redb".as_ref())?;
//! let run = j.begin_run(header())?;                      // writes RunStarted
//! let intent = j.append(run, Record::Intent { transition: transition() })?; // durable now
//! // … run the effect …
//! j.append(run, Record::Done { intent, added: Some(1 << 20), freed: None })?;
//! # Ok(()) }
//! ```
//!
//! `Done`/`Failed` name their intent by the `Seq` its `append` returned. The engine closes each
//! intent before writing the next. Space: put bytes added/freed in `Done` where known (`journal
//! show` sums them); the plan's expectations go in `RunHeader::plan`.
//!
//! Resume: `j.last_run()`, `j.runs()` (headers) and `j.records(run)`; a `RunFinished` record says
//! the run is over. `open_intents(records)` lists the intents with no done/failed after them. For
//! such a trailing intent the effect may or may not have happened (or happened partly): ask the
//! world with the transition's probe (doc/design.md, "Crash windows"); append `Done { intent }` if it happened, else
//! run the effect again (they are idempotent) and then append `Done` or `Failed`. A process
//! taking a run over first appends `Record::Resumed`.
//!
//! `Journal::open_read_only` (show, export, status) takes no lock and never writes, and reads a
//! journal whose writer died through a repaired private copy. `verify_file` (journal verify) adds
//! redb's page-checksum check. `begin_run_at`/`append_at` take the time from the caller (tests).
//!
//! The writer keeps a witness of its last commit in the lock file (`lock`), which catches a
//! crashed journal that redb would otherwise serve one commit short.

pub mod codes;
pub mod envelope;
pub mod location;
pub mod lock;
pub mod record;
pub mod render;
#[doc(hidden)]
pub mod sample;
pub mod storage;
pub mod transition;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use codes::{Action, OnFailedUnits, OnFailure, RebootPolicy, RebootWindow, Strategy};
pub use envelope::{Link, Stored, BASE_FORMAT, FORMAT_VERSION};
pub use record::{
    ChosenStrategy, Outcome, PlannedStep, Record, RunHeader, RunId, RunOptions, Seq, Target,
};
pub use transition::{human_bytes, Transition};

use crate::error::Error;
use envelope::{genesis_link, EnvelopeError};
use storage::{guard, Db, Raw};

/// An open journal: the checked records, and the writer lock when opened for writing.
pub struct Journal {
    path: PathBuf,
    /// `None` after a failed write until it is reopened: redb refuses every write after an I/O
    /// error (fail-stop) until the database is closed and opened again.
    db: Option<Db>,
    /// `meta.id` (absent in no journal this build created).
    id: Option<[u8; 16]>,
    _lock: Option<lock::WriterLock>,
    records: Vec<Stored>,
    /// run id → index into `records` of its `RunStarted`.
    runs: BTreeMap<RunId, usize>,
    /// The format marker: the newest format of any record in the file (the format it was created
    /// in while it holds none). Raised with the first record of a newer format.
    format: u16,
    /// Where the retained records start (the genesis until a compaction).
    base: Base,
    retention: Retention,
}

/// What a compaction removed: the chain goes on from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Base {
    /// The last removed record (0: none).
    pub seq: Seq,
    /// Its link (the genesis link when nothing was removed).
    pub link: Link,
    /// The last removed run (0: none).
    pub run: RunId,
}

impl Base {
    fn genesis() -> Base {
        Base {
            seq: 0,
            link: genesis_link(),
            run: 0,
        }
    }
}

/// Which finished runs a journal keeps when a new run begins. The run before the new one is
/// always kept (`status` and `journal show` speak of it), and so is any unfinished run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many runs (the newest).
    pub max_runs: u64,
    /// Drop finished runs that started more than this many days ago.
    pub max_age_days: u64,
}

impl Default for Retention {
    /// About a year of weekly updates, and every run of the last three months.
    fn default() -> Self {
        Retention {
            max_runs: 50,
            max_age_days: 90,
        }
    }
}

/// What `verify` found in a sound journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub runs: u64,
    pub records: u64,
    /// The link of the last record (the genesis link for an empty journal).
    pub head: Link,
    /// Where the retained records start, when older runs were compacted away.
    pub compacted: Option<Base>,
    /// The file's format marker: the newest format of its records.
    pub format: u16,
}

/// The current time in unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Journal {
    /// Open for writing: create the directory and the file (0600) if needed, take the writer lock,
    /// check the file's pages (redb's checksums) and every record (the chain).
    pub fn open(path: &Path) -> Result<Journal, Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Journal {
                path: path.display().to_string(),
                what: format!("cannot create its directory {}: {e}", dir.display()),
                hint: "check the permissions (stepwise runs as root) or pass --journal".into(),
            })?;
        }
        let lock = lock::acquire(path, now_ms())?;
        let exists = path.try_exists().map_err(|e| Error::Journal {
            path: path.display().to_string(),
            what: format!("cannot look at it: {e}"),
            hint: "check the permissions (stepwise runs as root) or pass --journal".into(),
        })?;
        if !exists {
            // Born complete (tables and format marker) under a temporary name, then renamed: a
            // journal file that exists is never legitimately empty.
            let id = new_journal_id(path);
            guard(|| storage::create_fresh(path, BASE_FORMAT, &id).map_err(|e| e.to_string()))
                .map_err(|e| Error::Journal {
                    path: path.display().to_string(),
                    what: format!("cannot create it: {e}"),
                    hint:
                        "check free space and permissions (stepwise runs as root) or pass --journal"
                            .into(),
                })?;
        }
        readable(path)?;
        // Check it without writing first: redb repairs an unclean file in place on open, and a
        // damaged journal is evidence that must stay as it is.
        match read_checked(path, true) {
            Ok(_) => {}
            Err(ReadFailure::NoRoomForCopy(e)) => {
                tracing::warn!("{e}; repairing the journal in place without checking it first");
            }
            Err(ReadFailure::Damaged(e)) => return Err(e),
        }
        let db = guard(|| storage::open_writer(path).map_err(|e| e.to_string()))
            .map_err(|e| damaged(path, format!("cannot open it: {e}")))?;
        let raw = guard(|| db.read_all().map_err(|e| e.to_string()))
            .map_err(|e| damaged(path, format!("cannot read it: {e}")))?;
        let (records, runs, base) = check(path, &raw, lock.previous.as_ref())?;
        let id = journal_id(&raw);
        Ok(Journal {
            path: path.to_owned(),
            db: Some(db),
            id,
            _lock: Some(lock),
            records,
            runs,
            format: format_marker(&raw),
            base,
            retention: Retention::default(),
        })
    }

    /// Open for reading only: no lock, no writes; a running writer is not disturbed. A missing
    /// file is an `Error::Journal` here; callers that treat it as "no runs" check first.
    pub fn open_read_only(path: &Path) -> Result<Journal, Error> {
        if !path.exists() {
            return Err(Error::Journal {
                path: path.display().to_string(),
                what: "no such file".into(),
                hint: "no run has been recorded there; pass --journal PATH for another journal"
                    .into(),
            });
        }
        read_checked(path, false).map_err(ReadFailure::into_error)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journal's format: the newest of its records' (its format marker).
    pub fn format(&self) -> u16 {
        self.format
    }

    /// Start a run: append its `RunStarted` record. The run id is one more than the last.
    pub fn begin_run(&mut self, header: RunHeader) -> Result<RunId, Error> {
        self.begin_run_at(header, now_ms())
    }

    /// `begin_run` with a given time (tests, golden files).
    pub fn begin_run_at(&mut self, header: RunHeader, at_ms: u64) -> Result<RunId, Error> {
        self.compact(at_ms)?;
        let run = self
            .runs
            .keys()
            .next_back()
            .map_or(self.base.run + 1, |r| r + 1);
        self.write(run, Record::RunStarted(Box::new(header)), true, at_ms)?;
        Ok(run)
    }

    /// Append a record to `run` (which must be the last run), durably: it is on disk when this
    /// returns. Returns its sequence number (`Done`/`Failed` name their intent by it).
    pub fn append(&mut self, run: RunId, record: Record) -> Result<Seq, Error> {
        self.append_at(run, record, now_ms())
    }

    /// `append` with a given time (tests, golden files).
    pub fn append_at(&mut self, run: RunId, record: Record, at_ms: u64) -> Result<Seq, Error> {
        if matches!(record, Record::RunStarted(_)) {
            return Err(misuse(&self.path, "RunStarted is written by begin_run"));
        }
        if self.runs.keys().next_back() != Some(&run) {
            return Err(misuse(
                &self.path,
                &format!("append to run {run}, which is not the last run"),
            ));
        }
        self.write(run, record, false, at_ms)
    }

    fn write(
        &mut self,
        run: RunId,
        record: Record,
        new_run: bool,
        at_ms: u64,
    ) -> Result<Seq, Error> {
        if self._lock.is_none() {
            return Err(misuse(&self.path, "append to a journal opened read-only"));
        }
        let prev = self.records.last().map_or(self.base.link, |r| r.link);
        let seq = self.records.last().map_or(self.base.seq, |r| r.seq) + 1;
        let (bytes, link) =
            envelope::encode(&prev, seq, run, at_ms, &record).map_err(|e| Error::Journal {
                path: self.path.display().to_string(),
                what: format!("cannot encode a {} record: {e}", record.kind_name()),
                hint: "paths in the journal must be UTF-8; nothing was written".into(),
            })?;
        if self.db.is_none() {
            self.reopen_writer()?;
        }
        let db = self.db.as_ref().expect("reopened above");
        // The marker is raised with the first record of a newer format (a format-1 journal gets
        // 2 with its first format-2 record, any journal 3 with its first format-3 record): an
        // older stepwise then refuses the file as newer, before reading a record it cannot decode.
        let format = record.format().max(BASE_FORMAT);
        let raise = (self.format < format).then_some(format);
        let appended = guard(|| {
            db.append(seq, &bytes, &link, new_run.then_some(run), raise)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = appended {
            // Close the database now, so that the next append (after the caller made room: the
            // engine releases its reserve) reopens it and reaches the disk.
            self.db = None;
            if !self.landed_after_all(seq, &link) {
                return Err(write_failed(&self.path, e));
            }
        }
        self.format = self.format.max(format);
        if let (Some(lock), Some(journal_id)) = (self._lock.as_mut(), self.id) {
            let w = lock::Witness {
                journal_id,
                seq,
                link,
            };
            if let Err(e) = lock.witness(&w) {
                tracing::warn!(
                    "journal {}: cannot update the witness in its lock file: {e}",
                    self.path.display()
                );
            }
        }
        if new_run {
            self.runs.insert(run, self.records.len());
        }
        self.records.push(Stored {
            seq,
            run,
            at_ms,
            record,
            link,
        });
        Ok(seq)
    }

    /// Open the database again after a failed write and check that it holds exactly what this
    /// process has seen committed (a reopen that finds less is damage).
    fn reopen_writer(&mut self) -> Result<(), Error> {
        self.db = None;
        let path = &self.path;
        let db = guard(|| storage::open_writer(path).map_err(|e| e.to_string()))
            .map_err(|e| write_failed(path, format!("reopening it after a failed write: {e}")))?;
        let raw = guard(|| db.read_all().map_err(|e| e.to_string()))
            .map_err(|e| damaged(path, format!("cannot read it: {e}")))?;
        let (records, _, _) = check(path, &raw, None)?;
        if records.len() < self.records.len() || records[..self.records.len()] != self.records[..] {
            return Err(damaged(
                path,
                format!(
                    "reopened after a failed write, it holds {} records where {} were committed",
                    records.len(),
                    self.records.len()
                ),
            ));
        }
        if records.len() > self.records.len() + 1 {
            return Err(damaged(
                path,
                "reopened after a failed write, it holds records this writer never wrote".into(),
            ));
        }
        self.db = Some(db);
        Ok(())
    }

    /// After a failed append of record `seq`: reopen, and tell whether the record was committed
    /// all the same (the error came after the commit). A reopen that fails leaves the database
    /// closed; the next write tries again.
    fn landed_after_all(&mut self, seq: Seq, link: &Link) -> bool {
        if self.reopen_writer().is_err() {
            return false;
        }
        let Some(db) = &self.db else { return false };
        guard(|| db.read_all().map_err(|e| e.to_string())).is_ok_and(|raw| {
            raw.log.last().is_some_and(|(k, _)| *k == seq)
                && raw
                    .head
                    .as_deref()
                    .is_some_and(|h| h.len() == 40 && h[8..] == link[..])
        })
    }

    /// How many finished runs to keep when a run begins (`Retention::default()` otherwise).
    pub fn set_retention(&mut self, retention: Retention) {
        self.retention = retention;
    }

    /// Drop the oldest finished runs the retention does not keep, in one durable transaction:
    /// their records go, the chain goes on from the last removed link (kept as the base), and
    /// the ids of the runs after them stay as they were. Returns how many runs were removed.
    pub fn compact(&mut self, now_ms: u64) -> Result<u64, Error> {
        let drop = self.runs_to_drop(now_ms);
        let Some(&(last_run, end)) = drop.last() else {
            return Ok(0);
        };
        let last = &self.records[end - 1];
        let base = Base {
            seq: last.seq,
            link: last.link,
            run: last_run,
        };
        if self.db.is_none() {
            self.reopen_writer()?;
        }
        let db = self.db.as_ref().expect("reopened above");
        guard(|| {
            db.compact(base.seq, &base.link, base.run, self.format.max(BASE_FORMAT))
                .map_err(|e| e.to_string())
        })
        .map_err(|e| {
            self.db = None;
            write_failed(&self.path, e)
        })?;
        self.format = self.format.max(BASE_FORMAT);
        self.records.drain(..end);
        self.runs = self
            .runs
            .iter()
            .filter(|(&r, _)| r > base.run)
            .map(|(&r, &i)| (r, i - end))
            .collect();
        self.base = base;
        Ok(drop.len() as u64)
    }

    /// The oldest runs to drop, each with the index just past its last record: a prefix of the
    /// runs, finished, not the last, and either beyond `max_runs` or older than `max_age_days`.
    fn runs_to_drop(&self, now_ms: u64) -> Vec<(RunId, usize)> {
        let keep = self.retention;
        let max_age_ms = keep.max_age_days.saturating_mul(86_400_000);
        // One run begins after this: it counts against `max_runs`.
        let total = self.runs.len() as u64 + 1;
        let mut out = Vec::new();
        let last = self.last_run();
        for (n, (&run, &start)) in self.runs.iter().enumerate() {
            let records = self.records(run);
            let finished = records
                .iter()
                .any(|r| matches!(r.record, Record::RunFinished { .. }));
            let too_many = total - n as u64 > keep.max_runs;
            let too_old = now_ms.saturating_sub(self.records[start].at_ms) > max_age_ms;
            if Some(run) == last || !finished || !(too_many || too_old) {
                break;
            }
            out.push((run, start + records.len()));
        }
        out
    }

    /// Where the retained records start.
    pub fn base(&self) -> Base {
        self.base
    }

    /// The runs, oldest first, with their headers.
    pub fn runs(&self) -> Vec<(RunId, &RunHeader)> {
        self.runs
            .iter()
            .filter_map(|(&id, &i)| match &self.records[i].record {
                Record::RunStarted(h) => Some((id, &**h)),
                _ => None,
            })
            .collect()
    }

    /// The records of `run` in order (its `RunStarted` first); empty for an unknown run.
    pub fn records(&self, run: RunId) -> &[Stored] {
        let Some(&start) = self.runs.get(&run) else {
            return &[];
        };
        let end = self
            .runs
            .range(run + 1..)
            .next()
            .map_or(self.records.len(), |(_, &i)| i);
        &self.records[start..end]
    }

    /// Every record, oldest first.
    pub fn all_records(&self) -> &[Stored] {
        &self.records
    }

    pub fn last_run(&self) -> Option<RunId> {
        self.runs.keys().next_back().copied()
    }

    /// Re-read the file and check its structure and chain again (what `journal verify` does).
    pub fn verify(&self) -> Result<Summary, Error> {
        let witness = lock::read_witness(&self.path);
        let Some(db) = &self.db else {
            return Err(write_failed(
                &self.path,
                "it was closed after a failed write and is not open again yet".into(),
            ));
        };
        let raw = guard(|| db.read_all().map_err(|e| e.to_string()))
            .map_err(|e| damaged(&self.path, format!("cannot read it: {e}")))?;
        let (records, runs, base) = check(&self.path, &raw, witness.as_ref())?;
        Ok(Summary {
            runs: runs.len() as u64,
            records: records.len() as u64,
            head: records.last().map_or(base.link, |r| r.link),
            compacted: (base.seq > 0).then_some(base),
            format: self.format,
        })
    }
}

/// Why a journal could not be read without writing to it.
enum ReadFailure {
    /// Damaged, newer, unreadable: the error to report.
    Damaged(Error),
    /// The journal is unclean and no private copy could be made to repair (no room in the
    /// temporary directory, typically).
    NoRoomForCopy(Error),
}

impl ReadFailure {
    fn into_error(self) -> Error {
        match self {
            ReadFailure::Damaged(e) | ReadFailure::NoRoomForCopy(e) => e,
        }
    }
}

/// Open without writing and check everything. A journal left unclean by a dead writer is read
/// through a repaired private copy, holding other writers off meanwhile unless the caller holds
/// the writer lock itself.
fn read_checked(path: &Path, holding_lock: bool) -> Result<Journal, ReadFailure> {
    use ReadFailure::Damaged;
    readable(path).map_err(Damaged)?;
    // The witness before the database: a writer updates it after each commit, so the snapshot
    // read below is at least as new.
    let witness = lock::read_witness(path);
    let db = guard(|| storage::open_reader(path).map_err(|e| e.to_string()))
        .map_err(|e| Damaged(damaged(path, format!("cannot open it: {e}"))))?;
    let db = match db {
        Some(db) => db,
        None => {
            let _shared = if holding_lock {
                None
            } else {
                lock::shared(path).map_err(Damaged)?
            };
            let (_dir, copy) = storage::private_copy(path).map_err(|e| {
                ReadFailure::NoRoomForCopy(Error::Journal {
                    path: path.display().to_string(),
                    what: format!(
                        "its last writer died, and it cannot be copied to repair a private copy: {e}"
                    ),
                    hint: "free some space in the temporary directory (TMPDIR), or let \
                           `stepwise resume` repair it in place"
                        .into(),
                })
            })?;
            guard(|| storage::open_writer(&copy).map_err(|e| e.to_string())).map_err(|e| {
                Damaged(damaged(
                    path,
                    format!("cannot open it after its writer died: {e}"),
                ))
            })?
        }
    };
    let raw = guard(|| db.read_all().map_err(|e| e.to_string()))
        .map_err(|e| Damaged(damaged(path, format!("cannot read it: {e}"))))?;
    let (records, runs, base) = check(path, &raw, witness.as_ref()).map_err(Damaged)?;
    let id = journal_id(&raw);
    Ok(Journal {
        path: path.to_owned(),
        db: Some(db),
        id,
        _lock: None,
        records,
        runs,
        format: format_marker(&raw),
        base,
        retention: Retention::default(),
    })
}

/// `journal verify`: everything `open_read_only` checks, and in addition redb's integrity check
/// (every page checksum, the allocator state) run on a private copy, so damage outside the pages
/// a read touches is found too. Never writes the journal.
pub fn verify_file(path: &Path) -> Result<Summary, Error> {
    let j = Journal::open_read_only(path)?;
    let summary = j.verify()?;
    let _shared = lock::shared(path)?;
    let db = guard(|| storage::open_repaired_copy(path).map_err(|e| e.to_string()))
        .map_err(|e| damaged(path, format!("redb's integrity check failed: {e}")))?;
    let raw = guard(|| db.read_all().map_err(|e| e.to_string()))
        .map_err(|e| damaged(path, format!("redb's integrity check failed: {e}")))?;
    let (records, _, _) = check(path, &raw, None)?;
    if records != j.records {
        return Err(damaged(
            path,
            "a checked copy reads a different history than the file itself".into(),
        ));
    }
    Ok(summary)
}

/// The intents of `records` with no `Done` or `Failed` after them, oldest first. On resume the
/// effect of each may or may not have happened: the engine asks the world with its probe.
pub fn open_intents(records: &[Stored]) -> Vec<&Stored> {
    let closed: std::collections::BTreeSet<Seq> = records
        .iter()
        .filter_map(|r| match r.record {
            Record::Done { intent, .. } | Record::Failed { intent, .. } => Some(intent),
            _ => None,
        })
        .collect();
    records
        .iter()
        .filter(|r| matches!(r.record, Record::Intent { .. }) && !closed.contains(&r.seq))
        .collect()
}

const DAMAGED_HINT: &str = "the journal is damaged; do not resume from it. Keep a copy \
(`cp -a JOURNAL JOURNAL.damaged`), look at the system with `nixos-rebuild list-generations` and \
finish by hand, then move the journal aside";

fn damaged(path: &Path, what: String) -> Error {
    Error::Journal {
        path: path.display().to_string(),
        what,
        hint: DAMAGED_HINT.replace("JOURNAL", &path.display().to_string()),
    }
}

/// A file we may not open is not damage: say what it is.
fn readable(path: &Path) -> Result<(), Error> {
    match std::fs::File::open(path) {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::Journal {
            path: path.display().to_string(),
            what: format!("cannot open it: {e}"),
            hint: if e.kind() == std::io::ErrorKind::PermissionDenied {
                "the journal is readable by root only (mode 0600): run as root".into()
            } else {
                "check the path and the filesystem, or pass --journal PATH".into()
            },
        }),
    }
}

fn write_failed(path: &Path, e: String) -> Error {
    Error::Journal {
        path: path.display().to_string(),
        what: format!("cannot write to it: {e}"),
        hint: "the record was not written; check free space and the filesystem, then `stepwise \
               resume`"
            .into(),
    }
}

fn misuse(path: &Path, what: &str) -> Error {
    Error::Journal {
        path: path.display().to_string(),
        what: format!("refused: {what}"),
        hint: "this is a bug in stepwise; nothing was written".into(),
    }
}

type Checked = (Vec<Stored>, BTreeMap<RunId, usize>, Base);

/// Interpret and check everything read: format marker, keys, envelopes, chain, head, run index,
/// and the references between records. The first problem found is the error.
fn check(path: &Path, raw: &Raw, witness: Option<&lock::Witness>) -> Result<Checked, Error> {
    let bad = |what: String| damaged(path, what);
    if !raw.initialised {
        // A journal is born with its tables (`storage::create_fresh`).
        return Err(bad(
            "it has no journal tables: it is not a journal, or it lost them".into(),
        ));
    }
    check_marker(path, raw)?;
    let base = read_base(raw).map_err(bad)?;
    let (records, runs) = check_log(path, raw, &base)?;
    let last_link = records.last().map_or(base.link, |r| r.link);
    check_head(raw, &base, records.len(), &last_link).map_err(bad)?;
    let index: Vec<(u64, u64)> = runs.iter().map(|(&r, &i)| (r, records[i].seq)).collect();
    if index != raw.runs {
        return Err(bad(format!(
            "run index (runs table) does not match the log: {:?} vs {:?}",
            raw.runs, index
        )));
    }
    // The witness of another journal (one moved aside and replaced) says nothing about this one.
    if let Some(w) = witness.filter(|w| raw.id.as_deref() == Some(w.journal_id.as_slice())) {
        check_witness(w, &base, &records).map_err(bad)?;
    }
    Ok((records, runs, base))
}

/// A journal written by a newer stepwise: refused as such, not as damage.
fn newer_format(path: &Path, v: u16) -> Error {
    Error::Journal {
        path: path.display().to_string(),
        what: format!(
            "written in journal format {v} by a newer stepwise; this one reads up to format {FORMAT_VERSION}"
        ),
        hint: "use the newer stepwise that wrote it (`stepwise --version`); nothing was changed"
            .into(),
    }
}

/// The format marker: present, two bytes, a format this build reads.
fn check_marker(path: &Path, raw: &Raw) -> Result<(), Error> {
    let bad = |what: String| Err(damaged(path, what));
    match raw.format.as_deref() {
        Some(&[a, b]) => match u16::from_le_bytes([a, b]) {
            0 => bad("format marker says version 0, which does not exist".into()),
            v if v > FORMAT_VERSION => Err(newer_format(path, v)),
            _ => Ok(()),
        },
        Some(other) => bad(format!("format marker is {} bytes, not 2", other.len())),
        None => bad("format marker (meta table, key \"format\") is missing".into()),
    }
}

/// Where the chain starts: the genesis, or the base compaction left (§10).
fn read_base(raw: &Raw) -> Result<Base, String> {
    match raw.base.as_deref() {
        None => Ok(Base::genesis()),
        Some(b) if b.len() == 48 => Ok(Base {
            seq: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            link: b[8..40].try_into().expect("32 bytes"),
            run: u64::from_le_bytes(b[40..].try_into().expect("8 bytes")),
        }),
        Some(b) => Err(format!("base marker is {} bytes, not 48", b.len())),
    }
}

/// Every record of the log in order: its key, envelope and link, and its place among the runs
/// and intents. Returns the records and, per run, the index of its `RunStarted`.
fn check_log(
    path: &Path,
    raw: &Raw,
    base: &Base,
) -> Result<(Vec<Stored>, BTreeMap<RunId, usize>), Error> {
    let bad = |what: String| Err(damaged(path, what));
    let mut records: Vec<Stored> = Vec::with_capacity(raw.log.len());
    let mut runs: BTreeMap<RunId, usize> = BTreeMap::new();
    let mut intents: BTreeMap<Seq, (RunId, bool)> = BTreeMap::new();
    let mut prev = base.link;
    for (i, (key, bytes)) in raw.log.iter().enumerate() {
        let seq = base.seq + i as u64 + 1;
        if *key != seq {
            return bad(format!(
                "record {seq} is missing: the log's key after record {} is {key}",
                seq - 1
            ));
        }
        let stored = match envelope::decode(&prev, seq, bytes) {
            Ok(s) => s,
            Err(EnvelopeError::NewerFormat(v)) => return Err(newer_format(path, v)),
            Err(e) => return bad(format!("record {seq}: {e}")),
        };
        if matches!(stored.record, Record::RunStarted(_)) {
            let current = runs.keys().next_back().copied();
            let expected = current.map_or(base.run + 1, |r| r + 1);
            if stored.run != expected {
                return bad(format!(
                    "record {seq} starts run {} where run {expected} was due",
                    stored.run
                ));
            }
            runs.insert(stored.run, records.len());
        } else {
            check_in_run(&stored, runs.keys().next_back().copied(), &mut intents)
                .map_err(|what| damaged(path, what))?;
        }
        prev = stored.link;
        records.push(stored);
    }
    Ok((records, runs))
}

/// A record after its run's `RunStarted`: it belongs to the current run, and a `Done`/`Failed`
/// closes an open intent of that run, once.
fn check_in_run(
    stored: &Stored,
    current_run: Option<RunId>,
    intents: &mut BTreeMap<Seq, (RunId, bool)>,
) -> Result<(), String> {
    let seq = stored.seq;
    if Some(stored.run) != current_run {
        return Err(format!(
            "record {seq} belongs to run {} but the current run is {}",
            stored.run,
            current_run.map_or("none".to_string(), |r| r.to_string())
        ));
    }
    match &stored.record {
        Record::Intent { .. } => {
            intents.insert(seq, (stored.run, false));
        }
        Record::Done { intent, .. } | Record::Failed { intent, .. } => {
            match intents.get_mut(intent) {
                Some((run, closed)) if *run == stored.run && !*closed => *closed = true,
                Some((_, true)) => {
                    return Err(format!("record {seq} closes intent {intent} a second time"))
                }
                _ => {
                    return Err(format!(
                        "record {seq} closes intent {intent}, which is not an intent of run {}",
                        stored.run
                    ))
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The head marker, written with every record: a log that lost its tail no longer matches it.
fn check_head(raw: &Raw, base: &Base, count: usize, last_link: &Link) -> Result<(), String> {
    match raw.head.as_deref() {
        None if count == 0 && base.seq == 0 => Ok(()),
        None => Err(format!("head marker is missing but {count} records exist")),
        Some(h) if h.len() == 40 => {
            let head_seq = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
            let last_seq = base.seq + count as u64;
            if head_seq != last_seq {
                return Err(format!(
                    "head marker says {head_seq} records were written, the log holds up to {last_seq}",
                ));
            }
            if h[8..] != last_link[..] {
                return Err(format!(
                    "head marker's link does not match record {head_seq}'s"
                ));
            }
            Ok(())
        }
        Some(h) => Err(format!("head marker is {} bytes, not 40", h.len())),
    }
}

/// The lock file's witness of the last committed record: the log still holds that record, with
/// that link (a lost tail or a replaced record is damage the head alone cannot show).
fn check_witness(w: &lock::Witness, base: &Base, records: &[Stored]) -> Result<(), String> {
    let n = base.seq + records.len() as u64;
    if w.seq > n {
        return Err(format!(
            "it holds {n} records, but record {} was committed (its lock file's witness says \
             so): committed records were lost",
            w.seq
        ));
    }
    let witnessed = match w.seq.checked_sub(base.seq + 1) {
        Some(i) => records[i as usize].link,
        None if w.seq == base.seq => base.link,
        // Compacted away since: nothing left to compare.
        None => w.link,
    };
    if w.seq > 0 && witnessed != w.link {
        return Err(format!(
            "record {} is not the record that was committed (its lock file's witness holds \
             another link)",
            w.seq
        ));
    }
    Ok(())
}

/// The checked format marker (`check` refused a missing or malformed one).
fn format_marker(raw: &Raw) -> u16 {
    match raw.format.as_deref() {
        Some(&[a, b]) => u16::from_le_bytes([a, b]),
        _ => FORMAT_VERSION,
    }
}

fn journal_id(raw: &Raw) -> Option<[u8; 16]> {
    raw.id.as_deref().and_then(|b| b.try_into().ok())
}

/// A fresh journal's id: unique per creation (time, pid, path), not secret.
fn new_journal_id(path: &Path) -> [u8; 16] {
    use sha2::Digest;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let h = sha2::Sha256::new()
        .chain_update(nanos.to_le_bytes())
        .chain_update(std::process::id().to_le_bytes())
        .chain_update(path.as_os_str().as_encoded_bytes())
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&h[..16]);
    id
}
