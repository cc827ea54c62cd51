//! The real-Nix test bed (design §8): private stores in temp dirs, optionally on a size-limited
//! tmpfs, a file:// binary cache, GC-root links, and a NixOS-shaped fixture. Used by the
//! integration tests and by the demo; never by the product.
//!
//! - `Bed::new()` / `Bed::on_tmpfs(mib)` / `Bed::create(disk, cache)`: an empty private store in a
//!   fresh temporary directory (`<tmp>/stepwise-testbed-<uid>/bed-<pid>-…`).
//! - `Bed::prepared(spec, mib)` / `Bed::prepared_with(spec, |fixture| disk)`: a store whose `.drv`
//!   files for both fixture generations are valid and whose attached `file://` cache holds every
//!   package (glue is built locally, as on NixOS). Built once per spec and slot, then reused; use
//!   `Disk::Unlimited` for tests that need no root, `fixture.tight_disk_mib()` for a disk where G0
//!   fits and the plain upgrade does not.
//! - `bed.command(program)`: a `Command` with the bed's Nix environment (for nix-store, nix, and the
//!   stepwise binary, with `bed.journal_path()` and `bed.system_args()`).
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
mod nixos_scale;
mod prepared;
mod process;
mod series;
mod util;

pub mod bench;

pub use bed::{base_dir, Bed, Disk, HighWater};
pub use error::{is_out_of_space_message, BedError, Result};
pub use fixture::{
    nix_str, Fixture, FixtureSpec, GenerationInfo, Links, PackageInfo, PackageSpec,
    PackageVersionInfo, Payload, Role, VersionSpec, NIX_STATE_ALLOWANCE_MIB,
};
pub use guard::{is_root, require_root, root_tests_required, REQUIRE_ROOT_ENV};
pub use mount::{is_mount_point, loop_devices_of, wait_detached, LoopFs, LoopMount, TmpfsMount};
pub use nixos_scale::{
    Activation, Bump, ScaleBeds, ScaleFixture, ScaleGeneration, ScaleSpec, SCALE_DOWN,
};
pub use prepared::SlotLock;
pub use process::{kill_group, kill_session, show_output, spawn_own_group, spawn_own_session};
pub use series::{Revision, Series, SeriesSpec};
pub use util::{force_remove, replace_symlink};
