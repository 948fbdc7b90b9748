//! `flinch mark`: send one mark, never blocking.

use crate::Failure;
use crate::cli::MarkArgs;
use flinch_core::marks::client::{MarkClient, SendOutcome};
use flinch_core::marks::paths::client_marks_path;
use std::process::ExitCode;

pub fn run(a: MarkArgs) -> Result<ExitCode, Failure> {
    let path = a.fifo.or(a.file).unwrap_or_else(client_marks_path);
    let fields: Vec<(&str, &str)> = a
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut client = MarkClient::open(&path)?;
    match client.mark(&a.label, &fields)? {
        SendOutcome::Sent => Ok(ExitCode::SUCCESS),
        SendOutcome::Dropped => {
            eprintln!(
                "flinch: mark {} dropped: the recorder's pipe at {} is full (it is not keeping up)",
                a.label,
                path.display()
            );
            Ok(ExitCode::from(1))
        }
    }
}
