//! Starting the wrapped command so that neither it nor what it forks outlives a recorder
//! that dies.
//!
//! `flinch record -- CMD` ends the command itself when it ends normally (signals forwarded,
//! SIGTERM at the end of `--duration`). A recorder that is SIGKILLed or crashes cannot, so:
//!
//! - the kernel sends the command SIGKILL when the recorder dies: the child asks, between
//!   `fork` and `exec`, for that (`PR_SET_PDEATHSIG`). SIGKILL rather than SIGTERM because a
//!   command that ignores SIGTERM would otherwise be left running unmeasured and
//!   unsupervised, and the recorder only dies this way after a SIGKILL or a crash, when
//!   nobody is left to escalate;
//! - what the command forked (a server's workers) is ended too, through its **process
//!   group**: a small guard process (`flinch` itself, started with a hidden subcommand, in a
//!   process group of its own) holds a pipe from the recorder; when the recorder dies the
//!   pipe closes, and the guard sends SIGTERM to the command's process group, then SIGKILL
//!   to what is left of it 3 s later.
//!
//! Which process group is the command's: when `flinch` leads its own process group (a job of
//! an interactive shell, a service), the command stays in it, so the terminal's Ctrl-C and
//! Ctrl-Z and the shell's job control work as without flinch; that group is the job flinch
//! was started as (in a pipeline like `flinch record -- cmd | tee log`, `tee` is in it too).
//! Otherwise (a script without job control, a supervisor), the command gets a process group
//! of its own, so that ending it never touches the script's; such a command can write to
//! the terminal, but reading from it stops it (SIGTTIN), as for any background job.
//!
//! A server that must never depend on the recorder is not wrapped: run `flinch record`
//! beside it and send marks to the FIFO.
//!
//! This is the one place in the command line that needs `unsafe`: `pre_exec` runs code in the
//! forked child of a multithreaded process.
#![allow(unsafe_code)]

use rustix::process::{Pid, Signal};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The hidden subcommand that runs the guard.
pub const GUARD_SUBCOMMAND: &str = "__guard-process-group";

/// How long the guard waits after SIGTERM before it sends SIGKILL.
const GUARD_GRACE: Duration = Duration::from_secs(3);

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

/// The wrapped command, its process group, and the guard that ends the group if the
/// recorder dies.
pub struct Wrapped {
    /// The command's process.
    pub child: Child,
    /// Its process group.
    pgid: Pid,
    /// Whether the group is the command's own (else it is the recorder's).
    own_group: bool,
    guard: Option<(Child, ChildStdin)>,
}

/// Starts `cmd` (see the module docs for the process group it runs in), tied to this
/// process, with a guard for its process group. A guard that cannot be started is reported
/// by the returned note, and the command runs without it.
pub fn spawn_wrapped(cmd: &mut Command) -> std::io::Result<(Wrapped, Option<String>)> {
    let me = rustix::process::getpid();
    let own_group = rustix::process::getpgrp() != me;
    if own_group {
        cmd.process_group(0);
    }
    let child = spawn_tied_to_us(cmd)?;
    let pgid = if own_group {
        Pid::from_raw(child.id() as i32).expect("a child's pid is positive")
    } else {
        rustix::process::getpgrp()
    };
    let (guard, note) = match start_guard(pgid) {
        Ok(g) => (Some(g), None),
        Err(e) => (
            None,
            Some(format!(
                "cannot start the guard of the command's process group ({e}): if the recorder \
                 is killed, processes the command forked may outlive it"
            )),
        ),
    };
    Ok((
        Wrapped {
            child,
            pgid,
            own_group,
            guard,
        },
        note,
    ))
}

