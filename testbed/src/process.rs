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
