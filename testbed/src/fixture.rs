//! A NixOS-shaped fixture without nixpkgs, generated from a `FixtureSpec`: packages (substitutable,
//! sizes are parameters) under glue built locally (unit files, a `system-path`, an `etc`, and a
//! toplevel `nixos-system-HOST-RELEASE` with `bin/switch-to-configuration`). Two generations, old
//! and new, share everything that did not change.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;

/// Room to allow for Nix's own state on a bed's disk (its SQLite database and WAL, `.drv` files):
/// measured at about 8 MiB on Nix 2.8 with the standard fixture; twice that to be safe.
pub const NIX_STATE_ALLOWANCE_MIB: u64 = 16;

/// What a package stands for in the system (where the toplevel links it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// In `system-path` (its `bin/` linked into `sw/bin`).
    Package,
    /// Linked as the toplevel's `kernel` (`bzImage`).
    Kernel,
    /// Linked as the toplevel's `initrd`.
    Initrd,
    /// Linked into `etc/firmware`.
    Firmware,
}

/// One version of a package.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionSpec {
    pub version: String,
    /// Payload size of the `out` output in KiB (plus a header line and a small script).
    pub kib: u64,
    /// The build fails (for failure tests); it is then absent from the cache too.
    pub fails: bool,
}

/// A package of the fixture, with its old and new version (either may be absent).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PackageSpec {
    pub pname: String,
    pub old: Option<VersionSpec>,
    pub new: Option<VersionSpec>,
    /// Outputs besides `out`, e.g. `man`; all of them are referenced by `system-path`.
    pub extra_outputs: Vec<String>,
    /// Gets a unit file `unit-PNAME.service` with `ExecStart=PKG/bin/PNAME`.
    pub service: bool,
    pub role: Role,
    /// Ships `etc/PNAME.conf`, which the `etc` glue copies: a glue build that reads the package's
    /// files, so a stub standing in for it breaks that build.
    #[serde(default)]
    pub config_read_by_glue: bool,
    /// Commands beside `bin/PNAME`, `bin/PNAME-1` … (short symlinks to it, as coreutils ships
    /// hundreds), each of which `system-path` links one by one: a glue tree of long symlinks,
    /// a block each on ext4, which its NAR size does not show. Left out of the spec's text
    /// when 0, so fixtures without them keep their paths and caches.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub commands: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn version(v: &str, mib: u64) -> VersionSpec {
    VersionSpec {
        version: v.to_string(),
        kib: mib * 1024,
        fails: false,
    }
}

impl PackageSpec {
    /// `PNAME-1.0` of `old_mib` MiB → `PNAME-2.0` of `new_mib` MiB.
    pub fn changed(pname: &str, old_mib: u64, new_mib: u64) -> PackageSpec {
        PackageSpec {
            pname: pname.to_string(),
            old: Some(version("1.0", old_mib)),
            new: Some(version("2.0", new_mib)),
            extra_outputs: vec![],
            service: false,
            role: Role::Package,
            config_read_by_glue: false,
            commands: 0,
        }
    }

    /// The same `PNAME-1.0` in both generations (same store path).
    pub fn unchanged(pname: &str, mib: u64) -> PackageSpec {
        PackageSpec {
            new: Some(version("1.0", mib)),
            ..PackageSpec::changed(pname, mib, mib)
        }
    }

    /// Present only in the old generation (removed by the upgrade).
    pub fn only_old(pname: &str, mib: u64) -> PackageSpec {
        PackageSpec {
            new: None,
            ..PackageSpec::changed(pname, mib, mib)
        }
    }

    /// Present only in the new generation (added by the upgrade).
    pub fn only_new(pname: &str, mib: u64) -> PackageSpec {
        PackageSpec {
            old: None,
            ..PackageSpec::changed(pname, mib, mib)
        }
    }

    /// Sets the old and new version strings.
    pub fn versions(mut self, old: &str, new: &str) -> PackageSpec {
        if let Some(o) = &mut self.old {
            o.version = old.to_string();
        }
        if let Some(n) = &mut self.new {
            n.version = new.to_string();
        }
        self
    }

    /// Adds an output (e.g. `man`).
    pub fn with_output(mut self, output: &str) -> PackageSpec {
        self.extra_outputs.push(output.to_string());
        self
    }

