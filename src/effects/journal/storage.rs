//! The redb file: three tables (`journal-format.md` §2), opened in redb's `SingleWriter` mode so
//! readers (`status`, `journal show`) can follow a running writer.
//!
//! redb may panic on a damaged file (its debug builds assert what its own writes guarantee), so
//! every call into it runs under `guard`, which turns a panic into an error.

use std::any::Any;
use std::cell::Cell;
use std::os::unix::fs::OpenOptionsExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

use redb::{
    Builder, ConcurrencyMode, Database, Durability, ReadOnlyDatabase, ReadableDatabase,
    ReadableTable, TableDefinition,
};

use super::envelope::Link;
use super::record::{RunId, Seq};

/// seq → envelope bytes.
pub const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// run id → seq of its `RunStarted` record.
pub const RUNS: TableDefinition<u64, u64> = TableDefinition::new("runs");
/// `format` → u16 LE; `head` → seq u64 LE ‖ link (32 bytes); `id` → 16 bytes.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub const META_FORMAT: &str = "format";
pub const META_HEAD: &str = "head";
pub const META_ID: &str = "id";
/// Present once older runs were compacted away: seq of the last removed record (u64 LE) ‖ its
/// link (32 bytes) ‖ the id of the last removed run (u64 LE).
pub const META_BASE: &str = "base";

/// Everything stored, read in one read transaction, not yet interpreted.
#[derive(Debug, Default)]
pub struct Raw {
    /// False for a file with no tables yet (created, nothing committed).
    pub initialised: bool,
    pub format: Option<Vec<u8>>,
    pub head: Option<Vec<u8>>,
    pub id: Option<Vec<u8>>,
    pub base: Option<Vec<u8>>,
    pub log: Vec<(u64, Vec<u8>)>,
    pub runs: Vec<(u64, u64)>,
}

pub enum Db {
    Writer(Database),
    Reader(ReadOnlyDatabase),
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}
static HOOK: Once = Once::new();

