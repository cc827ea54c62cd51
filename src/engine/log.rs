//! The engine's port to the journal: append a record durably, read the last run back. The real
//! one is the redb `Journal`; `MemLog` keeps records in memory for the model tests.

use std::cell::RefCell;
use std::rc::Rc;

use crate::effects::journal::{Journal, Record, RunHeader, RunId, Seq};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LogError(pub String);

pub trait RunLog {
    /// Start a run (writes its `RunStarted`).
    fn begin_run(&mut self, header: RunHeader) -> Result<RunId, LogError>;
    /// Append to the last run; durable when this returns.
    fn append(&mut self, record: Record) -> Result<Seq, LogError>;
    /// The last run's records, its `RunStarted` first; empty when there is none.
    fn last_run(&self) -> Vec<(Seq, Record)>;
}

impl RunLog for Journal {
    fn begin_run(&mut self, header: RunHeader) -> Result<RunId, LogError> {
        Journal::begin_run(self, header).map_err(|e| LogError(e.to_string()))
    }

    fn append(&mut self, record: Record) -> Result<Seq, LogError> {
        let run = self
            .last_run()
            .ok_or_else(|| LogError("no run to append to".into()))?;
        Journal::append(self, run, record).map_err(|e| LogError(e.to_string()))
    }

    fn last_run(&self) -> Vec<(Seq, Record)> {
        match Journal::last_run(self) {
            Some(run) => self
                .records(run)
                .iter()
                .map(|s| (s.seq, s.record.clone()))
                .collect(),
            None => vec![],
        }
    }
}

/// An in-memory log shared between "processes" of a test (a simulated crash drops the executor,
/// not the log).
#[derive(Debug, Clone, Default)]
pub struct MemLog(pub Rc<RefCell<Vec<(Seq, Record)>>>);

impl RunLog for MemLog {
    fn begin_run(&mut self, header: RunHeader) -> Result<RunId, LogError> {
        let mut v = self.0.borrow_mut();
        let seq = v.len() as Seq + 1;
        v.push((seq, Record::RunStarted(Box::new(header))));
        Ok(v.iter()
            .filter(|(_, r)| matches!(r, Record::RunStarted(_)))
            .count() as RunId)
    }

    fn append(&mut self, record: Record) -> Result<Seq, LogError> {
        let mut v = self.0.borrow_mut();
        let seq = v.len() as Seq + 1;
        v.push((seq, record));
        Ok(seq)
    }

    fn last_run(&self) -> Vec<(Seq, Record)> {
        let v = self.0.borrow();
        let start = v
            .iter()
            .rposition(|(_, r)| matches!(r, Record::RunStarted(_)))
            .unwrap_or(v.len());
        v[start..].to_vec()
    }
}
