pub mod golden;
pub mod synthetic;
pub mod model;
