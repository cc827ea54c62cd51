//! The NixOS side: flake.nix and nix/*.nix parse (always), and the module, evaluated with nixpkgs'
//! lib against stubs of the NixOS options it sets, generates the units and the settings file we
//! mean (where `STEPWISE_NIXPKGS_LIB` points at a nixpkgs or nix-community/nixpkgs.lib checkout;
//! skipped with a message otherwise, failed when `STEPWISE_REQUIRE_NIXPKGS_LIB=1`). The settings
//! file the module writes for every option is checked in as doc/example-config.toml and parsed
//! by stepwise's own reader on every run.
//!
//! Every Nix call uses a private store (doc/design.md, "Test beds"): nothing touches the machine's /nix.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "common/golden.rs"]
mod golden;

use serde_json::{json, Value};
use stepwise::cli::args::{OnFailedUnits, OnFailure, RebootPolicy};
use stepwise::cli::config::{ClockTime, Config, RebootWindow, Size};
use stepwise::effects::store::Action;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `nix-instantiate` with a store, state and log of its own under a temporary folder.
struct PrivateNix {
    dir: tempfile::TempDir,
}

impl PrivateNix {
    fn new() -> Self {
        PrivateNix {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn instantiate(&self, args: &[&str]) -> std::process::Output {
        let d = self.dir.path();
        Command::new("nix-instantiate")
            .args(args)
            .env("NIX_STORE_DIR", d.join("store"))
            .env("NIX_STATE_DIR", d.join("state"))
            .env("NIX_LOG_DIR", d.join("log"))
            .env("XDG_CACHE_HOME", d.join("cache"))
            .env(
                "NIX_CONFIG",
                "experimental-features = nix-command\nsandbox = false\nsubstituters =\n",
            )
            .env_remove("NIX_REMOTE")
            .env_remove("NIX_PATH")
            .output()
            .unwrap_or_else(|e| {
                panic!("nix-instantiate: {e}: install Nix (Debian: apt-get install nix-bin)")
            })
    }
}

#[test]
fn flake_and_nix_files_parse() {
    let nix = PrivateNix::new();
    let mut files = vec![repo().join("flake.nix")];
    for entry in std::fs::read_dir(repo().join("nix")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "nix") {
            files.push(path);
        }
    }
    assert!(
        files.len() >= 5,
        "expected flake.nix and nix/*.nix: {files:?}"
    );
    for f in &files {
        let out = nix.instantiate(&["--parse", f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{} does not parse:\n{}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The check can fail: a broken file is refused.
    let broken = nix.dir.path().join("broken.nix");
    std::fs::write(&broken, "{ a = ; }").unwrap();
    assert!(!nix
        .instantiate(&["--parse", broken.to_str().unwrap()])
        .status
        .success());
}

/// The settings every option of the module sets; doc/example-config.toml is what it generates.
fn every_option() -> Value {
    json!({
        "enable": true,
        "package": package(),
        "flake": "github:me/nixos-config#web",
        "flags": ["--strategy", "stepwise", "-v", "--reboot-command", "echo 100% $HOME \"quoted\""],
        "dates": "*:0/30",
        "randomizedDelaySec": "10min",
        "persistent": false,
        "action": "boot",
        "nonVital": ["firefox", "libreoffice"],
        "together": [["openssl", "curl"], ["python3", "python3-packages"]],
        "reserve": "64M",
        "onFailure": "hold",
        "onFailedUnits": "stop",
        "allowReboot": true,
        "rebootWindow": {"lower": "23:30", "upper": "05:00"},
        "bootDir": "/boot",
        "journal": "/srv/stepwise/journal.redb",
        "refresh": true,
        "nixOptions": {"builders": "ssh://b x86_64-linux - 4", "max-jobs": 0, "keep-going": true},
        "onFailureUnits": ["notify-admin@%n.service"],
        "rebootOnKernelChange": true,
        "keepPrevious": true,
        "settings": {"upgrade": {"strategy": "stepwise", "reboot-command": "systemctl kexec"}},
    })
}

fn package() -> Value {
    json!({
        "type": "derivation",
        "name": "stepwise-0.1.0",
        "outPath": "/nix/store/11111111111111111111111111111111-stepwise-0.1.0",
    })
}

const STEPWISE_BIN: &str =
    "/nix/store/11111111111111111111111111111111-stepwise-0.1.0/bin/stepwise";

/// The nixpkgs lib to evaluate with, or why not.
fn nixpkgs_lib() -> Option<PathBuf> {
    let var = std::env::var_os("STEPWISE_NIXPKGS_LIB").filter(|v| !v.is_empty());
    let found = var.as_ref().and_then(|v| {
        let p = PathBuf::from(v);
        [p.join("lib"), p.clone()]
            .into_iter()
            .find(|l| l.join("default.nix").is_file() && l.join("modules.nix").is_file())
    });
    if found.is_none() {
        let why = match var {
            Some(v) => format!(
                "STEPWISE_NIXPKGS_LIB={} holds no lib/default.nix",
                Path::new(&v).display()
            ),
            None => "STEPWISE_NIXPKGS_LIB is not set".to_string(),
        };
        if std::env::var("STEPWISE_REQUIRE_NIXPKGS_LIB").as_deref() == Ok("1") {
            panic!("{why}, and STEPWISE_REQUIRE_NIXPKGS_LIB=1");
        }
        eprintln!(
            "SKIPPED nixos_module evaluation: {why}; point it at a nixpkgs or nix-community/nixpkgs.lib checkout to evaluate nix/module.nix"
        );
    }
    found
}

/// Evaluate nix/module.nix with these `services.stepwise` settings (nix/module-eval.nix).
fn eval_module(lib: &Path, settings: &Value) -> Result<Value, String> {
    let nix = PrivateNix::new();
    let lib_expr = format!("import {}", lib.display());
    let out = nix.instantiate(&[
        "--eval",
        "--strict",
        "--json",
        // The scripts the module writes (builtins.toFile) land in the private store.
        "--read-write-mode",
        repo().join("nix/module-eval.nix").to_str().unwrap(),
        "--arg",
        "lib",
        &lib_expr,
        "--argstr",
        "settings",
        &settings.to_string(),
    ]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let mut eval: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut scripts = serde_json::Map::new();
    let store = nix.dir.path().join("store").display().to_string();
    in_private_store(&mut eval, &store, &mut scripts);
    eval["scripts"] = Value::Object(scripts);
    Ok(eval)
}

/// The scripts module-eval.nix's `writeShellScript` wrote (with `builtins.toFile`) into the
/// private store: each path becomes `/nix/store/000…-NAME`, as the other stand-ins are (a hash of
/// the private store's directory would make every evaluation differ), and the script's text is
/// kept under `scripts` by that path.
fn in_private_store(v: &mut Value, store: &str, scripts: &mut serde_json::Map<String, Value>) {
    match v {
        Value::String(text) if text.starts_with(store) => {
            let path = text.clone();
            let base = &path[store.len() + 1..];
            let name = base.split_once('-').map_or(base, |(_, n)| n);
            let shown = format!("/nix/store/{}-{name}", "0".repeat(32));
            let body = std::fs::read_to_string(&path).unwrap();
            scripts.insert(shown.clone(), Value::String(body));
            *text = shown;
        }
        Value::Array(a) => a
            .iter_mut()
            .for_each(|x| in_private_store(x, store, scripts)),
        Value::Object(m) => m
            .values_mut()
            .for_each(|x| in_private_store(x, store, scripts)),
        _ => {}
    }
}

fn config_text(eval: &Value) -> &str {
    eval["etc"]["stepwise/config.toml"].as_str().unwrap()
}

#[test]
fn module_with_defaults() {
    let Some(lib) = nixpkgs_lib() else { return };
    let eval = eval_module(
        &lib,
        &json!({"enable": true, "package": package(), "flake": "/etc/nixos"}),
    )
    .unwrap();
    assert_eq!(eval["failedAssertions"], json!([]));

    let timer = &eval["timers"]["stepwise-upgrade"];
    assert_eq!(timer["wantedBy"], json!(["timers.target"]));
    assert_eq!(
        timer["timerConfig"],
        json!({"OnCalendar": "hourly", "RandomizedDelaySec": "0", "Persistent": true,
               "Unit": "stepwise-upgrade.service"})
    );

    let upgrade = &eval["services"]["stepwise-upgrade"];
    let sc = &upgrade["serviceConfig"];
    assert_eq!(sc["Type"], "oneshot");
    assert_eq!(
        sc["ExecStart"].as_str().unwrap(),
        format!("\"{STEPWISE_BIN}\" \"--config\" \"/etc/stepwise/config.toml\" \"upgrade\"")
    );
    assert!(sc.get("ExecStartPost").is_none(), "no reboot unless asked");
    assert_eq!(upgrade["onFailure"], json!([]));
    assert_eq!(upgrade["restartIfChanged"], false);
    assert_eq!(upgrade["unitConfig"]["X-StopOnRemoval"], false);
    assert_eq!(sc["Nice"], 19);
    assert_eq!(sc["CPUSchedulingPolicy"], "idle");
    assert_eq!(sc["IOSchedulingClass"], "idle");
    assert_eq!(sc["KillMode"], "mixed");
    assert_eq!(sc["TimeoutStopSec"], "15min");
    assert!(
        upgrade.get("wantedBy").is_none(),
        "only the timer starts it"
    );
    let after = upgrade["after"].as_array().unwrap();
    assert!(after.contains(&json!("stepwise-resume.service")));
    assert!(after.contains(&json!("network-online.target")));
    // After a collection due at the same time, never in conflict with one (see module.nix).
    assert!(after.contains(&json!("nix-gc.service")));
    for key in ["conflicts", "before"] {
        assert!(upgrade.get(key).is_none(), "{key}: {upgrade}");
    }
    let path = upgrade["path"].to_string();
    assert!(path.contains("-nix-") && path.contains("-systemd-") && path.contains("-git-"));

    let resume = &eval["services"]["stepwise-resume"];
    assert_eq!(resume["wantedBy"], json!(["multi-user.target"]));
    assert_eq!(resume["restartIfChanged"], false);
    assert_eq!(resume["serviceConfig"]["Type"], "oneshot");
    assert_eq!(resume["serviceConfig"]["RemainAfterExit"], true);
    assert_eq!(resume["serviceConfig"]["KillMode"], "mixed");
    assert_eq!(
        resume["serviceConfig"]["ExecStart"].as_str().unwrap(),
        format!("\"{STEPWISE_BIN}\" \"--config\" \"/etc/stepwise/config.toml\" \"resume\"")
    );

    assert_eq!(
        eval["tmpfiles"],
        json!(["d /var/lib/stepwise 0700 root root -"])
    );
    assert_eq!(eval["systemPackages"], json!(["stepwise-0.1.0"]));
    // mkPackageOption: pkgs.stepwise when no package is set.
    let eval = eval_module(&lib, &json!({"enable": true, "flake": "/etc/nixos"})).unwrap();
    assert_eq!(eval["systemPackages"], json!(["stepwise-from-pkgs"]));

    // The file parses with stepwise's reader and holds the contract's defaults.
    let c = Config::parse(config_text(&eval), Path::new("generated")).unwrap();
    assert_eq!(
        c.journal.as_deref(),
        Some(Path::new("/var/lib/stepwise/journal.redb"))
    );
    assert_eq!(
        c.upgrade.flake.as_ref().map(|f| f.get_ref().as_str()),
        Some("/etc/nixos")
    );
    assert_eq!(c.upgrade.action, Some(Action::Switch));
    assert_eq!(c.upgrade.on_failure, Some(OnFailure::Unwind));
    assert_eq!(c.upgrade.reboot, Some(RebootPolicy::Never));
    assert_eq!(c.upgrade.reserve, None);
    assert_eq!(c.upgrade.reboot_window, None);
    assert_eq!(c.upgrade.keep_previous, Some(false));
    // A flake target: its inputs fetched afresh (`nix --refresh`) by default.
    assert_eq!(nix_options(&c), [("tarball-ttl", "0".to_string())]);
}

fn nix_options(c: &Config) -> Vec<(&str, String)> {
    c.nix_options
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_string()))
        .collect()
}

#[test]
fn module_with_every_option() {
    let Some(lib) = nixpkgs_lib() else { return };
    let eval = eval_module(&lib, &every_option()).unwrap();
    assert_eq!(eval["failedAssertions"], json!([]));
    assert_eq!(
        eval["timers"]["stepwise-upgrade"]["timerConfig"],
        json!({"OnCalendar": "*:0/30", "RandomizedDelaySec": "10min", "Persistent": false,
               "Unit": "stepwise-upgrade.service"})
    );
    // Flags reach stepwise verbatim: quoted for systemd, % and $ doubled.
    assert_eq!(
        eval["services"]["stepwise-upgrade"]["serviceConfig"]["ExecStart"]
            .as_str()
            .unwrap(),
        format!(
            "\"{STEPWISE_BIN}\" \"--config\" \"/etc/stepwise/config.toml\" \"upgrade\" \"--strategy\" \"stepwise\" \"-v\" \"--reboot-command\" \"echo 100%% $$HOME \\\"quoted\\\"\""
        )
    );
    assert_eq!(
        eval["tmpfiles"],
        json!(["d /srv/stepwise 0700 root root -"])
    );

    for unit in ["stepwise-upgrade", "stepwise-resume"] {
        assert_eq!(
            eval["services"][unit]["onFailure"],
            json!(["notify-admin@%n.service"])
        );
    }
    reboots_when_the_kernel_changed(&eval);
    // The units as NixOS writes them: tests/golden/module-units/, which
    // `rendered_units_pass_systemd_analyze_verify` checks (STEPWISE_BLESS=1 rewrites them).
    for (name, text) in render_units(&eval) {
        golden::check(&format!("module-units/{name}"), &text);
    }

    let text = config_text(&eval);
    if std::env::var("STEPWISE_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(repo().join("doc/example-config.toml"), text).unwrap();
    }
    let golden = std::fs::read_to_string(repo().join("doc/example-config.toml")).unwrap();
    assert_eq!(
        text, golden,
        "doc/example-config.toml is not what the module writes for every_option(): STEPWISE_BLESS=1 rewrites it"
    );
}

/// `rebootOnKernelChange`: after a run that succeeded, a script compares the profile's kernel,
/// modules and initrd with the booted ones, as `system.autoUpgrade.allowReboot` does, and keeps
/// to the reboot window.
fn reboots_when_the_kernel_changed(eval: &Value) {
    let post = eval["services"]["stepwise-upgrade"]["serviceConfig"]["ExecStartPost"]
        .as_str()
        .expect("ExecStartPost with rebootOnKernelChange");
    let script = eval["scripts"][post].as_str().expect("the script's text");
    for needed in [
        "readlink /run/booted-system/{initrd,kernel,kernel-modules}",
        "readlink /nix/var/nix/profiles/system/{initrd,kernel,kernel-modules}",
        "lower=23:30 upper=05:00",
        "systemctl reboot",
    ] {
        assert!(script.contains(needed), "{needed} not in:\n{script}");
    }
    let syntax = Command::new("bash")
        .args(["-n", "-c", script])
        .output()
        .unwrap();
    assert!(syntax.status.success(), "{syntax:?}");
}

/// Without a flake, or with `refresh = false`, no `tarball-ttl`.
#[test]
fn refresh_only_for_flakes() {
    let Some(lib) = nixpkgs_lib() else { return };
    for settings in [
        json!({"enable": true, "package": package(), "flags": ["--target", "/nix/store/x.drv"]}),
        json!({"enable": true, "package": package(), "flake": "/etc/nixos", "refresh": false}),
    ] {
        let eval = eval_module(&lib, &settings).unwrap();
        let text = config_text(&eval);
        let c = Config::parse(text, Path::new("generated")).unwrap();
        assert!(nix_options(&c).is_empty(), "{settings}: {text}");
    }
    let eval = eval_module(
        &lib,
        &json!({"enable": true, "package": package(), "flags": ["--flake", "/etc/nixos"]}),
    )
    .unwrap();
    let c = Config::parse(config_text(&eval), Path::new("generated")).unwrap();
    assert_eq!(nix_options(&c), [("tarball-ttl", "0".to_string())]);
}

/// `settings` (pkgs.formats.toml, RFC 42): free keys reach the file, and a key set there wins
/// over its typed option; the file parses with stepwise's own reader.
#[test]
fn settings_reach_the_file_and_win_over_typed_options() {
    let Some(lib) = nixpkgs_lib() else { return };
    let eval = eval_module(
        &lib,
        &json!({"enable": true, "package": package(), "flake": "/etc/nixos", "action": "boot",
                "settings": {"journal": "/srv/j/journal.redb",
                             "upgrade": {"action": "test", "strategy": "direct"},
                             "nix-options": {"max-jobs": 2}}}),
    )
    .unwrap();
    assert_eq!(eval["failedAssertions"], json!([]));
    let c = Config::parse(config_text(&eval), Path::new("generated")).unwrap();
    assert_eq!(c.journal.as_deref(), Some(Path::new("/srv/j/journal.redb")));
    assert_eq!(c.upgrade.action, Some(Action::Test), "settings win");
    assert_eq!(
        c.upgrade.strategy,
        Some(stepwise::cli::args::Strategy::Direct)
    );
    assert_eq!(
        c.upgrade.flake.as_ref().map(|f| f.get_ref().as_str()),
        Some("/etc/nixos"),
        "typed options fill the rest"
    );
    assert_eq!(
        nix_options(&c),
        [
            ("max-jobs", "2".to_string()),
            ("tarball-ttl", "0".to_string())
        ]
    );
    // The journal's directory follows the journal the file names.
    assert_eq!(eval["tmpfiles"], json!(["d /srv/j 0700 root root -"]));
    // A flake given in `settings` alone is a target.
    let eval = eval_module(
        &lib,
        &json!({"enable": true, "package": package(),
                "settings": {"upgrade": {"flake": "/etc/nixos"}}}),
    )
    .unwrap();
    assert_eq!(eval["failedAssertions"], json!([]));
}

#[test]
fn module_disabled_sets_nothing() {
    let Some(lib) = nixpkgs_lib() else { return };
    let eval = eval_module(&lib, &json!({"flake": "/etc/nixos"})).unwrap();
    assert_eq!(eval["services"], json!({}));
    assert_eq!(eval["timers"], json!({}));
    assert_eq!(eval["etc"], json!({}));
    assert_eq!(eval["tmpfiles"], json!([]));
}

#[test]
fn module_refuses_what_cannot_work() {
    let Some(lib) = nixpkgs_lib() else { return };
    // No target anywhere: an assertion says what to set.
    let eval = eval_module(&lib, &json!({"enable": true, "package": package()})).unwrap();
    let failed = eval["failedAssertions"].to_string();
    assert!(failed.contains("set `flake`"), "{failed}");
    // A target in the flags is enough.
    let eval = eval_module(
        &lib,
        &json!({"enable": true, "package": package(), "flags": ["--target", "/nix/store/x.drv"]}),
    )
    .unwrap();
    assert_eq!(eval["failedAssertions"], json!([]));
    assert!(!config_text(&eval).contains("flake"));
    // Bad option values are refused by the option types, naming the option.
    for (bad, option) in [
        (json!({"action": "swich"}), "services.stepwise.action"),
        (json!({"reserve": "64MB"}), "services.stepwise.reserve"),
        (
            json!({"rebootWindow": {"lower": "1:00", "upper": "05:00"}}),
            "services.stepwise.rebootWindow.lower",
        ),
        (
            json!({"journal": "journal.redb"}),
            "services.stepwise.journal",
        ),
        (json!({"nonVitals": ["x"]}), "services.stepwise.nonVitals"),
        (
            json!({"keepPrevious": "yes"}),
            "services.stepwise.keepPrevious",
        ),
    ] {
        let mut settings = json!({"enable": true, "package": package(), "flake": "/etc/nixos"});
        settings
            .as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        let err = eval_module(&lib, &settings).unwrap_err();
        assert!(err.contains(option), "{bad}: {err}");
    }
}

/// Runs everywhere: the settings file the module writes (checked in, kept equal to the module's
/// output by `module_with_every_option`) is read by stepwise as the module means it.
#[test]
fn example_config_parses_with_stepwise() {
    let path = repo().join("doc/example-config.toml");
    let c = Config::load(Some(&path)).unwrap();
    assert_eq!(
        c.journal.as_deref(),
        Some(Path::new("/srv/stepwise/journal.redb"))
    );
    let u = &c.upgrade;
    assert_eq!(
        u.flake.as_ref().map(|f| f.get_ref().as_str()),
        Some("github:me/nixos-config#web")
    );
    assert_eq!(u.action, Some(Action::Boot));
    assert_eq!(
        u.non_vital.as_deref(),
        Some(&["firefox".to_string(), "libreoffice".to_string()][..])
    );
    assert_eq!(
        u.together,
        Some(vec![
            vec!["openssl".to_string(), "curl".to_string()],
            vec!["python3".to_string(), "python3-packages".to_string()],
        ])
    );
    assert_eq!(u.reserve, Some(Size(64 << 20)));
    assert_eq!(u.on_failure, Some(OnFailure::Hold));
    assert_eq!(u.on_failed_units, Some(OnFailedUnits::Stop));
    assert_eq!(u.reboot, Some(RebootPolicy::WhenNeeded));
    assert_eq!(
        u.reboot_window,
        Some(RebootWindow {
            lower: ClockTime::parse("23:30").unwrap(),
            upper: ClockTime::parse("05:00").unwrap(),
        })
    );
    assert_eq!(u.boot_dir.as_deref(), Some(Path::new("/boot")));
    assert_eq!(u.keep_previous, Some(true));
    assert_eq!(u.strategy, Some(stepwise::cli::args::Strategy::Stepwise));
    assert_eq!(u.reboot_command.as_deref(), Some("systemctl kexec"));
    assert_eq!(
        nix_options(&c),
        [
            ("builders", "ssh://b x86_64-linux - 4".to_string()),
            ("keep-going", "true".to_string()),
            ("max-jobs", "0".to_string()),
            ("tarball-ttl", "0".to_string()),
        ]
    );
}

/// flake.nix's outputs, with nixpkgs' lib and stand-ins for the rest of nixpkgs
/// (nix/flake-eval.nix): its shape, the package's build settings, the module's wiring to the
/// flake's package, and the VM test's machine and script.
#[test]
fn flake_outputs_evaluate() {
    let Some(lib) = nixpkgs_lib() else { return };
    let nix = PrivateNix::new();
    let out = nix.instantiate(&[
        "--eval",
        "--strict",
        "--json",
        // The settings file (pkgs.formats.toml's stand-in writes it) lands in the private store.
        "--read-write-mode",
        repo().join("nix/flake-eval.nix").to_str().unwrap(),
        "--arg",
        "lib",
        &format!("import {}", lib.display()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f: Value = serde_json::from_slice(&out.stdout).unwrap();

    assert_eq!(
        f["outputNames"],
        json!([
            "checks",
            "devShells",
            "nixosModules",
            "overlays",
            "packages"
        ])
    );
    assert_eq!(f["systems"], json!(["aarch64-linux", "x86_64-linux"]));
    assert_eq!(f["packageNames"], json!(["default", "stepwise"]));
    assert_eq!(f["checkNames"], json!(["package", "vm-test"]));

    let p = &f["package"];
    assert_eq!(p["pname"], "stepwise");
    assert_eq!(p["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(p["meta"]["mainProgram"], "stepwise");
    assert_eq!(p["cargoBuildFlags"], json!(["--package", "stepwise"]));
    // Every test the package build runs exists, and needs neither root nor Nix.
    let test_flags: Vec<&str> = p["cargoTestFlags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for pair in test_flags.windows(2) {
        if pair[0] == "--test" {
            assert!(repo()
                .join("tests")
                .join(format!("{}.rs", pair[1]))
                .is_file());
        }
    }
    // Every generated doc the package installs is checked in.
    let post_install = p["postInstall"].as_str().unwrap();
    for word in post_install
        .split_whitespace()
        .filter(|w| w.starts_with("doc/"))
    {
        if let Some(dir) = word.strip_suffix("/*.1") {
            let pages = std::fs::read_dir(repo().join(dir)).unwrap().count();
            assert!(pages > 0, "no man pages in {dir}");
        } else {
            assert!(
                repo().join(word).is_file(),
                "{word} is installed but missing"
            );
        }
    }

    assert_eq!(f["overlayPackage"], "stepwise-0.1.0-x86_64-linux");
    // nixosModules.default runs the flake's own package.
    assert!(f["moduleExecStart"].as_str().unwrap().starts_with(
        "\"/nix/store/00000000000000000000000000000000-stepwise-0.1.0-x86_64-linux/bin/stepwise\""
    ));

    let vm = &f["vmTest"];
    assert_eq!(vm["name"], "stepwise");
    let m = &vm["machine"];
    assert_eq!(m["failedAssertions"], json!([]));
    let drv = "/nix/store/22222222222222222222222222222222-nixos-system-machine.drv";
    assert_eq!(m["additionalPaths"], json!([drv]));
    let c = Config::parse(
        m["etc"]["stepwise/config.toml"].as_str().unwrap(),
        Path::new("vm-test"),
    )
    .unwrap();
    assert_eq!(c.upgrade.reserve, Some(Size(8 << 20)));

    let script = vm["testScript"].as_str().unwrap();
    for needed in [
        "systemctl start stepwise-upgrade.service",
        "wait_for_unit(\"stepwise-resume.service\")",
        &format!("target = \\\"{drv}\\\""),
        "stepwise status",
        "stepwise journal show",
    ] {
        assert!(
            script.contains(needed),
            "{needed} not in the VM test script"
        );
    }
    python_compiles(script);
}

/// The VM test's script is Python run by the NixOS test driver: at least its syntax is checked
/// here (where python3 exists).
fn python_compiles(script: &str) {
    use std::io::Write;
    let child = Command::new("python3")
        .args([
            "-c",
            "import sys; compile(sys.stdin.read(), 'testScript', 'exec')",
        ])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("SKIPPED the VM test script's Python syntax check: no python3");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the VM test script is not valid Python:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- the units as files, checked by systemd ----------------------------------------------------

/// One `Key=value` line per value: lists repeat the key, booleans are `true`/`false`.
fn unit_lines(out: &mut String, key: &str, value: &Value) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| unit_lines(out, key, v)),
        Value::String(s) => out.push_str(&format!("{key}={s}\n")),
        other => out.push_str(&format!("{key}={other}\n")),
    }
}

/// A `[Section]` of `attrs`, keys sorted as NixOS sorts them.
fn unit_section(out: &mut String, name: &str, attrs: &serde_json::Map<String, Value>) {
    out.push_str(&format!("[{name}]\n"));
    let sorted: std::collections::BTreeMap<_, _> = attrs.iter().collect();
    for (key, value) in sorted {
        unit_lines(out, key, value);
    }
    out.push('\n');
}

/// The `[Unit]` keys NixOS derives from a unit's options (the ones the module sets).
fn unit_keys(unit: &Value) -> serde_json::Map<String, Value> {
    let mut keys = serde_json::Map::new();
    keys.insert("Description".into(), unit["description"].clone());
    for (option, key) in [
        ("documentation", "Documentation"),
        ("after", "After"),
        ("wants", "Wants"),
        ("onFailure", "OnFailure"),
    ] {
        let joined: Vec<&str> = unit[option]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !joined.is_empty() {
            keys.insert(key.into(), Value::String(joined.join(" ")));
        }
    }
    if unit["restartIfChanged"] == json!(false) {
        keys.insert("X-RestartIfChanged".into(), json!(false));
    }
    if let Some(extra) = unit["unitConfig"].as_object() {
        keys.extend(extra.clone());
    }
    keys
}

/// The unit files NixOS writes for the module's services and timers, rendered from the
/// evaluation as nixos/lib/systemd-lib.nix does for the options the module uses (`path` becomes
/// PATH's bin and sbin directories; NixOS's default path and its `.wants` links are left out).
fn render_units(eval: &Value) -> Vec<(String, String)> {
    let mut units = Vec::new();
    for (name, svc) in eval["services"].as_object().unwrap() {
        let mut text = String::new();
        unit_section(&mut text, "Unit", &unit_keys(svc));
        let mut service = serde_json::Map::new();
        let mut env: Vec<String> = svc["environment"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("\"{k}={}\"", v.as_str().unwrap()))
            .collect();
        let dirs: Vec<&str> = svc["path"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        let bin: Vec<String> = dirs.iter().map(|d| format!("{d}/bin")).collect();
        let sbin: Vec<String> = dirs.iter().map(|d| format!("{d}/sbin")).collect();
        env.push(format!("\"PATH={}:{}\"", bin.join(":"), sbin.join(":")));
        env.sort();
        service.insert("Environment".into(), json!(env));
        service.extend(svc["serviceConfig"].as_object().unwrap().clone());
        unit_section(&mut text, "Service", &service);
        units.push((format!("{name}.service"), text));
    }
    for (name, timer) in eval["timers"].as_object().unwrap() {
        let mut text = String::new();
        unit_section(&mut text, "Unit", &unit_keys(timer));
        unit_section(
            &mut text,
            "Timer",
            timer["timerConfig"].as_object().unwrap(),
        );
        units.push((format!("{name}.timer"), text));
    }
    units
}

/// The rendered units of `module_with_every_option` (tests/golden/module-units/, kept equal to
/// the module's evaluation there when a nixpkgs lib is at hand) pass `systemd-analyze verify`
/// of Debian's systemd. Their /nix/store paths move under a temporary directory, with stand-in
/// executables for what they run, since verify checks that every command exists.
#[test]
fn rendered_units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var("STEPWISE_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
            panic!("systemd-analyze is missing (Debian: apt-get install systemd), and STEPWISE_REQUIRE_ROOT_TESTS=1");
        }
        eprintln!(
            "SKIPPED systemd-analyze verify: no systemd-analyze (Debian: apt-get install systemd)"
        );
        return;
    }
    let golden = repo().join("tests/golden/module-units");
    let mut units: Vec<(String, String)> = std::fs::read_dir(&golden)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let text = std::fs::read_to_string(e.path()).unwrap();
            (e.file_name().to_string_lossy().into_owned(), text)
        })
        .collect();
    units.sort();
    let names: Vec<&str> = units.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "stepwise-resume.service",
            "stepwise-upgrade.service",
            "stepwise-upgrade.timer"
        ]
    );
    assert!(verify_units(&units).is_ok());

    // The check can fail: a unit systemd cannot use is refused, naming the problem.
    let mut broken = units.clone();
    broken[1].1 = broken[1].1.replace("Type=oneshot", "Type=oneshoot");
    let err = verify_units(&broken).unwrap_err();
    assert!(err.contains("oneshoot"), "{err}");
}

/// `systemd-analyze verify` of `units`, moved out of /nix/store; Err: what it said.
fn verify_units(units: &[(String, String)]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let unit_dir = dir.path().join("units");
    std::fs::create_dir_all(&unit_dir).unwrap();
    let mut files = Vec::new();
    for (name, text) in units {
        let text = text.replace("/nix/store/", &format!("{}/", store.display()));
        for line in text.lines() {
            let Some((key, command)) = line.split_once('=') else {
                continue;
            };
            if !key.starts_with("Exec") {
                continue;
            }
            let program = command.split(' ').next().unwrap().trim_matches('"');
            let program = Path::new(program);
            std::fs::create_dir_all(program.parent().unwrap()).unwrap();
            std::fs::write(program, "#!/bin/sh\nexit 0\n").unwrap();
            std::fs::set_permissions(program, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let file = unit_dir.join(name);
        std::fs::write(&file, text).unwrap();
        files.push(file);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&files)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("{:?}: {said}", out.status))
    }
}
