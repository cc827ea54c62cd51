//! The command contract (README.md) proven from the outside: the real binary, driven with a
//! private store's environment from the test bed. Every usage error and every piece of bad input
//! exits 2 with a message naming the problem and what to do, and changes nothing on disk: no
//! journal file, the profile and system links as they were, the store's valid paths as they were.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

#[path = "common/golden.rs"]
mod golden;

use golden::one_document;
use stepwise::output::Framing;
use stepwise_testbed::{Bed, Disk, Fixture, FixtureSpec, TmpfsMount};

const BIN: &str = env!("CARGO_BIN_EXE_stepwise");

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "expected exit {code}, got {self:#?}");
        self
    }

    /// stderr names each of `words` (case-insensitive).
    fn says(&self, words: &[&str]) -> &Self {
        let err = self.stderr.to_lowercase();
        for w in words {
            assert!(
                err.contains(&w.to_lowercase()),
                "stderr does not mention {w:?}:\n{}",
                self.stderr
            );
        }
        self
    }
}

/// A bed plus an empty settings file, so the machine's /etc/stepwise/config.toml is never read.
struct Env {
    bed: Bed,
    config: PathBuf,
}

impl Env {
    fn new(bed: Bed) -> Env {
        let config = bed.root().join("stepwise-config.toml");
        fs::write(&config, "").unwrap();
        // Nix's first command creates per-user profile and root directories: let it happen here,
        // not inside a snapshot.
        bed.valid_paths().expect("initialising the store");
        Env { bed, config }
    }

    fn empty() -> Env {
        Env::new(Bed::new().expect("creating a test bed"))
    }

    /// `stepwise ARGS…` with the bed's Nix environment, its settings file and nothing else from
    /// the caller's STEPWISE_* variables. `--journal` is not added: callers place it.
    fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        let mut cmd = self.bed.command(BIN);
        cmd.env_remove("STEPWISE_JOURNAL")
            .env_remove("STEPWISE_LOG")
            .env("STEPWISE_CONFIG", &self.config)
            .args(args);
        let out = cmd.output().expect("running stepwise");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `stepwise --journal J COMMAND… SYSTEM…` for `plan`/`upgrade`.
    fn run_system<S: AsRef<OsStr>>(&self, command: &[S]) -> Run {
        let mut args: Vec<std::ffi::OsString> =
            vec!["--journal".into(), self.journal().into_os_string()];
        args.extend(command.iter().map(|a| a.as_ref().to_owned()));
        args.extend(self.bed.system_args());
        self.run(&args)
    }

    fn journal(&self) -> PathBuf {
        self.bed.journal_path()
    }

    /// Everything a run could change on disk.
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            journal_dir: listing(self.journal().parent().unwrap()),
            profiles: listing(&self.bed.state_dir().join("profiles")),
            gcroots: listing(&self.bed.state_dir().join("gcroots")),
            run_links: listing(&self.bed.root().join("run")),
            valid_paths: self.bed.valid_paths().expect("listing valid paths"),
        }
    }

    /// Runs `args` and checks it was refused as bad input (exit 2) with nothing changed.
    fn refused<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        let before = self.snapshot();
        let run = self.run(args);
        run.expect_code(2);
        self.unchanged(&before, &run);
        run
    }

    /// As `refused`, for `plan`/`upgrade` with the bed's SYSTEM arguments.
    fn refused_system<S: AsRef<OsStr>>(&self, command: &[S]) -> Run {
        let before = self.snapshot();
        let run = self.run_system(command);
        run.expect_code(2);
        self.unchanged(&before, &run);
        run
    }

    fn unchanged(&self, before: &Snapshot, run: &Run) {
        assert!(
            !self.journal().exists(),
            "the journal was created by a refused command: {run:#?}"
        );
        let after = self.snapshot();
        assert!(
            before == &after,
            "a refused command changed the disk: {}\n{run:#?}",
            before.diff(&after)
        );
    }
}

/// Names in a directory with their link targets (or file sizes), not following links.
fn listing(dir: &Path) -> BTreeMap<String, String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| {
            let e = e.unwrap();
            let what = match fs::read_link(e.path()) {
                Ok(t) => format!("-> {}", t.display()),
                Err(_) => format!("{} bytes", e.metadata().map(|m| m.len()).unwrap_or(0)),
            };
            (e.file_name().to_string_lossy().into_owned(), what)
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    journal_dir: BTreeMap<String, String>,
    profiles: BTreeMap<String, String>,
    gcroots: BTreeMap<String, String>,
    run_links: BTreeMap<String, String>,
    valid_paths: BTreeSet<String>,
}

