//! The settings file, `/etc/stepwise/config.toml` (the NixOS module writes it).
//!
//! One schema for the file and the command line: every key is a flag of the same name. Precedence:
//! command line, then environment variables clap reads (`STEPWISE_JOURNAL`), then the file, then the
//! contract's defaults. A missing default file is fine; a missing `--config`/`STEPWISE_CONFIG` file,
//! or a file that does not parse, is bad input (exit 2) naming the file, line and column.
//!
//! ```toml
//! journal = "/var/lib/stepwise/journal.redb"
//!
//! [upgrade]                      # read by `plan` and `upgrade`
//! flake = "/etc/nixos#web"       # or target = "/nix/store/…drv", or file = "F.nix" (+ attr)
//! action = "switch"              # switch | boot | test
//! non-vital = ["firefox"]
//! together = [["openssl", "curl"]]
//! reserve = "64M"                # or a number of bytes
//! on-failure = "unwind"          # unwind | hold
//! on-failed-units = "continue"   # continue | stop
//! reboot = "when-needed"         # never | when-needed
//! reboot-window = { lower = "01:00", upper = "05:00" }
//! boot-dir = "/boot"             # checked for room for the run's kernels and initrds
//! keep-previous = true           # keep G0 as a rollback generation when there is room
//!
//! [nix-options]                  # --nix-option NAME VALUE, for every command
//! builders = "ssh://big x86_64-linux"
//! tarball-ttl = 0
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::args::{
    parse_size, Cli, Command, OnFailedUnits, OnFailure, PlanArgs, RebootPolicy, RoomArgs, Strategy,
    SystemArgs, TargetArgs, UpgradeArgs,
};
use crate::effects::store::Action;
use crate::error::Error;

pub const DEFAULT_CONFIG: &str = "/etc/stepwise/config.toml";

/// The whole file. Unknown keys are errors: a typo must not silently do nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub journal: Option<PathBuf>,
    #[serde(default)]
    pub upgrade: UpgradeConfig,
    /// `[nix-options]`: Nix settings, as `--nix-option NAME VALUE` before those of the command
    /// line (Nix applies `--option`s in order, so the command line's win).
    #[serde(default)]
    pub nix_options: std::collections::BTreeMap<String, NixValue>,
}

/// A Nix setting's value as TOML writes it; Nix gets its text.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum NixValue {
    Text(String),
    Number(i64),
    Flag(bool),
}

impl fmt::Display for NixValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NixValue::Text(s) => f.write_str(s),
            NixValue::Number(n) => write!(f, "{n}"),
            NixValue::Flag(b) => write!(f, "{b}"),
        }
    }
}

/// `[upgrade]`: the flags of `stepwise upgrade` (and those of them `stepwise plan` has).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UpgradeConfig {
    pub target: Option<Spanned<PathBuf>>,
    pub flake: Option<Spanned<String>>,
    pub file: Option<Spanned<PathBuf>>,
    pub attr: Option<Spanned<String>>,
    pub profile: Option<PathBuf>,
    pub current_system: Option<PathBuf>,
    pub booted_system: Option<PathBuf>,
    pub action: Option<Action>,
    pub strategy: Option<Strategy>,
    pub non_vital: Option<Vec<String>>,
    pub together: Option<Vec<Vec<String>>>,
    pub reserve: Option<Size>,
    pub on_failure: Option<OnFailure>,
    pub on_failed_units: Option<OnFailedUnits>,
    pub reboot: Option<RebootPolicy>,
    pub reboot_command: Option<String>,
    pub reboot_window: Option<RebootWindow>,
    pub boot_dir: Option<PathBuf>,
    pub keep_previous: Option<bool>,
}

