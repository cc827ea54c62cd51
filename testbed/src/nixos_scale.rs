//! A NixOS-shaped system at real scale on real Nix: 1,300 packages and 200 configuration-specific
//! derivations built locally (1,500+ store paths), with the shapes of nixpkgs' top-level.nix,
//! system-path (buildEnv), systemd-lib's units (makeUnit, generateUnits), etc.nix and its
//! `etc-metadata` overlay image, kernel.nix's modules-shrunk, make-initrd-ng, `system.checks`,
//! firmware and bootspec, ported from the model generator of `tests/plan_local.rs`.
//!
//! Sizes are real ones scaled down `SCALE_DOWN` times (a generation is tens of MiB, not GiB): a
//! few big packages (linux-firmware, the kernel with its modules, python3, perl, systemd, glibc),
//! then a long tail, log-uniform between 512 bytes and 128 KiB. Every package reads glibc, so a
//! glibc bump rebuilds them all. One Nix file holds G0 (`old`) and four targets, one per
//! revision kind (`Bump`). Packages (and the build tools jq, cpio) go to the bed's file:// cache;
//! glue and the local derivations never do.
//!
//! `ScaleBeds::build` builds the file once per spec and slot (at the slot's fixed root: a cache
//! serves only stores at the directory it was filled from), installs G0 on a tmpfs, runs an
//! hourly GC and keeps a copy of that store; `ScaleBeds::bed` restores it on a fresh tmpfs of a
//! given size in a second (no substitution, no build). The fixture's `switch-to-configuration`
//! records, at every activation (after a step's realise, before its collect), the disk's used
//! bytes (`stat -f` of the bed's disk) and the toplevel's closure (`nix-store -qR`): see
//! `ScaleBeds::activations`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bed::{base_dir, Bed, Disk, Holder};
use crate::error::{run, BedError, Result};
use crate::fixture::{nix_str, switch_script, Links};
use crate::mount::{is_mount_point, unmount};
use crate::prepared::{take_slot, SlotLock};
use crate::util::{force_remove, replace_symlink, write_atomic};

/// Real sizes are divided by this (a 600 MiB linux-firmware is 6 MiB here).
pub const SCALE_DOWN: u64 = 100;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// What a target changes against G0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Bump {
    /// A leaf package (`hello`): system-path, etc and etc-metadata follow.
    Leaf,
    /// The kernel: modules-shrunk, the initrd and the bootspec follow.
    Kernel,
    /// systemd: the initrd copies it, a unit names it.
    Systemd,
    /// glibc: every package is rebuilt (a mass rebuild), and every local derivation with them.
    Glibc,
}

impl Bump {
    pub const ALL: [Bump; 4] = [Bump::Leaf, Bump::Kernel, Bump::Systemd, Bump::Glibc];

    /// The attribute of the target in the Nix file.
    pub fn attr(self) -> &'static str {
        match self {
            Bump::Leaf => "leaf",
            Bump::Kernel => "kernel",
            Bump::Systemd => "systemd",
            Bump::Glibc => "glibc",
        }
    }

    /// The Nix expression of the target's versions.
    fn versions(self) -> &'static str {
        match self {
            Bump::Leaf => r#"v0 // { hello = "2.13"; }"#,
            Bump::Kernel => r#"v0 // { linux = "6.6.2"; }"#,
            Bump::Systemd => r#"v0 // { systemd = "256"; }"#,
            Bump::Glibc => r#"v0 // { glibc = "2.40"; }"#,
        }
    }
}

/// How many of each kind of path a generation has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleSpec {
    /// Packages (on the cache), glibc, systemd, the kernel and firmware among them.
    pub packages: usize,
    /// Local config files (`cfgN.conf`: runCommand's shape, reading a few packages); the local
    /// derivations are these and four more (modules-shrunk, the initrd, check-sshd, etc-metadata).
    pub configs: usize,
    /// Units (`unit-*.service`, glue), each naming a package.
    pub units: usize,
}

