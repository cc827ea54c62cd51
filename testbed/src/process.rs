//! Crash tests: a process in a group of its own, killed with all its children at once, as an OOM
//! kill of a systemd unit (or a power cut, for the process tree) would.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Spawns `cmd` as the leader of a new process group (its children join the group).
pub fn spawn_own_group(cmd: &mut Command) -> io::Result<Child> {
    cmd.process_group(0).spawn()
}

/// Sends SIGKILL to the child's whole process group, then reaps the child.
pub fn kill_group(child: &mut Child) -> io::Result<ExitStatus> {
    let pgid = Pid::from_raw(child.id() as i32);
    match killpg(pgid, Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => return Err(io::Error::from(e)),
    }
    child.wait()
}

/// Spawns `cmd` as the leader of a new session (and process group). Nix's children may start
/// process groups of their own, but they stay in the session: `kill_session` reaches them all,
/// as a power cut or the kill of a systemd unit's cgroup would.
pub fn spawn_own_session(cmd: &mut Command) -> io::Result<Child> {
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(|e| io::Error::from_raw_os_error(e as i32))
        })
    };
    cmd.spawn()
}

/// Sends `signal` to every process of the child's session (found in `/proc`), then, for SIGKILL,
/// repeats until none is left and reaps the child. Returns the processes signalled first.
pub fn kill_session(child: &mut Child, signal: Signal) -> io::Result<usize> {
    let sid = child.id() as i32;
    let first = signal_session(sid, signal);
    if signal == Signal::SIGKILL {
        // A process forked while we were signalling: go round until the session is empty.
        while signal_session(sid, signal) > 0 {}
        child.wait()?;
    }
    Ok(first)
}

fn signal_session(sid: i32, signal: Signal) -> usize {
    let mut n = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // /proc/PID/stat: "pid (comm) state ppid pgrp session ..."; comm may hold spaces.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        // A zombie is dead already; its parent reaps it.
        if fields.first() == Some(&"Z") || fields.get(3) != Some(&sid.to_string().as_str()) {
            continue;
        }
        if nix::sys::signal::kill(Pid::from_raw(pid), signal).is_ok() {
            n += 1;
        }
    }
    n
}

/// A finished command for a test's failure message: its exit status, stdout and stderr.
pub fn show_output(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