/// A size: a number of bytes, or a string with a binary unit (`"64M"`), as `--reserve` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(i64),
            Text(String),
        }
        let raw = Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a size: a number of bytes, or a string such as \"64M\"",
            )
        })?;
        match raw {
            Raw::Bytes(n) => u64::try_from(n)
                .map(Size)
                .map_err(|_| serde::de::Error::custom("a size cannot be negative")),
            Raw::Text(s) => parse_size(&s).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

/// A time of day, minutes since midnight, written `HH:MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClockTime(pub u16);

impl ClockTime {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a time of day: write HH:MM, e.g. 01:30");
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: u16 = h.parse().map_err(|_| bad())?;
        let m: u16 = m.parse().map_err(|_| bad())?;
        if h > 23 || m > 59 {
            return Err(bad());
        }
        Ok(ClockTime(h * 60 + m))
    }

    /// The local time of day now (the machine's time zone, as `date +%H:%M` says), for
    /// [`RebootWindow::contains`].
    pub fn now_local() -> std::io::Result<Self> {
        // SAFETY: `time(NULL)` only reads the clock; `localtime_r` writes into the `tm` we own.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let t = unsafe { libc::time(std::ptr::null_mut()) };
        if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        Ok(ClockTime((tm.tm_hour * 60 + tm.tm_min) as u16))
    }
}

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl<'de> Deserialize<'de> for ClockTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ClockTime::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// When a reboot may happen (local time), as `system.autoUpgrade.rebootWindow`: from `lower`
/// (included) to `upper` (excluded), across midnight when `lower` is later than `upper`. Outside
/// it a run that needs a reboot stops (exit 3) and a later run inside the window continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawWindow")]
pub struct RebootWindow {
    pub lower: ClockTime,
    pub upper: ClockTime,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    lower: ClockTime,
    upper: ClockTime,
}

impl TryFrom<RawWindow> for RebootWindow {
    type Error = String;
    fn try_from(w: RawWindow) -> Result<Self, String> {
        RebootWindow::new(w.lower, w.upper)
    }
}

impl RebootWindow {
    pub fn new(lower: ClockTime, upper: ClockTime) -> Result<Self, String> {
        if lower == upper {
            return Err(format!(
                "the reboot window {lower}-{upper} is empty: give two different times, or no window to allow any time"
            ));
        }
        Ok(RebootWindow { lower, upper })
    }

    /// `--reboot-window 01:00-05:00`
    pub fn parse(s: &str) -> Result<Self, String> {
        let (l, u) = s.split_once('-').ok_or_else(|| {
            format!("{s:?} is not a window: write LOWER-UPPER in HH:MM, e.g. 01:00-05:00")
        })?;
        RebootWindow::new(ClockTime::parse(l.trim())?, ClockTime::parse(u.trim())?)
    }

    /// Whether a reboot may happen at this time of day.
    pub fn contains(&self, t: ClockTime) -> bool {
        if self.lower < self.upper {
            self.lower <= t && t < self.upper
        } else {
            t >= self.lower || t < self.upper
        }
    }
}

impl fmt::Display for RebootWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.lower, self.upper)
    }
}

impl Config {
    /// Parse the text of a settings file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, Error> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let (line, col) = line_col(text, s.start);
                    format!(", line {line}, column {col}")
                })
                .unwrap_or_default();
            bad_file(origin, &at, e.message().trim_end())
        })?;
        config.upgrade.check(text, origin)?;
        Ok(config)
    }

    /// Read the settings file: `path` as given (it must exist), or the default one (which may be
    /// absent: then nothing is set).
    pub fn load(path: Option<&Path>) -> Result<Config, Error> {
        let (path, explicit) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_CONFIG), false),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Config::default()),
            Err(e) => Err(Error::bad_input(
                format!("config file {}: {e}", path.display()),
                "give an existing file with --config PATH (or STEPWISE_CONFIG), or none to use /etc/stepwise/config.toml if it exists",
            )),
        }
    }

    /// Overlay the file onto what the command line left unset. `matches` are those `cli` was parsed
    /// from: they tell a flag that was given from one that holds clap's default.
    pub fn apply(&self, cli: &mut Cli, matches: &ArgMatches) -> Result<(), Error> {
        if let Some(j) = &self.journal {
            if !given(matches, "journal") {
                cli.journal = j.clone();
            }
        }
        let from_file = self
            .nix_options
            .iter()
            .flat_map(|(name, value)| [name.clone(), value.to_string()]);
        cli.nix_option = from_file.chain(cli.nix_option.drain(..)).collect();
        let Some((_, sub)) = matches.subcommand() else {
            return Ok(());
        };
        match &mut cli.command {
            Command::Plan(PlanArgs {
                target,
                system,
                room,
            }) => {
                self.upgrade.apply_target(target, sub)?;
                self.upgrade.apply_system(system, sub);
                self.upgrade.apply_room(room, sub);
            }
            Command::Upgrade(args) => self.upgrade.apply_upgrade(args, sub)?,
            _ => {}
        }
        Ok(())
    }
}