impl Snapshot {
    /// What changed, readably: entries gone (-) and new or different (+).
    fn diff(&self, after: &Snapshot) -> String {
        fn entries(s: &Snapshot) -> BTreeSet<String> {
            let dirs = [
                ("journal dir", &s.journal_dir),
                ("profiles", &s.profiles),
                ("gcroots", &s.gcroots),
                ("run", &s.run_links),
            ];
            let mut out: BTreeSet<String> = dirs
                .iter()
                .flat_map(|(d, m)| m.iter().map(move |(k, v)| format!("{d}/{k} {v}")))
                .collect();
            out.extend(s.valid_paths.iter().map(|p| format!("valid {p}")));
            out
        }
        let (a, b) = (entries(self), entries(after));
        let gone = a.difference(&b).map(|e| format!("\n  - {e}"));
        let new = b.difference(&a).map(|e| format!("\n  + {e}"));
        gone.chain(new).collect()
    }
}

/// The standard NixOS-shaped fixture on the machine's disk, G0 installed (profile, current and
/// booted system): a machine that bad input must leave exactly as it is.
fn installed() -> (Env, Fixture) {
    let (bed, fx) = Bed::prepared_with(&FixtureSpec::standard(), |_| Disk::Unlimited);
    bed.install(&fx.old.drv).expect("installing G0");
    (Env::new(bed), fx)
}

/// A small valid `.drv` in the bed's store (not a system).
fn small_drv(env: &Env, name: &str) -> String {
    let file = env.bed.root().join(format!("{name}.nix"));
    fs::write(
        &file,
        format!(
            r#"derivation {{ name = "{name}"; system = builtins.currentSystem; builder = "/bin/sh";
                args = ["-c" "echo hi > $out"]; PATH = "/usr/bin:/bin"; }}"#
        ),
    )
    .unwrap();
    env.bed.instantiate(&file, None).expect("instantiating")
}

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect()
}

/// `--json` errors, framed as the command frames its output: a one-shot command (or a usage
/// error) prints the one versioned error document; a streaming command its version header, then
/// one error event. Either way the error carries the exit code.
fn assert_json_error(run: &Run, framing: Framing, code: i32, mentions: &str) {
    run.expect_code(code);
    let lines = json_lines(&run.stdout);
    assert_eq!(
        lines[0]["version"],
        stepwise::output::JSON_FORMAT_VERSION,
        "{run:#?}"
    );
    let error = match framing {
        Framing::Document => {
            assert_eq!(lines.len(), 1, "one error document: {run:#?}");
            assert_eq!(lines[0]["stepwise"], "error", "{run:#?}");
            &lines[0]
        }
        Framing::Lines => {
            assert_eq!(lines.len(), 2, "header and error event: {run:#?}");
            assert_eq!(lines[0]["stepwise"], "events", "{run:#?}");
            &lines[1]
        }
    };
    assert_eq!(error["event"], "error", "{run:#?}");
    assert_eq!(error["exit"], code, "{run:#?}");
    let message = error["message"].as_str().expect("a message");
    assert!(message.contains(mentions), "{message}");
}

// ---- the surface ------------------------------------------------------------------------------

