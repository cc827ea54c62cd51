//! One process runner for every external command stepwise starts: argument vectors only (an
//! [`Invocation`]), optional stdin, a timeout, cancellation, and bounded memory whatever the
//! child prints: stderr (and stdout, for commands whose stdout is a log) is streamed line by line
//! to a callback and only its first and last lines are kept for error messages; stdout is kept
//! whole only for commands whose stdout is data, up to a limit past which the command fails.
//!
//! Process groups, decided deliberately: every child runs in its own process group.
//! - A timeout or a cancel kills the whole group (`killpg`), reaching Nix's builders and helpers
//!   without signalling stepwise itself.
//! - A terminal's Ctrl-C reaches only the foreground group, stepwise's: stepwise decides. Its first
//!   SIGINT/SIGTERM/SIGHUP lets the current transition finish (a realise completes and is
//!   journaled), a second cancels the child at once through the [`CancelToken`], which the store
//!   reports as interrupted, not failed.
//! - systemd's stop (`KillMode=control-group`), a shutdown and a session-wide kill signal every
//!   process regardless of its group, so Nix may die or print "interrupted by the user" on its own:
//!   [`Output::interrupted`] recognises that, and the store reports it as
//!   [`StoreError::Interrupted`], never as a failed build.
//!
//! The runner owns a small current-thread tokio runtime so that the store traits stay synchronous;
//! it must not be called from inside another tokio runtime.

use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::argv::Invocation;
use crate::effects::store::StoreError;

/// How many stderr lines an error message carries.
pub const STDERR_TAIL_LINES: usize = 20;