impl UpgradeConfig {
    /// What serde cannot say: one target at most, `attr` only with `file`.
    fn check(&self, text: &str, origin: &Path) -> Result<(), Error> {
        let targets = [
            self.target.as_ref().map(|s| ("target", s.span())),
            self.flake.as_ref().map(|s| ("flake", s.span())),
            self.file.as_ref().map(|s| ("file", s.span())),
        ];
        let mut set = targets.iter().flatten().collect::<Vec<_>>();
        set.sort_by_key(|(_, span)| span.start);
        if let [(first, _), (second, span), ..] = set.as_slice() {
            let (line, col) = line_col(text, span.start);
            return Err(bad_file(
                origin,
                &format!(", line {line}, column {col}"),
                &format!("`{second}` and `{first}` are both set, expected one target: `target`, `flake` or `file`"),
            ));
        }
        if let (Some(attr), None) = (&self.attr, &self.file) {
            let (line, col) = line_col(text, attr.span().start);
            return Err(bad_file(
                origin,
                &format!(", line {line}, column {col}"),
                "`attr` is set without `file`, expected `file` beside it",
            ));
        }
        Ok(())
    }

    fn has_target(&self) -> bool {
        self.target.is_some() || self.flake.is_some() || self.file.is_some()
    }

    fn apply_target(&self, t: &mut TargetArgs, m: &ArgMatches) -> Result<(), Error> {
        let on_command_line = ["target", "flake", "file"].iter().any(|id| given(m, id));
        if !on_command_line && self.has_target() {
            t.target = self.target.as_ref().map(|s| s.get_ref().clone());
            t.flake = self.flake.as_ref().map(|s| s.get_ref().clone());
            t.file = self.file.as_ref().map(|s| s.get_ref().clone());
            t.attr = self.attr.as_ref().map(|s| s.get_ref().clone());
        }
        if t.target.is_none() && t.flake.is_none() && t.file.is_none() {
            return Err(Error::bad_input(
                "no target: nothing says which system to upgrade to",
                format!("give --target PATH.drv, --flake REF[#HOST] or --file F.nix, or set `flake` under [upgrade] in {DEFAULT_CONFIG} (or the --config file)"),
            ));
        }
        Ok(())
    }

    fn apply_system(&self, s: &mut SystemArgs, m: &ArgMatches) {
        set(&mut s.profile, &self.profile, m, "profile");
        set(
            &mut s.current_system,
            &self.current_system,
            m,
            "current_system",
        );
        set(
            &mut s.booted_system,
            &self.booted_system,
            m,
            "booted_system",
        );
    }

    fn apply_room(&self, r: &mut RoomArgs, m: &ArgMatches) {
        set(&mut r.non_vital, &self.non_vital, m, "non_vital");
        set(&mut r.together, &self.together, m, "together");
        if !given(m, "reserve") {
            if let Some(Size(n)) = self.reserve {
                r.reserve = Some(n);
            }
        }
        set(&mut r.reboot, &self.reboot, m, "reboot");
        set(
            &mut r.keep_previous,
            &self.keep_previous,
            m,
            "keep_previous",
        );
    }

