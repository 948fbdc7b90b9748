//! The `flinch` command line: `sources`, `record`, `mark`, `calibrate`, `analyze`, `plot`,
//! `export`.

mod backends;
mod cli;
mod commands;

use clap::Parser;
use std::process::ExitCode;

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
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Sources(a) => commands::sources::run(a),
        cli::Command::Record(a) => commands::record::run(a),
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