#[test]
fn help_lists_every_command_and_flag_of_the_contract() {
    let env = Env::empty();
    let top = env.run(&["--help"]);
    top.expect_code(0);
    for word in [
        "plan",
        "upgrade",
        "resume",
        "unwind",
        "status",
        "journal",
        "drv",
        "--journal",
        "--json",
        "--verbose",
        "--quiet",
        "-v",
        "-q",
    ] {
        assert!(
            top.stdout.contains(word),
            "--help lacks {word}:\n{}",
            top.stdout
        );
    }
    // Exit codes are part of the contract: --help says what each means.
    for code in ["0 ", "1 ", "2 ", "3 ", "4 "] {
        assert!(top.stdout.contains(code), "--help lacks exit code {code}");
    }

    let target_and_system = [
        "--target",
        "--flake",
        "--file",
        "--attr",
        "--profile",
        "--current-system",
        "--booted-system",
        "/nix/var/nix/profiles/system",
        "/run/current-system",
        "/run/booted-system",
    ];
    let plan = env.run(&["plan", "--help"]);
    plan.expect_code(0);
    for word in target_and_system {
        assert!(plan.stdout.contains(word), "plan --help lacks {word}");
    }

    let upgrade = env.run(&["upgrade", "--help"]);
    upgrade.expect_code(0);
    for word in target_and_system.iter().chain(&[
        "--action",
        "switch",
        "boot",
        "test",
        "--strategy",
        "auto",
        "direct",
        "stepwise",
        "--non-vital",
        "--on-failure",
        "unwind",
        "hold",
        "--reboot",
        "never",
        "when-needed",
        "--reboot-command",
        "--reserve",
        "64M",
        "--boot-dir",
    ]) {
        assert!(
            upgrade.stdout.contains(word),
            "upgrade --help lacks {word}:\n{}",
            upgrade.stdout
        );
    }

    let journal = env.run(&["journal", "--help"]);
    journal.expect_code(0);
    for word in ["show", "verify", "export"] {
        assert!(journal.stdout.contains(word), "journal --help lacks {word}");
    }
    let show = env.run(&["journal", "show", "--help"]);
    show.expect_code(0);
    assert!(show.stdout.contains("--run"), "{}", show.stdout);

    let inspect = env.run(&["drv", "inspect", "--help"]);
    inspect.expect_code(0);
    for word in ["FILE", "--store-dir", "--aterm"] {
        assert!(
            inspect.stdout.contains(word),
            "drv inspect --help lacks {word}"
        );
    }

    for command in ["resume", "unwind", "status"] {
        env.run(&[command, "--help"]).expect_code(0);
    }
    let version = env.run(&["--version"]);
    version.expect_code(0);
    assert!(version.stdout.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn journal_flag_is_accepted_before_or_after_the_command() {
    let env = Env::empty();
    let drv = small_drv(&env, "inspected");
    let journal = env.journal();
    let before = env.run(&[
        OsStr::new("--journal"),
        journal.as_os_str(),
        OsStr::new("drv"),
        OsStr::new("inspect"),
        OsStr::new(&drv),
    ]);
    before.expect_code(0);
    let after = env.run(&[
        OsStr::new("drv"),
        OsStr::new("inspect"),
        OsStr::new(&drv),
        OsStr::new("--journal"),
        journal.as_os_str(),
    ]);
    after.expect_code(0);
    assert_eq!(before.stdout, after.stdout);
    assert!(before.stdout.contains(&drv), "{}", before.stdout);
    assert!(!journal.exists(), "drv inspect does not touch the journal");
}

#[test]
fn journal_flag_after_the_command_is_the_journal_used() {
    // A corrupt journal named after the command is the one `journal verify` reads.
    let env = Env::empty();
    fs::write(env.journal(), b"this is not a redb file").unwrap();
    let j = env.journal();
    for args in [
        vec![
            OsStr::new("--journal"),
            j.as_os_str(),
            OsStr::new("journal"),
            OsStr::new("verify"),
        ],
        vec![
            OsStr::new("journal"),
            OsStr::new("verify"),
            OsStr::new("--journal"),
            j.as_os_str(),
        ],
    ] {
        env.run(&args)
            .expect_code(4)
            .says(&[&j.display().to_string()]);
    }
}

// ---- usage errors: clap's, exit 2 -------------------------------------------------------------

#[test]
fn usage_errors_exit_2_naming_the_problem_and_the_way_out() {
    let env = Env::empty();
    let j = env.journal().display().to_string();
    let cases: &[(&[&str], &[&str])] = &[
        // An unknown flag: named, and --help offered.
        (&["--bogus", "status"], &["'--bogus'", "--help"]),
        (
            &["status", "--no-such-flag"],
            &["'--no-such-flag'", "--help"],
        ),
        // A typo'd subcommand: named, with the one meant.
        (&["statsu"], &["'statsu'", "status"]),
        (&["journal", "verfy"], &["'verfy'", "verify"]),
        (&["upgrad", "--flake", "."], &["'upgrad'", "upgrade"]),
        // Two targets.
        (
            &["plan", "--target", "/a.drv", "--flake", "/etc/nixos"],
            &["--target", "--flake", "cannot be used with"],
        ),
        (
            &["upgrade", "--flake", ".", "--file", "x.nix"],
            &["--flake", "--file", "cannot be used with"],
        ),
        // A size with an unknown unit: named, with the units and an example.
        (
            &["upgrade", "--flake", ".", "--reserve", "12Q"],
            &["12Q", "--reserve", "64M"],
        ),
        (
            &["plan", "--flake", ".", "--reserve", "lots"],
            &["lots", "--reserve", "64M"],
        ),
        // A misspelt value: named, with the possible values.
        (
            &["upgrade", "--flake", ".", "--action", "swich"],
            &["swich", "--action", "switch", "boot", "test"],
        ),
        (
            &["upgrade", "--flake", ".", "--strategy", "fast"],
            &["fast", "auto", "direct", "stepwise"],
        ),
        (
            &["upgrade", "--flake", ".", "--on-failure", "panic"],
            &["panic", "unwind", "hold"],
        ),
        (
            &["upgrade", "--flake", ".", "--reboot", "always"],
            &["always", "never", "when-needed"],
        ),
        // --attr only with --file.
        (
            &["plan", "--flake", ".", "--attr", "x"],
            &["--attr", "--flake"],
        ),
        (
            &["upgrade", "--target", "/a.drv", "--attr", "x"],
            &["--attr", "--target"],
        ),
        (&["plan", "--attr", "x"], &["--attr", "--file"]),
        // A missing target: what is missing and how to give it.
        (&["plan"], &["target", "--target", "--flake", "--file"]),
        (&["upgrade"], &["target", "--target", "--flake", "--file"]),
        // Missing pieces of other commands.
        (&["-v", "-q", "status"], &["--verbose", "--quiet"]),
        (&["drv", "inspect"], &["<FILE>"]),
        (&["journal"], &["show", "verify", "export"]),
        (
            &["journal", "show", "--run", "latest"],
            &["latest", "--run"],
        ),
        (&[], &["Usage", "plan", "upgrade"]),
    ];
    for (args, words) in cases {
        let mut full: Vec<&str> = vec!["--journal", &j];
        full.extend_from_slice(args);
        let run = env.refused(&full);
        assert!(
            run.stdout.is_empty(),
            "{args:?}: usage errors go to stderr: {run:#?}"
        );
        run.says(words);
    }
}

#[test]
fn usage_errors_with_json_are_a_versioned_error_event() {
    let env = Env::empty();
    let j = env.journal().display().to_string();
    for args in [
        vec![
            "--json",
            "--journal",
            &j,
            "upgrade",
            "--flake",
            ".",
            "--action",
            "swich",
        ],
        vec![
            "--journal",
            &j,
            "plan",
            "--json",
            "--reserve",
            "12Q",
            "--flake",
            ".",
        ],
        vec!["--journal", &j, "--json", "statsu"],
    ] {
        let run = env.refused(&args);
        let mention = args
            .iter()
            .find(|a| ["swich", "12Q", "statsu"].contains(a))
            .unwrap();
        assert_json_error(&run, Framing::Document, 2, mention);
        // People reading the log still see clap's message.
        run.says(&[mention]);
    }
}

// ---- bad input: exit 2, nothing changed --------------------------------------------------------

#[test]
fn drv_inspect_of_a_truncated_file_names_the_offset() {
    let env = Env::empty();
    let drv = small_drv(&env, "truncated");
    let bytes = fs::read(&drv).unwrap();
    let cut = bytes.len() / 2;
    let file = env.bed.root().join("truncated.drv");
    fs::write(&file, &bytes[..cut]).unwrap();
    let j = env.journal();

    let run = env.refused(&[
        OsStr::new("--journal"),
        j.as_os_str(),
        OsStr::new("drv"),
        OsStr::new("inspect"),
        file.as_os_str(),
    ]);
    run.says(&[
        &file.display().to_string(),
        &format!("byte {cut}"),
        "not a valid derivation",
    ]);
    assert!(run.stdout.is_empty(), "{run:#?}");

    let run = env.refused(&[
        OsStr::new("--journal"),
        j.as_os_str(),
        OsStr::new("--json"),
        OsStr::new("drv"),
        OsStr::new("inspect"),
        file.as_os_str(),
    ]);
    assert_json_error(&run, Framing::Document, 2, &format!("byte {cut}"));

    // Nothing at all, a directory, and a file that does not exist are named too.
    let empty = env.bed.root().join("empty.drv");
    fs::write(&empty, b"").unwrap();
    env.refused(&[OsStr::new("drv"), OsStr::new("inspect"), empty.as_os_str()])
        .says(&["empty.drv", "byte 0"]);
    let missing = env.bed.root().join("missing.drv");
    env.refused(&[
        OsStr::new("drv"),
        OsStr::new("inspect"),
        missing.as_os_str(),
    ])
    .says(&["missing.drv", "no such file"]);
    let dir = env.bed.root();
    env.refused(&[OsStr::new("drv"), OsStr::new("inspect"), dir.as_os_str()])
        .says(&[&dir.display().to_string()]);
    env.refused(&[
        OsStr::new("drv"),
        OsStr::new("inspect"),
        OsStr::new(&drv),
        OsStr::new("--store-dir"),
        OsStr::new("relative/store"),
    ])
    .says(&["relative/store", "--store-dir"]);
}

#[test]
fn a_bad_target_is_refused_by_plan() {
    a_bad_target_is_refused_naming_it("plan");
}

#[test]
fn a_bad_target_is_refused_by_upgrade() {
    a_bad_target_is_refused_naming_it("upgrade");
}

fn a_bad_target_is_refused_naming_it(command: &str) {
    let (env, fx) = installed();
    let root = env.bed.root().to_path_buf();

    // Does not exist.
    let missing = root.join("no-such-system.drv");
    // Not a .drv: the old system's output, a valid store path.
    let not_drv = fx.old.out.clone();
    // A .drv outside the store: a byte-exact copy of the real target.
    let outside = root.join(Path::new(&fx.new.drv).file_name().unwrap());
    fs::copy(&fx.new.drv, &outside).unwrap();
    // A malformed .drv that is a valid store path: a registered .drv damaged on disk (Nix
    // refuses to register a malformed one, so the damage comes after).
    let malformed = small_drv(&env, "nixos-system-damaged-1.0");
    let bytes = fs::read(&malformed).unwrap();
    fs::write(&malformed, &bytes[..bytes.len() / 2]).unwrap();
    assert!(env.bed.is_valid(&malformed).unwrap());

    {
        env.refused_system(&[
            OsStr::new(command),
            "--target".as_ref(),
            missing.as_os_str(),
        ])
        .says(&[&missing.display().to_string()]);
        env.refused_system(&[command, "--target", &not_drv])
            .says(&[&not_drv, ".drv"]);
        env.refused_system(&[
            OsStr::new(command),
            "--target".as_ref(),
            outside.as_os_str(),
        ])
        .says(&[&outside.display().to_string(), &env.bed.store_dir()]);
        // Named (by its store name at least), with the place of the damage.
        let name = Path::new(&malformed).file_name().unwrap().to_str().unwrap();
        env.refused_system(&[command, "--target", &malformed])
            .says(&[name, "byte"]);
        // A --json caller gets the same as an event.
        let run = env.refused_system(&[
            OsStr::new(command),
            "--json".as_ref(),
            "--target".as_ref(),
            missing.as_os_str(),
        ]);
        let framing = match command {
            "plan" => Framing::Document,
            _ => Framing::Lines,
        };
        assert_json_error(&run, framing, 2, &missing.display().to_string());
    }
}

/// A valid derivation that is not a NixOS system (no `nixos-system-` toplevel) is bad input too:
/// found before anything is built, not when activation refuses it.
#[test]
fn a_derivation_that_is_not_a_system_is_refused_by_plan() {
    a_derivation_that_is_not_a_system_is_refused("plan");
}

#[test]
fn a_derivation_that_is_not_a_system_is_refused_by_upgrade() {
    a_derivation_that_is_not_a_system_is_refused("upgrade");
}

fn a_derivation_that_is_not_a_system_is_refused(command: &str) {
    let (env, _fx) = installed();
    let hello = small_drv(&env, "hello-2.12");
    let name = Path::new(&hello).file_name().unwrap().to_str().unwrap();
    env.refused_system(&[command, "--target", &hello])
        .says(&[name]);
}

#[test]
fn a_bad_nix_file_is_refused_by_plan() {
    a_bad_nix_file_is_refused_with_nixs_message("plan");
}

#[test]
fn a_bad_nix_file_is_refused_by_upgrade() {
    a_bad_nix_file_is_refused_with_nixs_message("upgrade");
}

fn a_bad_nix_file_is_refused_with_nixs_message(command: &str) {
    let (env, _fx) = installed();
    let file = env.bed.root().join("broken.nix");
    fs::write(&file, "{ config, ... }: {\n  boot.loader = ;\n}\n").unwrap();
    {
        env.refused_system(&[OsStr::new(command), "--file".as_ref(), file.as_os_str()])
            // Nix's own words, with the place, reach the user.
            .says(&["broken.nix", "syntax error"]);
        // An attribute the file does not have: Nix says which.
        let file_ok = env.bed.root().join("fine.nix");
        fs::write(&file_ok, "{ web = { }; }\n").unwrap();
        env.refused_system(&[
            OsStr::new(command),
            "--file".as_ref(),
            file_ok.as_os_str(),
            "--attr".as_ref(),
            "dbserver".as_ref(),
        ])
        .says(&["dbserver"]);
        // A flake that is not there.
        let no_flake = env.bed.root().join("no-flake");
        let mut flake = no_flake.clone().into_os_string();
        flake.push("#web");
        env.refused_system(&[OsStr::new(command), "--flake".as_ref(), &flake])
            .says(&[&no_flake.display().to_string()]);
        let missing = env.bed.root().join("nowhere.nix");
        env.refused_system(&[OsStr::new(command), "--file".as_ref(), missing.as_os_str()])
            .says(&["nowhere.nix"]);
    }
}

#[test]
fn a_system_path_that_does_not_exist_is_refused() {
    let (env, fx) = installed();
    let root = env.bed.root().to_path_buf();
    // (position of the value in the SYSTEM arguments, the wrong path)
    let cases = [
        (1, root.join("no-such-dir/profiles/system")),
        (1, env.bed.state_dir().join("profiles/sytem")),
        (3, root.join("run/current-sytem")),
    ];
    // Upgrade first: it is the one that would write (a new profile nothing boots from).
    for command in ["upgrade", "plan"] {
        for (at, wrong) in &cases {
            let before = env.snapshot();
            let mut args: Vec<std::ffi::OsString> = vec![
                "--journal".into(),
                env.journal().into(),
                command.into(),
                "--target".into(),
                fx.new.drv.clone().into(),
            ];
            let mut system = env.bed.system_args();
            system[*at] = wrong.clone().into();
            args.extend(system);
            let run = env.run(&args);
            run.expect_code(2)
                .says(&[&wrong.display().to_string(), "nothing was changed"]);
            env.unchanged(&before, &run);
            assert!(!wrong.exists());
        }
    }
    assert!(!root.join("no-such-dir").exists());
}

// ---- exit 4: the journal is unusable -----------------------------------------------------------

#[test]
fn a_corrupt_journal_exits_4_and_is_left_as_it_was() {
    let (env, fx) = installed();
    let garbage = b"this is not a redb file, and must stay exactly as it is".to_vec();
    fs::write(env.journal(), &garbage).unwrap();
    let j = env.journal();
    let before = env.snapshot();
    let mut runs = Vec::new();
    for command in [
        &["status"][..],
        &["resume"],
        &["unwind"],
        &["journal", "verify"],
    ] {
        let mut args = vec![OsStr::new("--journal"), j.as_os_str()];
        args.extend(command.iter().map(OsStr::new));
        runs.push(env.run(&args));
    }
    runs.push(env.run_system(&["upgrade", "--target", &fx.new.drv]));
    for run in &runs {
        run.expect_code(4).says(&[&j.display().to_string()]);
    }
    assert_eq!(
        fs::read(&j).unwrap(),
        garbage,
        "a corrupt journal is evidence: never rewritten"
    );
    // The writer lock beside it may have been taken (and released) on the way.
    let mut after = env.snapshot();
    let mut lock = j.file_name().unwrap().to_os_string();
    lock.push(".lock");
    after.journal_dir.remove(lock.to_str().unwrap());
    assert!(before == after, "changed: {}", before.diff(&after));
}

#[test]
fn a_journal_locked_by_another_run_exits_4_naming_the_holder() {
    use nix::fcntl::{Flock, FlockArg};
    let (env, fx) = installed();
    // Another run holds the writer lock (journal-format.md: an flock on PATH.lock).
    let mut lock_path = env.journal().into_os_string();
    lock_path.push(".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&lock_path)
        .unwrap();
    let held = Flock::lock(file, FlockArg::LockExclusiveNonblock).expect("taking the lock");
    fs::write(&lock_path, format!("pid {} since 0\n", std::process::id())).unwrap();
    let before = env.snapshot();
    let run = env.run_system(&["upgrade", "--target", &fx.new.drv]);
    run.expect_code(4)
        .says(&["locked", &std::process::id().to_string()]);
    let after = env.snapshot();
    assert!(
        before == after,
        "changed: {}\n{run:#?}",
        before.diff(&after)
    );
    assert_eq!(
        env.bed.current_system().as_deref(),
        Some(fx.old.out.as_str())
    );
    drop(held);
}

// ---- drv inspect: the §7 shapes -----------------------------------------------------------------

#[test]
fn drv_inspect_json_and_aterm() {
    let env = Env::empty();
    let drv = small_drv(&env, "shape");
    let run = env.run(&["--json", "drv", "inspect", &drv]);
    run.expect_code(0);
    // One document, which `json.load` reads whole.
    one_document(&run.stdout, "drv-inspect");
    let d: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(d["drvPath"], drv.as_str());
    assert_eq!(d["name"], "shape");
    let out = &d["outputs"]["out"];
    assert!(out["path"].as_str().unwrap().ends_with("-shape"), "{d}");
    assert_eq!(out["path"], out["computedPath"], "{d}");
    for key in ["inputDrvs", "inputSrcs", "env", "builder", "args", "system"] {
        assert!(d.get(key).is_some(), "{key} missing from {d}");
    }
    assert_eq!(d["env"]["PATH"], "/usr/bin:/bin");

    // --aterm: the canonical bytes, which for a .drv Nix wrote are the file itself.
    let mut cmd = env.bed.command(BIN);
    let out = cmd
        .env("STEPWISE_CONFIG", &env.config)
        .args(["drv", "inspect", "--aterm", &drv])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, fs::read(&drv).unwrap());

    // --aterm and --json exclude each other.
    env.refused(&["--json", "drv", "inspect", "--aterm", &drv])
        .says(&["--aterm", "--json"]);
    env.refused(&["drv", "inspect", "--aterm", &drv, "--json"])
        .says(&["--aterm", "--json"]);
    env.refused(&["drv", "inspect", "--json", "--aterm", &drv])
        .says(&["--aterm", "--json"]);
}

/// The one-shot documents, byte for byte: `drv inspect` of a checked-in derivation, and the
/// error document of a usage error. (`plan`'s is tests/plan_report.rs's, `status` and
/// `journal verify` tests/journal_cli.rs's.)
#[test]
fn json_documents_of_drv_inspect_and_a_usage_error_are_golden() {
    let env = Env::empty();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/drv/golden");
    let drv = fixtures.join("358n1ffysshbxpnfjdjf6wnblxh2r82w-simple.drv");
    let run = env.run(&[
        OsStr::new("--json"),
        OsStr::new("drv"),
        OsStr::new("inspect"),
        OsStr::new("--store-dir"),
        OsStr::new("/tmp/stepwise-drv-fixtures/store"),
        drv.as_os_str(),
    ]);
    run.expect_code(0);
    let doc = one_document(&run.stdout, "drv-inspect");
    let repo = env!("CARGO_MANIFEST_DIR");
    golden::check("drv_inspect.json", &doc.replace(repo, "$REPO"));

    let run = env.refused(&["--json", "statsu"]);
    golden::check("usage_error.json", &one_document(&run.stdout, "error"));
}

// ---- --json: one versioned stream ----------------------------------------------------------------

/// Every stdout line is JSON, the first is the one version header, none repeats it.
fn assert_one_stream(run: &Run) -> Vec<serde_json::Value> {
    let lines = json_lines(&run.stdout);
    assert!(!lines.is_empty(), "{run:#?}");
    assert_eq!(
        lines[0]["version"],
        stepwise::output::JSON_FORMAT_VERSION,
        "{run:#?}"
    );
    let headers = lines.iter().filter(|l| l.get("version").is_some()).count();
    assert_eq!(headers, 1, "one version header: {run:#?}");
    lines
}

#[test]
fn json_upgrade_is_one_versioned_stream_ending_with_the_outcome() {
    let (env, fx) = installed();
    let run = env.run_system(&["upgrade", "--json", "--target", &fx.new.drv]);
    run.expect_code(0);
    let lines = assert_one_stream(&run);
    assert_eq!(lines.last().unwrap()["event"], "finished", "{run:#?}");
    assert_eq!(
        env.bed.current_system().as_deref(),
        Some(fx.new.out.as_str())
    );
}

#[test]
fn json_failed_upgrade_is_one_versioned_stream_ending_with_the_error() {
    let spec = FixtureSpec::standard()
        .package(stepwise_testbed::PackageSpec::changed("broken", 1, 1).new_fails());
    let (bed, fx) = Bed::prepared_with(&spec, |_| Disk::Unlimited);
    bed.install(&fx.old.drv).expect("installing G0");
    let env = Env::new(bed);
    let run = env.run_system(&["upgrade", "--json", "--target", &fx.new.drv]);
    run.expect_code(1);
    let lines = assert_one_stream(&run);
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "error", "{run:#?}");
    assert_eq!(last["exit"], 1, "{run:#?}");
    assert_eq!(
        env.bed.current_system().as_deref(),
        Some(fx.old.out.as_str()),
        "unwound to G0"
    );
}

/// The target's `.drv` is rooted as soon as the input is checked (a GC could delete it while the
/// plan is made); a refusal found later, by the plan, takes that root away again: nothing changed.
#[test]
fn a_refusal_after_the_target_is_rooted_leaves_no_root() {
    let (env, fx) = installed();
    let run = env.refused_system(&[
        "upgrade",
        "--target",
        &fx.new.drv,
        "--non-vital",
        "no-such-package",
    ]);
    run.says(&["no-such-package"]);
}

/// The hourly timer meets this every hour without an update: done (exit 0), nothing written.
#[test]
fn upgrade_to_the_running_system_is_done_and_changes_nothing() {
    let (bed, fx) = Bed::prepared_with(&FixtureSpec::standard(), |_| Disk::Unlimited);
    bed.install(&fx.new.drv).expect("installing the target");
    let env = Env::new(bed);
    let before = env.snapshot();
    let run = env.run_system(&["upgrade", "--target", &fx.new.drv]);
    run.expect_code(0);
    env.unchanged(&before, &run);
    run.says(&["already runs the target", "nothing to do"]);
}

/// `--action test` never moves the boot default off the running system, which the upgrade
/// deletes unless it is the booted one; and a reboot would boot that default, not the step.
/// Both are refused before anything changes.
#[test]
fn action_test_that_would_leave_an_unbootable_default_is_refused() {
    let (env, fx) = installed();
    env.refused_system(&[
        "upgrade",
        "--target",
        &fx.new.drv,
        "--action",
        "test",
        "--reboot",
        "when-needed",
    ])
    .says(&["--action test", "--reboot when-needed", "--action switch"]);
    // Switched since boot: the booted system is another one.
    fs::remove_file(env.bed.booted_system_link()).unwrap();
    env.refused_system(&["upgrade", "--target", &fx.new.drv, "--action", "test"])
        .says(&["--action test", "boot loader's default", "--action switch"]);
}

// ---- commands that read the journal, without one ---------------------------------------------------

#[test]
fn without_a_journal_resume_and_unwind_have_nothing_to_do_and_create_nothing() {
    let (env, _fx) = installed();
    let j = env.journal();
    // The boot-time `resume` of every normal boot: exit 0, one line, nothing created.
    for command in ["resume", "unwind"] {
        let before = env.snapshot();
        let run = env.run(&[OsStr::new("--journal"), j.as_os_str(), OsStr::new(command)]);
        run.expect_code(0)
            .says(&[&format!("nothing to {command}"), &j.display().to_string()]);
        assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
        env.unchanged(&before, &run);
    }
    env.refused(&[
        OsStr::new("--journal"),
        j.as_os_str(),
        OsStr::new("journal"),
        OsStr::new("verify"),
    ])
    .says(&[&j.display().to_string()]);
    for command in [&["status"][..], &["journal", "show"]] {
        let before = env.snapshot();
        let mut args = vec![OsStr::new("--journal"), j.as_os_str()];
        args.extend(command.iter().map(OsStr::new));
        let run = env.run(&args);
        run.expect_code(0);
        env.unchanged(&before, &run);
    }
}

// ---- the settings file ------------------------------------------------------------------------------

#[test]
fn a_bad_settings_file_is_refused_naming_file_line_and_column() {
    let env = Env::empty();
    let j = env.journal().display().to_string();
    let dir = env.bed.root();
    let cases = [
        (
            "syntax.toml",
            "[upgrade]\naction = \n",
            "syntax.toml, line 2",
        ),
        ("unknown.toml", "[upgrade]\nacton = \"switch\"\n", "acton"),
        ("value.toml", "[upgrade]\naction = \"swich\"\n", "swich"),
        ("size.toml", "[upgrade]\nreserve = \"12Q\"\n", "12Q"),
    ];
    for (name, text, mention) in cases {
        let file = dir.join(name);
        fs::write(&file, text).unwrap();
        let file = file.display().to_string();
        for command in [&["plan", "--flake", "."][..], &["upgrade", "--flake", "."]] {
            let mut args = vec!["--journal", &j, "--config", &file];
            args.extend_from_slice(command);
            env.refused(&args).says(&[mention, "nothing was changed"]);
        }
    }
    let missing = dir.join("missing.toml").display().to_string();
    env.refused(&[
        "--journal",
        &j,
        "--config",
        &missing,
        "plan",
        "--flake",
        ".",
    ])
    .says(&[&missing, "--config"]);
    // With --json, the same as a versioned error event.
    let file = dir.join("syntax.toml").display().to_string();
    let run = env.refused(&["--json", "--config", &file, "plan", "--flake", "."]);
    assert_json_error(&run, Framing::Document, 2, "syntax.toml, line 2");
}

#[test]
fn a_journal_that_cannot_be_created_stops_the_upgrade_before_any_change() {
    let (env, fx) = installed();
    // Under a regular file: no directory can be made there (a missing directory is created).
    let file = env.bed.root().join("a-file");
    fs::write(&file, b"").unwrap();
    let journal = file.join("journal.redb");
    let before = env.snapshot();
    let mut args: Vec<std::ffi::OsString> = vec![
        "--journal".into(),
        journal.clone().into(),
        "upgrade".into(),
        "--target".into(),
        fx.new.drv.clone().into(),
    ];
    args.extend(env.bed.system_args());
    let run = env.run(&args);
    assert!(
        run.code == 2 || run.code == 4,
        "bad input or an unusable journal: {run:#?}"
    );
    run.says(&[&journal.display().to_string()]);
    let after = env.snapshot();
    assert!(
        before == after,
        "changed: {}\n{run:#?}",
        before.diff(&after)
    );
    assert_eq!(
        env.bed.current_system().as_deref(),
        Some(fx.old.out.as_str())
    );
}

/// `--boot-dir` on a filesystem of its own without room for the kernel and initrd the run adds:
/// exit 3 before anything changes, saying what is missing and what to do. With room, the check
/// passes and the upgrade goes on.
#[test]
fn a_boot_dir_without_room_for_the_new_kernel_stops_before_any_change() {
    if !stepwise_testbed::require_root("cli: --boot-dir on small tmpfs mounts") {
        return;
    }
    let (env, fx) = installed();
    // The fixture's kernel and initrd take 10 MiB together.
    let small = TmpfsMount::new(&env.bed.root().join("boot-small"), 4).unwrap();
    let before = env.snapshot();
    let run = env.run_system(&[
        "upgrade",
        "--target",
        &fx.new.drv,
        "--boot-dir",
        small.path().to_str().unwrap(),
    ]);
    eprintln!("{}", run.stderr);
    run.expect_code(3).says(&[
        "boot-small",
        "1 kernel+initrd pair",
        "more is needed",
        "--delete-generations",
        "configurationLimit",
    ]);
    env.unchanged(&before, &run);

    let roomy = TmpfsMount::new(&env.bed.root().join("boot-roomy"), 64).unwrap();
    env.run_system(&[
        "upgrade",
        "--target",
        &fx.new.drv,
        "--boot-dir",
        roomy.path().to_str().unwrap(),
    ])
    .expect_code(0);
    assert_eq!(
        env.bed.profile_target().as_deref(),
        Some(fx.new.out.as_str())
    );
}

/// An unfinished run recorded by format 1 (the golden journal's run 2) whose masks were in the
/// side file format 1 kept: without that file `resume` and `unwind` refuse it (exit 4, saying
/// why and what to do) and write nothing; `journal verify` and `journal show` still read it.
#[test]
fn an_unfinished_format_1_run_without_its_side_file_is_refused_and_left_as_it_was() {
    let (env, _fx) = installed();
    let j = env.journal();
    fs::create_dir_all(j.parent().unwrap()).unwrap();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal/v1.redb");
    fs::copy(&golden, &j).unwrap();
    // What the journal holds (redb itself may touch the file when a writer opens it).
    let export = || {
        let run = env.run(&[
            OsStr::new("--journal"),
            j.as_os_str(),
            OsStr::new("journal"),
            OsStr::new("export"),
        ]);
        run.expect_code(0);
        run.stdout
    };
    let records = export();
    for command in ["resume", "unwind"] {
        let run = env.run(&[OsStr::new("--journal"), j.as_os_str(), OsStr::new(command)]);
        run.expect_code(4)
            .says(&["journal format 1", "steps.json", &j.display().to_string()]);
        assert!(export() == records, "{command} wrote to the journal");
    }
    for command in [&["journal", "show"][..], &["journal", "verify"]] {
        let mut args = vec![OsStr::new("--journal"), j.as_os_str()];
        args.extend(command.iter().map(OsStr::new));
        env.run(&args).expect_code(0);
    }
}
