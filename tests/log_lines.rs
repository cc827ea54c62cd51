//! The log renderer (stderr not a terminal): golden output of a run with a build, an
//! activation whose units failed, a failed build with its log tail and a stop, as plain lines and
//! with journald priority prefixes.

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use stepwise::output::log_lines::{LogEvent, LogLines};

fn golden(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(
        got,
        want,
        "{} differs (UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

/// A scripted run; the clock advances by the given seconds before each event.
fn render(journal: bool) -> String {
    let now = Rc::new(Cell::new(Duration::ZERO));
    let clock = {
        let now = now.clone();
        Box::new(move || now.get())
    };
    let mut log = LogLines::with_clock(Vec::new(), journal, clock);
    let events: Vec<(u64, LogEvent)> = vec![
        (
            0,
            LogEvent::Info("upgrading to /nix/store/…-nixos-system-vps-24.11 in 2 steps"),
        ),
        (
            0,
            LogEvent::Starting {
                step: "G1",
                what: "realise step 1 (3 packages)",
            },
        ),
        (
            1,
            LogEvent::Child {
                line: "these 2 paths will be fetched (12.3 MiB download, 40.1 MiB unpacked):",
            },
        ),
        (
            0,
            LogEvent::Child {
                line:
                    "copying path '/nix/store/abc-openssl-3.0.13' from 'https://cache.nixos.org'...",
            },
        ),
        (
            0,
            LogEvent::Child {
                line: "warning: \u{1b}[1mignoring untrusted substituter\u{1b}[0m",
            },
        ),
        (
            64,
            LogEvent::Done {
                added: Some(42 << 20),
                freed: None,
                note: "1 built, 2 copied",
            },
        ),
        (
            0,
            LogEvent::Starting {
                step: "G1",
                what: "switch to step 1",
            },
        ),
        (
            2,
            LogEvent::Child {
                line: "activating the configuration...",
            },
        ),
        (
            0,
            LogEvent::Child {
                line: "warning: the following units failed: a.service, b.service",
            },
        ),
        (
            1,
            LogEvent::Done {
                added: None,
                freed: None,
                note: "switch (units failed: a.service, b.service)",
            },
        ),
        (
            0,
            LogEvent::Starting {
                step: "G1",
                what: "collect old packages",
            },
        ),
        (
            0,
            LogEvent::Done {
                added: None,
                freed: Some(30 << 20),
                note: "",
            },
        ),
        (
            0,
            LogEvent::Starting {
                step: "G2",
                what: "realise step 2 (1 package)",
            },
        ),
        (
            3,
            LogEvent::Child {
                line: "building '/nix/store/xyz-broken-1.0.drv'...",
            },
        ),
        (
            0,
            LogEvent::Child {
                line: "error: builder for '/nix/store/xyz-broken-1.0.drv' failed with exit code 1",
            },
        ),
        (
            0,
            LogEvent::Failed {
                message: "building xyz-broken-1.0.drv failed:\nmake: *** [all] Error 1\nlast line",
            },
        ),
        (
            0,
            LogEvent::Starting {
                step: "G1",
                what: "set the profile back to step 1",
            },
        ),
        (3725, LogEvent::Interrupted { why: "SIGTERM" }),
        (
            0,
            LogEvent::Warning("stopped by a signal: `stepwise resume` continues the run"),
        ),
    ];
    for (secs, e) in events {
        now.set(now.get() + Duration::from_secs(secs));
        log.event(e).unwrap();
    }
    String::from_utf8(log.into_inner()).unwrap()
}

#[test]
fn plain_lines_for_a_file() {
    let got = render(false);
    assert!(!got.contains('<'), "no priorities outside the journal");
    golden("log_plain.txt", &got);
}

#[test]
fn priority_prefixes_for_the_journal() {
    let got = render(true);
    for line in got.lines() {
        assert!(
            ["<3>", "<4>", "<6>", "<7>"]
                .iter()
                .any(|p| line.starts_with(p)),
            "{line:?} has no priority"
        );
    }
    golden("log_journal.txt", &got);
}
