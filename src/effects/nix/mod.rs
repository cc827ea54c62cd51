//! The real store: Nix's command-line tools driven with argument vectors.
//!
//! `argv` (the `Invocation` value), `commands` (every command line, built deterministically),
//! `runner` (runs them over tokio::process), `parse` (what Nix prints, across versions), `cli`
//! (`NixCli`, the `Store` and `System` traits over all of it), `add_derivation` (writing a `.drv`).

pub mod add_derivation;
pub mod argv;
pub mod cli;
pub mod commands;
pub mod parse;
pub mod runner;

pub use cli::{NixCli, NixCliConfig};
