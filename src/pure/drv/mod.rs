//! Nix derivations, byte-exact: parsing (`parse`), canonical writing (`write`), hashing and store
//! paths (`hash`, `store_path`, `nix32`), validation (`validate`). Pure: no I/O here.

pub mod nix32;
pub mod store_path;

pub use store_path::{StoreDir, StorePath, StorePathError};
