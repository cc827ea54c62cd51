pub mod golden;
pub mod model;
pub mod synthetic;
