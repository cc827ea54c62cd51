//! The real store: Nix's command-line tools driven with argument vectors.
pub mod add_derivation;
pub mod argv;