    /// Gives the package a systemd unit file.
    pub fn service(mut self) -> PackageSpec {
        self.service = true;
        self
    }

    /// Ships `n` more commands (see `commands`).
    pub fn with_commands(mut self, n: u32) -> PackageSpec {
        self.commands = n;
        self
    }

    /// Ships a config file that the `etc` glue copies (see `config_read_by_glue`).
    pub fn config_read_by_glue(mut self) -> PackageSpec {
        self.config_read_by_glue = true;
        self
    }

    pub fn role(mut self, role: Role) -> PackageSpec {
        self.role = role;
        self
    }

    /// Makes the new version's build fail.
    pub fn new_fails(mut self) -> PackageSpec {
        if let Some(n) = &mut self.new {
            n.fails = true;
        }
        self
    }

    fn outputs(&self) -> Vec<String> {
        let mut o = vec!["out".to_string()];
        o.extend(self.extra_outputs.iter().cloned());
        o
    }
}

/// The whole fixture: a host and its packages, old and new.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FixtureSpec {
    pub host: String,
    pub old_release: String,
    pub new_release: String,
    pub packages: Vec<PackageSpec>,
    /// What the package files are made of.
    #[serde(default)]
    pub payload: Payload,
    /// Percent of each package's payload in a file identical in its old and new version
    /// (`share/PNAME/common`, zeros): what `auto-optimise-store` hard-links together.
    #[serde(default)]
    pub shared_percent: u8,
    /// The bed runs Nix with `auto-optimise-store = true`.
    #[serde(default)]
    pub optimise: bool,
}

/// The bytes of the package files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Payload {
    /// Zeros: any compressing filesystem stores almost nothing.
    #[default]
    Zeros,
    /// 32 KiB of random bytes then 32 KiB of zeros, over and over: about 2:1 under zstd (each
    /// 128 KiB btrfs extent compresses alike).
    HalfRandom,
}

impl FixtureSpec {
    /// An empty spec for `host`, releases 23.05 → 23.11.
    pub fn new(host: &str) -> FixtureSpec {
        FixtureSpec {
            host: host.to_string(),
            old_release: "23.05".to_string(),
            new_release: "23.11".to_string(),
            packages: vec![],
            payload: Payload::Zeros,
            shared_percent: 0,
            optimise: false,
        }
    }

    /// Package files of `payload`.
    pub fn with_payload(mut self, payload: Payload) -> FixtureSpec {
        self.payload = payload;
        self
    }

    /// `percent` of each payload shared by the old and new version, with `auto-optimise-store`.
    pub fn deduplicated(mut self, percent: u8) -> FixtureSpec {
        self.shared_percent = percent;
        self.optimise = true;
        self
    }

    pub fn package(mut self, p: PackageSpec) -> FixtureSpec {
        self.packages.push(p);
        self
    }

    /// The standard fixture (the README lists its sizes): two big changed packages (one with a
    /// `man` output, one a service), a changed kernel, initrd, unchanged firmware and tools, one
    /// package removed and one added by the upgrade.
    pub fn standard() -> FixtureSpec {
        FixtureSpec::new("vps")
            .package(PackageSpec::changed("big-a", 24, 24).service())
            .package(PackageSpec::changed("big-b", 20, 22).with_output("man"))
            .package(PackageSpec::unchanged("coreutils", 2))
            .package(
                PackageSpec::changed("openssh", 1, 1)
                    .versions("9.3p1", "9.5p1")
                    .service(),
            )
            .package(
                PackageSpec::changed("linux", 8, 8)
                    .versions("6.1.30", "6.1.60")
                    .role(Role::Kernel),
            )
            .package(
                PackageSpec::changed("initrd-linux", 2, 2)
                    .versions("6.1.30", "6.1.60")
                    .role(Role::Initrd),
            )
            .package(
                PackageSpec::unchanged("firmware", 3)
                    .versions("20230404", "20230404")
                    .role(Role::Firmware),
            )
            .package(PackageSpec::only_old("legacy-tool", 2))
            .package(PackageSpec::only_new("new-tool", 2))
    }

    /// A small fixture for fast tests: two changed packages of `mib` MiB each, one service.
    pub fn two_big(mib: u64) -> FixtureSpec {
        FixtureSpec::new("vps")
            .package(PackageSpec::changed("big-a", mib, mib).service())
            .package(PackageSpec::changed("big-b", mib, mib))
            .package(PackageSpec::unchanged("coreutils", 1))
    }

