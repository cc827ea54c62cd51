//! Entry point: parse the command line, set up output, dispatch, map the result to an exit code.

pub mod args;
pub mod config;
pub mod drv_inspect;
mod journal_cmd;
pub mod plan_cmd;
mod run_cmd;

use std::process::ExitCode;

use clap::FromArgMatches;

pub use args::{Cli, Command, DrvCommand, JournalCommand};

use crate::error::{Error, Exit};
use crate::output::Output;

pub fn main() -> ExitCode {
    // clap exits 2 on usage errors itself (and 0 for --help/--version).
    // The settings file may supply plan's and upgrade's target, so those are checked after merging.
    let matches = config::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_tracing(&cli);
    let mut out = Output::new(cli.json);
    let result = config::apply_config_file(&mut cli, &matches).and_then(|()| run(&cli, &mut out));
    match result {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(e) => {
            out.error(&e);
            ExitCode::from(e.exit() as u8)
        }
    }
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

/// Dispatch one command. Returns the exit code of a successful command (a finished unwind is 1 for
/// `upgrade`, 0 for `unwind`).
pub fn run(cli: &Cli, out: &mut Output) -> Result<Exit, Error> {
    match &cli.command {
        Command::Plan(args) => plan_cmd::run(args, cli.json),
        Command::Upgrade(a) => run_cmd::upgrade(cli, a, out),
        Command::Resume => run_cmd::resume(cli, out),
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
