//! Writing outputs whole or not at all: into a temporary file next to the destination,
//! renamed over it only once everything is written, so a failure (or Ctrl-C) never leaves
//! partial garbage under the name the user asked for.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// Why an output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The destination is unusable (a directory, the input itself, a missing folder).
    #[error("{0}")]
    Destination(String),
    /// Writing failed.
    #[error("cannot write {path}: {message}")]
    Write {
        /// The destination.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Checks a destination before any work is done: its folder exists, it is not a directory,
/// and it is not `input` (the trace it is made from).
pub fn check_destination(path: &Path, input: &Path) -> Result<(), OutputError> {
    check_output_path(path)?;
    if let (Ok(a), Ok(b)) = (path.canonicalize(), input.canonicalize())
        && a == b
    {
        return Err(OutputError::Destination(format!(
            "{} is the input trace; choose another output name",
            path.display()
        )));
    }
    Ok(())
}

/// Checks a destination made from no input file: its folder exists and it is not a
/// directory.
pub fn check_output_path(path: &Path) -> Result<(), OutputError> {
    let dir = dir_of(path);
    if !dir.is_dir() {
        return Err(OutputError::Destination(format!(
            "cannot write {}: the folder {} does not exist; create it first",
            path.display(),
            dir.display()
        )));
    }
    if path.is_dir() {
        return Err(OutputError::Destination(format!(
            "{} is a directory; give a file name",
            path.display()
        )));
    }
    Ok(())
}

/// A temporary file next to `path` whose name ends like `path` (so a library that picks
/// the format from the extension picks the right one).
pub fn temp_next_to(path: &Path) -> Result<NamedTempFile, OutputError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(&format!(".tmp{ext}"))
        // Readable by others like any file a command writes (not 0600 as temp files are).
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir_of(path))
        .map_err(|e| OutputError::Write {
            path: path.to_owned(),
            message: format!("cannot create a temporary file next to it: {e}"),
        })
}

/// Moves a finished temporary file onto `path`.
pub fn persist(tmp: NamedTempFile, path: &Path) -> Result<(), OutputError> {
    tmp.as_file().sync_all().map_err(|e| OutputError::Write {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    tmp.persist(path).map_err(|e| OutputError::Write {
        path: path.to_owned(),
        message: e.error.to_string(),
    })?;
    Ok(())
}

/// Writes `path` through `f` into a temporary file, renamed over `path` only when `f`
/// succeeds; otherwise the temporary file is removed and `path` is left as it was.
pub fn write_atomically<T, E: std::fmt::Display>(
    path: &Path,
    f: impl FnOnce(&mut BufWriter<&File>) -> Result<T, E>,
) -> Result<T, OutputError> {
    let tmp = temp_next_to(path)?;
    let werr = |message: String| OutputError::Write {
        path: path.to_owned(),
        message,
    };
    let value = {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        let v = f(&mut w).map_err(|e| werr(e.to_string()))?;
        w.flush().map_err(|e| werr(e.to_string()))?;
        v
    };
    persist(tmp, path)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.json");
        std::fs::write(&out, "old").unwrap();
        let r: Result<(), _> = write_atomically(&out, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        });
        assert!(r.unwrap_err().to_string().contains("boom"));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        write_atomically(&out, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn destinations_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("t.flinch.csv");
        std::fs::write(&input, "x").unwrap();
        assert!(check_destination(&input, &input).is_err());
        assert!(check_destination(dir.path(), &input).is_err());
        let e = check_destination(&dir.path().join("no/such/out.svg"), &input).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        check_destination(&dir.path().join("out.svg"), &input).unwrap();
    }
}
