//! Planning: the closure diff of G0 against the target, upgrade units, masks, and the step order.
//!
//! # API for the engine
//!
//! 1. Gather a [`PlanInput`] (`engine::plan_inputs::gather` does it through the `Store` trait):
//!    the target's [`TargetGraph`] (its `.drv`s down to the glue boundary), G0's closure
//!    ([`G0Side`]), sizes ([`PathFacts`], estimates marked), the live and booted sets, the disk.
//! 2. [`plan`] gives a [`Planned`]: the units, the [`Diff`], the [`Frame`] (used, ceiling, lower
//!    bound, plain upgrade's peak) and either a [`Plan`] or a [`Shortfall`] (what is missing,
//!    the bottleneck, what would help).
//! 3. A [`Plan`] is `steps: Vec<Step>`; step k's generation is the target under `step.mask`
//!    (every unit not yet upgraded → its G0 counterpart, or a [`Stub`]). The last step's mask is
//!    empty: it *is* the target. `step.space` has what it adds, frees and its peak;
//!    `step.reboot_after` says to reboot into it before the next step.
//! 4. [`Materialiser::materialise`] turns a mask into the `.drv` files to write, inputs first
//!    ([`NewDrv`]: path, name, ATerm bytes, references) plus the step's toplevel `.drv` and `out`
//!    path. One `Materialiser` per run keeps the hashes of the derivations it read. The empty
//!    mask writes nothing and returns the target's own paths.
//! 5. Stubs ([`Planned::stubs`]) are empty directories added with `nix-store --add` under the
//!    name [`Stub::name`]; their path is known in advance ([`Stub::path`]) and must exist before
//!    a step whose mask uses it is written.
//!
//! **Local derivations.** Glue is what `preferLocalBuild`/`allowSubstitutes` say, and also
//! (`TargetGraph::read_with`, the engine asks its substituters) every derivation between the
//! toplevel and the packages that reads other derivations and that no substituter has: the
//! initrd, modules-shrunk, etc-metadata, `system.checks`. They are rewritten under each step's
//! mask like glue, so a package they read (the initrd copies systemd) follows the mask; G0's
//! paths of their names are G0's glue, and their size is part of each step's glue estimate.
//! Inputs a glue derivation names only as build tools (`nativeBuildInputs`, `stdenv`, the
//! builder) are build inputs: listed apart (`Diff::build_inputs`), in no generation's closure.
//!
//! Pure: no I/O. Renderers ([`report`]) write to any `io::Write`.
//!
//! # The space model and its limits
//!
//! Sizes are the disk's bytes ([`disk`]): NAR sizes (local path info, else the substituter's
//! narinfo, else the G0 counterpart's size, marked as an estimate) turned into what the store's
//! filesystem allocates — measured for paths on disk (their own blocks, files shared with other
//! paths through `auto-optimise-store` not counted as freed), NAR × a conservative ratio for
//! paths still to come (compression learnt from the filesystem, never below 1 where it does not
//! compress). The NAR figures stay beside them ([`DiskFigures`], `Step::space_nar`). Each step's
//! glue is estimated by G0's glue. G0 paths that another GC root holds (user profiles, other
//! gcroots, runtime roots) are kept, not freed. Known limits:
//! - non-glue inputs of glue that are only needed to build it (stdenv, perl for buildEnv, jq
//!   and cpio for the initrd…) count as held from step 1 to the end (they are "added" units
//!   without a G0 counterpart): what the engine does, as its collects take a generation's
//!   closure and these are in none; a GC after the run frees them;
//! - a local derivation's rewritten copy is estimated by its G0 counterpart's size (a new
//!   initrd larger than G0's is under-counted by the difference);
//! - on a compressing filesystem the compression is one figure for the whole store, applied to
//!   every path alike (what a G0 path frees is its blocks scaled by it): a package that
//!   compresses worse than the store's average frees more than counted, one that compresses
//!   better frees less; the margin on additions covers the usual spread;
//! - Nix's database growth is left to the reserve.

pub mod boot;
pub mod diff;
pub mod disk;
pub mod keep;
pub mod mask;
pub mod names;
pub mod order;
pub mod planner;
pub mod probe;
pub mod replan;
pub mod report;
pub mod space;
pub mod triggers;
pub mod units;

pub use boot::{BootPlan, BootStep, Initrd, ProfileFacts};
pub use diff::{Diff, DiffRow};
pub use disk::DiskCost;
pub use keep::{keep_previous, KeepPrevious};
pub use mask::{Mask, Materialised, Materialiser, NewDrv, Stub};
pub use names::PackageName;
pub use planner::{
    plan, DiskFigures, Frame, PathFacts, Plan, PlanError, PlanInput, PlanOptions, Planned,
    Shortfall, SizeSource, Step,
};
pub use units::{is_glue, Change, G0Side, TargetGraph, Unit, Units};
