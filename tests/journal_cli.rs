//! `stepwise journal show | verify | export` through the binary: output, exit codes, messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
    let lines: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["version"], 1);
    assert_eq!(lines[1]["ok"], true);
    assert_eq!(lines[1]["records"], 37);

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