    /// The effective `stepwise upgrade` arguments: the command line over this file over the
    /// contract's defaults.
    pub fn apply_upgrade(&self, a: &mut UpgradeArgs, m: &ArgMatches) -> Result<(), Error> {
        self.apply_target(&mut a.target, m)?;
        self.apply_system(&mut a.system, m);
        self.apply_room(&mut a.room, m);
        set(&mut a.action, &self.action, m, "action");
        set(&mut a.strategy, &self.strategy, m, "strategy");
        set(&mut a.on_failure, &self.on_failure, m, "on_failure");
        set(
            &mut a.on_failed_units,
            &self.on_failed_units,
            m,
            "on_failed_units",
        );
        set(
            &mut a.reboot_command,
            &self.reboot_command,
            m,
            "reboot_command",
        );
        if !given(m, "reboot_window") && self.reboot_window.is_some() {
            a.reboot_window = self.reboot_window;
        }
        if !given(m, "boot_dir") && self.boot_dir.is_some() {
            a.boot_dir = self.boot_dir.clone();
        }
        Ok(())
    }
}

/// The command line stepwise parses: the contract's, except that plan's and upgrade's target may
/// come from the settings file (checked after merging, in [`UpgradeConfig::apply_target`]).
pub fn command() -> clap::Command {
    let optional_target = |c: clap::Command| c.mut_group("target_spec", |g| g.required(false));
    Cli::command()
        .mut_subcommand("plan", optional_target)
        .mut_subcommand("upgrade", optional_target)
}

/// Load the file `cli` names (or the default one) and merge it into `cli`.
pub fn apply_config_file(cli: &mut Cli, matches: &ArgMatches) -> Result<(), Error> {
    Config::load(cli.config.as_deref())?.apply(cli, matches)
}

