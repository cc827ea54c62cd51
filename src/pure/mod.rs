//! The pure parts of stepwise: no process, no file, no clock. Everything here is a function of its
//! inputs and is tested without Nix.

pub mod drv;
pub mod plan;
pub mod transition;
