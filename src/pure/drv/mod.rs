//! Nix derivations, byte-exact: parsing (`parse`), canonical writing (`write`), hashing and store
//! paths (`hash`, `store_path`, `nix32`), validation (`validate`). Pure: no I/O here.

pub mod derivation;
pub mod hash;
pub mod nix32;
pub mod parse;
pub mod store_path;
pub mod validate;
pub mod write;

pub use derivation::{Derivation, HashAlgo, Method, Output, OutputKind};
pub use hash::{drv_path, DrvHash, DrvSource, HashError, Hasher, SourceError};
pub use parse::{parse, ParseError, ParseErrorKind};
pub use store_path::{StoreDir, StorePath, StorePathError};
pub use validate::{validate, ValidationError};
pub use write::to_aterm;