/// A handle that cancels a running command from another thread (or a signal handler's thread).
#[derive(Debug, Clone)]
pub struct CancelToken {
    tx: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for CancelToken {
    fn default() -> Self {
        CancelToken {
            tx: std::sync::Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }
    pub fn is_cancelled(&self) -> bool {
        *self.tx.borrow()
    }
}

/// Which of the child's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What the runner keeps of a stream it does not capture: the first and the last lines, each
/// cut at [`MAX_LINE_BYTES`], so an error can quote Nix's first `error:` line and its last words
/// however much it printed.
#[derive(Debug, Clone, Default)]
pub struct Kept {
    head: Vec<String>,
    tail: std::collections::VecDeque<String>,
    /// Lines seen in all (kept or not).
    lines: u64,
}

impl Kept {
    const HEAD: usize = 32;
    const TAIL: usize = 64;

    fn push(&mut self, line: &str) {
        self.lines += 1;
        if self.head.len() < Self::HEAD {
            self.head.push(line.to_string());
            return;
        }
        if self.tail.len() == Self::TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
    }

    /// The kept lines, with a marker where lines were left out.
    pub fn text(&self) -> String {
        let mut out: Vec<String> = self.head.clone();
        let left_out = self.lines - (self.head.len() + self.tail.len()) as u64;
        if left_out > 0 {
            out.push(format!("[… {left_out} line(s) left out …]"));
        }
        out.extend(self.tail.iter().cloned());
        let mut s = out.join("\n");
        if !s.is_empty() {
            s.push('\n');
        }
        s
    }

    pub fn lines_seen(&self) -> u64 {
        self.lines
    }
}

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct Output {
    pub command: String,
    pub status: ExitStatus,
    /// All of stdout when it was captured (data); empty when it was streamed.
    pub stdout: Vec<u8>,
    /// The first and last lines of stderr.
    pub stderr: Kept,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// The kept lines of stderr (all of it when it was short).
    pub fn stderr_str(&self) -> String {
        self.stderr.text()
    }
    pub fn stderr_tail(&self) -> String {
        tail_lines(&self.stderr_str(), STDERR_TAIL_LINES)
    }
    /// The signal that killed the child, if one did.
    pub fn signal(&self) -> Option<i32> {
        std::os::unix::process::ExitStatusExt::signal(&self.status)
    }
    /// Whether the child was stopped rather than failed: killed by a stop signal (its own, its
    /// group's or the whole session's: a `systemctl stop`, a shutdown, Ctrl-C, an OOM kill) or,
    /// having caught one, said so the way Nix does.
    pub fn interrupted(&self) -> bool {
        self.signal().is_some_and(is_stop_signal) || self.stderr_str().contains(NIX_INTERRUPTED)
    }
    /// A non-zero exit as a [`StoreError::Command`] naming the command line and stderr's tail,
    /// or [`StoreError::Interrupted`] when the child was stopped by a signal.
    pub fn check(self) -> Result<Output, StoreError> {
        if self.success() {
            Ok(self)
        } else {
            Err(self.to_error())
        }
    }
    pub fn to_error(&self) -> StoreError {
        if self.interrupted() {
            return StoreError::Interrupted {
                command: self.command.clone(),
                why: format!("{}; last output:\n{}", self.status, self.stderr_tail()),
            };
        }
        StoreError::Command {
            command: self.command.clone(),
            status: self.status.to_string(),
            stderr_tail: self.stderr_tail(),
        }
    }
}

/// What Nix (and Lix) print when SIGINT, SIGTERM or SIGHUP reached them.
pub const NIX_INTERRUPTED: &str = "interrupted by the user";

/// The signals that stop a run rather than fail it: a terminal's Ctrl-C, systemd's stop (SIGTERM
/// then SIGKILL to the whole cgroup), a hang-up, the OOM killer's SIGKILL.
pub fn is_stop_signal(sig: i32) -> bool {
    use nix::sys::signal::Signal::*;
    [SIGINT, SIGTERM, SIGHUP, SIGKILL, SIGQUIT]
        .iter()
        .any(|s| *s as i32 == sig)
}

/// The last `n` lines of `s`.
pub fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A longer line is cut here (the rest up to its newline is dropped): a child printing one
/// endless line cannot grow our memory.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// The most stdout a data command may print (`path-info --json` of a whole closure is a few
/// MiB); more is an error, not a memory spike.
pub const DEFAULT_STDOUT_LIMIT: usize = 32 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum RunError {
    #[error("could not start `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error(
        "`{command}` did not finish within {after:?} and was killed; last output:\n{stderr_tail}"
    )]
    Timeout {
        command: String,
        after: Duration,
        stderr_tail: String,
    },
    #[error("`{command}` was cancelled; last output:\n{stderr_tail}")]
    Cancelled {
        command: String,
        stderr_tail: String,
    },
    #[error("`{command}` printed more than {limit} bytes on stdout and was killed (stepwise keeps at most that much of a command's answer)")]
    TooMuchOutput { command: String, limit: usize },
    #[error("`{command}`: {source}")]
    Io {
        command: String,
        source: std::io::Error,
    },
}

impl From<RunError> for StoreError {
    fn from(e: RunError) -> Self {
        let why = e.to_string();
        match e {
            // A second SIGTERM (or Ctrl-C) cancels the child: a stop, not a failure.
            RunError::Cancelled { command, .. } => StoreError::Interrupted { why, command },
            RunError::TooMuchOutput { command, .. } => StoreError::Output { why, command },
            RunError::Spawn { ref command, .. }
            | RunError::Timeout { ref command, .. }
            | RunError::Io { ref command, .. } => StoreError::Spawn {
                command: command.clone(),
                why,
            },
        }
    }
}

/// Where the child's stdout goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdoutMode {
    /// The answer of a query: kept whole, up to this many bytes (more kills the child and is a
    /// [`RunError::TooMuchOutput`]).
    Capture(usize),
    /// A log (a build's, an activation's): passed line by line to the callback, not kept.
    Stream,
}

impl Default for StdoutMode {
    fn default() -> Self {
        StdoutMode::Capture(DEFAULT_STDOUT_LIMIT)
    }
}

