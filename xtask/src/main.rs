//! `cargo run -p xtask -- gen-docs [--out DIR]`: regenerate the man pages and shell completions
//! (default DIR: the repository's doc/). `tests/cli_docs.rs` fails when they are out of step.

mod docs;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["gen-docs"] => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask sits in the repository")
            .join("doc"),
        ["gen-docs", "--out", dir] => PathBuf::from(dir),
        _ => {
            eprintln!("usage: cargo run -p xtask -- gen-docs [--out DIR]");
            return ExitCode::from(2);
        }
    };
    match docs::generate(stepwise::cli::Cli::command(), &out) {
        Ok(files) => {
            for f in files {
                println!("{}", out.join(f).display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask gen-docs: {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}
