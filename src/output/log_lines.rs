//! The run's progress as a log: what stepwise writes on stderr when it is not a terminal (a
//! systemd unit's journal, a file). journald shows a line only once it ends, so every line is
//! complete when written: one when a transition starts, one when it ends (what it added and
//! freed, how long it took), and Nix's own output in between, each line prefixed with the step.
//!
//! When stderr is the journal (`JOURNAL_STREAM` names its device and inode, as systemd sets it
//! for a unit's stdout/stderr), every line starts with an sd-daemon priority prefix: `<6>` info
//! (starts, ends, notes), `<4>` warnings (units that failed to start, a stop), `<3>` errors (a
//! failed transition and its log), `<7>` Nix's lines, except Nix's own `error:`/`warning:`
//! lines, which keep their weight (`<3>`/`<4>`). Nothing is buffered beyond one line.

use std::io::Write;
use std::time::{Duration, Instant};

/// How a log line weighs (sd-daemon(3) priorities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Error = 3,
    Warning = 4,
    Info = 6,
    Debug = 7,
}

/// What happens, as the renderer is told it. `step` is how the transition's generation is
/// named in the run (`G1`, `step 2/5`); `what` describes the transition.
#[derive(Debug, Clone, Copy)]
pub enum LogEvent<'a> {
    Starting {
        step: &'a str,
        what: &'a str,
    },
    /// The transition that started last ended well.
    Done {
        added: Option<u64>,
        freed: Option<u64>,
        note: &'a str,
    },
    /// The transition that started last failed; `message` may span lines (a build log's tail).
    Failed {
        message: &'a str,
    },
    /// The transition that started last was stopped (a signal): `resume` redoes it.
    Interrupted {
        why: &'a str,
    },
    /// One line of Nix's (or switch-to-configuration's) output.
    Child {
        line: &'a str,
    },
    Info(&'a str),
    Warning(&'a str),
    Error(&'a str),
}

/// Whether `JOURNAL_STREAM` (`DEVICE:INODE`, decimal) names the file stderr is, as
/// `sd_journal_stream_fd` documents it: only then is stderr the journal (a unit's stderr
/// redirected to a file keeps the variable but not the file).
pub fn journal_stream_matches(journal_stream: Option<&str>, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = journal_stream.and_then(|v| v.trim().split_once(':')) else {
        return false;
    };
    d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
}

/// Whether this process's stderr is connected to the journal.
pub fn stderr_is_journal() -> bool {
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    let var = std::env::var("JOURNAL_STREAM").ok();
    journal_stream_matches(var.as_deref(), st.st_dev, st.st_ino)
}

/// `1m05s`, `3.2s`, `2h07m`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{:.1}s", d.as_secs_f64()),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The line with terminal escapes (colours, cursor moves) and other control characters taken
/// out: a log is read later, elsewhere.
fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // CSI: ESC [ parameters final-byte.
            '\u{1b}' if chars.peek() == Some(&'[') => {
                chars.next();
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The renderer over any writer; a clock seam makes its durations testable.
pub struct LogLines<W: Write> {
    w: W,
    journal: bool,
    clock: Box<dyn FnMut() -> Duration>,
    /// The transition under way: its step, description and start.
    current: Option<(String, String, Duration)>,
}

impl<W: Write> LogLines<W> {
    /// `journal`: prefix every line with its priority (stderr is the journal).
    pub fn new(w: W, journal: bool) -> Self {
        let start = Instant::now();
        Self::with_clock(w, journal, Box::new(move || start.elapsed()))
    }

    /// `clock` gives the time since any fixed point.
    pub fn with_clock(w: W, journal: bool, clock: Box<dyn FnMut() -> Duration>) -> Self {
        LogLines {
            w,
            journal,
            clock,
            current: None,
        }
    }

    /// Write one line per line of `text`, each with the priority prefix when writing to the
    /// journal, and flush (the line is complete: journald may show it now).
    fn lines(&mut self, p: Priority, text: &str) -> std::io::Result<()> {
        for line in text.lines() {
            if self.journal {
                write!(self.w, "<{}>", p as u8)?;
            }
            writeln!(self.w, "{}", clean(line))?;
        }
        self.w.flush()
    }

    fn step_prefix(&self) -> String {
        match &self.current {
            Some((step, _, _)) => format!("[{step}] "),
            None => String::new(),
        }
    }

    /// `[step] what` of the transition under way, and how long it has run; clears it.
    fn end_current(&mut self) -> (String, Duration) {
        let now = (self.clock)();
        match self.current.take() {
            Some((step, what, start)) => (format!("[{step}] {what}"), now.saturating_sub(start)),
            None => ("stepwise".to_string(), Duration::ZERO),
        }
    }

    pub fn event(&mut self, e: LogEvent<'_>) -> std::io::Result<()> {
        match e {
            LogEvent::Starting { step, what } => {
                let now = (self.clock)();
                self.current = Some((step.to_string(), what.to_string(), now));
                self.lines(Priority::Info, &format!("[{step}] {what}: started"))
            }
            LogEvent::Done { added, freed, note } => {
                let (head, took) = self.end_current();
                let mut parts = vec![format!("took {}", human_duration(took))];
                if let Some(a) = added.filter(|a| *a > 0) {
                    parts.push(format!("added {}", crate::plan::report::human_bytes(a)));
                }
                if let Some(f) = freed.filter(|f| *f > 0) {
                    parts.push(format!("freed {}", crate::plan::report::human_bytes(f)));
                }
                if !note.is_empty() {
                    parts.push(note.to_string());
                }
                self.lines(
                    Priority::Info,
                    &format!("{head}: done ({})", parts.join(", ")),
                )
            }
            LogEvent::Failed { message } => {
                let (head, took) = self.end_current();
                let text = format!("{head}: FAILED after {}\n{message}", human_duration(took));
                let indented: Vec<String> = text
                    .lines()
                    .enumerate()
                    .map(|(i, l)| {
                        if i == 0 {
                            l.to_string()
                        } else {
                            format!("  {l}")
                        }
                    })
                    .collect();
                self.lines(Priority::Error, &indented.join("\n"))
            }
            LogEvent::Interrupted { why } => {
                let (head, took) = self.end_current();
                let text = format!(
                    "{head}: interrupted after {} ({why}); `stepwise resume` redoes it",
                    human_duration(took)
                );
                self.lines(Priority::Warning, &text)
            }
            LogEvent::Child { line } => {
                let trimmed = line.trim_start();
                let p = if trimmed.starts_with("error:") {
                    Priority::Error
                } else if trimmed.starts_with("warning:") {
                    Priority::Warning
                } else {
                    Priority::Debug
                };
                let text = format!("{}{line}", self.step_prefix());
                // One child line is one log line, whatever it holds.
                self.lines(p, &text.replace(['\n', '\r'], " "))
            }
            LogEvent::Info(m) => self.lines(Priority::Info, m),
            LogEvent::Warning(m) => self.lines(Priority::Warning, m),
            LogEvent::Error(m) => self.lines(Priority::Error, m),
        }
    }

    pub fn into_inner(self) -> W {
        self.w
    }
}

/// How stepwise reports progress on this process's stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StderrKind {
    /// A terminal: progress bars.
    Terminal,
    /// A file or a pipe: complete plain lines.
    Plain,
    /// The journal: complete lines with priority prefixes.
    Journal,
}

impl StderrKind {
    pub fn detect() -> Self {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            StderrKind::Terminal
        } else if stderr_is_journal() {
            StderrKind::Journal
        } else {
            StderrKind::Plain
        }
    }
}

/// The log renderer for this process's stderr, or `None` on a terminal (where the progress
/// display is used instead). What the CLI calls for `upgrade`, `resume` and `unwind`.
pub fn stderr_log() -> Option<LogLines<std::io::Stderr>> {
    match StderrKind::detect() {
        StderrKind::Terminal => None,
        kind => Some(LogLines::new(
            std::io::stderr(),
            kind == StderrKind::Journal,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_stderr_itself() {
        assert!(journal_stream_matches(Some("8:12345"), 8, 12345));
        assert!(!journal_stream_matches(Some("8:12345"), 8, 12346));
        assert!(!journal_stream_matches(Some("9:12345"), 8, 12345));
        assert!(!journal_stream_matches(Some("garbage"), 8, 12345));
        assert!(!journal_stream_matches(None, 8, 12345));
    }

    #[test]
    fn stderr_redirected_to_a_file_is_not_the_journal() {
        let f = tempfile::tempfile().unwrap();
        let st = nix::sys::stat::fstat(&f).unwrap();
        let var = format!("{}:{}", st.st_dev, st.st_ino);
        assert!(journal_stream_matches(Some(&var), st.st_dev, st.st_ino));
        let other = tempfile::tempfile().unwrap();
        let st2 = nix::sys::stat::fstat(&other).unwrap();
        assert!(!journal_stream_matches(Some(&var), st2.st_dev, st2.st_ino));
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(Duration::from_millis(3200)), "3.2s");
        assert_eq!(human_duration(Duration::from_secs(65)), "1m05s");
        assert_eq!(human_duration(Duration::from_secs(7620)), "2h07m");
    }

    #[test]
    fn escapes_and_controls_are_taken_out() {
        assert_eq!(clean("\u{1b}[31;1merror:\u{1b}[0m x\u{7}"), "error: x");
        assert_eq!(clean("a\tb"), "a\tb");
    }
}
