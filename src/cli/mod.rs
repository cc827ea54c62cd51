//! Entry point: parse the command line, set up output, dispatch, map the result to an exit code.

pub mod args;
pub mod checks;
pub mod config;
pub mod drv_inspect;
mod journal_cmd;
pub mod plan_cmd;
mod run_cmd;
mod to_journal;

use std::process::ExitCode;

use clap::FromArgMatches;

pub use args::{Cli, Command, DrvCommand, JournalCommand};

use crate::error::{Error, Exit};
use crate::output::{self, Framing, Output};

pub fn main() -> ExitCode {
    // The settings file may supply plan's and upgrade's target, so those are checked after merging.
    let matches = match config::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return usage_error(e),
    };
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    init_tracing(&cli);
    let mut out = Output::framed(cli.json, framing(&cli.command));
    let result = config::apply_config_file(&mut cli, &matches)
        .and_then(|()| checks::before_run(&cli))
        .and_then(|()| resolve_journal(&mut cli))
        .and_then(|()| run(&cli, &mut out));
    match result {
        Ok(exit) => ExitCode::from(exit as u8),
        // The reader of a read-only command went away (`| head -1`): it has what it wanted.
        Err(e) if reads_only(&cli.command) && output::is_stdout_closed(&e) => {
            ExitCode::from(Exit::Done as u8)
        }
        Err(e) => {
            out.error(&e);
            ExitCode::from(e.exit() as u8)
        }
    }
}

/// clap's usage errors exit 2 with clap's message (--help and --version exit 0). A `--json`
/// caller also gets them as the versioned error event on stdout, as for every other error.
fn usage_error(e: clap::Error) -> ExitCode {
    // use_stderr: an error, not the help or version text asked for.
    if e.use_stderr() && json_requested(std::env::args_os()) {
        let message = e.render().to_string();
        Output::usage_error(message.trim_end(), Exit::BadInput);
    }
    let _ = e.print();
    // clap's own codes: 0 for --help/--version, 2 (Exit::BadInput) for usage errors.
    ExitCode::from(e.exit_code() as u8)
}

/// How to run Nix for this command line: with the user's `--nix-option`s.
pub(crate) fn nix_config(cli: &Cli) -> crate::effects::nix::cli::NixCliConfig {
    crate::effects::nix::cli::NixCliConfig {
        // clap hands them over flat, two values an occurrence.
        nix_options: cli
            .nix_option
            .chunks_exact(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect(),
        ..Default::default()
    }
}

/// One-shot commands print one `--json` document; those that run (or stream records) print lines.
fn framing(command: &Command) -> Framing {
    match command {
        Command::Plan(_)
        | Command::Status
        | Command::Drv(_)
        | Command::Journal(JournalCommand::Verify) => Framing::Document,
        Command::Upgrade(_)
        | Command::Resume(_)
        | Command::Unwind
        | Command::Journal(JournalCommand::Show { .. } | JournalCommand::Export) => Framing::Lines,
    }
}

/// Commands that change nothing: when their stdout closes, there is nothing left to do.
/// (A run goes on whoever stops listening: its progress is in the journal.)
fn reads_only(command: &Command) -> bool {
    !matches!(
        command,
        Command::Upgrade(_) | Command::Resume(_) | Command::Unwind
    )
}

/// Whether `--json` is among the arguments (before a `--`), when clap could not parse them.
fn json_requested(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    args.into_iter()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

fn init_tracing(cli: &Cli) {
    let level = if cli.quiet {
        "error"
    } else {
        match cli.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STEPWISE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// The journal's path, checked and spelled one way (absolute, directories resolved) before any
/// command opens it; the commands that write it also check who else could write beside it.
fn resolve_journal(cli: &mut Cli) -> Result<(), Error> {
    let writes = match &cli.command {
        Command::Upgrade(_) | Command::Resume(_) | Command::Unwind => true,
        Command::Status | Command::Journal(_) => false,
        Command::Plan(_) | Command::Drv(_) => return Ok(()),
    };
    cli.journal = crate::effects::journal::location::checked(&cli.journal, writes)?;
    Ok(())
}

/// Dispatch one command. Returns the exit code of a successful command (a finished unwind is 1 for
/// `upgrade`, 0 for `unwind`).
pub fn run(cli: &Cli, out: &mut Output) -> Result<Exit, Error> {
    match &cli.command {
        Command::Plan(args) => plan_cmd::run(args, cli.json, nix_config(cli)),
        Command::Upgrade(a) => run_cmd::upgrade(cli, a, out),
        Command::Resume(a) => run_cmd::resume(cli, out, a),
        Command::Unwind => run_cmd::unwind(cli, out),
        Command::Status => run_cmd::status(cli, out),
        Command::Journal(j) => journal_cmd::run(&cli.journal, cli.json, j),
        Command::Drv(DrvCommand::Inspect {
            file,
            store_dir,
            aterm,
        }) => drv_inspect::run(file, store_dir.as_deref(), *aterm, out),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn nix_options_pair_up_in_order() {
        let cli = Cli::try_parse_from([
            "stepwise",
            "--nix-option",
            "tarball-ttl",
            "0",
            "--nix-option",
            "builders",
            "ssh://b x86_64-linux",
            "upgrade",
            "--flake",
            ".",
        ])
        .unwrap();
        assert_eq!(
            nix_config(&cli).nix_options,
            [
                ("tarball-ttl".to_string(), "0".to_string()),
                ("builders".to_string(), "ssh://b x86_64-linux".to_string()),
            ]
        );
        // A name without a value is a usage error, not a silently dropped setting.
        let e = Cli::try_parse_from(["stepwise", "--nix-option", "builders", "status"]);
        assert_eq!(e.unwrap_err().exit_code(), 2);
        // After COMMAND it is refused, not silently dropped.
        let e = Cli::try_parse_from(["stepwise", "status", "--nix-option", "a", "b"]);
        assert_eq!(e.unwrap_err().exit_code(), 2);
    }
}
