//! The checked-in man pages and completions (doc/) are those the current command line generates.
//! On failure: `cargo run -p xtask -- gen-docs` and commit doc/.

#[path = "../xtask/src/docs.rs"]
mod docs;

use std::path::Path;

use clap::CommandFactory;

#[test]
fn generated_docs_are_in_step_with_the_cli() {
    let fresh = tempfile::tempdir().unwrap();
    let files = docs::generate(stepwise::cli::Cli::command(), fresh.path()).unwrap();
    let checked_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("doc");
    let mut stale = Vec::new();
    for rel in &files {
        let want = std::fs::read(fresh.path().join(rel)).unwrap();
        match std::fs::read(checked_in.join(rel)) {
            Ok(have) if have == want => {}
            Ok(_) => stale.push(format!("{} differs", rel.display())),
            Err(e) => stale.push(format!("{} missing: {e}", rel.display())),
        }
    }
    // A page of a removed subcommand must go too.
    for dir in ["man", "completions"] {
        for entry in std::fs::read_dir(checked_in.join(dir)).unwrap() {
            let rel = Path::new(dir).join(entry.unwrap().file_name());
            if !files.contains(&rel) {
                stale.push(format!("{} is no longer generated", rel.display()));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "doc/ is out of step with the command line: {stale:?}\nrun `cargo run -p xtask -- gen-docs` and commit doc/"
    );
}

#[test]
fn pages_cover_every_subcommand_and_the_settings_file() {
    let fresh = tempfile::tempdir().unwrap();
    let files = docs::generate(stepwise::cli::Cli::command(), fresh.path()).unwrap();
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    for page in [
        "man/stepwise.1",
        "man/stepwise-upgrade.1",
        "man/stepwise-journal-show.1",
        "man/stepwise-drv-inspect.1",
        "completions/stepwise.bash",
        "completions/_stepwise",
        "completions/stepwise.fish",
    ] {
        assert!(names.iter().any(|n| n == page), "{page} not in {names:?}");
    }
    let top = std::fs::read_to_string(fresh.path().join("man/stepwise.1")).unwrap();
    assert!(top.contains("/etc/stepwise/config.toml") && top.contains("EXIT STATUS"));
    let bash = std::fs::read_to_string(fresh.path().join("completions/stepwise.bash")).unwrap();
    assert!(bash.contains("--reboot-window") && bash.contains("--config"));
}
