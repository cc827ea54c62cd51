//! The engine's port to the journal: append a record durably, read a run back.

use std::cell::RefCell;
use std::rc::Rc;

use super::record::Record;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LogError(pub String);

/// One run's records. `append` returns only once the record is durable.
pub trait RunLog {
    fn append(&mut self, record: &Record) -> Result<(), LogError>;
    fn records(&self) -> Result<Vec<Record>, LogError>;
}

/// An in-memory log shared between "processes" of a test (a crash drops the executor, not the log).
#[derive(Debug, Clone, Default)]
pub struct MemLog(pub Rc<RefCell<Vec<Record>>>);

impl RunLog for MemLog {
    fn append(&mut self, record: &Record) -> Result<(), LogError> {
        self.0.borrow_mut().push(record.clone());
        Ok(())
    }

    fn records(&self) -> Result<Vec<Record>, LogError> {
        Ok(self.0.borrow().clone())
    }
}
