//! What every module of the CLI's tests uses: the `flinch` binary under test and its output.

use std::process::{Command, Output};

/// The `flinch` binary built for these tests.
pub fn flinch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flinch"))
}

/// Runs a command to its end.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("flinch runs")
}

/// What a command wrote to standard error.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
