//! Root-only tests: skip with a message for other users, fail when CI requires them.

use std::io::Write;

/// The environment variable that turns a root-only skip into a failure (CI sets it).
pub const REQUIRE_ROOT_ENV: &str = "STEPWISE_REQUIRE_ROOT_TESTS";

/// True if this process runs as root. Otherwise prints why `what` is skipped and returns false,
/// or panics when `STEPWISE_REQUIRE_ROOT_TESTS=1` so that CI cannot pass by skipping.
pub fn require_root(what: &str) -> bool {
    if is_root() {
        return true;
    }
    if root_tests_required() {
        panic!("{what} needs root for a tmpfs mount, and {REQUIRE_ROOT_ENV}=1 forbids skipping it");
    }
    // Straight to the stream: the test harness captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "skipping {what}: needs root for a tmpfs mount"
    );
    false
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether `STEPWISE_REQUIRE_ROOT_TESTS=1`.
pub fn root_tests_required() -> bool {
    std::env::var(REQUIRE_ROOT_ENV).is_ok_and(|v| v == "1")
}