/// The big packages: (name, version: a Nix expression, real MiB, the file its payload is in).
/// linux-firmware is compressed (nixpkgs' compressFirmwareXz) and cached as a package.
const BIG: [(&str, &str, u64, &str); 7] = [
    ("glibc", "v.glibc", 30, "lib/libc.so.6"),
    ("systemd", "v.systemd", 35, "lib/systemd/systemd"),
    ("linux", "v.linux", 150, "bzImage"),
    ("hello", "v.hello", 0, "bin/hello"),
    (
        "linux-firmware-xz",
        "\"20241110\"",
        600,
        "lib/firmware/blob.xz",
    ),
    ("python3", "\"3.12.7\"", 100, "bin/python3"),
    ("perl", "\"5.40.0\"", 60, "bin/perl"),
];
/// Indices in `BIG` of the packages not in system-path (booted, not run from PATH).
const LINUX: usize = 2;
const FIRMWARE: usize = 4;

impl ScaleSpec {
    /// Real scale: 1,300 packages, 200 local derivations, 60 units (1,560+ paths per generation).
    pub fn full() -> ScaleSpec {
        ScaleSpec {
            packages: 1_300,
            configs: 196,
            units: 60,
        }
    }

    /// A fifth of it, for CI: 260 packages, 40 local derivations, 12 units.
    pub fn reduced() -> ScaleSpec {
        ScaleSpec {
            packages: 260,
            configs: 36,
            units: 12,
        }
    }

    /// `full` with `STEPWISE_NIXOS_SCALE=full`, else `reduced`.
    pub fn from_env() -> ScaleSpec {
        if std::env::var("STEPWISE_NIXOS_SCALE").as_deref() == Ok("full") {
            ScaleSpec::full()
        } else {
            ScaleSpec::reduced()
        }
    }

    /// Local derivations of a generation.
    pub fn locals(&self) -> usize {
        self.configs + 4
    }