fn start_guard(pgid: Pid) -> std::io::Result<(Child, ChildStdin)> {
    let exe = std::env::current_exe()?;
    let mut c = Command::new(exe);
    c.arg(GUARD_SUBCOMMAND)
        .arg(pgid.as_raw_nonzero().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .process_group(0);
    let mut child = c.spawn()?;
    let stdin = child.stdin.take().expect("stdin was piped");
    Ok((child, stdin))
}

impl Wrapped {
    /// The command's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the command runs in a process group of its own (so that signals from the
    /// terminal, which reach the recorder's group, do not reach it).
    pub fn own_group(&self) -> bool {
        self.own_group
    }

    /// Sends `sig` to the command.
    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }

    /// Sends `sig` to the command and everything in its process group, when that group is
    /// its own; else to the command alone (the group is the recorder's).
    pub fn signal_group(&self, sig: Signal) {
        if self.own_group {
            let _ = rustix::process::kill_process_group(self.pgid, sig);
        } else {
            self.signal(sig);
        }
    }

    /// After the command exited: ends what is left of its own process group (workers it
    /// forked and left behind), SIGTERM then SIGKILL, and returns how it went in words; then
    /// dismisses the guard.
    pub fn finish(mut self) -> Option<String> {
        let mut note = None;
        if self.own_group && rustix::process::test_kill_process_group(self.pgid).is_ok() {
            let _ = rustix::process::kill_process_group(self.pgid, Signal::TERM);
            let killed = !wait_group_gone(self.pgid, GUARD_GRACE);
            if killed {
                let _ = rustix::process::kill_process_group(self.pgid, Signal::KILL);
            }
            note = Some(format!(
                "the command exited but left processes in its process group {}: sent them \
                 SIGTERM{}",
                self.pgid.as_raw_nonzero(),
                if killed {
                    ", then SIGKILL 3 s later"
                } else {
                    ""
                }
            ));
        }
        self.dismiss_guard();
        note
    }

    fn dismiss_guard(&mut self) {
        if let Some((mut g, mut stdin)) = self.guard.take() {
            let _ = stdin.write_all(b"done\n");
            drop(stdin);
            let _ = g.wait();
        }
    }
}

impl Drop for Wrapped {
    fn drop(&mut self) {
        self.dismiss_guard();
    }
}

/// Whether the group is gone within `within`.
fn wait_group_gone(pgid: Pid, within: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        if rustix::process::test_kill_process_group(pgid).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    rustix::process::test_kill_process_group(pgid).is_err()
}

/// The guard (`flinch __guard-process-group PGID`): waits until the recorder says it is done
/// or dies (its pipe on our stdin closes without a word), and in the second case ends the
/// process group `pgid`. Never returns.
pub fn run_guard(pgid: &str) -> ! {
    // Signals from a terminal reach the recorder's group, not this one; a hangup or a stray
    // Ctrl-\ must not end the guard either.
    for sig in [
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGQUIT,
    ] {
        let _ = signal_hook::flag::register(
            sig,
            std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        );
    }
    let Some(pgid) = pgid.parse::<i32>().ok().and_then(Pid::from_raw) else {
        std::process::exit(2)
    };
    // Only ever a recorder's guard: its stdin is the pipe the recorder holds. Typed at a
    // terminal by mistake, it must not end a process group when Ctrl-D closes stdin.
    let from_a_pipe = rustix::fs::fstat(std::io::stdin()).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Fifo
    });
    if !from_a_pipe {
        let _ = writeln!(
            std::io::stderr(),
            "flinch: {GUARD_SUBCOMMAND} is started by `flinch record`, not by hand"
        );
        std::process::exit(2);
    }
    let mut said = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match std::io::stdin().read(&mut buf) {
            Ok(0) => break,
            Ok(n) => said.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if said.starts_with(b"done") {
        std::process::exit(0);
    }
    // The recorder died without a word.
    if rustix::process::kill_process_group(pgid, Signal::TERM).is_ok() {
        let _ = writeln!(
            std::io::stderr(),
            "flinch: the recorder died: sent SIGTERM to the wrapped command's process group {}",
            pgid.as_raw_nonzero()
        );
        if !wait_group_gone(pgid, GUARD_GRACE) {
            let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
        }
    }
    std::process::exit(0)
}