/// What receives the child's output lines.
pub type LineSink<'a> = dyn FnMut(Stream, &str) + 'a;

/// Per-call options.
#[derive(Default)]
pub struct RunOptions<'a> {
    /// Kill the process group after this long (`None`: the runner's default).
    pub timeout: Option<Duration>,
    pub cancel: Option<&'a CancelToken>,
    pub stdout: StdoutMode,
    /// Called with every line of stderr, and of stdout when it is streamed (without the newline,
    /// cut at [`MAX_LINE_BYTES`]), as it arrives.
    pub on_line: Option<&'a mut LineSink<'a>>,
}

pub struct Runner {
    rt: tokio::runtime::Runtime,
    /// Variables set for every command (a private store in tests: `NIX_STORE_DIR`, …).
    env: Vec<(OsString, OsString)>,
    default_timeout: Option<Duration>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("env", &self.env)
            .field("default_timeout", &self.default_timeout)
            .finish()
    }
}

impl Runner {
    pub fn new(
        env: Vec<(OsString, OsString)>,
        default_timeout: Option<Duration>,
    ) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        Ok(Runner {
            rt,
            env,
            default_timeout,
        })
    }

    pub fn env(&self) -> &[(OsString, OsString)] {
        &self.env
    }

    /// Run to completion (any exit status); errors only when it could not run or was stopped.
    pub fn run(&self, inv: &Invocation, opts: RunOptions<'_>) -> Result<Output, RunError> {
        let timeout = opts.timeout.or(self.default_timeout);
        self.rt.block_on(run_async(inv, &self.env, timeout, opts))
    }

    /// Run with default options and fail on a non-zero exit.
    pub fn run_ok(&self, inv: &Invocation) -> Result<Output, StoreError> {
        self.run(inv, RunOptions::default())?.check()
    }
}

/// Why reading a stream stopped early.
enum PumpError {
    Io(std::io::Error),
    TooMuch,
}

/// Read `r` to its end in fixed-size chunks, handing each complete line (cut at
/// [`MAX_LINE_BYTES`]) to `on_line`; memory stays bounded whatever the child prints.
async fn pump_lines<R: tokio::io::AsyncRead + Unpin>(
    mut r: R,
    mut on_line: impl FnMut(&str),
) -> std::io::Result<()> {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let mut emit = |line: &mut Vec<u8>| {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        on_line(&String::from_utf8_lossy(line));
        line.clear();
    };
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        for piece in chunk[..n].split_inclusive(|b| *b == b'\n') {
            let (body, ends) = match piece.split_last() {
                Some((b'\n', body)) => (body, true),
                _ => (piece, false),
            };
            let room = MAX_LINE_BYTES.saturating_sub(line.len());
            line.extend_from_slice(&body[..body.len().min(room)]);
            if ends {
                emit(&mut line);
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line);
    }
    Ok(())
}

/// Read all of `r` up to `limit` bytes.
async fn capture<R: tokio::io::AsyncRead + Unpin>(
    r: R,
    limit: usize,
    buf: &mut Vec<u8>,
) -> Result<(), PumpError> {
    let mut limited = r.take(limit as u64 + 1);
    limited.read_to_end(buf).await.map_err(PumpError::Io)?;
    if buf.len() > limit {
        buf.clear();
        return Err(PumpError::TooMuch);
    }
    Ok(())
}