/// Run `f`, turning a panic inside it into `Err(message)` without printing it.
pub fn guard<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info)
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    match result {
        Ok(r) => r,
        Err(payload) => Err(format!(
            "the database panicked reading it: {}",
            panic_message(&*payload)
        )),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

fn builder() -> Builder {
    let mut b = Builder::new();
    b.set_concurrency_mode(ConcurrencyMode::SingleWriter);
    // The journal is small; redb's default cache is 1 GiB of address space.
    b.set_cache_size(4 << 20);
    b
}

/// Open an existing journal for writing. Checks every page's checksum on open. Never creates
/// (redb would initialise an empty file as a new database: a journal emptied by a crash
/// would then be silently replaced).
pub fn open_writer(path: &Path) -> Result<Db, redb::Error> {
    if std::fs::metadata(path)?.len() == 0 {
        return Err(redb::StorageError::Corrupted(
            "the file is empty (a journal is created complete, so it lost its content)".into(),
        )
        .into());
    }
    let mut b = builder();
    b.set_check_integrity_on_open(true);
    Ok(Db::Writer(b.open(path)?))
}

/// Create a journal at `path` atomically: written as `PATH.new` (0600) with its tables and the
/// format marker, synced, renamed into place, and the directory synced.
pub fn create_fresh(path: &Path, format: u16, id: &[u8; 16]) -> Result<(), redb::Error> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    {
        let db = Db::Writer(builder().create(&tmp)?);
        db.initialise(format, id)?;
        if let Db::Writer(d) = db {
            d.close()?;
        }
    }
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Open for reading beside any writer. `Ok(None)`: the file is unclean (its writer died) and no
/// writer is open to repair it; redb will not read it as it is.
pub fn open_reader(path: &Path) -> Result<Option<Db>, redb::Error> {
    match builder().open_read_only(path) {
        Ok(db) => Ok(Some(Db::Reader(db))),
        Err(redb::DatabaseError::RepairAborted) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A private copy of the journal in a new temporary directory (removed when the guard drops;
/// a database opened on the copy keeps it readable).
pub fn private_copy(path: &Path) -> std::io::Result<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::Builder::new()
        .prefix("stepwise-journal-")
        .tempdir()?;
    let copy = dir.path().join("journal.redb");
    std::fs::copy(path, &copy)?;
    Ok((dir, copy))
}

/// Read an unclean journal without writing to it: let redb repair (and check every page of) a
/// private copy.
pub fn open_repaired_copy(path: &Path) -> Result<Db, redb::Error> {
    let (_dir, copy) = private_copy(path)?;
    open_writer(&copy)
}

impl Db {
    pub fn read_all(&self) -> Result<Raw, redb::Error> {
        let txn = match self {
            Db::Writer(d) => d.begin_read()?,
            Db::Reader(d) => d.begin_read()?,
        };
        let meta = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Ok(Raw::default());
            }
            Err(e) => return Err(e.into()),
        };
        let mut raw = Raw {
            initialised: true,
            format: meta.get(META_FORMAT)?.map(|v| v.value().to_vec()),
            head: meta.get(META_HEAD)?.map(|v| v.value().to_vec()),
            id: meta.get(META_ID)?.map(|v| v.value().to_vec()),
            base: meta.get(META_BASE)?.map(|v| v.value().to_vec()),
            ..Raw::default()
        };
        let log = txn.open_table(LOG)?;
        for entry in log.iter()? {
            let (k, v) = entry?;
            raw.log.push((k.value(), v.value().to_vec()));
        }
        let runs = txn.open_table(RUNS)?;
        for entry in runs.iter()? {
            let (k, v) = entry?;
            raw.runs.push((k.value(), v.value()));
        }
        Ok(raw)
    }

    /// Create the tables, the format marker and the journal's id (a fresh file).
    pub fn initialise(&self, format: u16, id: &[u8; 16]) -> Result<(), redb::Error> {
        let Db::Writer(db) = self else {
            unreachable!("initialise on a reader")
        };
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            txn.open_table(LOG)?;
            txn.open_table(RUNS)?;
            let mut meta = txn.open_table(META)?;
            meta.insert(META_FORMAT, format.to_le_bytes().as_slice())?;
            meta.insert(META_ID, id.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Append one record (and index a new run, raise the format marker) in one durable
    /// transaction.
    pub fn append(
        &self,
        seq: Seq,
        bytes: &[u8],
        link: &Link,
        new_run: Option<RunId>,
        raise_format: Option<u16>,
    ) -> Result<(), redb::Error> {
        let Db::Writer(db) = self else {
            unreachable!("append on a reader")
        };
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut log = txn.open_table(LOG)?;
            log.insert(seq, bytes)?;
            if let Some(run) = new_run {
                txn.open_table(RUNS)?.insert(run, seq)?;
            }
            let mut head = Vec::with_capacity(40);
            head.extend_from_slice(&seq.to_le_bytes());
            head.extend_from_slice(link);
            let mut meta = txn.open_table(META)?;
            meta.insert(META_HEAD, head.as_slice())?;
            if let Some(format) = raise_format {
                meta.insert(META_FORMAT, format.to_le_bytes().as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Remove the records up to `base_seq` and the runs up to `base_run` in one durable
    /// transaction, recording the base (the chain goes on from `base_link`) and the format.
    pub fn compact(
        &self,
        base_seq: Seq,
        base_link: &Link,
        base_run: RunId,
        format: u16,
    ) -> Result<(), redb::Error> {
        let Db::Writer(db) = self else {
            unreachable!("compact on a reader")
        };
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            txn.open_table(LOG)?.retain(|seq, _| seq > base_seq)?;
            txn.open_table(RUNS)?.retain(|run, _| run > base_run)?;
            let mut base = Vec::with_capacity(48);
            base.extend_from_slice(&base_seq.to_le_bytes());
            base.extend_from_slice(base_link);
            base.extend_from_slice(&base_run.to_le_bytes());
            let mut meta = txn.open_table(META)?;
            meta.insert(META_BASE, base.as_slice())?;
            meta.insert(META_FORMAT, format.to_le_bytes().as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }
}
