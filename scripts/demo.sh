#!/usr/bin/env bash
# The stepwise demo: a NixOS-shaped system on a tmpfs too small for the plain upgrade.
# Needs root (it mounts the tmpfs). Installs Debian's nix-bin if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "The demo needs root: it mounts a small tmpfs standing in for a VPS's full disk." >&2
  echo "Run: sudo $0" >&2
  exit 2
fi

if ! command -v nix-store >/dev/null 2>&1; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nix-bin
fi

cargo build --bins --workspace
STEPWISE_BIN="${CARGO_TARGET_DIR:-target}/debug/stepwise" \
  exec "${CARGO_TARGET_DIR:-target}/debug/stepwise-demo" "$@"
