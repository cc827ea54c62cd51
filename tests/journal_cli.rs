//! `stepwise journal show | verify | export` through the binary: output, exit codes, messages.

#[path = "common/golden.rs"]
mod golden;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn stepwise(journal: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stepwise"))
        .arg("--journal")
        .arg(journal)
        .args(args)
        .env_remove("STEPWISE_JOURNAL")
        .output()
        .unwrap()
}

fn golden_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal/v1.redb"),
        &path,
    )
    .unwrap();
    (dir, path)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn missing_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.redb");
    let o = stepwise(&path, &["journal", "show"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains(&format!("no runs recorded at {}", path.display())));
    let o = stepwise(&path, &["journal", "export"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        text(&o.stdout).lines().count(),
        1,
        "only the version header"
    );
    let o = stepwise(&path, &["journal", "verify"]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains("no such file") && err.contains("hint:"),
        "{err}"
    );
    assert!(!path.exists(), "a read command created the journal");
}

#[test]
fn verify_sound_and_damaged() {
    let (_d, path) = golden_copy();
    let o = stepwise(&path, &["journal", "verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("sound (2 run(s), 37 record(s), hash chain intact)"));
    let o = stepwise(&path, &["--json", "journal", "verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let doc = golden::one_document(&text(&o.stdout), "journal-verify");
    let at = path.display().to_string();
    golden::check("journal_verify.json", &doc.replace(&at, "$JOURNAL"));

    // Truncate the file: exit 4, saying what.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let o = stepwise(&path, &["journal", "verify"]);
    assert_eq!(o.status.code(), Some(4));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("journal {}", path.display())),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let o = stepwise(&path, &["journal", "show"]);
    assert_eq!(o.status.code(), Some(4));
}

#[test]
fn show_and_export() {
    let (_d, path) = golden_copy();
    let o = stepwise(&path, &["journal", "show"]);
    assert_eq!(o.status.code(), Some(0));
    let expected = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal/v1.show.txt"),
    )
    .unwrap();
    assert_eq!(text(&o.stdout), text(&expected));

    let o = stepwise(&path, &["journal", "show", "--run", "2"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).starts_with("run 2: "));

    let o = stepwise(&path, &["journal", "show", "--run", "9"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("no run 9"), "{}", text(&o.stderr));

    let o = stepwise(&path, &["journal", "export"]);
    assert_eq!(o.status.code(), Some(0));
    let expected = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal/v1.export.jsonl"),
    )
    .unwrap();
    assert_eq!(text(&o.stdout), text(&expected));

    let o = stepwise(&path, &["journal", "show", "--json", "--run", "1"]);
    let lines: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["stepwise"], "journal-show");
    assert_eq!(lines[1]["outcome"], "reachedTarget");
    assert_eq!(lines[1]["freed"], 240u64 << 20);
}

/// `status --json` with no run recorded: one document saying so.
#[test]
fn status_without_a_journal_is_one_document() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.redb");
    let o = stepwise(&path, &["--json", "status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let doc = golden::one_document(&text(&o.stdout), "status");
    golden::check("status_no_run.json", &doc);
    assert!(!path.exists(), "a read command created the journal");
}

/// Run stepwise with stdout a pipe whose reader has already gone, as `| head -1` leaves it once
/// head has its line: every write fails with EPIPE (Rust ignores SIGPIPE, so no signal ends it).
fn with_stdout_closed(journal: &Path, args: &[&str]) -> Output {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_stepwise"))
        .arg("--journal")
        .arg(journal)
        .args(args)
        .env_remove("STEPWISE_JOURNAL")
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// A reader that stops reading is not an error of a command that only reads: exit 0, quietly
/// (no panic, no "Broken pipe" on stderr), whatever the command and framing.
#[test]
fn readers_end_quietly_when_stdout_closes() {
    let (_d, path) = golden_copy();
    let drv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/drv/golden/358n1ffysshbxpnfjdjf6wnblxh2r82w-simple.drv");
    let drv = drv.to_str().unwrap();
    let store = "/tmp/stepwise-drv-fixtures/store";
    for args in [
        &["journal", "show"][..],
        &["--json", "journal", "show"],
        &["journal", "export"],
        &["journal", "verify"],
        &["--json", "journal", "verify"],
        &["drv", "inspect", "--store-dir", store, drv],
        &["--json", "drv", "inspect", "--store-dir", store, drv],
        &["drv", "inspect", "--aterm", "--store-dir", store, drv],
    ] {
        let o = with_stdout_closed(&path, args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
        assert_eq!(text(&o.stderr), "", "{args:?}");
    }
    // status, with and without a run to report.
    let dir = tempfile::tempdir().unwrap();
    for args in [&["status"][..], &["--json", "status"]] {
        let o = with_stdout_closed(&dir.path().join("nope.redb"), args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
        assert_eq!(text(&o.stderr), "", "{args:?}");
    }
    // A failure is still one: exit 2 for a run that is not there, said on stderr.
    let o = with_stdout_closed(&path, &["journal", "show", "--run", "9"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("no run 9"));
}
