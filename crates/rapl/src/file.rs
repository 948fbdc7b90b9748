//! Reading a zone's `energy_uj`: kept open, re-read with `pread` at offset 0, parsed without
//! allocating.
//!
//! On sysfs every read formats the counter afresh into the reader's own buffer, so a read
//! is atomic. A regular file (a fake tree in a test, a tree exported into a VM or container
//! by a daemon) is not: a read racing a rewrite can return some bytes of the old value and
//! some of the new, a number that never was, which would look like a huge step or a reset.
//! So on any filesystem other than sysfs the reader reads until two consecutive reads agree
//! (at most [`MAX_READS`] reads); on sysfs one read is taken as it is.

use crate::error::RaplError;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// `SYSFS_MAGIC` from `linux/magic.h`: the `f_type` of a sysfs mount.
const SYSFS_MAGIC: u64 = 0x6265_6572;

/// The most reads a non-sysfs counter gets to return two equal values in a row.
pub const MAX_READS: u32 = 5;

/// Room for a `u64` in decimal (20 digits), a newline and some slack.
const BUF: usize = 32;

/// Parses what the kernel writes into `energy_uj` / `max_energy_range_uj`: decimal digits
/// and a newline. Leading zeros are accepted (fake trees write fixed-width values).
pub fn parse_uj(bytes: &[u8]) -> Option<u64> {
    let s = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// What a file held, for error messages: at most 64 bytes, lossily decoded.
pub(crate) fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).into_owned()
}

/// Reads a small attribute file once (`max_energy_range_uj`, `name`).
pub(crate) fn read_attr(path: &Path, root: &Path) -> Result<Vec<u8>, RaplError> {
    std::fs::read(path).map_err(|e| RaplError::io("read", path, root, e))
}

/// Reads and parses a µJ attribute once.
pub(crate) fn read_uj_attr(path: &Path, root: &Path) -> Result<u64, RaplError> {
    let bytes = read_attr(path, root)?;
    parse_uj(&bytes).ok_or_else(|| RaplError::Parse {
        path: path.to_owned(),
        content: shown(&bytes),
        expected: "a number of microjoules",
    })
}

/// Calls `read` until it returns the same bytes twice in a row, or once when `atomic`.
/// Returns the length of the agreed value, which is left at the start of `buf`.
pub(crate) fn read_consistent(
    buf: &mut [u8; BUF],
    atomic: bool,
    mut read: impl FnMut(&mut [u8; BUF]) -> io::Result<usize>,
) -> Result<usize, Option<io::Error>> {
    let mut n = read(buf).map_err(Some)?;
    if atomic {
        return Ok(n);
    }
    let mut other = [0u8; BUF];
    for _ in 1..MAX_READS {
        let m = read(&mut other).map_err(Some)?;
        if m == n && other[..m] == buf[..n] {
            return Ok(n);
        }
        buf[..m].copy_from_slice(&other[..m]);
        n = m;
    }
    Err(None)
}

/// An `energy_uj` file held open.
#[derive(Debug)]
pub struct CounterFile {
    path: PathBuf,
    root: PathBuf,
    file: Option<File>,
    atomic: bool,
}

impl CounterFile {
    /// Opens the file (`root` is only used in error messages).
    pub fn open(path: &Path, root: &Path) -> Result<Self, RaplError> {
        let mut f = CounterFile {
            path: path.to_owned(),
            root: root.to_owned(),
            file: None,
            atomic: false,
        };
        f.file = Some(f.open_file()?);
        Ok(f)
    }

