//! The real-Nix test bed (design §8): private stores in temp dirs, optionally on a size-limited
//! tmpfs, a file:// binary cache, GC-root links, and a NixOS-shaped fixture. Used by the
//! integration tests and by the demo; never by the product.
//!
//! Typical use:
//! ```no_run
//! use stepwise_testbed::{require_root, Bed, FixtureSpec};
//! if require_root("my test") {
//!     let (bed, fx) = Bed::prepared(&FixtureSpec::standard(), 120);
//!     let g0 = bed.install(&fx.old.drv).unwrap();
//!     assert_eq!(bed.current_system().as_deref(), Some(g0.as_str()));
//! }
//! ```

mod bed;
mod error;
mod fixture;
mod guard;
mod mount;
mod prepared;
mod util;

pub use bed::{base_dir, Bed, Disk};
pub use error::{is_out_of_space_message, BedError, Result};
pub use fixture::{
    nix_str, Fixture, FixtureSpec, GenerationInfo, Links, PackageInfo, PackageSpec,
    PackageVersionInfo, Role, VersionSpec,
};
pub use guard::{is_root, require_root, root_tests_required, REQUIRE_ROOT_ENV};
pub use mount::{is_mount_point, TmpfsMount};
pub use prepared::SlotLock;
pub use util::{force_remove, replace_symlink};
