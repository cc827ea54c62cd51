//! One process runner for every external command stepwise starts: argument vectors only (an
//! [`Invocation`]), optional stdin, a timeout, captured stdout/stderr with stderr streamed line by
//! line to a callback (progress), and cancellation. The child runs in its own process group, and a
//! timeout or cancellation kills the whole group (a build's children included).
//!
//! The runner owns a small current-thread tokio runtime so that the store traits stay synchronous;
//! it must not be called from inside another tokio runtime.

use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

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

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct Output {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    pub fn stderr_tail(&self) -> String {
        tail_lines(&self.stderr_str(), STDERR_TAIL_LINES)
    }
    /// A non-zero exit as a [`StoreError::Command`] naming the command line and stderr's tail.
    pub fn check(self) -> Result<Output, StoreError> {
        if self.success() {
            Ok(self)
        } else {
            Err(self.to_error())
        }
    }
    pub fn to_error(&self) -> StoreError {
        StoreError::Command {
            command: self.command.clone(),
            status: self.status.to_string(),
            stderr_tail: self.stderr_tail(),
        }
    }
}

/// The last `n` lines of `s`.
pub fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

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
    #[error("`{command}`: {source}")]
    Io {
        command: String,
        source: std::io::Error,
    },
}

impl From<RunError> for StoreError {
    fn from(e: RunError) -> Self {
        let command = match &e {
            RunError::Spawn { command, .. }
            | RunError::Timeout { command, .. }
            | RunError::Cancelled { command, .. }
            | RunError::Io { command, .. } => command.clone(),
        };
        StoreError::Spawn {
            command,
            why: e.to_string(),
        }
    }
}

/// Per-call options.
#[derive(Default)]
pub struct RunOptions<'a> {
    /// Kill the process group after this long (`None`: the runner's default).
    pub timeout: Option<Duration>,
    pub cancel: Option<&'a CancelToken>,
    /// Called with every stderr line (without its newline) as it arrives.
    pub on_stderr_line: Option<&'a mut dyn FnMut(&str)>,
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
        self.rt.block_on(run_async(
            inv,
            &self.env,
            timeout,
            opts.cancel,
            opts.on_stderr_line,
        ))
    }

    /// Run with default options and fail on a non-zero exit.
    pub fn run_ok(&self, inv: &Invocation) -> Result<Output, StoreError> {
        self.run(inv, RunOptions::default())?.check()
    }
}

async fn run_async(
    inv: &Invocation,
    env: &[(OsString, OsString)],
    timeout: Option<Duration>,
    cancel: Option<&CancelToken>,
    mut on_line: Option<&mut dyn FnMut(&str)>,
) -> Result<Output, RunError> {
    let command = inv.display();
    let mut cmd = tokio::process::Command::new(&inv.program);
    cmd.args(&inv.args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(if inv.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that killing it reaches builders and helpers too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
        command: command.clone(),
        source,
    })?;
    let pgid = child.id().map(|id| nix::unistd::Pid::from_raw(id as i32));
    let stdin = child.stdin.take();
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");

    let mut out_buf = Vec::new();
    let mut err_buf = Vec::new();
    let io_err = |command: &str| {
        let command = command.to_string();
        move |source| RunError::Io { command, source }
    };

    enum End {
        Exited(std::io::Result<ExitStatus>, std::io::Result<()>),
        Timeout,
        Cancelled,
    }

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
            let read_out = stdout.read_to_end(&mut out_buf);
            let read_err = async {
                let mut r = BufReader::new(stderr);
                loop {
                    let start = err_buf.len();
                    let n = r.read_until(b'\n', &mut err_buf).await?;
                    if n == 0 {
                        break;
                    }
                    if let Some(cb) = on_line.as_mut() {
                        let line = String::from_utf8_lossy(&err_buf[start..]);
                        cb(line.trim_end_matches(['\n', '\r']));
                    }
                }
                Ok::<(), std::io::Error>(())
            };
            let (fed, out, err) = tokio::join!(feed, read_out, read_err);
            let io = fed.and(out.map(|_| ())).and(err);
            let status = child.wait().await;
            End::Exited(status, io)
        };
        let cancelled = async {
            match cancel {
                Some(c) => {
                    let mut rx = c.tx.subscribe();
                    let _ = rx.wait_for(|v| *v).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let timer = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            e = work => e,
            _ = timer => End::Timeout,
            _ = cancelled => End::Cancelled,
        }
    };

    match end {
        End::Exited(status, io) => {
            io.map_err(io_err(&command))?;
            let status = status.map_err(io_err(&command))?;
            Ok(Output {
                command,
                status,
                stdout: out_buf,
                stderr: err_buf,
            })
        }
        stopped => {
            if let Some(pgid) = pgid {
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            }
            // Reap it; the group is dead, so this returns promptly.
            let _ = child.wait().await;
            let stderr_tail = tail_lines(&String::from_utf8_lossy(&err_buf), STDERR_TAIL_LINES);
            Err(match stopped {
                End::Timeout => RunError::Timeout {
                    command,
                    after: timeout.unwrap_or_default(),
                    stderr_tail,
                },
                _ => RunError::Cancelled {
                    command,
                    stderr_tail,
                },
            })
        }
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
        let mut cb = |l: &str| lines.push(l.to_string());
        let out = r
            .run(
                &sh("cat; echo \"$GREETING a\" >&2; echo b >&2").stdin(b"piped".to_vec()),
                RunOptions {
                    on_stderr_line: Some(&mut cb),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(out.stdout, b"piped");
        assert_eq!(lines, vec!["hi a", "b"]);
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
        let mut cb = move |l: &str| {
            if l == "ready" {
                t2.cancel();
            }
        };
        let err = r
            .run(
                &sh("echo ready >&2; exec sleep 30"),
                RunOptions {
                    cancel: Some(&token),
                    on_stderr_line: Some(&mut cb),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(matches!(err, RunError::Cancelled { .. }), "{err}");
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