    /// Opens the path and notes whether it is on sysfs.
    fn open_file(&mut self) -> Result<File, RaplError> {
        let file =
            File::open(&self.path).map_err(|e| RaplError::io("open", &self.path, &self.root, e))?;
        self.atomic = rustix::fs::fstatfs(&file)
            .map(|s| s.f_type as u64 == SYSFS_MAGIC)
            .unwrap_or(false);
        Ok(file)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether reads are taken as atomic (the file is on sysfs).
    pub fn atomic_reads(&self) -> bool {
        self.atomic
    }

    /// Reads the counter, µJ. An I/O error closes the file, and the next read opens it
    /// again (a zone that vanished with its driver comes back with it).
    pub fn read_uj(&mut self) -> Result<u64, RaplError> {
        let file = match self.file.take() {
            Some(f) => f,
            None => self.open_file()?,
        };
        let mut buf = [0u8; BUF];
        let res = read_consistent(&mut buf, self.atomic, |b| file.read_at(b, 0));
        if !matches!(res, Err(Some(_))) {
            self.file = Some(file);
        }
        match res {
            Ok(n) => parse_uj(&buf[..n]).ok_or_else(|| RaplError::Parse {
                path: self.path.clone(),
                content: shown(&buf[..n]),
                expected: "a number of microjoules",
            }),
            Err(None) => Err(RaplError::Unstable {
                path: self.path.clone(),
                attempts: MAX_READS,
            }),
            Err(Some(e)) => Err(RaplError::io("read", &self.path, &self.root, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flinch_core::ErrorKind;

    #[test]
    fn parses_kernel_and_fixed_width_values() {
        assert_eq!(parse_uj(b"262143328850\n"), Some(262_143_328_850));
        assert_eq!(parse_uj(b"00000000000000000042\n"), Some(42));
        assert_eq!(parse_uj(b"0"), Some(0));
        assert_eq!(parse_uj(b"18446744073709551615\n"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"\n",
            b"18446744073709551616\n",
            b"-5\n",
            b" 5\n",
            b"5\n\n",
            b"12a\n",
            b"1.5\n",
            b"000000000000000000001\n",
        ] {
            assert_eq!(parse_uj(bad), None, "{:?}", shown(bad));
        }
    }

    /// Plays back a list of file contents, one per read.
    fn script(reads: Vec<&'static [u8]>) -> impl FnMut(&mut [u8; BUF]) -> io::Result<usize> {
        let mut it = reads.into_iter();
        move |b| {
            let r = it.next().expect("no more reads scripted");
            b[..r.len()].copy_from_slice(r);
            Ok(r.len())
        }
    }

    #[test]
    fn a_torn_read_of_a_regular_file_is_read_again() {
        // Old 1999|99, new 2000|05: a read racing the rewrite saw "200099".
        let mut buf = [0u8; BUF];
        let n = read_consistent(
            &mut buf,
            false,
            script(vec![b"200099\n", b"200005\n", b"200005\n"]),
        )
        .unwrap();
        assert_eq!(parse_uj(&buf[..n]), Some(200_005));
        // Agreement on the first two reads costs two reads.
        let mut reads = 0;
        let n = read_consistent(&mut buf, false, |b| {
            reads += 1;
            b[..3].copy_from_slice(b"17\n");
            Ok(3)
        })
        .unwrap();
        assert_eq!((n, reads), (3, 2));
        // On sysfs one read is trusted.
        let n = read_consistent(&mut buf, true, script(vec![b"200099\n"])).unwrap();
        assert_eq!(parse_uj(&buf[..n]), Some(200_099));
        // A value that never settles is an error, not a guess.
        let mut k = 0u8;
        let r = read_consistent(&mut buf, false, |b| {
            k += 1;
            b[0] = b'0' + k;
            Ok(1)
        });
        assert!(matches!(r, Err(None)));
        assert_eq!(k as u32, MAX_READS);
        // A shorter second read must not compare stale bytes.
        let n = read_consistent(&mut buf, false, script(vec![b"123\n", b"12\n", b"12\n"])).unwrap();
        assert_eq!(&buf[..n], b"12\n");
    }

    #[test]
    fn a_file_is_kept_open_and_reopened_after_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("energy_uj");
        std::fs::write(&p, "100\n").unwrap();
        let mut f = CounterFile::open(&p, dir.path()).unwrap();
        assert!(!f.atomic_reads(), "a temp dir is not sysfs");
        assert_eq!(f.read_uj().unwrap(), 100);
        // Rewritten in place: the open file sees the new value.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .write_at(b"250\n", 0)
            .unwrap();
        assert_eq!(f.read_uj().unwrap(), 250);
        // Replaced by a new file: the open file still reads the old one (it is kept open).
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, "999\n").unwrap();
        assert_eq!(f.read_uj().unwrap(), 250);

        // A path that reads with an I/O error (a directory opens, but reading it fails).
        let q = dir.path().join("energy_uj_dir");
        std::fs::create_dir(&q).unwrap();
        let mut g = CounterFile::open(&q, dir.path()).unwrap();
        let e = g.read_uj().unwrap_err();
        assert!(e.to_string().contains("energy_uj_dir"), "{e}");
        assert!(matches!(e, RaplError::Io { what: "read", .. }), "{e:?}");
        // The failed file was closed; while the path is missing, reads say so.
        std::fs::remove_dir(&q).unwrap();
        let e = g.read_uj().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Lost, "{e}");
        // Once a counter is back, the next read opens it again.
        std::fs::write(&q, "7\n").unwrap();
        assert_eq!(g.read_uj().unwrap(), 7);
    }

    #[test]
    fn garbage_is_an_error_naming_the_file_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("energy_uj");
        std::fs::write(&p, "lots\n").unwrap();
        let mut f = CounterFile::open(&p, dir.path()).unwrap();
        let e = f.read_uj().unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("energy_uj") && msg.contains("lots"), "{msg}");
        assert_eq!(e.kind(), ErrorKind::Transient);
        // The file stays open after a parse error.
        std::fs::write(&p, "5\n").unwrap();
        assert_eq!(f.read_uj().unwrap(), 5);
    }
}
