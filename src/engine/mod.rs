//! The executor: journals each transition's intent, runs its effect through the store traits,
//! journals the outcome. Decisions come from `pure::transition`.

pub mod api;
pub mod crash;
pub mod executor;
pub mod garbage;
pub mod housekeeping;
pub mod log;
pub mod plan_inputs;
pub mod preflight;
pub mod record;
pub mod run_plan;
pub mod steps;
pub mod stub_probe;
pub mod upgrade;

pub use api::{
    has_unfinished_run, resume, status, unwind, upgrade, Clock, ContinueOutcome, ContinueRequest,
    JournalAccess, JournalFile, Seams, Status, SystemClock, UpgradeOutcome,
};
pub use executor::{load, EngineError, Executor, FailedUnits, Loaded, Progress, Reserve, RunEnd};
pub use log::{LogError, MemLog, RunLog};
pub use run_plan::{DrvWrite, GenPlan, GenSource, NothingToWrite, Spec};
pub use upgrade::{prepare, Prepared, PreparedRun, UpgradeRequest};
