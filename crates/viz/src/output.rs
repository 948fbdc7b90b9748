//! Writing outputs whole or not at all: into a temporary file next to the destination,
//! renamed onto it only once everything is written, so a failure (or Ctrl-C) never leaves
//! partial garbage under the name the user asked for.
//!
//! An existing file is never replaced unless the caller allows it (`--force`), and then
//! the name is replaced, not written through: a symlink at the destination is replaced by
//! the new file and whatever it pointed to is left untouched. Without `--force` the final
//! rename refuses to replace anything, so a file that appears while the output is being
//! written is not clobbered either.

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
/// it is not `input` (the trace it is made from), and nothing is there yet unless `force`
/// (see [`check_output`]).
pub fn check_destination(path: &Path, input: &Path, force: bool) -> Result<(), OutputError> {
    if let (Ok(a), Ok(b)) = (path.canonicalize(), input.canonicalize())
        && a == b
    {
        return Err(OutputError::Destination(format!(
            "{} is the input trace; choose another output name",
            path.display()
        )));
    }
    check_output(path, force)
}

/// Checks an output path: its folder exists, it is not a directory, and nothing is there
/// yet unless `force` (a symlink counts as something, even a dangling one).
pub fn check_output(path: &Path, force: bool) -> Result<(), OutputError> {
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
    if let Ok(md) = std::fs::symlink_metadata(path)
        && !force
    {
        let what = if md.file_type().is_symlink() {
            match std::fs::read_link(path) {
                Ok(to) => format!(
                    "{} already exists (a symlink to {})",
                    path.display(),
                    to.display()
                ),
                Err(_) => format!("{} already exists (a symlink)", path.display()),
            }
        } else {
            format!("{} already exists", path.display())
        };
        return Err(OutputError::Destination(format!(
            "{what}: choose another name, or pass --force to replace it (a symlink is replaced \
             itself, never written through)"
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

/// Moves a finished temporary file onto `path` (a rename: a symlink at `path` is replaced,
/// not followed). Without `force` the rename refuses to replace anything that appeared at
/// `path` meanwhile, and the temporary file is removed.
pub fn persist(tmp: NamedTempFile, path: &Path, force: bool) -> Result<(), OutputError> {
    tmp.as_file().sync_all().map_err(|e| OutputError::Write {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let r = if force {
        tmp.persist(path)
    } else {
        tmp.persist_noclobber(path)
    };
    r.map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            OutputError::Destination(format!(
                "{} appeared while it was being written: not replaced; pass --force to replace it",
                path.display()
            ))
        } else {
            OutputError::Write {
                path: path.to_owned(),
                message: e.error.to_string(),
            }
        }
    })?;
    Ok(())
}

/// Writes `path` through `f` into a temporary file, renamed onto `path` only when `f`
/// succeeds; otherwise the temporary file is removed and `path` is left as it was. An
/// existing `path` is replaced only when `force` (see [`persist`]).
pub fn write_atomically<T, E: std::fmt::Display>(
    path: &Path,
    force: bool,
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
    persist(tmp, path, force)?;
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
        let r: Result<(), _> = write_atomically(&out, true, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        });
        assert!(r.unwrap_err().to_string().contains("boom"));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        write_atomically(&out, true, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn destinations_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("t.flinch.csv");
        std::fs::write(&input, "x").unwrap();
        assert!(check_destination(&input, &input, true).is_err());
        assert!(check_destination(dir.path(), &input, true).is_err());
        let e = check_destination(&dir.path().join("no/such/out.svg"), &input, false).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        check_destination(&dir.path().join("out.svg"), &input, false).unwrap();
    }

    #[test]
    fn an_existing_file_or_symlink_is_replaced_only_with_force_and_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("t.flinch.csv");
        std::fs::write(&input, "x").unwrap();
        let mine = dir.path().join("prog.py");
        std::fs::write(&mine, "print('mine')").unwrap();
        let e = check_destination(&mine, &input, false).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert!(e.to_string().contains("--force"), "{e}");
        check_destination(&mine, &input, true).unwrap();

        // A symlink, dangling or not, is something: refused without force.
        let link = dir.path().join("out.csv");
        std::os::unix::fs::symlink(&mine, &link).unwrap();
        let e = check_destination(&link, &input, false).unwrap_err();
        assert!(e.to_string().contains("a symlink to"), "{e}");
        let dangling = dir.path().join("dangling.csv");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(check_destination(&dangling, &input, false).is_err());

        // Without force the final rename refuses what appeared meanwhile and cleans up.
        let e = write_atomically(&mine, false, |w| w.write_all(b"csv")).unwrap_err();
        assert!(e.to_string().contains("not replaced"), "{e}");
        assert_eq!(std::fs::read_to_string(&mine).unwrap(), "print('mine')");
        let e = write_atomically(&dangling, false, |w| w.write_all(b"csv")).unwrap_err();
        assert!(e.to_string().contains("not replaced"), "{e}");
        assert!(
            !dir.path().join("nowhere").exists(),
            "written through a dangling link"
        );

        // With force the link itself is replaced; its target is untouched.
        write_atomically(&link, true, |w| w.write_all(b"csv")).unwrap();
        assert!(
            !std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "csv");
        assert_eq!(std::fs::read_to_string(&mine).unwrap(), "print('mine')");
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["dangling.csv", "out.csv", "prog.py", "t.flinch.csv"]
        );
    }
}
