//! Golden files under tests/golden/. `STEPWISE_BLESS=1 cargo test --test NAME` rewrites the ones
//! the test produces; review the diff before committing it.
// Each test crate that includes this uses only some of it.
#![allow(dead_code)]

use std::path::PathBuf;

/// Compare `got` with tests/golden/`name`, or write it there under `STEPWISE_BLESS=1`.
pub fn check(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var("STEPWISE_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (STEPWISE_BLESS=1 creates it)", path.display()));
    assert_eq!(
        got,
        want,
        "{} differs (STEPWISE_BLESS=1 rewrites it; review the diff)",
        path.display()
    );
}

/// `stdout` as the one JSON document of a one-shot command: exactly one line, an object carrying
/// the format version; returned pretty-printed for a readable golden file.
pub fn one_document(stdout: &str, kind: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {stdout:?}"));
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout:?}");
    assert_eq!(v["stepwise"], kind, "{stdout}");
    assert_eq!(
        v["version"],
        stepwise::output::JSON_FORMAT_VERSION,
        "{stdout}"
    );
    serde_json::to_string_pretty(&v).unwrap() + "\n"
}
