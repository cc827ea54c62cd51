//! The deterministic argv builder: every Nix command line stepwise runs, as data. Tests assert these
//! exact vectors without running Nix; [`super::NixCli`] runs them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::argv::Invocation;
use crate::drv::{StoreDir, StorePath};
use crate::effects::store::{Action, NixImplementation, NixInfo};

/// `nix` subcommands are experimental on every version stepwise supports; enable what we use per
/// call instead of requiring the user's configuration to do it.
const NIX_COMMAND: &str = "nix-command";
const NIX_COMMAND_FLAKES: &str = "nix-command flakes";

/// Resolves `--file F [--attr A]` to a `.drv` path in one evaluation: the attribute if it is a
/// derivation, or its `config.system.build.toplevel` if it is a NixOS system. `--read-write-mode`
/// makes evaluating `drvPath` write the `.drv` files.
pub const FILE_TARGET_EXPR: &str = r#"{ file, attr }:
let
  root = import file;
  top = if builtins.isFunction root then root { } else root;
  parts = builtins.filter (p: builtins.isString p && p != "") (builtins.split "\\." attr);
  v = builtins.foldl' (acc: p: acc.${p}) top parts;
  isSystem = v ? config && v.config ? system && v.config.system ? build
    && v.config.system.build ? toplevel;
  d = if isSystem then v.config.system.build.toplevel else v;
  what = if attr == "" then file else "${file} -A ${attr}";
in
  if builtins.isAttrs d && d ? drvPath then d.drvPath
  else throw "${what} is neither a derivation nor a NixOS system (no config.system.build.toplevel)"
"#;

/// Adds a text store object with references, the way `builtins.toFile` does: works on every Nix
/// (2.8 included). The contents come from a file because command-line arguments are limited to
/// 128 KiB each; references are passed as one space-separated string.
/// Evaluates to the derivation stored at `drv` (a `.drv` path), for rooting it.
pub const DRV_ROOT_EXPR: &str = "{ drv }: import drv";

/// Builds command lines. `bin_dir`, when set, is where the Nix tools live; otherwise `PATH` finds
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixCommands {
    pub bin_dir: Option<PathBuf>,
    pub store_dir: StoreDir,
    /// `nix path-info` takes `--json-format` ([`Self::path_info_takes_json_format`]): ask for
    /// format 1, the map of full paths that 2.19–2.32 print; `--json` alone is deprecated
    /// there and warns.
    pub path_info_json_format: bool,
    /// Nix settings (`--option NAME VALUE`) for the commands that evaluate or build: `builders`,
    /// `tarball-ttl`, `access-tokens`, ... as the user passed them with `--nix-option`.
    pub options: Vec<(String, String)>,
}

impl NixCommands {
    pub fn new(store_dir: StoreDir) -> Self {
        NixCommands {
            bin_dir: None,
            store_dir,
            path_info_json_format: false,
            options: Vec::new(),
        }
    }

    pub fn with_path_info_json_format(mut self, supported: bool) -> Self {
        self.path_info_json_format = supported;
        self
    }

    /// Whether `nix path-info` takes `--json-format` (and warns without it): Nix 2.33 on; never
    /// Lix. By the version, not by probing `nix path-info --help`: on Nix 2.26 that creates
    /// `profiles/default` and `~/.nix-profile` when they are missing, and a refused command must
    /// change nothing.
    pub fn path_info_takes_json_format(nix: &NixInfo) -> bool {
        nix.implementation == NixImplementation::Nix && nix.at_least(2, 33)
    }

    /// `nix path-info --json`, with `--json-format 1` where the running Nix wants a format.
    fn path_info(&self) -> Invocation {
        let inv = self.nix(NIX_COMMAND).args(["path-info", "--json"]);
        if self.path_info_json_format {
            inv.args(["--json-format", "1"])
        } else {
            inv
        }
    }

    pub fn with_options(mut self, options: Vec<(String, String)>) -> Self {
        self.options = options;
        self
    }

    /// `--option NAME VALUE` for each of the user's Nix settings (every Nix tool takes them).
    fn with_user_options(&self, inv: Invocation) -> Invocation {
        self.options.iter().fold(inv, |inv, (name, value)| {
            inv.arg("--option").arg(name).arg(value)
        })
    }