    /// A key naming this spec's fixture: the hash of its Nix text with placeholder links.
    pub fn key(&self) -> String {
        let text = self.nix_text(Path::new("/ROOT"));
        let digest = Sha256::digest(text.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// The packages: (name, version expression, payload bytes, payload file, dependency indices).
    fn packages(&self) -> Vec<(String, String, u64, String, Vec<usize>)> {
        let mut rng = Rng(0x5eed_cafe_f00d);
        let mut out: Vec<(String, String, u64, String, Vec<usize>)> = BIG
            .iter()
            .enumerate()
            .map(|(i, (n, v, mib, f))| {
                // hello is 200 KiB in nixpkgs; the rest read glibc but the kernel and firmware.
                let bytes = if *mib == 0 { 200 * KIB } else { mib * MIB } / SCALE_DOWN;
                let deps = if i == 0 || i == LINUX || i == FIRMWARE {
                    vec![]
                } else {
                    vec![0]
                };
                (n.to_string(), v.to_string(), bytes, f.to_string(), deps)
            })
            .collect();
        while out.len() < self.packages {
            let i = out.len();
            let mut deps = vec![0];
            for _ in 0..rng.below(3) {
                // Any earlier package but the kernel and firmware.
                let d = 5 + rng.below((i - 5) as u64) as usize;
                deps.push(d);
            }
            deps.sort();
            deps.dedup();
            let bytes = rng.log_uniform(512, 128 * KIB);
            out.push((
                format!("pkg{i}"),
                format!("\"1.{}\"", i % 7),
                bytes,
                "share/data".into(),
                deps,
            ));
        }
        out
    }

    /// The config files: (packages read, built with the tools).
    fn configs(&self) -> Vec<(Vec<usize>, bool)> {
        let mut rng = Rng(0xc0ff_ee00_d00d);
        (0..self.configs)
            .map(|c| {
                let mut reads: Vec<usize> = (0..1 + rng.below(3))
                    .map(|_| rng.below(self.packages as u64) as usize)
                    .filter(|&i| i != LINUX && i != FIRMWARE)
                    .collect();
                reads.sort();
                reads.dedup();
                if reads.is_empty() {
                    reads.push(0);
                }
                (reads, c % 10 == 0)
            })
            .collect()
    }

    /// The Nix file of a bed rooted at `root`: `old` and the four targets (their toplevels), and
    /// `manifest` (each generation's toplevel output, runtime packages and build tools).
    pub fn nix_text(&self, root: &Path) -> String {
        let links = Links::for_root(root);
        let mut t = String::from(NIX_SCALE_PRELUDE);
        t.push_str("  specsOf = v: [\n");
        for (n, v, b, f, d) in self.packages() {
            let deps: Vec<String> = d.iter().map(|i| i.to_string()).collect();
            let _ = writeln!(
                t,
                "    {{ n = {}; v = {v}; b = {b}; f = {}; d = [ {} ]; }}",
                nix_str(&n),
                nix_str(&f),
                deps.join(" ")
            );
        }
        t.push_str("  ];\n  cfgSpecs = [\n");
        for (reads, tools) in self.configs() {
            let r: Vec<String> = reads.iter().map(|i| i.to_string()).collect();
            let _ = writeln!(t, "    {{ r = [ {} ]; t = {tools}; }}", r.join(" "));
        }
        t.push_str("  ];\n");
        let units: Vec<String> = (0..self.units)
            .map(|u| (5 + (u * 17) % (self.packages - 5)).to_string())
            .collect();
        let _ = writeln!(t, "  unitPkgs = [ {} ];", units.join(" "));
        let _ = writeln!(
            t,
            "  switchScript = {};",
            nix_str(&recording_switch_script(root, &links))
        );
        t.push_str("  old = gen \"24.05\" v0;\n");
        for b in Bump::ALL {
            let _ = writeln!(t, "  {} = gen \"24.11\" ({});", b.attr(), b.versions());
        }
        t.push_str("in {\n  old = old.toplevel;\n");
        for b in Bump::ALL {
            let _ = writeln!(t, "  {0} = {0}.toplevel;", b.attr());
        }
        t.push_str("  manifest = {\n    old = info old;\n");
        for b in Bump::ALL {
            let _ = writeln!(t, "    {0} = info {0};", b.attr());
        }
        t.push_str("  };\n}\n");
        t
    }
}

/// The fixture's `switch-to-configuration`, which first records the disk's used bytes and the
/// toplevel's closure (the test's view of each step at its activation).
fn recording_switch_script(root: &Path, links: &Links) -> String {
    let run = root.join("run");
    let record = format!(
        "toplevel=@out@\nif [ \"$1\" != dry-activate ]; then\n  echo \"$(stat -f -c '%b %f %S' '{nix}') $toplevel\" >> '{disk}'\n  mkdir -p '{closures}'\n  nix-store -qR \"$toplevel\" > '{closures}'/\"${{toplevel##*/}}\"\nfi\n",
        nix = root.join("nix").display(),
        disk = run.join("disk.log").display(),
        closures = run.join("closures").display(),
    );
    switch_script(links).replacen("toplevel=@out@\n", &record, 1)
}

const NIX_SCALE_PRELUDE: &str = r#"# Generated by stepwise-testbed (nixos_scale.rs): a NixOS-shaped system at real scale.
let
  system = builtins.currentSystem;
  sh = name: attrs: script: derivation ({
    inherit name system;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" script ];
  } // attrs);
  # A package (from the cache): its payload, and the paths it refers to at runtime.
  pkg = name: file: bytes: deps: sh name { inherit deps file; } ''
    mkdir -p $out/$(dirname $file)
    { echo ${name}; for d in $deps; do echo $d; done; } > $out/.deps
    head -c ${toString bytes} /dev/zero > $out/$file
  '';
  # makeUnit, buildEnv, generateUnits, the toplevel: built locally by their attributes.
  glue = name: attrs: sh name ({ preferLocalBuild = true; allowSubstitutes = false; } // attrs);
  # runCommand without preferLocalBuild: on no substituter all the same (configuration-specific).
  # `reads` are runtime references; the tools in nativeBuildInputs only run at build time.
  local = name: file: bytes: attrs: sh name ({ nativeBuildInputs = [ ]; } // attrs) ''
    for t in $nativeBuildInputs; do test -e $t/.deps; done
    mkdir -p $out/$(dirname ${file})
    for r in $reads; do echo $r; done > $out/.reads
    head -c ${toString bytes} /dev/zero > $out/${file}
  '';
  v0 = { glibc = "2.39"; systemd = "255"; linux = "6.6.1"; hello = "2.12"; };
  gen = release: v:
    let
      at = builtins.elemAt;
      pkgs = map (s: pkg "${s.n}-${s.v}" s.f s.b (map (at pkgs) s.d)) (specsOf v);
      glibc = at pkgs 0;
      systemd = at pkgs 1;
      linux = at pkgs 2;
      firmware = at pkgs 4;
      tools = [ (pkg "jq-1.7.1" "bin/jq" 4000 [ glibc ]) (pkg "cpio-2.15" "bin/cpio" 2000 [ glibc ]) ];
      runtime = builtins.filter (p: p.name != linux.name && p.name != firmware.name) pkgs;
      # nixos/modules/config/system-path.nix: buildEnv over environment.systemPackages, which
      # passes its package list as a file (1,300 store paths are more than one variable holds).
      systemPath = glue "system-path" { paths = runtime; passAsFile = [ "paths" ]; } ''
        mkdir -p $out; for p in $(cat $pathsPath); do echo $p; done > $out/paths
      '';
      # systemd-lib's makeUnit: one derivation per unit; generateUnits links them together.
      unit = name: p: glue "unit-${name}.service" {
        text = "[Service]\nExecStart=${p}/bin/${name}\n";
      } ''printf '%s' "$text" > $out'';
      units = [ (unit "systemd-journald" systemd) ]
        ++ builtins.genList (u: unit "svc${toString u}" (at pkgs (at unitPkgs u))) (builtins.length unitPkgs);
      systemUnits = glue "system-units" { inherit units; } ''
        mkdir -p $out; for u in $units; do n=''${u##*/}; ln -s $u $out/''${n#*-unit-}; done
      '';
      configs = builtins.genList (c: let s = at cfgSpecs c; in
        local "cfg${toString c}.conf" "cfg" 1024 ({ reads = map (at pkgs) s.r; }
          // (if s.t then { nativeBuildInputs = tools; } else { }))) (builtins.length cfgSpecs);
      # nixos/modules/system/etc/etc.nix: the etc tree, and the overlay's metadata image.
      etc = glue "etc" { inherit systemUnits configs firmware release; } ''
        mkdir -p $out/etc; ln -s $systemUnits $out/etc/systemd-system; ln -s $firmware $out/etc/firmware
        for c in $configs; do n=''${c##*/}; ln -s $c $out/etc/''${n#*-}; done
        printf 'NAME=NixOS\nVERSION_ID="%s"\n' "$release" > $out/etc/os-release
      '';
      metadata = local "etc-metadata.erofs" "etc.erofs" 10240 { reads = [ etc ]; nativeBuildInputs = tools; };
      # kernel.nix's aggregateModules (shrunk to the initrd's modules), make-initrd-ng.
      # (aggregateModules is a buildEnv named kernel-modules; modules-closure.nix adds -shrunk.)
      modules = local "kernel-modules-shrunk" "lib/modules" 40960 { reads = [ linux ]; };
      initrd = local "initrd-linux-${v.linux}" "initrd" 307200 {
        reads = [ systemd modules glibc ];
        nativeBuildInputs = tools;
      };
      # system.checks: built with the toplevel, not in its closure.
      check = local "check-sshd-config" "ok" 512 { reads = [ (at pkgs 10) ]; };
      toplevel = glue "nixos-system-scale-${release}" {
        inherit systemPath etc initrd metadata release switchScript;
        kernel = linux;
        kernelVersion = v.linux;
        checks = [ check ];
      } ''
        mkdir -p $out/bin
        ln -s $systemPath $out/sw; ln -s $etc/etc $out/etc; ln -s $metadata $out/etc-metadata
        ln -s $kernel/bzImage $out/kernel; ln -s $initrd/initrd $out/initrd
        printf '{"org.nixos.bootspec.v1":{"init":"%s/init","initrd":"%s/initrd","kernel":"%s/bzImage","label":"NixOS %s (Linux %s)","system":"x86_64-linux"}}' \
          "$out" "$initrd" "$kernel" "$release" "$kernelVersion" > $out/boot.json
        printf '%s' "$release" > $out/nixos-version
        printf '#!/bin/sh\necho "stage 2 of %s"\n' "$out" > $out/init
        chmod 755 $out/init
        printf '%s' "$switchScript" | sed "s|@out@|$out|g" > $out/bin/switch-to-configuration
        chmod 755 $out/bin/switch-to-configuration
      '';
    in { inherit toplevel runtime tools; };
  info = g: {
    out = g.toplevel.outPath;
    packages = map (p: p.outPath) g.runtime;
    tools = map (p: p.outPath) g.tools;
  };
"#;

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }

    /// Log-uniform in [lo, hi): most small, a few large.
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let f = self.below(1 << 20) as f64 / (1 << 20) as f64;
        (lo as f64 * (hi as f64 / lo as f64).powf(f)) as u64
    }
}

/// One generation of the built fixture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleGeneration {
    pub out: String,
    /// Runtime packages (in system-path, the kernel and firmware).
    pub packages: Vec<String>,
    pub tools: Vec<String>,
    /// NAR bytes and number of paths of the toplevel's closure.
    pub closure_nar: u64,
    pub closure_paths: usize,
}

/// A built fixture: its generations and every package output's NAR size and references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleFixture {
    pub spec: ScaleSpec,
    pub file: PathBuf,
    pub old: ScaleGeneration,
    pub targets: BTreeMap<Bump, ScaleGeneration>,
    /// Every package and tool output of every generation: (NAR bytes, references).
    pub packages: BTreeMap<String, (u64, BTreeSet<String>)>,
    /// NAR bytes of G0 ∪ the target's closures, per bump (the plain upgrade's store).
    pub union_nar: BTreeMap<Bump, u64>,
    /// Bytes used on a tmpfs holding G0 installed and collected (Nix's state included).
    pub g0_used: u64,
}

impl ScaleFixture {
    /// `paths` and every package they refer to, transitively (from the recorded references).
    pub fn package_closure<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a String>,
    ) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<String> = paths.into_iter().cloned().collect();
        while let Some(p) = todo.pop() {
            if !seen.insert(p.clone()) {
                continue;
            }
            if let Some((_, refs)) = self.packages.get(&p) {
                todo.extend(refs.iter().filter(|r| **r != p).cloned());
            }
        }
        seen
    }
}

/// One activation the fixture's `switch-to-configuration` recorded.
#[derive(Debug, Clone)]
pub struct Activation {
    pub toplevel: String,
    /// Bytes used on the bed's disk when it ran.
    pub used: u64,
    /// The toplevel's closure.
    pub closure: BTreeSet<String>,
}

/// The built fixture, a slot's cache holding its packages and G0's collected store, ready to be
/// restored on a disk of any size. Beds made from it live in the slot: drop each before the next.
pub struct ScaleBeds {
    _slot: SlotLock,
    root: PathBuf,
    cache: PathBuf,
    snapshot: PathBuf,
    pub fixture: ScaleFixture,
}

impl ScaleBeds {
    /// Builds `spec`'s fixture (or reuses the slot's, built by an earlier run). Needs root.
    pub fn build(spec: &ScaleSpec) -> Result<ScaleBeds> {
        let slot = take_slot(&base_dir().join(format!("nixos-scale-{}", spec.key())))?;
        let dir = slot.dir().to_path_buf();
        let root = dir.join("r");
        let cache = dir.join("cache");
        let file = dir.join("nixos.nix");
        let json = dir.join("fixture.json");
        let snapshot = dir.join("g0-nix");
        if is_mount_point(&root.join("nix")) {
            unmount(&root.join("nix"));
        }
        force_remove(&root).map_err(|e| BedError::io(format!("wiping {}", root.display()), e))?;
        fs::create_dir_all(&dir)
            .map_err(|e| BedError::io(format!("creating {}", dir.display()), e))?;
        let text = spec.nix_text(&root);
        let cached: Option<ScaleFixture> = fs::read(&json)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|f: &ScaleFixture| {
                &f.spec == spec
                    && snapshot.is_dir()
                    && fs::read_to_string(&file).is_ok_and(|t| t == text)
            });
        let fixture = match cached {
            Some(f) => f,
            None => {
                let _ = fs::remove_file(&json);
                for d in [&cache, &snapshot] {
                    force_remove(d).map_err(|e| BedError::io("wiping the slot", e))?;
                }
                write_atomic(&file, text.as_bytes())
                    .map_err(|e| BedError::io("writing the fixture", e))?;
                let mut f = build_fixture(spec, &root, &file, &cache)?;
                f.g0_used = snapshot_g0(&f, &root, &cache, &snapshot)?;
                let bytes =
                    serde_json::to_vec_pretty(&f).map_err(|e| BedError::msg(e.to_string()))?;
                write_atomic(&json, &bytes).map_err(|e| BedError::io("writing fixture.json", e))?;
                f
            }
        };
        Ok(ScaleBeds {
            _slot: slot,
            root,
            cache,
            snapshot,
            fixture,
        })
    }

    /// A bed on a fresh tmpfs of `mib` MiB holding G0 as an hourly GC left it (installed: the
    /// profile's only generation, current, not pinned as booted: switched since boot; nothing else
    /// but the `.drv` files of live paths) and `bump`'s target instantiated, as the hourly timer
    /// evaluates it. Returns the bed and the target's `.drv`. The evaluation runs on a roomier
    /// tmpfs, shrunk to `mib` after it: Nix's database grows by several MiB in the transaction
    /// that writes a mass rebuild's `.drv` files, more than the run itself needs on the disks
    /// the tests are after. Fails if G0 and the `.drv` files do not fit in `mib`.
    pub fn bed(&self, mib: u64, bump: Bump) -> Result<(Bed, String)> {
        let roomy = mib.max(self.fixture.g0_used.div_ceil(MIB) * 2 + 64);
        let mut bed = Bed::at(
            self.root.clone(),
            Disk::TmpfsMib(roomy),
            Some(self.cache.clone()),
            Holder::Nothing,
        )?;
        let mut cp = Command::new("cp");
        cp.arg("-a")
            .arg("--remove-destination")
            .arg(self.snapshot.join("."))
            .arg(bed.nix_dir());
        run(&mut cp)?;
        replace_symlink(Path::new(&self.fixture.old.out), &bed.current_system_link())
            .map_err(|e| BedError::io("pointing current-system at G0", e))?;
        let drv = bed.instantiate(&self.fixture.file, Some(bump.attr()))?;
        bed.resize_tmpfs(mib)?;
        Ok((bed, drv))
    }

    /// The activations recorded on `bed` since it was made, in order.
    pub fn activations(&self, bed: &Bed) -> Result<Vec<Activation>> {
        let run = bed.root().join("run");
        let log = fs::read_to_string(run.join("disk.log")).unwrap_or_default();
        let mut out = Vec::new();
        for line in log.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| -> Result<u64> {
                f.get(i)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| BedError::msg(format!("a bad disk.log line: {line:?}")))
            };
            let (blocks, free, size) = (num(0)?, num(1)?, num(2)?);
            let toplevel = f
                .get(3)
                .ok_or_else(|| BedError::msg(format!("a bad disk.log line: {line:?}")))?
                .to_string();
            let base = toplevel.rsplit('/').next().unwrap_or_default();
            let closure = fs::read_to_string(run.join("closures").join(base))
                .map_err(|e| BedError::io(format!("reading the closure of {toplevel}"), e))?
                .lines()
                .map(String::from)
                .collect();
            out.push(Activation {
                toplevel,
                used: (blocks - free) * size,
                closure,
            });
        }
        Ok(out)
    }
}

