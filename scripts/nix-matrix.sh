#!/usr/bin/env bash
# Runs every test that drives real Nix against several Nix versions: the host's (Debian bookworm's
# Nix 2.8) and Debian trixie's (2.26) and sid's (2.34) nix-bin, each in a minimal debootstrap chroot.
# The crate and the test binaries are built once, on the host; the chroots only run them.
#
#   scripts/nix-matrix.sh [SUITE...]     SUITE: host, trixie, sid (default: all three)
#   scripts/nix-matrix.sh --prepare SUITE...   only make (or check) the cached chroots
#
# Chroots are cached under $STEPWISE_CI_CACHE (/var/cache/stepwise-ci), one per suite, and rebuilt
# when missing or broken. Needs root, debootstrap and network for a cold cache.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
cache=${STEPWISE_CI_CACHE:-/var/cache/stepwise-ci}
mirror=${STEPWISE_CI_MIRROR:-http://deb.debian.org/debian}

log() { echo "nix-matrix: $*" >&2; }

# A chroot is usable once it has the marker written after its install and nix-bin installed (Nix
# itself needs /proc, mounted only for a run).
chroot_ok() {
  [ -f "$1/.stepwise-ready" ] && [ -x "$1/usr/bin/nix-store" ] \
    && chroot "$1" dpkg-query -W -f '${Status}' nix-bin 2>/dev/null | grep -q 'ok installed'
}

# What the tests need besides Nix, as on the host (.ci/run): mkfs.btrfs for the loop-device beds,
# systemd-analyze for the module's units. Installed into a cached chroot that lacks them.
extras=(btrfs-progs e2fsprogs systemd)
extras_ok() { [ -x "$1/usr/sbin/mkfs.btrfs" ] && [ -x "$1/usr/sbin/mkfs.ext4" ] && [ -x "$1/usr/bin/systemd-analyze" ]; }
add_extras() {
  local dir=$1 rc=0
  extras_ok "$dir" && return 0
  log "$(basename "$dir"): installing ${extras[*]}"
  mount -t proc proc "$dir/proc"
  chroot "$dir" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${extras[@]}" \
    >>"$dir.extras.log" 2>&1 || rc=$?
  umount "$dir/proc"
  chroot "$dir" apt-get clean
  [ $rc = 0 ] || { log "installing ${extras[*]} failed, see $dir.extras.log"; return 1; }
  extras_ok "$dir"
}

# Unmounts everything at or below $1, deepest first; a lazy unmount only as the last resort.
unmount_below() {
  local dir=$1 m
  for m in $(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
}

# Makes $cache/$suite: debootstrap minbase, then nix-bin with apt (debootstrap --include fails on
# nix-bin's virtual perl dependency). Built beside and renamed, so a half-made chroot is never used.
make_chroot() {
  local suite=$1 dir=$cache/$1 tmp=$cache/$1.tmp
  if chroot_ok "$dir"; then log "$suite: cached chroot $dir"; add_extras "$dir"; return; fi
  log "$suite: making chroot $dir"
  mkdir -p "$cache"
  unmount_below "$tmp"; unmount_below "$dir"
  rm -rf --one-file-system "$tmp" "$dir"
  debootstrap --variant=minbase "$suite" "$tmp" "$mirror" >"$cache/$suite.debootstrap.log" 2>&1 \
    || { log "$suite: debootstrap failed, see $cache/$suite.debootstrap.log"; return 1; }
  # No service starts inside the chroot.
  printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
  chmod +x "$tmp/usr/sbin/policy-rc.d"
  mount -t proc proc "$tmp/proc"
  local rc=0
  chroot "$tmp" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nix-bin \
    >"$cache/$suite.apt.log" 2>&1 || rc=$?
  umount "$tmp/proc"
  if [ $rc != 0 ]; then log "$suite: installing nix-bin failed, see $cache/$suite.apt.log"; return 1; fi
  chroot "$tmp" apt-get clean
  touch "$tmp/.stepwise-ready"
  mv "$tmp" "$dir"
  chroot_ok "$dir"
  add_extras "$dir"
  log "$suite: nix-bin $(chroot "$dir" dpkg-query -W -f '${Version}' nix-bin)"
}

# The test targets that drive real Nix (private stores, `nix-store`, `nix`, `nix-instantiate`).
# engine_crash and adapt_real need the crash-points build and run in a second phase.
real_nix_tests=(activation_real bed cli_contract drv_golden drv_write engine_real nixos_module
  nixos_shape_real plan_cli plan_real
  stop_real store_contract store_interrupt store_nixcli)
# Tests that drive real Nix on the host's Nix only (with the other tests, "host only"): too slow
# to run three times. nixos_scale_real: the NixOS-shaped fixture at a fifth of real scale (about
# 1.5 min); `STEPWISE_NIXOS_SCALE=full` runs it at real scale by hand.
host_real_nix_tests=(nixos_scale_real)

# Builds with `cargo test --no-run ARGS` and prints "NAME PATH CWD" for every test executable
# (CWD: its package's directory, where cargo would run it).
build_tests() {
  cargo test --no-run --message-format=json "$@" | python3 -c '
import json, os, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"], m["executable"], os.path.dirname(m["manifest_path"]))
'
}

mounts_of=""  # the chroot whose mounts the EXIT trap removes
cleanup() { if [ -n "$mounts_of" ]; then unmount_below "$mounts_of"; mounts_of=""; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Mounts what a test run needs inside chroot $1: the kernel file systems, /tmp (private stores and
# temp dirs) and the work tree at the same paths, so that compiled-in paths (CARGO_BIN_EXE_stepwise,
# CARGO_MANIFEST_DIR) hold inside.
enter() {
  local root=$1 d
  mounts_of=$root
  mount -t proc proc "$root/proc"
  for d in /dev /sys /tmp; do
    mount --rbind "$d" "$root$d"
    # Without this, every tmpfs a test mounts below /tmp propagates to the host's /tmp and back,
    # and its unmount fails with EBUSY.
    mount --make-rprivate "$root$d"
  done
  for d in "$repo" "$target_dir"; do
    case $d in "$repo"/*) continue ;; esac  # already there with the work tree
    mkdir -p "$root$d"
    findmnt -M "$root$d" >/dev/null || { mount --bind "$d" "$root$d"; mount --make-private "$root$d"; }
  done
}

# Runs the listed tests ("NAME PATH CWD" lines on stdin) on the host or in chroot $1, appending
# their output to $2. Returns non-zero if any failed.
run_tests() {
  local suite=$1 out=$2 name exe cwd rc=0 one prefix=()
  one=$(mktemp)
  # A testbed cache of its own per chroot: fixtures prepared by one Nix are not handed to another,
  # and slots are not shared with tests running on the host at the same time.
  local testbed=()
  [ "$suite" = host ] || { prefix=(chroot "$cache/$suite"); testbed=("STEPWISE_TESTBED_DIR=/tmp/stepwise-matrix-$suite"); }
  while read -r name exe cwd; do
    echo "== $suite $name" >>"$out"
    if "${prefix[@]}" env -C "$cwd" STEPWISE_REQUIRE_ROOT_TESTS=1 "${testbed[@]}" \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$exe" </dev/null >"$one" 2>&1; then
      log "$suite: $name: $(grep '^test result:' "$one" | tail -1)"
    else
      log "$suite: $name FAILED:"; grep -E '^test .* FAILED|panicked' "$one" | head -20 >&2; rc=1
    fi
    cat "$one" >>"$out"
  done
  rm -f "$one"
  return $rc
}

# Sums the "N passed" (or, with a second argument, "N failed") of cargo's result lines.
passed() { awk -v w="${2:-passed}" '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ "^" w) s += $i } END { print s + 0 }' "$1"; }

# Runs the tests in `list` for one suite (the chroot mounted around it), timing it.
run_suite() {
  local suite=$1 list=$2 start=$SECONDS rc=0
  if [ "$suite" != host ]; then enter "$cache/$suite"; fi
  run_tests "$suite" "$work/$suite.out" <"$list" || rc=$?
  cleanup
  seconds[$suite]=$(( ${seconds[$suite]:-0} + SECONDS - start ))
  [ $rc = 0 ] || failed[$suite]=1
}

nix_version() {
  if [ "$1" = host ]; then nix-store --version
  else dpkg-query --admindir="$cache/$1/var/lib/dpkg" -W -f 'nix-bin ${Version}' nix-bin; fi
}

main() {
  if [ "${1:-}" = --prepare ]; then
    shift; for s in "$@"; do make_chroot "$s"; done; return
  fi
  local suites=("$@") s
  [ ${#suites[@]} -gt 0 ] || suites=(host trixie sid)
  [ "$(id -u)" = 0 ] || { log "needs root (chroot, mounts)"; exit 2; }
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  work=$(mktemp -d)
  declare -gA seconds=() failed=()
  for s in "${suites[@]}"; do
    [ "$s" = host ] && continue
    local t=$SECONDS; make_chroot "$s"; log "$s: chroot ready in $((SECONDS - t))s"
  done

  # Phase 1: everything but the crash tests, built once.
  local t=$SECONDS
  build_tests --workspace --all-targets >"$work/all.list"
  log "built the tests in $((SECONDS - t))s"
  local pattern; pattern="^($(IFS='|'; echo "${real_nix_tests[*]}")) "
  grep -E "$pattern" "$work/all.list" >"$work/real.list"
  grep -vE "$pattern" "$work/all.list" >"$work/rest.list"
  for s in "${real_nix_tests[@]}"; do
    grep -q "^$s " "$work/real.list" || { log "no test target $s: update real_nix_tests"; exit 2; }
  done
  for s in "${host_real_nix_tests[@]}"; do
    grep -q "^$s " "$work/rest.list" || { log "no test target $s: update host_real_nix_tests"; exit 2; }
  done
  for s in "${suites[@]}"; do run_suite "$s" "$work/real.list"; done
  if [[ " ${suites[*]} " == *" host "* ]]; then
    t=$SECONDS
    run_tests host "$work/rest.out" <"$work/rest.list" || failed[host-only]=1
    cargo test --workspace --doc >>"$work/rest.out" 2>&1 || failed[host-only]=1
    seconds[host-only]=$((SECONDS - t))
  fi

  # Phase 2: the crash tests kill a `stepwise` built with named crash points; building it replaces
  # the binary the other tests use, so it comes last.
  t=$SECONDS
  build_tests --features crash-points --test engine_crash --test adapt_real >"$work/crash.list"
  log "built the crash tests in $((SECONDS - t))s"
  for s in "${suites[@]}"; do run_suite "$s" "$work/crash.list"; done

  echo
  echo "nix-matrix: tests that drive real Nix, per version (passed, seconds)"
  for s in "${suites[@]}"; do
    printf '  %-7s %-28s %5s passed %5ss %s\n' "$s" "$(nix_version "$s")" "$(passed "$work/$s.out")" \
      "${seconds[$s]}" "${failed[$s]:+FAILED}"
  done
  if [ -n "${seconds[host-only]:-}" ]; then
    printf '  %-36s %5s passed %5ss %s\n' "other tests (host only)" "$(passed "$work/rest.out")" \
      "${seconds[host-only]}" "${failed[host-only]:+FAILED}"
  fi
  echo "  outputs: $work"
  # One closing line over every test binary run, in the form CI reads.
  local total=0 bad=0 f
  for f in "$work"/*.out; do
    total=$((total + $(passed "$f"))); bad=$((bad + $(passed "$f" failed)))
  done
  # A binary that failed without a result line (a crash) still counts as one failure.
  [ ${#failed[@]} = 0 ] || [ $bad -gt 0 ] || bad=${#failed[@]}
  echo "nix-matrix: $total passed, $bad failed"
  [ ${#failed[@]} = 0 ]
}

main "$@"
