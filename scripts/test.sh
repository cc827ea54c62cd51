#!/usr/bin/env bash
# Runs every test of stepwise against a real Nix. Installs Debian's nix-bin if it is missing.
# Tests that need root (tmpfs mounts) skip for other users, unless STEPWISE_REQUIRE_ROOT_TESTS=1.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nix-store >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nix-bin
  else sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q nix-bin; fi
fi

cargo test --workspace --all-targets
cargo test --workspace --doc
# The crash tests kill a `stepwise` built with named crash points; run them after the rest, since
# building with the feature replaces the binary the other tests use.
cargo test --features crash-points --test engine_crash --test adapt_real
echo "scripts/test.sh: every test passed in ${SECONDS}s"