/// Builds every generation at `root` on the machine's disk, fills `cache` with the packages and
/// tools, and measures them. `g0_used` is left 0.
fn build_fixture(spec: &ScaleSpec, root: &Path, file: &Path, cache: &Path) -> Result<ScaleFixture> {
    let builder = Bed::at(root.to_path_buf(), Disk::Unlimited, None, Holder::Nothing)?;
    let manifest = builder.eval_json(file, Some("manifest"))?;
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let attrs: Vec<&str> = ["old"]
        .into_iter()
        .chain(Bump::ALL.iter().map(|b| b.attr()))
        .collect();
    let drvs: Vec<String> = attrs
        .iter()
        .map(|a| builder.instantiate(file, Some(a)))
        .collect::<Result<_>>()?;
    builder.realise(&drvs)?;
    let mut all: BTreeSet<String> = BTreeSet::new();
    for a in &attrs {
        all.extend(strings(&manifest[a]["packages"]));
        all.extend(strings(&manifest[a]["tools"]));
    }
    let all: Vec<String> = all.into_iter().collect();
    builder.copy_to_cache(cache, &all)?;
    let packages = builder.path_infos(&all)?;
    let generation = |a: &str| -> Result<ScaleGeneration> {
        let out = manifest[a]["out"]
            .as_str()
            .ok_or_else(|| BedError::msg(format!("the manifest lacks {a}.out")))?
            .to_string();
        let closure: Vec<String> = builder.closure(&[&out])?.into_iter().collect();
        Ok(ScaleGeneration {
            closure_nar: builder.nar_sizes(&closure)?.values().sum(),
            closure_paths: closure.len(),
            packages: strings(&manifest[a]["packages"]),
            tools: strings(&manifest[a]["tools"]),
            out,
        })
    };
    let old = generation("old")?;
    let mut targets = BTreeMap::new();
    let mut union_nar = BTreeMap::new();
    for b in Bump::ALL {
        let g = generation(b.attr())?;
        let union: Vec<String> = builder.closure(&[&old.out, &g.out])?.into_iter().collect();
        union_nar.insert(b, builder.nar_sizes(&union)?.values().sum());
        targets.insert(b, g);
    }
    drop(builder);
    Ok(ScaleFixture {
        spec: *spec,
        file: file.to_path_buf(),
        old,
        targets,
        packages,
        union_nar,
        g0_used: 0,
    })
}

