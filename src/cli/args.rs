//! The command surface (README.md, the command contract). Tests outside this repository drive the binary through it:
//! keep every flag, default and exit code stable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::effects::store::{Action, TargetSpec};

pub const DEFAULT_JOURNAL: &str = "/var/lib/stepwise/journal.redb";

#[derive(Debug, Parser)]
#[command(
    name = "stepwise",
    version,
    about = "Crash-safe NixOS upgrades for machines whose disk cannot hold the old and the new system at once",
    long_about = "stepwise upgrades a NixOS system on a small disk. It tries the plain upgrade first when it \
fits; otherwise it builds a chain of real intermediate generations, each upgrading a few packages, switching \
to each and deleting what it superseded before building the next. Every transition is written to a journal \
before it runs, so after a crash, OOM kill or power cut `stepwise resume` or `stepwise unwind` finishes the \
run.\n\nExit codes: 0 done; 1 the run failed and was unwound (or held); 2 bad usage or input, nothing \
changed; 3 stopped before the end (`stepwise resume` continues); 4 journal unusable; 5 the target was \
reached but switching to it left units failed.",
    after_help = "Examples:\n  stepwise plan --flake /etc/nixos\n  stepwise upgrade --flake /etc/nixos#myhost --non-vital firefox\n  stepwise status\n  stepwise journal show"
)]
pub struct Cli {
    /// The run journal (one run at a time holds its lock).
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_JOURNAL, env = "STEPWISE_JOURNAL")]
    pub journal: PathBuf,

    /// Settings file (TOML; its keys are the long flags of `upgrade`); flags override it.
    /// Default: /etc/stepwise/config.toml if it exists.
    #[arg(long, global = true, value_name = "PATH", env = "STEPWISE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Machine-readable output on stdout, always carrying "version": one JSON document from
    /// plan, status, drv inspect and journal verify; JSON lines, the first the version header,
    /// from upgrade, resume, unwind, journal show and journal export.
    #[arg(long, global = true)]
    pub json: bool,

    /// More detail (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// A Nix setting for evaluating and building the target, passed to Nix as `--option NAME
    /// VALUE`; repeatable, before COMMAND: `stepwise --nix-option builders 'ssh://big x86_64-linux'
    /// upgrade ...`; `--nix-option tarball-ttl 0` is what `nix --refresh` does (flake inputs
    /// fetched afresh).
    // Not global: clap would let occurrences after COMMAND replace those before it.
    #[arg(long, num_args = 2, value_names = ["NAME", "VALUE"], action = clap::ArgAction::Append)]
    pub nix_option: Vec<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what an upgrade would do: the package diff, the steps, and the peak disk use.
    Plan(PlanArgs),
    /// Upgrade to the target: plainly if it fits, otherwise step by step.
    Upgrade(UpgradeArgs),
    /// Continue an interrupted run from the journal.
    Resume(ResumeArgs),
    /// Walk an interrupted or held run back to the generation it started from.
    Unwind,
    /// Where the last run stands.
    Status,
    /// Read and check the journal.
    #[command(subcommand)]
    Journal(JournalCommand),
    /// Derivation tools.
    #[command(subcommand)]
    Drv(DrvCommand),
}

#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// A readable audit of the runs: when, what, outcome, space added and freed.
    Show {
        /// Only this run.
        #[arg(long, value_name = "ID")]
        run: Option<u64>,
    },
    /// Check structure and hash chain; exit 4 naming what is wrong and where.
    Verify,
    /// Every record as a JSON line.
    Export,
}

#[derive(Debug, Subcommand)]
pub enum DrvCommand {
    /// Parse a .drv file, recompute its path and output paths.
    Inspect {
        /// The .drv file (in the store or anywhere).
        file: PathBuf,
        /// The store directory its paths live in (default: the running Nix's).
        #[arg(long, value_name = "DIR")]
        store_dir: Option<String>,
        /// Print the canonical ATerm bytes instead.
        #[arg(long, conflicts_with = "json")]
        aterm: bool,
    },
}