async fn run_async(
    inv: &Invocation,
    env: &[(OsString, OsString)],
    timeout: Option<Duration>,
    opts: RunOptions<'_>,
) -> Result<Output, RunError> {
    let command = inv.display();
    let mut child = spawn(inv, env).map_err(|source| RunError::Spawn {
        command: command.clone(),
        source,
    })?;
    let pgid = child.id().map(|id| nix::unistd::Pid::from_raw(id as i32));
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");

    let mut out_buf = Vec::new();
    // Both pumps call the one callback; they run on one thread and never hold it across an
    // await, so a RefCell is enough.
    let on_line = std::cell::RefCell::new(opts.on_line);
    let kept = std::cell::RefCell::new(Kept::default());
    let call = |stream: Stream, line: &str| {
        if let Some(cb) = on_line.borrow_mut().as_mut() {
            cb(stream, line);
        }
    };

    let end = {
        let work = async {
            let feed = async {
                if let (Some(mut w), Some(bytes)) = (stdin, inv.stdin.as_ref()) {
                    // A child that exits without reading all of stdin is not our error.
                    match w.write_all(bytes).await {
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                        r => r?,
                    }
                    w.shutdown().await.ok();
                }
                Ok::<(), std::io::Error>(())
            };
            let read_out = async {
                match opts.stdout {
                    StdoutMode::Capture(limit) => capture(stdout, limit, &mut out_buf).await,
                    StdoutMode::Stream => pump_lines(stdout, |l| call(Stream::Stdout, l))
                        .await
                        .map_err(PumpError::Io),
                }
            };
            let read_err = pump_lines(stderr, |l| {
                kept.borrow_mut().push(l);
                call(Stream::Stderr, l);
            });
            // The first error ends the reading at once (a child past its stdout limit may
            // still hold stderr open).
            let io = match tokio::try_join!(
                async { feed.await.map_err(PumpError::Io) },
                read_out,
                async { read_err.await.map_err(PumpError::Io) },
            ) {
                Err(PumpError::TooMuch) => return End::TooMuch,
                Err(PumpError::Io(e)) => Err(e),
                Ok(_) => Ok(()),
            };
            let status = child.wait().await;
            End::Exited(status, io)
        };
        tokio::select! {
            e = work => e,
            _ = expired(timeout) => End::Timeout,
            _ = cancelled(opts.cancel) => End::Cancelled,
        }
    };

    let kept = kept.into_inner();
    let io_err = |source| RunError::Io {
        command: command.clone(),
        source,
    };
    match end {
        End::Exited(status, io) => {
            io.map_err(io_err)?;
            let status = status.map_err(io_err)?;
            Ok(Output {
                command,
                status,
                stdout: out_buf,
                stderr: kept,
            })
        }
        stopped => {
            let limit = match opts.stdout {
                StdoutMode::Capture(l) => l,
                StdoutMode::Stream => 0,
            };
            Err(kill_stopped(stopped, child, pgid, &kept, command, timeout, limit).await)
        }
    }
}

/// How the child's run ended.
enum End {
    Exited(std::io::Result<ExitStatus>, std::io::Result<()>),
    TooMuch,
    Timeout,
    Cancelled,
}

/// A child stopped before it exited (time out, too much output, cancelled): its whole process
/// group killed and reaped, and the error saying why, with what it printed last.
async fn kill_stopped(
    stopped: End,
    mut child: tokio::process::Child,
    pgid: Option<nix::unistd::Pid>,
    kept: &Kept,
    command: String,
    timeout: Option<Duration>,
    limit: usize,
) -> RunError {
    if let Some(pgid) = pgid {
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    }
    // Reap it; the group is dead, so this returns promptly.
    let _ = child.wait().await;
    let stderr_tail = tail_lines(&kept.text(), STDERR_TAIL_LINES);
    match stopped {
        End::Timeout => RunError::Timeout {
            command,
            after: timeout.unwrap_or_default(),
            stderr_tail,
        },
        End::TooMuch => RunError::TooMuchOutput { command, limit },
        _ => RunError::Cancelled {
            command,
            stderr_tail,
        },
    }
}