/// Installs G0 on a roomy tmpfs at `root` from `cache`, collects (an hourly GC) and copies the
/// store and Nix's state to `snapshot`. Returns the tmpfs's used bytes.
fn snapshot_g0(fx: &ScaleFixture, root: &Path, cache: &Path, snapshot: &Path) -> Result<u64> {
    let mib = 2 * fx.old.closure_nar.div_ceil(MIB) + 256;
    let bed = Bed::at(
        root.to_path_buf(),
        Disk::TmpfsMib(mib),
        Some(cache.to_path_buf()),
        Holder::Nothing,
    )?;
    let drv = bed.instantiate(&fx.file, Some("old"))?;
    let out = bed.install(&drv)?;
    if out != fx.old.out {
        return Err(BedError::msg(format!(
            "G0 installed as {out}, not {}",
            fx.old.out
        )));
    }
    bed.gc()?;
    let used = bed.used_bytes();
    let mut cp = Command::new("cp");
    cp.arg("-a").arg(bed.nix_dir()).arg(snapshot);
    run(&mut cp)?;
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real scale: the issue's counts, a whole generation in tens of MiB, a few big packages and
    /// a long tail of small ones.
    #[test]
    fn full_scale_has_real_counts_and_a_long_tail() {
        let spec = ScaleSpec::full();
        let pkgs = spec.packages();
        assert_eq!(pkgs.len(), 1_300);
        assert_eq!(spec.locals(), 200);
        let mut sizes: Vec<u64> = pkgs.iter().map(|p| p.2).collect();
        let total: u64 = sizes.iter().sum();
        assert!((20 * MIB..100 * MIB).contains(&total), "{total} bytes");
        sizes.sort_unstable();
        assert!(
            sizes[sizes.len() / 2] < 16 * KIB,
            "median {}",
            sizes[sizes.len() / 2]
        );
        let big = sizes.iter().filter(|&&s| s >= MIB).count();
        assert!((2..=5).contains(&big), "{big} packages of a MiB or more");
        // Every package but the kernel and firmware reads glibc: its bump rebuilds them all.
        let reading_glibc = pkgs.iter().filter(|p| p.4.contains(&0)).count();
        assert_eq!(reading_glibc, pkgs.len() - 3);
    }

    #[test]
    fn the_text_names_every_kind_and_the_key_follows_the_spec() {
        let text = ScaleSpec::reduced().nix_text(Path::new("/bed"));
        for b in Bump::ALL {
            assert!(text.contains(&format!("  {0} = {0}.toplevel;", b.attr())));
        }
        assert!(text.contains("/bed/run/disk.log"));
        assert_ne!(ScaleSpec::reduced().key(), ScaleSpec::full().key());
    }
}