    /// A long chain ending in a failure: `good` (at most 26) changed packages `step-a`,
    /// `step-b` … of 3, 4, 5 … MiB
    /// (old and new the same size: no two fit in one step under the plan's peak, so each moves
    /// alone, smallest first) and `zz-broken`, the largest, whose new version fails to build: it
    /// moves last, so a run fails at step `good + 1` and walks back through every step.
    pub fn long_chain_failing_last(good: u64) -> FixtureSpec {
        let mut spec = FixtureSpec::new("vps");
        for i in 1..=good {
            // A letter, not a digit: `step-1-1.0` would parse as pname `step`.
            let pname = format!("step-{}", (b'a' + (i - 1) as u8) as char);
            spec = spec.package(PackageSpec::changed(&pname, i + 2, i + 2));
        }
        spec.package(PackageSpec::changed("zz-broken", good + 3, good + 3).new_fails())
    }

    /// The Nix expression of the fixture. `links` are baked into `switch-to-configuration` as
    /// plain strings (no store context).
    pub fn nix_text(&self, links: &Links) -> String {
        for p in &self.packages {
            for n in [&p.pname].into_iter().chain(p.extra_outputs.iter()) {
                assert!(
                    !n.is_empty()
                        && n.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                    "fixture names must be [A-Za-z0-9_-]+: {n:?}"
                );
            }
        }
        let mut t = String::new();
        t.push_str(NIX_PRELUDE);
        for (gen, release) in [("old", &self.old_release), ("new", &self.new_release)] {
            let _ = writeln!(t, "  {gen}Pkgs = {{");
            for p in &self.packages {
                let v = if gen == "old" { &p.old } else { &p.new };
                let Some(v) = v else { continue };
                t.push_str(&package_line(self, p, v));
            }
            let _ = writeln!(t, "  }};");
            let _ = writeln!(
                t,
                "  {gen} = generation {{ release = {}; pkgs = {gen}Pkgs; }};",
                nix_str(release)
            );
        }
        let _ = writeln!(t, "  host = {};", nix_str(&self.host));
        let _ = writeln!(t, "  switchScript = {};", nix_str(&switch_script(links)));
        t.push_str(NIX_EPILOGUE);
        t
    }

    /// A key naming this spec's fixture (independent of where it is built): the hash of its Nix
    /// text with placeholder links, so any change of the spec or the generator changes it.
    pub fn key(&self) -> String {
        let text = self.nix_text(&Links::placeholder());
        let digest = Sha256::digest(text.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// Sum of the payload sizes of a generation's packages (a rough figure for messages).
    pub fn payload_bytes(&self, new: bool) -> u64 {
        self.packages
            .iter()
            .filter_map(|p| if new { p.new.as_ref() } else { p.old.as_ref() })
            .map(|v| v.kib * 1024)
            .sum()
    }
}

/// Paths outside the store that the fixture's `switch-to-configuration` writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    pub current_system: PathBuf,
    pub boot_default: PathBuf,
    pub activation_log: PathBuf,
    /// The system profile, whose generation links a boot-loader install counts.
    pub profile: PathBuf,
    /// Where each `switch|boot` appends `ENTRIES ACTION TOPLEVEL`.
    pub boot_installs: PathBuf,
}

impl Links {
    fn placeholder() -> Links {
        Links {
            current_system: "/ROOT/run/current-system".into(),
            boot_default: "/ROOT/run/boot-default".into(),
            activation_log: "/ROOT/run/activations.log".into(),
            profile: "/ROOT/nix/var/nix/profiles/system".into(),
            boot_installs: "/ROOT/run/boot-installs.log".into(),
        }
    }

