//! The `flinch` command line: `sources`, `record`, `mark`, `calibrate`, `analyze`, `plot`,
//! `export`.

mod backends;
mod cli;
mod commands;

use clap::Parser;
use std::process::ExitCode;

/// mimalloc: `analyze` builds and drops a report per span on every core; glibc's allocator
/// spent a fifth of the CPU time of a long analysis in its own bookkeeping
/// (`docs/performance.md`, *Analysis at scale*).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A failure that ends the command: printed as `flinch: error: ...`, exit status 2 unless
/// it says otherwise.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 2,
        }
    }
}

/// Any error ends the command with its whole chain of causes on one line
/// (`outer: inner: innermost`), so that what the OS or a library said is never lost.
impl<E: std::error::Error + 'static> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::new(flinch_core::error::display_chain(&e))
    }
}

fn main() -> ExitCode {
    // Under a file-size limit (`ulimit -f`) a write past it raises SIGXFSZ, whose default
    // action kills the process (and dumps core): with a handler installed the write fails
    // with EFBIG instead, which the recorder reports, holds and retries like a full disk.
    // Handlers are reset at exec, so a wrapped command keeps the default.
    let _ = signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    if let [_, sub, pgid] = &std::env::args().collect::<Vec<_>>()[..]
        && sub == commands::child::GUARD_SUBCOMMAND
    {
        commands::child::run_guard(pgid);
    }
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Sources(a) => commands::sources::run(a),
        cli::Command::Record(a) => commands::record::run(*a),
        cli::Command::Mark(a) => commands::mark::run(a),
        cli::Command::Calibrate(a) => commands::calibrate::run(a),
        cli::Command::Analyze(a) => commands::analyze::run(a),
        cli::Command::Plot(a) => commands::plot::run(a),
        cli::Command::Export(a) => commands::export::run(a),
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("flinch: error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