/// The child with piped output, in its own process group (see the module's documentation),
/// killed if the runner drops it, with the default action for every stop signal whatever
/// stepwise inherited (a shell starts background jobs with SIGINT ignored; a Nix that ignores a
/// stop would not stop).
fn spawn(inv: &Invocation, env: &[(OsString, OsString)]) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(&inv.program);
    // SAFETY: between fork and exec only async-signal-safe calls (sigaction).
    unsafe {
        cmd.pre_exec(default_stop_signals);
    }
    cmd.args(&inv.args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(if inv.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

/// Reset SIGINT, SIGTERM, SIGHUP and SIGQUIT to their default action (run in the child).
fn default_stop_signals() -> std::io::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        // SAFETY: setting the default action installs no handler.
        unsafe { sigaction(sig, &default) }.map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// Resolves when the token is cancelled; never without one.
async fn cancelled(cancel: Option<&CancelToken>) {
    match cancel {
        Some(c) => {
            let mut rx = c.tx.subscribe();
            let _ = rx.wait_for(|v| *v).await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Resolves after `timeout`; never without one.
async fn expired(timeout: Option<Duration>) {
    match timeout {
        Some(t) => tokio::time::sleep(t).await,
        None => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Invocation {
        Invocation::new("/bin/sh").arg("-c").arg(script)
    }

    #[test]
    fn captures_stdout_stderr_and_status() {
        let r = Runner::new(vec![], None).unwrap();
        let out = r
            .run(
                &sh("echo out; echo err1 >&2; echo err2 >&2; exit 3"),
                RunOptions::default(),
            )
            .unwrap();
        assert_eq!(out.stdout_str(), "out\n");
        assert_eq!(out.stderr_str(), "err1\nerr2\n");
        assert_eq!(out.status.code(), Some(3));
        let e = out.check().unwrap_err().to_string();
        assert!(e.contains("/bin/sh -c 'echo out;"), "{e}");
        assert!(e.contains("err2"), "{e}");
    }

    #[test]
    fn streams_stderr_lines_and_feeds_stdin() {
        let r = Runner::new(vec![("GREETING".into(), "hi".into())], None).unwrap();
        let mut lines = Vec::new();
        let mut cb = |s: Stream, l: &str| lines.push((s, l.to_string()));
        let out = r
            .run(
                &sh("cat; echo \"$GREETING a\" >&2; printf 'b\\r\\nc' >&2")
                    .stdin(b"piped".to_vec()),
                RunOptions {
                    on_line: Some(&mut cb),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(out.stdout, b"piped");
        let err = |l: &str| (Stream::Stderr, l.to_string());
        assert_eq!(lines, vec![err("hi a"), err("b"), err("c")]);
    }

    #[test]
    fn streamed_stdout_is_passed_on_not_kept() {
        let r = Runner::new(vec![], None).unwrap();
        let mut lines = Vec::new();
        let mut cb = |s: Stream, l: &str| lines.push((s, l.to_string()));
        let out = r
            .run(
                &sh("echo one; echo two"),
                RunOptions {
                    stdout: StdoutMode::Stream,
                    on_line: Some(&mut cb),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(out.stdout.is_empty());
        let o = |l: &str| (Stream::Stdout, l.to_string());
        assert_eq!(lines, vec![o("one"), o("two")]);
    }

    #[test]
    fn only_the_first_and_last_stderr_lines_are_kept() {
        let r = Runner::new(vec![], None).unwrap();
        let mut seen = 0u64;
        let mut cb = |_: Stream, _: &str| seen += 1;
        let out = r
            .run(
                &sh("i=0; while [ $i -lt 1000 ]; do echo line$i >&2; i=$((i+1)); done; exit 1"),
                RunOptions {
                    on_line: Some(&mut cb),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(seen, 1000);
        assert_eq!(out.stderr.lines_seen(), 1000);
        let kept = out.stderr_str();
        assert!(kept.starts_with("line0\nline1\n"), "{kept}");
        assert!(kept.contains("[… 904 line(s) left out …]"), "{kept}");
        assert!(kept.ends_with("line998\nline999\n"), "{kept}");
        assert!(!kept.contains("line500\n"), "{kept}");
        assert!(out.stderr_tail().ends_with("line999"));
    }

    #[test]
    fn an_endless_line_is_cut() {
        let r = Runner::new(vec![], None).unwrap();
        let mut longest = 0;
        let mut cb = |_: Stream, l: &str| longest = longest.max(l.len());
        let out = r
            .run(
                &sh("head -c 1000000 /dev/zero | tr '\\0' x >&2; echo >&2; echo after >&2"),
                RunOptions {
                    on_line: Some(&mut cb),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(longest, MAX_LINE_BYTES);
        assert_eq!(out.stderr.lines_seen(), 2);
        assert!(out.stderr_str().ends_with("\nafter\n"));
    }

    #[test]
    fn captured_stdout_past_its_limit_is_an_error() {
        let r = Runner::new(vec![], None).unwrap();
        let ok = r
            .run(
                &sh("head -c 1000 /dev/zero"),
                RunOptions {
                    stdout: StdoutMode::Capture(1000),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(ok.stdout.len(), 1000);
        let err = r
            .run(
                &sh("head -c 1001 /dev/zero; sleep 30"),
                RunOptions {
                    stdout: StdoutMode::Capture(1000),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(
            matches!(err, RunError::TooMuchOutput { limit: 1000, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("more than 1000 bytes"), "{err}");
    }

    #[test]
    fn a_child_killed_by_a_stop_signal_is_interrupted_not_failed() {
        let r = Runner::new(vec![], None).unwrap();
        for sig in ["TERM", "INT", "HUP", "KILL"] {
            let out = r
                .run(
                    &sh(&format!("echo working >&2; kill -{sig} $$")),
                    RunOptions::default(),
                )
                .unwrap();
            let e = out.check().unwrap_err();
            assert!(e.is_interrupted(), "SIG{sig}: {e}");
        }
        // Nix catching the signal and saying so, then exiting 1.
        let out = r
            .run(
                &sh("echo 'error: interrupted by the user' >&2; exit 1"),
                RunOptions::default(),
            )
            .unwrap();
        assert!(out.check().unwrap_err().is_interrupted());
        // An ordinary failure stays one.
        let out = r.run(&sh("exit 1"), RunOptions::default()).unwrap();
        assert!(matches!(
            out.check().unwrap_err(),
            StoreError::Command { .. }
        ));
    }

    #[test]
    fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild-alive");
        let r = Runner::new(vec![], None).unwrap();
        // A grandchild that would write the marker if it survived the kill.
        let script = format!(
            "(sleep 2; touch {}) & echo started >&2; wait",
            marker.display()
        );
        let err = r
            .run(
                &sh(&script),
                RunOptions {
                    timeout: Some(Duration::from_millis(300)),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(matches!(err, RunError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("started"), "{err}");
        // The group was killed: no `sleep 2` of ours is left (SIGKILL is delivered
        // asynchronously, so poll /proc for a bounded number of scans).
        assert!((0..1000).any(|_| !sleep_2_running()), "grandchild survived");
        assert!(!marker.exists());
    }

    fn sleep_2_running() -> bool {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .any(|c| c == b"sleep\x002\x00")
    }

    #[test]
    fn cancel_from_another_thread() {
        let r = Runner::new(vec![], None).unwrap();
        let token = CancelToken::new();
        let t2 = token.clone();
        let mut cb = move |_: Stream, l: &str| {
            if l == "ready" {
                t2.cancel();
            }
        };
        let err = r
            .run(
                &sh("echo ready >&2; exec sleep 30"),
                RunOptions {
                    cancel: Some(&token),
                    on_line: Some(&mut cb),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(matches!(err, RunError::Cancelled { .. }), "{err}");
        assert!(StoreError::from(err).is_interrupted());
    }

    #[test]
    fn spawn_error_names_the_command() {
        let r = Runner::new(vec![], None).unwrap();
        let err = r
            .run(
                &Invocation::new("/nonexistent/prog").arg("x"),
                RunOptions::default(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/prog x"), "{err}");
    }
}
