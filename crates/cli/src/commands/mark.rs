//! `flinch mark`: send one mark, never blocking, and say which recorder took it.

use crate::Failure;
use crate::cli::MarkArgs;
use flinch_core::marks::client::{MarkClient, SendOutcome};
use flinch_core::marks::paths::client_marks_path;
use std::os::unix::fs::FileTypeExt;
use std::process::ExitCode;

pub fn run(a: MarkArgs) -> Result<ExitCode, Failure> {
    if let Some(p) = &a.fifo
        && let Ok(md) = std::fs::symlink_metadata(p)
        && !md.file_type().is_fifo()
    {
        return Err(Failure::new(format!(
            "--fifo {}: not a FIFO ({}); a recorder's FIFO is the path `flinch record` printed; \
             to append marks to a plain file use --file",
            p.display(),
            if md.is_file() {
                "a regular file"
            } else if md.is_dir() {
                "a directory"
            } else {
                "a symlink or something else"
            }
        )));
    }
    let path = a.fifo.or(a.file).unwrap_or_else(client_marks_path);
    let fields: Vec<(&str, &str)> = a
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut client = MarkClient::open(&path)?;
    match client.mark(&a.label, &fields)? {
        SendOutcome::Sent => {
            if !a.quiet {
                eprintln!("flinch: mark {} {}", a.label, taken_by(&client));
            }
            Ok(ExitCode::SUCCESS)
        }
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

/// Where the mark went, in words: the recorder's pid and trace when it says so.
fn taken_by(client: &MarkClient) -> String {
    let path = client.path().display();
    if !client.is_fifo() {
        return format!("appended to the marks file {path}");
    }
    match client.recorder() {
        Some(r) => format!(
            "taken by recorder pid {} writing {} (FIFO {path})",
            r.pid,
            r.trace.as_deref().unwrap_or("a trace it has not named yet")
        ),
        None => format!(
            "sent to FIFO {path}; the recorder reading it does not say which trace it writes \
             (a flinch older than this one?)"
        ),
    }
}