/// Whether the user gave this flag (on the command line or through its environment variable), as
/// opposed to clap filling in its default.
fn given(m: &ArgMatches, id: &str) -> bool {
    matches!(
        m.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

fn set<T: Clone>(field: &mut T, from_file: &Option<T>, m: &ArgMatches, id: &str) {
    if let Some(v) = from_file {
        if !given(m, id) {
            *field = v.clone();
        }
    }
}

fn bad_file(origin: &Path, at: &str, what: &str) -> Error {
    Error::bad_input(
        format!("config file {}{at}: {what}", origin.display()),
        "fix the file (its keys are the long flags of `stepwise upgrade`, see stepwise(1)), or point --config elsewhere (--config /dev/null reads none); nothing was changed",
    )
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches;

    fn parse(argv: &[&str], file: &str) -> Result<Cli, Error> {
        let m = command().try_get_matches_from(argv).expect("argv parses");
        let mut cli = Cli::from_arg_matches(&m).unwrap();
        Config::parse(file, Path::new("/etc/stepwise/config.toml"))?.apply(&mut cli, &m)?;
        Ok(cli)
    }

    fn upgrade(cli: Cli) -> UpgradeArgs {
        match cli.command {
            Command::Upgrade(a) => a,
            c => panic!("not upgrade: {c:?}"),
        }
    }

    const FULL: &str = r#"
journal = "/srv/j.redb"
[upgrade]
flake = "/etc/nixos#web"
profile = "/p"
current-system = "/c"
booted-system = "/b"
action = "boot"
strategy = "stepwise"
non-vital = ["firefox", "libreoffice"]
together = [["openssl", "curl"], ["a", "b", "c"]]
reserve = "64M"
on-failure = "hold"
reboot = "when-needed"
reboot-command = "/run/current-system/sw/bin/systemctl reboot"
reboot-window = { lower = "23:00", upper = "05:00" }
boot-dir = "/boot"
"#;

    #[test]
    fn file_fills_what_the_command_line_left_unset() {
        let cli = parse(&["stepwise", "upgrade"], FULL).unwrap();
        assert_eq!(cli.journal, PathBuf::from("/srv/j.redb"));
        let a = upgrade(cli);
        assert_eq!(a.target.flake.as_deref(), Some("/etc/nixos#web"));
        assert_eq!(a.system.profile, PathBuf::from("/p"));
        assert_eq!(a.system.current_system, PathBuf::from("/c"));
        assert_eq!(a.system.booted_system, PathBuf::from("/b"));
        assert_eq!(a.action, Action::Boot);
        assert_eq!(a.strategy, Strategy::Stepwise);
        assert_eq!(a.room.non_vital, ["firefox", "libreoffice"]);
        assert_eq!(
            a.room.together,
            vec![vec!["openssl", "curl"], vec!["a", "b", "c"]]
        );
        assert_eq!(a.room.reserve, Some(64 << 20));
        assert_eq!(a.on_failure, OnFailure::Hold);
        assert_eq!(a.room.reboot, RebootPolicy::WhenNeeded);
        assert_eq!(
            a.reboot_command,
            "/run/current-system/sw/bin/systemctl reboot"
        );
        assert_eq!(a.boot_dir.as_deref(), Some(Path::new("/boot")));
        assert_eq!(
            a.reboot_window,
            Some(RebootWindow::parse("23:00-05:00").unwrap())
        );
    }

    #[test]
    fn flags_override_the_file() {
        let cli = parse(
            &[
                "stepwise",
                "upgrade",
                "--target",
                "/nix/store/x.drv",
                "--action",
                "switch",
                "--strategy",
                "auto",
                "--non-vital",
                "vim",
                "--together",
                "x,y",
                "--reserve",
                "1K",
                "--on-failure",
                "unwind",
                "--reboot",
                "never",
                "--reboot-command",
                "true",
                "--reboot-window",
                "01:00-02:00",
                "--boot-dir",
                "/efi",
                "--profile",
                "/p2",
                "--journal",
                "/j2",
            ],
            FULL,
        )
        .unwrap();
        assert_eq!(cli.journal, PathBuf::from("/j2"));
        let a = upgrade(cli);
        // A target on the command line replaces the file's whole target.
        assert_eq!(a.target.target, Some(PathBuf::from("/nix/store/x.drv")));
        assert_eq!(a.target.flake, None);
        assert_eq!(a.system.profile, PathBuf::from("/p2"));
        assert_eq!(a.system.current_system, PathBuf::from("/c"));
        assert_eq!(a.action, Action::Switch);
        assert_eq!(a.boot_dir.as_deref(), Some(Path::new("/efi")));
        assert_eq!(a.strategy, Strategy::Auto);
        assert_eq!(a.room.non_vital, ["vim"]);
        assert_eq!(a.room.together, vec![vec!["x", "y"]]);
        assert_eq!(a.room.reserve, Some(1024));
        assert_eq!(a.on_failure, OnFailure::Unwind);
        assert_eq!(a.room.reboot, RebootPolicy::Never);
        assert_eq!(a.reboot_command, "true");
        assert_eq!(a.reboot_window.unwrap().to_string(), "01:00-02:00");
    }

    #[test]
    fn nix_options_from_the_file_come_first_so_the_command_lines_win() {
        let file = "[nix-options]\ntarball-ttl = 0\nbuilders = \"ssh://b x86_64-linux\"\nkeep-going = true\n";
        let cli = parse(
            &["stepwise", "--nix-option", "builders", "", "resume"],
            file,
        )
        .unwrap();
        assert_eq!(
            cli.nix_option,
            [
                "builders",
                "ssh://b x86_64-linux",
                "keep-going",
                "true",
                "tarball-ttl",
                "0",
                "builders",
                ""
            ]
        );
        // Not a scalar: refused, naming the line.
        let e = parse(&["stepwise", "status"], "[nix-options]\nbuilders = [1]\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn journal_flag_after_the_command_also_wins() {
        let cli = parse(&["stepwise", "status", "--journal", "/j3"], FULL).unwrap();
        assert_eq!(cli.journal, PathBuf::from("/j3"));
    }

    #[test]
    fn no_file_keeps_the_contract_defaults() {
        let with_empty = upgrade(parse(&["stepwise", "upgrade", "--flake", "."], "").unwrap());
        let plain =
            upgrade(Cli::try_parse_from_helper(&["stepwise", "upgrade", "--flake", "."]).unwrap());
        assert_eq!(format!("{with_empty:?}"), format!("{plain:?}"));
        assert_eq!(plain.action, Action::Switch);
        assert_eq!(plain.reboot_command, "systemctl reboot");
        assert_eq!(plain.room.reserve, None);
    }

    impl Cli {
        fn try_parse_from_helper(argv: &[&str]) -> Result<Cli, clap::Error> {
            <Cli as clap::Parser>::try_parse_from(argv)
        }
    }

    #[test]
    fn plan_takes_target_system_and_room_from_the_file() {
        let cli = parse(&["stepwise", "plan", "--reserve", "2M"], FULL).unwrap();
        let Command::Plan(p) = cli.command else {
            panic!()
        };
        assert_eq!(p.target.flake.as_deref(), Some("/etc/nixos#web"));
        assert_eq!(p.system.booted_system, PathBuf::from("/b"));
        assert_eq!(p.room.reserve, Some(2 << 20));
        assert_eq!(p.room.non_vital, ["firefox", "libreoffice"]);
    }

    #[test]
    fn missing_target_everywhere_is_bad_input() {
        let e = parse(&["stepwise", "upgrade"], "[upgrade]\naction = \"test\"\n").unwrap_err();
        assert_eq!(e.exit(), crate::error::Exit::BadInput);
        assert!(e.to_string().contains("--flake"), "{e}");
    }

    fn err(text: &str) -> String {
        Config::parse(text, Path::new("/etc/stepwise/config.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_files_name_file_line_column_and_what_is_expected() {
        let e = err("[upgrade]\nflakes = \"x\"\n");
        assert!(
            e.starts_with("config file /etc/stepwise/config.toml, line 2, column 1: unknown field `flakes`, expected one of"),
            "{e}"
        );
        let e = err("[upgrade]\naction = \"swich\"\n");
        assert!(e.contains("line 2, column 10"), "{e}");
        assert!(e.contains("`switch`, `boot`, `test`"), "{e}");
        let e = err("[upgrade]\nreserve = \"12Q\"\n");
        assert!(e.contains("line 2") && e.contains("unknown unit"), "{e}");
        let e = err("[upgrade]\nreserve = -5\n");
        assert!(e.contains("line 2") && e.contains("negative"), "{e}");
        let e = err("[upgrade]\nreboot-window = { lower = \"25:00\", upper = \"05:00\" }\n");
        assert!(e.contains("line 2") && e.contains("HH:MM"), "{e}");
        let e = err("[upgrade]\nreboot-window = { lower = \"05:00\", upper = \"05:00\" }\n");
        assert!(e.contains("line 2") && e.contains("empty"), "{e}");
        let e = err("[upgrade]\nflake = \".\"\ntarget = \"/a.drv\"\n");
        assert!(e.contains("line 3, column 10"), "{e}");
        assert!(e.contains("expected one target"), "{e}");
        let e = err("[upgrade]\nattr = \"x\"\n");
        assert!(e.contains("line 2") && e.contains("without `file`"), "{e}");
        let e = err("journal = \n");
        assert!(e.contains("line 1"), "{e}");
        let e = err("jornal = \"/x\"\n");
        assert!(
            e.contains("line 1, column 1: unknown field `jornal`"),
            "{e}"
        );
        let e = err("[upgrade]\nnon-vital = \"firefox\"\n");
        assert!(
            e.contains("line 2") && e.contains("expected a sequence"),
            "{e}"
        );
    }

    #[test]
    fn missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("none.toml");
        let e = Config::load(Some(&gone)).unwrap_err();
        assert_eq!(e.exit(), crate::error::Exit::BadInput);
        assert!(e.to_string().contains("none.toml"), "{e}");
    }

    #[test]
    fn windows() {
        let day = RebootWindow::parse("01:00-05:00").unwrap();
        let t = |s| ClockTime::parse(s).unwrap();
        assert!(day.contains(t("01:00")) && day.contains(t("04:59")));
        assert!(!day.contains(t("05:00")) && !day.contains(t("00:59")));
        let night = RebootWindow::parse("23:00-02:00").unwrap();
        assert!(
            night.contains(t("23:30")) && night.contains(t("00:00")) && night.contains(t("01:59"))
        );
        assert!(!night.contains(t("02:00")) && !night.contains(t("22:59")));
        assert!(RebootWindow::parse("1:00-05:00").is_err());
        assert!(RebootWindow::parse("01:00").is_err());
        assert!(RebootWindow::parse("03:00-03:00").is_err());
        assert_eq!(night.to_string(), "23:00-02:00");
        assert!(ClockTime::now_local().unwrap().0 < 24 * 60);
    }
}