    pub fn with_bin_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.bin_dir = dir;
        self
    }

    fn tool(&self, name: &str) -> Invocation {
        match &self.bin_dir {
            Some(d) => Invocation::new(d.join(name)),
            None => Invocation::new(name),
        }
    }

    fn nix(&self, features: &str) -> Invocation {
        self.tool("nix")
            .arg("--extra-experimental-features")
            .arg(features)
    }

    fn paths<'a>(&'a self, paths: &'a [StorePath]) -> impl Iterator<Item = String> + 'a {
        paths.iter().map(|p| self.store_dir.display(p))
    }

    /// `nix --version`: "nix (Nix) 2.8.0", "nix (Lix, like Nix) 2.90.0".
    pub fn version(bin_dir: Option<&Path>) -> Invocation {
        match bin_dir {
            Some(d) => Invocation::new(d.join("nix")),
            None => Invocation::new("nix"),
        }
        .arg("--version")
    }

    /// The store dir as the running Nix sees it (env, config and defaults applied): a JSON string.
    pub fn store_dir_query(bin_dir: Option<&Path>) -> Invocation {
        match bin_dir {
            Some(d) => Invocation::new(d.join("nix-instantiate")),
            None => Invocation::new("nix-instantiate"),
        }
        .args(["--eval", "--json", "--expr", "builtins.storeDir"])
    }

    /// The effective configuration as JSON (for `substituters`).
    pub fn show_config(bin_dir: Option<&Path>) -> Invocation {
        match bin_dir {
            Some(d) => Invocation::new(d.join("nix")),
            None => Invocation::new("nix"),
        }
        .args([
            "--extra-experimental-features",
            NIX_COMMAND,
            "show-config",
            "--json",
        ])
    }

    /// `nix config show --json`: the name of `show-config` from Nix 2.20 on (the old name
    /// remains a deprecated alias there).
    pub fn config_show(bin_dir: Option<&Path>) -> Invocation {
        match bin_dir {
            Some(d) => Invocation::new(d.join("nix")),
            None => Invocation::new("nix"),
        }
        .args([
            "--extra-experimental-features",
            NIX_COMMAND,
            "config",
            "show",
            "--json",
        ])
    }

    /// `nix eval --raw REF#nixosConfigurations."HOST".config.system.build.toplevel.drvPath`
    pub fn eval_flake_toplevel(&self, reference: &str, host: &str) -> Invocation {
        let host = if host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            && !host.starts_with(|c: char| c.is_ascii_digit() || c == '-')
        {
            host.to_string()
        } else {
            format!("\"{}\"", host.replace('\\', "\\\\").replace('"', "\\\""))
        };
        let eval = self.nix(NIX_COMMAND_FLAKES).arg("eval");
        self.with_user_options(eval).arg("--raw").arg(format!(
            "{reference}#nixosConfigurations.{host}.config.system.build.toplevel.drvPath"
        ))
    }

    /// Evaluate `--file F [--attr A]` to a `.drv` path (JSON string on stdout).
    pub fn eval_file_target(&self, file: &Path, attr: Option<&str>) -> Invocation {
        let mut file_arg = OsString::from(file.as_os_str());
        if file_arg.is_empty() {
            file_arg = ".".into();
        }
        self.with_user_options(self.tool("nix-instantiate"))
            .args(["--eval", "--json", "--read-write-mode", "--expr"])
            .arg(FILE_TARGET_EXPR)
            .arg("--argstr")
            .arg("file")
            .arg(file_arg)
            .arg("--argstr")
            .arg("attr")
            .arg(attr.unwrap_or(""))
    }

    /// Prints the invalid ones among `paths`, one a line; exit 0 either way.
    pub fn check_validity(&self, paths: &[StorePath]) -> Invocation {
        self.tool("nix-store")
            .args(["--check-validity", "--print-invalid"])
            .args(self.paths(paths))
    }

    /// Local path info as JSON (valid paths only: newer Nix errors on invalid ones).
    pub fn path_info_json(&self, paths: &[StorePath], recursive: bool) -> Invocation {
        let mut inv = self.path_info();
        if recursive {
            inv = inv.arg("--recursive");
        }
        inv.args(self.paths(paths))
    }

    /// What a substituter knows of `paths`: `nix path-info --json --store URL PATHS`.
    pub fn substituter_path_info(&self, url: &str, paths: &[StorePath]) -> Invocation {
        self.path_info()
            .args(["--store", url])
            .args(self.paths(paths))
    }

    /// The closure of `paths`, one path a line.
    pub fn requisites(&self, paths: &[StorePath]) -> Invocation {
        self.tool("nix-store")
            .args(["--query", "--requisites"])
            .args(self.paths(paths))
    }

    /// The union of the referrers of `paths`, one a line.
    pub fn referrers(&self, paths: &[StorePath]) -> Invocation {
        self.tool("nix-store")
            .args(["--query", "--referrers"])
            .args(self.paths(paths))
    }

    /// `nix-store --query --referrers-closure PATHS`: everything that refers to them, transitively.
    pub fn referrers_closure(&self, paths: &[StorePath]) -> Invocation {
        self.tool("nix-store")
            .args(["--query", "--referrers-closure"])
            .args(self.paths(paths))
    }

    /// Build or substitute, registering `root` (and `root-OUTPUT` for outputs other than `out`)
    /// as indirect GC roots; prints the output paths. Also how a root to a valid path is added.
    pub fn realise(&self, path: &StorePath, root: &Path) -> Invocation {
        self.with_user_options(self.tool("nix-store"))
            .arg("--realise")
            .arg(self.store_dir.display(path))
            .arg("--add-root")
            .arg(root)
    }

    /// Register `root` as an indirect GC root to the derivation `drv` without building it:
    /// `import` of a `.drv` gives the derivation back, and `nix-instantiate --add-root` roots
    /// its `.drv` (`nix-store --realise --add-root` would build the outputs).
    pub fn add_drv_root(&self, drv: &StorePath, root: &Path) -> Invocation {
        self.tool("nix-instantiate")
            .arg("--add-root")
            .arg(root)
            .args(["--expr", DRV_ROOT_EXPR, "--argstr", "drv"])
            .arg(self.store_dir.display(drv))
    }

    /// A build's log (`nix-store --read-log`, every version).
    pub fn read_log(&self, drv: &StorePath) -> Invocation {
        self.tool("nix-store")
            .arg("--read-log")
            .arg(self.store_dir.display(drv))
    }

    /// Add a local file or directory to the store under its base name (recursive, sha256: a
    /// `source` path); prints the store path.
    pub fn add_path(&self, path: &Path) -> Invocation {
        self.tool("nix-store").arg("--add").arg(path)
    }

    /// The GC roots, `LINK -> PATH` a line.
    pub fn print_roots(&self) -> Invocation {
        self.tool("nix-store").args(["--gc", "--print-roots"])
    }

    /// Everything the GC roots keep alive, one path a line.
    pub fn print_live(&self) -> Invocation {
        self.tool("nix-store").args(["--gc", "--print-live"])
    }

    /// Delete exactly these paths; Nix itself refuses live ones. Never `--ignore-liveness`.
    pub fn delete(&self, paths: &[StorePath]) -> Invocation {
        self.tool("nix-store")
            .arg("--delete")
            .args(self.paths(paths))
    }

    pub fn list_generations(&self, profile: &Path) -> Invocation {
        self.tool("nix-env")
            .arg("--profile")
            .arg(profile)
            .arg("--list-generations")
    }

    pub fn set_profile(&self, profile: &Path, path: &StorePath) -> Invocation {
        self.tool("nix-env")
            .arg("--profile")
            .arg(profile)
            .arg("--set")
            .arg(self.store_dir.display(path))
    }

    pub fn switch_generation(&self, profile: &Path, number: u64) -> Invocation {
        self.tool("nix-env")
            .arg("--profile")
            .arg(profile)
            .arg("--switch-generation")
            .arg(number.to_string())
    }

    pub fn delete_generations(&self, profile: &Path, numbers: &[u64]) -> Invocation {
        self.tool("nix-env")
            .arg("--profile")
            .arg(profile)
            .arg("--delete-generations")
            .args(numbers.iter().map(|n| n.to_string()))
    }

    /// `TOPLEVEL/bin/switch-to-configuration ACTION`
    pub fn activate(&self, toplevel: &StorePath, action: Action) -> Invocation {
        Invocation::new(
            self.store_dir
                .to_path(toplevel)
                .join("bin/switch-to-configuration"),
        )
        .arg(action.as_str())
    }

    /// Write a text store object (`builtins.toFile` with references), contents read from
    /// `contents_file`. Prints the path as a JSON string.
    pub fn add_text_to_file(
        &self,
        name: &str,
        contents_file: &Path,
        references: &[StorePath],
    ) -> Option<Invocation> {
        // One route for every text object, `.drv` files included: `add_derivation` owns it
        // (references split into command-line-sized chunks).
        let mut inv = super::add_derivation::text_object_invocation(
            &self.store_dir,
            name,
            contents_file,
            references,
        )?;
        inv.program = self.tool("nix-instantiate").program;
        Some(inv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmds() -> NixCommands {
        NixCommands::new(StoreDir::new("/nix/store").unwrap())
    }

    fn sp(s: &str) -> StorePath {
        StorePath::from_base_name(s).unwrap()
    }

    const A: &str = "qcrk3lxizx6gr3f7lsfswm3q9jv07qmq-a-1.0";
    const B: &str = "d1law87hm3mh8j449pm0gy6pmazsg3xi-b-1.0";
    const DRV: &str = "z2sqiy653rcwpjnmd0ncyciv7s0aah1q-b-1.0.drv";

    fn argv(inv: &Invocation) -> Vec<String> {
        std::iter::once(&inv.program)
            .chain(&inv.args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn path_info_asks_for_format_1_where_nix_takes_a_format() {
        let c = cmds().with_path_info_json_format(true);
        assert_eq!(
            argv(&c.path_info_json(&[sp(B)], true))[3..],
            [
                "path-info",
                "--json",
                "--json-format",
                "1",
                "--recursive",
                "/nix/store/d1law87hm3mh8j449pm0gy6pmazsg3xi-b-1.0"
            ]
        );
        assert_eq!(
            argv(&c.substituter_path_info("file:///c", &[sp(A)]))[3..],
            [
                "path-info",
                "--json",
                "--json-format",
                "1",
                "--store",
                "file:///c",
                "/nix/store/qcrk3lxizx6gr3f7lsfswm3q9jv07qmq-a-1.0"
            ]
        );
    }

    /// The version gate agrees with what real Nix documents: recorded `nix --version` and
    /// `nix path-info --help` of Nix 2.8, 2.26 and 2.34.
    #[test]
    fn json_format_is_passed_to_the_versions_that_take_it() {
        let recorded = [
            (
                include_str!("../../../tests/fixtures/nix-output/2.8.0/version"),
                include_str!("../../../tests/fixtures/nix-output/2.8.0/path-info-help.txt"),
            ),
            (
                include_str!("../../../tests/fixtures/nix-output/2.26.3/version"),
                include_str!("../../../tests/fixtures/nix-output/2.26.3/path-info-help.txt"),
            ),
            (
                include_str!("../../../tests/fixtures/nix-output/2.34.8/version"),
                include_str!("../../../tests/fixtures/nix-output/2.34.8/path-info-help.txt"),
            ),
        ];
        for (version, help) in recorded {
            let info = super::super::parse::parse_version(version).unwrap();
            assert_eq!(
                NixCommands::path_info_takes_json_format(&info),
                help.contains("--json-format"),
                "{version}"
            );
        }
        let at = |imp: &str, minor| NixInfo::new(imp.into(), (2, minor, 0));
        assert!(!NixCommands::path_info_takes_json_format(&at("Nix", 32)));
        assert!(NixCommands::path_info_takes_json_format(&at("Nix", 33)));
        // Lix numbers past 2.33 (2.90+) and keeps the old flags.
        assert!(!NixCommands::path_info_takes_json_format(&at("Lix", 93)));
    }

    #[test]
    fn add_path_argv() {
        assert_eq!(
            argv(&cmds().add_path(Path::new("/tmp/x/stepwise-stub-hello"))),
            ["nix-store", "--add", "/tmp/x/stepwise-stub-hello"]
        );
    }

    #[test]
    fn store_queries() {
        let c = cmds();
        assert_eq!(
            argv(&c.check_validity(&[sp(A), sp(B)])),
            [
                "nix-store",
                "--check-validity",
                "--print-invalid",
                "/nix/store/qcrk3lxizx6gr3f7lsfswm3q9jv07qmq-a-1.0",
                "/nix/store/d1law87hm3mh8j449pm0gy6pmazsg3xi-b-1.0"
            ]
        );
        assert_eq!(
            argv(&c.path_info_json(&[sp(B)], true)),
            [
                "nix",
                "--extra-experimental-features",
                "nix-command",
                "path-info",
                "--json",
                "--recursive",
                "/nix/store/d1law87hm3mh8j449pm0gy6pmazsg3xi-b-1.0"
            ]
        );
        assert_eq!(
            argv(&c.substituter_path_info("https://cache.nixos.org", &[sp(A)])),
            [
                "nix",
                "--extra-experimental-features",
                "nix-command",
                "path-info",
                "--json",
                "--store",
                "https://cache.nixos.org",
                "/nix/store/qcrk3lxizx6gr3f7lsfswm3q9jv07qmq-a-1.0"
            ]
        );
        assert_eq!(
            argv(&c.requisites(&[sp(B)])),
            [
                "nix-store",
                "--query",
                "--requisites",
                "/nix/store/d1law87hm3mh8j449pm0gy6pmazsg3xi-b-1.0"
            ]
        );
        assert_eq!(argv(&c.print_live()), ["nix-store", "--gc", "--print-live"]);
        assert_eq!(
            argv(&NixCommands::show_config(None)),
            [
                "nix",
                "--extra-experimental-features",
                "nix-command",
                "show-config",
                "--json"
            ]
        );
        assert_eq!(
            argv(&NixCommands::config_show(None))[3..],
            ["config", "show", "--json"]
        );
        assert_eq!(
            argv(&NixCommands::store_dir_query(None)),
            [
                "nix-instantiate",
                "--eval",
                "--json",
                "--expr",
                "builtins.storeDir"
            ]
        );
        assert_eq!(
            argv(&c.read_log(&sp(DRV))),
            [
                "nix-store",
                "--read-log",
                "/nix/store/z2sqiy653rcwpjnmd0ncyciv7s0aah1q-b-1.0.drv"
            ]
        );
    }

    #[test]
    fn effects() {
        let c = cmds().with_bin_dir(Some("/run/current-system/sw/bin".into()));
        assert_eq!(
            argv(&c.realise(&sp(DRV), Path::new("/var/lib/stepwise/gcroots/step-1"))),
            [
                "/run/current-system/sw/bin/nix-store",
                "--realise",
                "/nix/store/z2sqiy653rcwpjnmd0ncyciv7s0aah1q-b-1.0.drv",
                "--add-root",
                "/var/lib/stepwise/gcroots/step-1"
            ]
        );
        assert_eq!(
            argv(&c.add_drv_root(&sp(DRV), Path::new("/var/lib/stepwise/gcroots/g0-drv"))),
            [
                "/run/current-system/sw/bin/nix-instantiate",
                "--add-root",
                "/var/lib/stepwise/gcroots/g0-drv",
                "--expr",
                "{ drv }: import drv",
                "--argstr",
                "drv",
                "/nix/store/z2sqiy653rcwpjnmd0ncyciv7s0aah1q-b-1.0.drv"
            ]
        );
        assert_eq!(
            argv(&c.delete(&[sp(A)])),
            [
                "/run/current-system/sw/bin/nix-store",
                "--delete",
                "/nix/store/qcrk3lxizx6gr3f7lsfswm3q9jv07qmq-a-1.0"
            ]
        );
        let p = Path::new("/nix/var/nix/profiles/system");
        assert_eq!(
            argv(&c.set_profile(p, &sp(B))),
            [
                "/run/current-system/sw/bin/nix-env",
                "--profile",
                "/nix/var/nix/profiles/system",
                "--set",
                "/nix/store/d1law87hm3mh8j449pm0gy6pmazsg3xi-b-1.0"
            ]
        );
        assert_eq!(
            argv(&c.delete_generations(p, &[3, 7])),
            [
                "/run/current-system/sw/bin/nix-env",
                "--profile",
                "/nix/var/nix/profiles/system",
                "--delete-generations",
                "3",
                "7"
            ]
        );
        assert_eq!(
            argv(&c.list_generations(p)),
            [
                "/run/current-system/sw/bin/nix-env",
                "--profile",
                "/nix/var/nix/profiles/system",
                "--list-generations"
            ]
        );
        assert_eq!(
            argv(&c.activate(&sp(B), Action::Boot)),
            [
                "/nix/store/d1law87hm3mh8j449pm0gy6pmazsg3xi-b-1.0/bin/switch-to-configuration",
                "boot"
            ]
        );
    }

    #[test]
    fn targets() {
        let c = cmds();
        assert_eq!(
            argv(&c.eval_flake_toplevel("/etc/nixos", "vps-1")),
            [
                "nix",
                "--extra-experimental-features",
                "nix-command flakes",
                "eval",
                "--raw",
                "/etc/nixos#nixosConfigurations.vps-1.config.system.build.toplevel.drvPath"
            ]
        );
        // Hostnames that are not Nix identifiers are quoted.
        assert_eq!(
            argv(&c.eval_flake_toplevel("github:me/cfg", "web.example"))[5],
            "github:me/cfg#nixosConfigurations.\"web.example\".config.system.build.toplevel.drvPath"
        );
        let v = argv(&c.eval_file_target(Path::new("/etc/nixos/sys.nix"), Some("machines.vps")));
        assert_eq!(
            v[..5],
            [
                "nix-instantiate",
                "--eval",
                "--json",
                "--read-write-mode",
                "--expr"
            ]
        );
        assert_eq!(v[5], FILE_TARGET_EXPR);
        assert_eq!(
            v[6..],
            [
                "--argstr",
                "file",
                "/etc/nixos/sys.nix",
                "--argstr",
                "attr",
                "machines.vps"
            ]
        );
    }

    /// `--nix-option NAME VALUE` reaches evaluation and realisation as `--option NAME VALUE`,
    /// in order, each value one argument (no shell: a value with spaces stays whole); commands
    /// that only query the store do not get them.
    #[test]
    fn user_options_reach_evaluation_and_realisation() {
        let c = cmds().with_options(vec![
            ("tarball-ttl".into(), "0".into()),
            ("builders".into(), "ssh://b x86_64-linux - 4".into()),
        ]);
        let options = [
            "--option",
            "tarball-ttl",
            "0",
            "--option",
            "builders",
            "ssh://b x86_64-linux - 4",
        ];
        let flake = argv(&c.eval_flake_toplevel("/etc/nixos", "vps-1"));
        assert_eq!(
            flake[..4],
            [
                "nix",
                "--extra-experimental-features",
                "nix-command flakes",
                "eval"
            ]
        );
        assert_eq!(flake[4..10], options);
        assert_eq!(
            flake[10..12],
            [
                "--raw",
                "/etc/nixos#nixosConfigurations.vps-1.config.system.build.toplevel.drvPath"
            ]
        );
        let file = argv(&c.eval_file_target(Path::new("/etc/nixos/sys.nix"), None));
        assert_eq!(file[0], "nix-instantiate");
        assert_eq!(file[1..7], options);
        assert_eq!(file[7], "--eval");
        let realise = argv(&c.realise(&sp(DRV), Path::new("/r")));
        assert_eq!(realise[0], "nix-store");
        assert_eq!(realise[1..7], options);
        assert_eq!(realise[7], "--realise");
        // Queries are unchanged.
        assert_eq!(
            argv(&c.check_validity(&[sp(DRV)])),
            argv(&cmds().check_validity(&[sp(DRV)]))
        );
    }
}