    /// The links of a bed rooted at `root` (see `Bed`).
    pub fn for_root(root: &Path) -> Links {
        Links {
            current_system: root.join("run/current-system"),
            boot_default: root.join("run/boot-default"),
            activation_log: root.join("run/activations.log"),
            profile: root.join("nix/var/nix/profiles/system"),
            boot_installs: root.join("run/boot-installs.log"),
        }
    }
}

/// One package attribute of a generation's package set in the fixture's Nix text.
pub(crate) fn package_line(spec: &FixtureSpec, p: &PackageSpec, v: &VersionSpec) -> String {
    let outputs: Vec<String> = p.outputs().iter().map(|o| nix_str(o)).collect();
    format!(
        "    {} = pkg {{ pname = {}; version = {}; outputs = [ {} ]; script = {}; role = {}; service = {};{} }};\n",
        nix_str(&p.pname),
        nix_str(&p.pname),
        nix_str(&v.version),
        outputs.join(" "),
        nix_str(&build_script(spec, p, v)),
        nix_str(role_name(p.role)),
        p.service,
        if p.config_read_by_glue {
            " configInGlue = true;"
        } else {
            ""
        },
    )
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Package => "package",
        Role::Kernel => "kernel",
        Role::Initrd => "initrd",
        Role::Firmware => "firmware",
    }
}

/// The builder script of one package version: a header line naming it, then the payload.
fn build_script(spec: &FixtureSpec, p: &PackageSpec, v: &VersionSpec) -> String {
    let name = format!("{}-{}", p.pname, v.version);
    if v.fails {
        return format!(
            "echo \"building {name}\"\necho \"error: {name}: 3 of 120 tests failed\" >&2\nexit 1\n"
        );
    }
    let shared = v.kib * 1024 * u64::from(spec.shared_percent.min(100)) / 100;
    let bytes = v.kib * 1024 - shared;
    let pn = &p.pname;
    let payload = match p.role {
        Role::Package => format!("$out/share/{pn}/data"),
        Role::Kernel => "$out/bzImage".to_string(),
        Role::Initrd => "$out/initrd".to_string(),
        Role::Firmware => format!("$out/lib/firmware/{pn}.bin"),
    };
    let mut s = String::from("set -e\n");
    let _ = writeln!(s, "mkdir -p \"$(dirname {payload})\"");
    match spec.payload {
        Payload::Zeros => {
            let _ = writeln!(
                s,
                "{{ echo '{name}'; head -c {bytes} /dev/zero; }} > {payload}"
            );
        }
        Payload::HalfRandom => {
            let chunks = bytes.div_ceil(64 * 1024);
            let _ = writeln!(
                s,
                "{{ echo '{name}'; i=0; while [ $i -lt {chunks} ]; do head -c 32768 /dev/urandom; head -c 32768 /dev/zero; i=$((i+1)); done; }} > {payload}"
            );
        }
    }
    if shared > 0 {
        let _ = writeln!(s, "mkdir -p $out/share/{pn}");
        let _ = writeln!(s, "head -c {shared} /dev/zero > $out/share/{pn}/common");
    }
    if p.config_read_by_glue {
        let _ = writeln!(s, "mkdir -p $out/etc");
        let _ = writeln!(s, "echo 'release = {name}' > $out/etc/{pn}.conf");
    }
    if p.role == Role::Package {
        let _ = writeln!(s, "mkdir -p $out/bin");
        let _ = writeln!(s, "printf '#!/bin/sh\\necho {name}\\n' > $out/bin/{pn}");
        let _ = writeln!(s, "chmod 755 $out/bin/{pn}");
        if p.commands > 0 {
            let _ = writeln!(
                s,
                "i=1; while [ $i -le {} ]; do ln -s {pn} $out/bin/{pn}-$i; i=$((i+1)); done",
                p.commands
            );
        }
    }
    for o in &p.extra_outputs {
        if o == "man" {
            let _ = writeln!(s, "mkdir -p $man/share/man/man1");
            let _ = writeln!(s, "echo '.TH {pn} 1 {name}' > $man/share/man/man1/{pn}.1");
        } else {
            let _ = writeln!(s, "mkdir -p ${o}/share/{o}");
            let _ = writeln!(s, "echo '{name} {o}' > ${o}/share/{o}/{pn}");
        }
    }
    s
}

