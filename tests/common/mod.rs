pub mod golden;
pub mod synthetic;
