//! The terminal's progress display rendered over a writer: the lines printed above the bar, the
//! bar after every event (`| prefix | message`) and the closing summary of what Nix fetched,
//! against tests/golden/progress_terminal.txt (STEPWISE_BLESS=1 rewrites it).

#[path = "common/golden.rs"]
mod golden;

use stepwise::output::log_lines::LogEvent;
use stepwise::output::progress::TerminalView;

const MIB: u64 = 1024 * 1024;

/// A stepwise run's events as the engine reports them: a step whose realise fetches three paths,
/// its activation, and a second step whose realise fails after one of its two paths.
fn events() -> Vec<LogEvent<'static>> {
    vec![
        LogEvent::Info("upgrading to /nix/store/…-nixos-system-vps-24.11 (2 steps)"),
        LogEvent::Starting {
            step: "step 1/2 (openssl)",
            what: "realise step 1",
        },
        LogEvent::Child {
            line: "these 3 paths will be fetched (3.00 MiB download, 9.00 MiB unpacked):",
        },
        LogEvent::Child {
            line: "  /nix/store/abc-openssl-3.0.13",
        },
        LogEvent::Child {
            line: "copying path '/nix/store/abc-openssl-3.0.13' from 'https://cache.nixos.org'...",
        },
        LogEvent::Child {
            line: "copying path '/nix/store/def-curl-8.6.0' from 'https://cache.nixos.org'...",
        },
        LogEvent::Child {
            line: "copying path '/nix/store/ghi-git-2.44.0' from 'https://cache.nixos.org'...",
        },
        LogEvent::Child {
            line: "building '/nix/store/jkl-system-path.drv'...",
        },
        LogEvent::Done {
            added: Some(9 * MIB),
            freed: None,
            note: "1 built, 3 copied",
        },
        LogEvent::Starting {
            step: "step 1/2 (openssl)",
            what: "switch to step 1",
        },
        LogEvent::Child {
            line: "activating the configuration...",
        },
        LogEvent::Done {
            added: None,
            freed: None,
            note: "switch",
        },
        LogEvent::Starting {
            step: "step 2/2 (the target)",
            what: "realise step 2",
        },
        LogEvent::Child {
            line: "this path will be fetched (0.5 MiB download, 1.0 MiB unpacked):",
        },
        LogEvent::Child {
            line: "copying path '/nix/store/mno-broken-1.0' from 'https://cache.nixos.org'...",
        },
        LogEvent::Failed {
            message: "error: a substituter failed",
        },
    ]
}

#[test]
fn terminal_display_renders_lines_bar_and_bytes_fetched() {
    let mut view = TerminalView::new(Vec::new());
    let mut bars = Vec::new();
    for e in events() {
        view.event(e).unwrap();
        bars.push(format!("| {} | {}", view.prefix(), view.message()));
    }
    let summary = view.summary().expect("Nix fetched something");
    let printed = String::from_utf8(view.into_inner()).unwrap();
    let text = format!(
        "printed above the bar:\n{printed}\nthe bar after each event:\n{}\nsummary: {summary}\n",
        bars.join("\n")
    );
    golden::check("progress_terminal.txt", &text);
    // 3 MiB for the step that ended well, and the one path (0.5 MiB) the failed one copied.
    assert!(summary.contains("fetched 3.5 MiB"), "{summary}");
    assert!(summary.contains("4 path(s)"), "{summary}");
}

#[test]
fn nothing_fetched_says_nothing() {
    let mut view = TerminalView::new(Vec::new());
    view.event(LogEvent::Starting {
        step: "G0",
        what: "collect",
    })
    .unwrap();
    view.event(LogEvent::Done {
        added: None,
        freed: Some(MIB),
        note: "",
    })
    .unwrap();
    assert_eq!(view.summary(), None);
    assert!(!view.prefix().contains("fetched"), "{}", view.prefix());
}