/// `switch-to-configuration`: `switch`/`test` atomically point the current-system link at this
/// toplevel, `switch`/`boot` record it as the boot default and, as a boot-loader install writes
/// one entry per generation of the profile, how many generation links the profile has.
/// `@out@` is the toplevel. A test makes it end as NixOS' does in two other ways by writing
/// `ACTIVATION_LOG.exit-BASENAME` (`Bed::set_activation_exit`): `100` (the boot loader is
/// installed, then it stops: the system takes effect after a reboot) or `4 UNIT…` (it switches,
/// then names the units that failed and exits 4).
pub(crate) fn switch_script(links: &Links) -> String {
    let q = |p: &Path| {
        let s = p.to_string_lossy();
        assert!(!s.contains('\''), "bed paths must not contain quotes: {s}");
        format!("'{s}'")
    };
    let link = q(&links.current_system);
    let boot = q(&links.boot_default);
    let log = q(&links.activation_log);
    let profile = q(&links.profile);
    let installs = q(&links.boot_installs);
    format!(
        r#"#!/bin/sh
# Activates this system: switch|test make it current, switch|boot make it the boot default.
set -e
toplevel=@out@
action="$1"
case "$action" in
  switch|boot|test|dry-activate) ;;
  *) echo "usage: $0 switch|boot|test|dry-activate" >&2; exit 1 ;;
esac
if [ "$action" = dry-activate ]; then echo "would activate $toplevel"; exit 0; fi
code=0
units=
if [ -f {log}.exit-"${{toplevel##*/}}" ]; then read -r code units < {log}.exit-"${{toplevel##*/}}"; fi
if {{ [ "$action" = switch ] || [ "$action" = test ]; }} && [ "$code" != 100 ]; then
  ln -sfn "$toplevel" {link}.tmp.$$
  mv -T {link}.tmp.$$ {link}
fi
if [ "$action" = switch ] || [ "$action" = boot ]; then
  printf '%s\n' "$toplevel" > {boot}.tmp.$$
  mv -T {boot}.tmp.$$ {boot}
  entries=0
  for l in {profile}-*-link; do if [ -L "$l" ]; then entries=$((entries + 1)); fi; done
  printf '%s %s %s\n' "$entries" "$action" "$toplevel" >> {installs}
fi
printf '%s %s\n' "$action" "$toplevel" >> {log}
if [ "$action" != boot ] && [ "$code" = 100 ]; then
  echo "Warning: the new NixOS configuration has an 'init' that is incompatible with the current configuration.  The new configuration won't take effect until you reboot the system." >&2
  exit 100
fi
if [ "$action" != boot ] && [ "$code" = 4 ]; then
  echo "warning: the following units failed: $(echo $units | sed 's/ /, /g')" >&2
  exit 4
fi
"#
    )
}

