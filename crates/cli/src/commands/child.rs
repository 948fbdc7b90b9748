//! Starting the wrapped command so that it never outlives a recorder that dies.
//!
//! `flinch record -- CMD` ends the command itself when it ends normally (signals forwarded,
//! SIGTERM at the end of `--duration`). A recorder that is SIGKILLed or crashes cannot, so
//! the kernel does it: the child asks, between `fork` and `exec`, to be sent SIGKILL when its
//! parent dies (`PR_SET_PDEATHSIG`). SIGKILL rather than SIGTERM because a command that
//! ignores SIGTERM would otherwise be left running unmeasured and unsupervised, and the
//! recorder only dies this way after a SIGKILL or a crash, when nobody is left to escalate.
//! This covers the direct child: a shell that forks its workload instead of `exec`-ing it
//! passes the guarantee on only if the workload dies with it.
//!
//! A server that must never depend on the recorder is not wrapped: run `flinch record`
//! beside it and send marks to the FIFO.
//!
//! This is the one place in the command line that needs `unsafe`: `pre_exec` runs code in the
//! forked child of a multithreaded process.
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Spawns `cmd` so that it is sent SIGKILL if this process dies first.
pub fn spawn_tied_to_us(cmd: &mut Command) -> std::io::Result<Child> {
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe operations are allowed. It makes two raw system calls through rustix
    // (prctl(PR_SET_PDEATHSIG) and getppid), which neither allocate nor take locks, and its
    // error path builds an `io::Error` from a raw errno, which does not allocate either. It
    // captures only a `Pid` (a plain integer) by value.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // The recorder may have died between fork and prctl: then no signal will come,
            // so do not start the command at all.
            if rustix::process::getppid() != Some(parent) {
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        });
    }
    cmd.spawn()
}