/// Which system to upgrade to. Exactly one of --target, --flake, --file.
// Not a struct-level `#[group]`: derive puts every field in that group, --attr too, which then
// excluded --file.
#[derive(Debug, Clone, Args)]
#[group(skip)]
#[command(group(
    clap::ArgGroup::new("target_spec")
        .required(true)
        .multiple(false)
        .args(["target", "flake", "file"])
))]
pub struct TargetArgs {
    /// The target toplevel derivation (`/nix/store/…-nixos-system-….drv`).
    #[arg(long, value_name = "PATH.drv")]
    pub target: Option<PathBuf>,
    /// A flake, `REF[#host]` (host defaults to this machine's hostname).
    #[arg(long, value_name = "REF[#HOST]")]
    pub flake: Option<String>,
    /// A Nix file evaluating to a NixOS system (or its toplevel derivation).
    #[arg(long, value_name = "F.nix")]
    pub file: Option<PathBuf>,
    /// Attribute of --file to evaluate.
    // conflicts_with too: clap drops `requires` of an argument that conflicts with one given.
    #[arg(long, value_name = "A", requires = "file", conflicts_with_all = ["target", "flake"])]
    pub attr: Option<String>,
}

impl TargetArgs {
    pub fn spec(&self) -> TargetSpec {
        if let Some(t) = &self.target {
            TargetSpec::Drv(t.clone())
        } else if let Some(f) = &self.flake {
            match f.split_once('#') {
                Some((r, h)) => TargetSpec::Flake {
                    reference: r.to_string(),
                    host: Some(h.to_string()).filter(|h| !h.is_empty()),
                },
                None => TargetSpec::Flake {
                    reference: f.clone(),
                    host: None,
                },
            }
        } else {
            TargetSpec::File {
                file: self.file.clone().expect("clap requires one target"),
                attr: self.attr.clone(),
            }
        }
    }
}

/// The system being upgraded.
#[derive(Debug, Clone, Args)]
pub struct SystemArgs {
    /// The system profile.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/nix/var/nix/profiles/system"
    )]
    pub profile: PathBuf,
    /// The link to the running system.
    #[arg(long, value_name = "PATH", default_value = "/run/current-system")]
    pub current_system: PathBuf,
    /// The link to the system booted last.
    #[arg(long, value_name = "PATH", default_value = "/run/booted-system")]
    pub booted_system: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub system: SystemArgs,
    #[command(flatten)]
    pub room: RoomArgs,
}

/// Options that change what fits.
#[derive(Debug, Clone, Args)]
pub struct RoomArgs {
    /// A package that may be removed for the duration and comes back upgraded (repeatable; names as
    /// in `stepwise plan`). Checked before anything changes: one whose files the system's
    /// configuration reads is refused.
    #[arg(long = "non-vital", value_name = "NAME")]
    pub non_vital: Vec<String>,
    /// Packages that must move in the same step, comma-separated (repeatable).
    #[arg(long, value_name = "A,B", value_parser = parse_names, action = clap::ArgAction::Append)]
    pub together: Vec<Vec<String>>,
    /// Space kept free for the journal and Nix's database: bytes, or with K/M/G (binary: 64M).
    /// Default: 1% of the store's filesystem, at least 1M, at most 256M.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub reserve: Option<u64>,
    /// Whether stepwise may reboot when only a reboot frees the booted system's packages.
    #[arg(long, value_enum, default_value_t = RebootPolicy::Never)]
    pub reboot: RebootPolicy,
    /// Keep the starting generation as a rollback generation (`nixos-rebuild --rollback`) when the
    /// plan shows room for it beside the target; otherwise the run goes on and says why not.
    #[arg(long)]
    pub keep_previous: bool,
}

