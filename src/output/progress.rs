//! The live display on a terminal, apart from indicatif so that it renders over any writer: the
//! lines printed above the bar (one per transition done, as a log gets them), the bar's text
//! (the transition under way, what Nix is fetching, Nix's latest line) and the summary of what
//! Nix fetched from the binary caches.
//!
//! Bytes fetched are what Nix announces before it substitutes: "these N paths will be fetched
//! (X download, Y unpacked):" (Nix 2.8 writes `12.34 MiB`, later versions `12.3 MiB` or
//! `512.0 KiB`). A realise that ends well fetched all of X; one that fails or is stopped counts
//! the share of the N paths Nix said it was copying (`copying path '…'`).

use std::io::Write;

use super::log_lines::LogEvent;
use crate::plan::report::human_bytes;

/// What Nix announced it will fetch for the transition under way, and how far it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fetching {
    paths: u64,
    download: u64,
    copied: u64,
}

impl Fetching {
    /// The bytes fetched so far, counting each copied path as an equal share.
    fn so_far(&self) -> u64 {
        if self.paths == 0 {
            return 0;
        }
        self.download / self.paths * self.copied.min(self.paths)
    }
}

/// `these 4 paths will be fetched (1.20 MiB download, 3.40 MiB unpacked):` → (4, bytes of
/// 1.20 MiB); `this path will be fetched (…)` → one path.
pub fn will_fetch(line: &str) -> Option<(u64, u64)> {
    let line = line.trim();
    let (head, rest) = line.split_once(" will be fetched (")?;
    let paths = match head {
        "this path" => 1,
        _ => head
            .strip_prefix("these ")?
            .strip_suffix(" paths")?
            .parse()
            .ok()?,
    };
    let (download, _) = rest.split_once(" download")?;
    Some((paths, size(download)?))
}

/// `12.34 MiB`, `512.0 KiB`, `3 B` → bytes.
pub fn size(text: &str) -> Option<u64> {
    let (number, unit) = text.trim().split_once(' ')?;
    let scale: f64 = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let n: f64 = number.parse().ok()?;
    (n >= 0.0).then(|| (n * scale).round() as u64)
}

/// The display's state; completed lines go to `w`.
pub struct TerminalView<W: Write> {
    w: W,
    current: String,
    latest: String,
    fetching: Option<Fetching>,
    fetched: u64,
    fetched_paths: u64,
}

impl<W: Write> TerminalView<W> {
    pub fn new(w: W) -> Self {
        TerminalView {
            w,
            current: String::new(),
            latest: String::new(),
            fetching: None,
            fetched: 0,
            fetched_paths: 0,
        }
    }

    pub fn event(&mut self, e: LogEvent<'_>) -> std::io::Result<()> {
        match e {
            LogEvent::Starting { step, what } => {
                self.current = format!("[{step}] {what}");
                self.latest.clear();
                self.fetching = None;
                Ok(())
            }
            LogEvent::Child { line } => {
                self.child(line);
                Ok(())
            }
            LogEvent::Done { added, freed, note } => {
                let fetched = self.end_fetching(true);
                let figures: Vec<String> = [("added", added), ("freed", freed)]
                    .iter()
                    .filter_map(|(w, b)| b.map(|b| format!("{w} {}", human_bytes(b))))
                    .chain(fetched.map(|b| format!("fetched {}", human_bytes(b))))
                    .chain((!note.is_empty()).then(|| note.to_string()))
                    .collect();
                let mut line = format!("{}: done", self.current);
                if !figures.is_empty() {
                    line += &format!(" ({})", figures.join(", "));
                }
                self.latest.clear();
                writeln!(self.w, "{line}")
            }
            LogEvent::Failed { message } => {
                self.end_fetching(false);
                writeln!(self.w, "{}: FAILED\n{message}", self.current)
            }
            LogEvent::Interrupted { why } => {
                self.end_fetching(false);
                writeln!(self.w, "{}: interrupted ({why})", self.current)
            }
            LogEvent::Info(m) | LogEvent::Warning(m) | LogEvent::Error(m) => {
                writeln!(self.w, "{m}")
            }
        }
    }

    fn child(&mut self, line: &str) {
        if let Some((paths, download)) = will_fetch(line) {
            self.fetching = Some(Fetching {
                paths,
                download,
                copied: 0,
            });
        } else if line.trim_start().starts_with("copying path '") {
            if let Some(f) = self.fetching.as_mut() {
                f.copied += 1;
            }
        }
        self.latest = line.trim().to_string();
    }

    /// Count what the transition fetched: all it announced when it ended well, the copied share
    /// otherwise. Returns the bytes, if it fetched any.
    fn end_fetching(&mut self, whole: bool) -> Option<u64> {
        let f = self.fetching.take()?;
        let (bytes, paths) = if whole {
            (f.download, f.paths)
        } else {
            (f.so_far(), f.copied.min(f.paths))
        };
        self.fetched += bytes;
        self.fetched_paths += paths;
        (paths > 0).then_some(bytes)
    }

    /// The bar's first part: the transition under way and the bytes fetched, where known.
    pub fn prefix(&self) -> String {
        let so_far = self.fetched + self.fetching.map_or(0, |f| f.so_far());
        match self.fetching {
            Some(f) => format!(
                "{} · {} fetched ({}/{} paths of {})",
                self.current,
                human_bytes(so_far),
                f.copied.min(f.paths),
                f.paths,
                human_bytes(f.download)
            ),
            None if so_far > 0 => format!("{} · {} fetched", self.current, human_bytes(so_far)),
            None => self.current.clone(),
        }
    }

    /// The bar's second part: Nix's latest line.
    pub fn message(&self) -> &str {
        &self.latest
    }

    /// The closing line: what Nix fetched in all, if anything.
    pub fn summary(&self) -> Option<String> {
        (self.fetched_paths > 0).then(|| {
            format!(
                "fetched {} ({} path(s)) from the binary cache",
                human_bytes(self.fetched),
                self.fetched_paths
            )
        })
    }

    pub fn into_inner(self) -> W {
        self.w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_announcements_of_every_version_are_read() {
        let mib = 1024 * 1024;
        assert_eq!(
            will_fetch("these 4 paths will be fetched (1.00 MiB download, 3.40 MiB unpacked):"),
            Some((4, mib))
        );
        assert_eq!(
            will_fetch("this path will be fetched (0.5 KiB download, 1.0 KiB unpacked):"),
            Some((1, 512))
        );
        assert_eq!(
            will_fetch("these 2 paths will be fetched (2.0 GiB download, 9.0 GiB unpacked):"),
            Some((2, 2 * 1024 * mib))
        );
        assert_eq!(
            will_fetch("these 3 derivations will be built:"),
            None,
            "not a fetch"
        );
        assert_eq!(size("12 parsecs"), None);
    }
}