/// A Nix string literal.
pub fn nix_str(s: &str) -> String {
    let mut o = String::from("\"");
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            '\r' => o.push_str("\\r"),
            '$' if chars.peek() == Some(&'{') => o.push_str("\\$"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

pub(crate) const NIX_PRELUDE: &str = r#"# Generated by stepwise-testbed: a NixOS-shaped system without nixpkgs.
let
  system = builtins.currentSystem;
  pkg = a: derivation {
    name = "${a.pname}-${a.version}";
    inherit system;
    inherit (a) pname version outputs;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" a.script ];
  } // { inherit (a) role service; configInGlue = a.configInGlue or false; };
  glue = name: attrs: script: derivation ({
    inherit name system;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    preferLocalBuild = true;
    allowSubstitutes = false;
    args = [ "-c" script ];
  } // attrs);
  allOutputs = p: map (o: p.${o}) p.outputs;
  unit = p: glue "unit-${p.pname}.service" {
    text = "[Unit]\nDescription=${p.pname}\n\n[Service]\nExecStart=${p}/bin/${p.pname}\n\n[Install]\nWantedBy=multi-user.target\n";
  } ''printf '%s' "$text" > $out'';
  ofRole = role: pkgs: builtins.filter (p: p.role == role) (builtins.attrValues pkgs);
  first = l: if l == [] then null else builtins.head l;
  generation = { release, pkgs }:
    let
      packages = ofRole "package" pkgs;
      paths = builtins.concatLists (map allOutputs packages);
      systemPath = glue "system-path" {
        inherit paths;
        pkgs = builtins.toJSON (map toString paths);
      } ''
        mkdir -p $out/bin $out/share/man/man1
        for p in $paths; do
          if [ -d $p/bin ]; then for f in $p/bin/*; do ln -s $f $out/bin/; done; fi
          if [ -d $p/share/man/man1 ]; then for f in $p/share/man/man1/*; do ln -s $f $out/share/man/man1/; done; fi
        done
        printf '%s' "$pkgs" > $out/pkgs.json
      '';
      units = map unit (builtins.filter (p: p.service) packages);
      firmware = ofRole "firmware" pkgs;
      # Packages whose config the etc glue copies (absent from the derivation when there are
      # none, so fixtures without them keep their paths).
      configs = builtins.filter (p: p.configInGlue) packages;
      etc = glue "etc" ({
        inherit units firmware release;
      } // (if configs == [] then {} else { inherit configs; })) (''
        mkdir -p $out/etc/systemd/system
        for u in $units; do ln -s $u $out/etc/systemd/system/''${u#*-unit-}; done
        for f in $firmware; do mkdir -p $out/etc/firmware; ln -s $f/lib/firmware/* $out/etc/firmware/; done
        printf 'NAME=NixOS\nVERSION_ID="%s"\n' "$release" > $out/etc/os-release
      '' + (if configs == [] then "" else ''
        for c in $configs; do cp $c/etc/*.conf $out/etc/ || exit 1; done
      ''));
      kernel = first (ofRole "kernel" pkgs);
      initrd = first (ofRole "initrd" pkgs);
      toplevel = glue "nixos-system-${host}-${release}" {
        inherit release switchScript etc systemPath;
        kernel = if kernel == null then "" else kernel;
        initrd = if initrd == null then "" else initrd;
      } ''
        mkdir -p $out/bin
        ln -s $systemPath $out/sw
        ln -s $etc/etc $out/etc
        if [ -n "$kernel" ]; then ln -s $kernel/bzImage $out/kernel; fi
        if [ -n "$initrd" ]; then ln -s $initrd/initrd $out/initrd; fi
        printf '%s' "$release" > $out/nixos-version
        printf '#!/bin/sh\necho "stage 2 of %s"\n' "$out" > $out/init
        chmod 755 $out/init
        printf '%s' "$switchScript" | sed "s|@out@|$out|g" > $out/bin/switch-to-configuration
        chmod 755 $out/bin/switch-to-configuration
      '';
    in { inherit toplevel systemPath etc units; };
"#;

const NIX_EPILOGUE: &str = r#"  info = d: {
    name = d.name;
    drvPath = d.drvPath;
    outputs = builtins.listToAttrs (map (o: { name = o; value = d.${o}.outPath; }) (d.outputs or [ "out" ]));
  };
in {
  old = old.toplevel;
  new = new.toplevel;
  inherit oldPkgs newPkgs;
  manifest = {
    old = { toplevel = info old.toplevel; packages = builtins.mapAttrs (_: info) oldPkgs; };
    new = { toplevel = info new.toplevel; packages = builtins.mapAttrs (_: info) newPkgs; };
  };
}
"#;

/// One generation of a built fixture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationInfo {
    /// The attribute in the fixture file: `old` or `new`.
    pub attr: String,
    /// `nixos-system-HOST-RELEASE`
    pub name: String,
    pub drv: String,
    pub out: String,
}

/// One version of a package of a built fixture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageVersionInfo {
    /// `PNAME-VERSION`
    pub name: String,
    pub version: String,
    pub drv: String,
    /// Output name → store path.
    pub outputs: BTreeMap<String, String>,
    /// Output name → NAR size (empty when the build fails).
    pub nar_sizes: BTreeMap<String, u64>,
    pub fails: bool,
}

impl PackageVersionInfo {
    /// The `out` output path.
    pub fn out(&self) -> &str {
        &self.outputs["out"]
    }

    /// Summed NAR size of all outputs.
    pub fn bytes(&self) -> u64 {
        self.nar_sizes.values().sum()
    }
}

/// A package of a built fixture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageInfo {
    pub pname: String,
    pub role: Role,
    pub old: Option<PackageVersionInfo>,
    pub new: Option<PackageVersionInfo>,
}

impl PackageInfo {
    /// Whether the upgrade changes this package (different paths, added or removed).
    pub fn changes(&self) -> bool {
        self.old.as_ref().map(|v| &v.outputs) != self.new.as_ref().map(|v| &v.outputs)
    }
}

/// A fixture instantiated at one store directory, with its figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fixture {
    pub spec: FixtureSpec,
    /// The generated Nix file (attributes `old`, `new`, `oldPkgs`, `newPkgs`, `manifest`).
    pub file: PathBuf,
    pub store_dir: String,
    pub old: GenerationInfo,
    pub new: GenerationInfo,
    pub packages: Vec<PackageInfo>,
    /// |old|: NAR bytes of the old toplevel's closure.
    pub old_bytes: u64,
    /// |new|: NAR bytes of the new toplevel's closure (estimated if it cannot build).
    pub new_bytes: u64,
    /// |old ∪ new|
    pub union_bytes: u64,
    /// Whether the new toplevel builds (no failing package); if not, the figures for new are
    /// estimates counting failing packages at their spec size.
    pub new_builds: bool,
}

impl Fixture {
    pub fn package(&self, pname: &str) -> &PackageInfo {
        self.packages
            .iter()
            .find(|p| p.pname == pname)
            .unwrap_or_else(|| panic!("the fixture has no package {pname}"))
    }

    /// Bytes in MiB, for messages and tmpfs sizes.
    pub fn mib(bytes: u64) -> f64 {
        bytes as f64 / MIB as f64
    }

    /// A tmpfs size (MiB) on which G0 and Nix's state fit but the plain upgrade does not: |old| +
    /// `NIX_STATE_ALLOWANCE_MIB` + a third of what the new generation adds. The demo's disk.
    pub fn tight_disk_mib(&self) -> u64 {
        self.old_bytes.div_ceil(MIB)
            + NIX_STATE_ALLOWANCE_MIB
            + self
                .union_bytes
                .saturating_sub(self.old_bytes)
                .div_ceil(MIB)
                / 3
    }

    /// A tmpfs size (MiB) on which the plain upgrade fits: |old ∪ new| + twice the allowance.
    pub fn roomy_disk_mib(&self) -> u64 {
        self.union_bytes.div_ceil(MIB) + 2 * NIX_STATE_ALLOWANCE_MIB
    }

    /// A one-line summary of the sizes.
    pub fn sizes_line(&self) -> String {
        format!(
            "|old| = {:.1} MiB, |new| = {:.1} MiB, |old ∪ new| = {:.1} MiB",
            Fixture::mib(self.old_bytes),
            Fixture::mib(self.new_bytes),
            Fixture::mib(self.union_bytes)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_strings_are_escaped() {
        assert_eq!(nix_str("a\"b\\c\nd${e}$f"), r#""a\"b\\c\nd\${e}$f""#);
    }

    #[test]
    fn keys_follow_the_spec_and_nothing_else() {
        assert_eq!(FixtureSpec::standard().key(), FixtureSpec::standard().key());
        assert_ne!(FixtureSpec::standard().key(), FixtureSpec::two_big(1).key());
        assert_ne!(FixtureSpec::two_big(1).key(), FixtureSpec::two_big(2).key());
        let failing = FixtureSpec::new("vps").package(PackageSpec::changed("a", 1, 1).new_fails());
        let fine = FixtureSpec::new("vps").package(PackageSpec::changed("a", 1, 1));
        assert_ne!(failing.key(), fine.key());
    }

    #[test]
    fn links_are_baked_as_plain_strings() {
        let links = Links::for_root(Path::new("/bed/x"));
        let text = FixtureSpec::two_big(1).nix_text(&links);
        assert!(text.contains("/bed/x/run/current-system"));
        assert!(text.contains("preferLocalBuild = true"));
    }

    #[test]
    fn builders_name_their_version_and_failures_fail() {
        let p = PackageSpec::changed("big-a", 1, 1).with_output("man");
        let s = build_script(&FixtureSpec::new("t"), &p, p.old.as_ref().unwrap());
        assert!(s.contains("echo 'big-a-1.0'") && s.contains("head -c 1048576 /dev/zero"));
        assert!(s.contains("$man/share/man/man1/big-a.1"));
        let f = p.clone().new_fails();
        assert!(
            build_script(&FixtureSpec::new("t"), &f, f.new.as_ref().unwrap()).contains("exit 1")
        );
    }

    #[test]
    #[should_panic(expected = "fixture names")]
    fn odd_names_are_refused() {
        FixtureSpec::new("vps")
            .package(PackageSpec::changed("a b", 1, 1))
            .nix_text(&Links::placeholder());
    }
}