#[derive(Debug, Clone, Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub system: SystemArgs,
    #[command(flatten)]
    pub room: RoomArgs,
    /// How the target is activated at the end. Intermediate steps are switched to, except with
    /// `test`, which never touches the boot loader (accepted only when the running system is the
    /// booted one, and not with --reboot when-needed).
    #[arg(long, value_enum, default_value_t = Action::Switch)]
    pub action: Action,
    /// auto: plain upgrade when it fits, else steps; direct: plain only; stepwise: steps only.
    #[arg(long, value_enum, default_value_t = Strategy::Auto)]
    pub strategy: Strategy,
    /// On a build failure: walk back to the starting generation, or stay at the last good step.
    #[arg(long, value_enum, default_value_t = OnFailure::Unwind)]
    pub on_failure: OnFailure,
    /// When switching to a generation leaves units failed (switch-to-configuration exit 4):
    /// continue (the outcome names them; exit 5 if the target's own switch did), or stop there
    /// (exit 3) until `stepwise resume --accept-failed-units` or `stepwise unwind`.
    #[arg(long, value_enum, default_value_t = OnFailedUnits::Continue)]
    pub on_failed_units: OnFailedUnits,
    /// The command run for a reboot, split on whitespace (no shell).
    #[arg(long, value_name = "CMD", default_value = "systemctl reboot")]
    pub reboot_command: String,
    /// Local times between which a reboot may happen, LOWER-UPPER (e.g. 01:00-05:00; may cross
    /// midnight). Outside it a run that needs a reboot stops (exit 3). Default: any time.
    #[arg(long, value_name = "HH:MM-HH:MM", value_parser = crate::cli::config::RebootWindow::parse)]
    pub reboot_window: Option<crate::cli::config::RebootWindow>,
    /// The boot partition (e.g. /boot). When it is another filesystem than the store's, check
    /// before changing anything that it has room for the kernels and initrds the run adds (sized
    /// from the running system's); without room: exit 3. Default: no check.
    #[arg(long, value_name = "PATH")]
    pub boot_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    Auto,
    Direct,
    Stepwise,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    Unwind,
    Hold,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailedUnits {
    Continue,
    Stop,
}

/// `stepwise resume`'s options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ResumeArgs {
    /// Go on past a generation whose switch left units failed, where a run with
    /// `--on-failed-units stop` waits.
    #[arg(long)]
    pub accept_failed_units: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebootPolicy {
    Never,
    WhenNeeded,
}

/// `openssl,curl` → one group of names (kept apart from the next `--together`).
pub fn parse_names(s: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = s.split(',').map(|n| n.trim().to_string()).collect();
    if names.iter().any(String::is_empty) {
        return Err(format!(
            "{s:?} has an empty name: write names separated by commas, e.g. openssl,curl"
        ));
    }
    Ok(names)
}

/// `64M` → 67108864. Binary units; a bare number is bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown unit {c:?} in {s:?}: use a number of bytes or K, M, G, T (binary), e.g. 64M")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| {
        format!("{s:?} is not a size: use a number of bytes or K, M, G, T (binary), e.g. 64M")
    })?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn journal_before_or_after_command() {
        let a = Cli::try_parse_from(["stepwise", "--journal", "/j", "status"]).unwrap();
        let b = Cli::try_parse_from(["stepwise", "status", "--journal", "/j"]).unwrap();
        assert_eq!(a.journal, PathBuf::from("/j"));
        assert_eq!(b.journal, PathBuf::from("/j"));
    }

    #[test]
    fn exactly_one_target() {
        assert!(Cli::try_parse_from(["stepwise", "plan"]).is_err());
        assert!(
            Cli::try_parse_from(["stepwise", "plan", "--target", "/a.drv", "--flake", "."])
                .is_err()
        );
        assert!(
            Cli::try_parse_from(["stepwise", "plan", "--flake", ".", "--attr", "x"]).is_err(),
            "--attr only with --file"
        );
        let c = Cli::try_parse_from(["stepwise", "upgrade", "--file", "f.nix", "--attr", "web"])
            .unwrap();
        let Command::Upgrade(u) = c.command else {
            panic!()
        };
        assert_eq!(
            u.target.spec(),
            TargetSpec::File {
                file: "f.nix".into(),
                attr: Some("web".into())
            }
        );
        let c = Cli::try_parse_from(["stepwise", "plan", "--flake", "/etc/nixos#web"]).unwrap();
        let Command::Plan(p) = c.command else {
            panic!()
        };
        assert_eq!(
            p.target.spec(),
            TargetSpec::Flake {
                reference: "/etc/nixos".into(),
                host: Some("web".into())
            }
        );
    }
}
