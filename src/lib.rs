//! stepwise: crash-safe NixOS upgrades for machines whose disk cannot hold the old and the new
//! system at once.
//!
//! Layout: `pure` holds what is a function of its inputs (derivations, planning, transitions);
//! `effects` holds every seam to the world (Nix, filesystem, journal), each behind a small trait;
//! `engine` joins them; `cli` and `output` face the user.

pub mod cli;
pub mod effects;
pub mod engine;
pub mod error;
pub mod output;
pub mod pure;

pub use pure::{drv, plan, transition};
