//! The side-effect seams of stepwise, each one small trait with a real and an in-memory
//! implementation: the Nix store and system (`store`, real in `nix`, in-memory in `model_store`),
//! the filesystem (`fs`: space, reserve file, atomic symlinks) and the journal file (`journal`).

pub mod fs;
pub mod journal;
pub mod model_store;
pub mod nix;
pub mod signals;
pub mod store;
pub mod system_lock;

pub use store::{Store, System};
