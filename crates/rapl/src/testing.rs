//! Fake powercap trees for tests (feature `testing`).
//!
//! A [`FakePowercap`] lives in a temporary directory laid out like `/sys/class/powercap`:
//! zone directories nest inside their control type and parent
//! (`intel-rapl/intel-rapl:0/intel-rapl:0:2`) and every zone is also linked at the top
//! (`intel-rapl:0:2 -> intel-rapl/intel-rapl:0/intel-rapl:0:2`), so discovery meets the
//! same duplicates it meets on a real machine.
//!
//! # How counters are rewritten
//!
//! A source keeps `energy_uj` open and re-reads it, so the fake must change the file in
//! place: replacing it (write a new file, rename it over) would leave the reader on the old
//! file for ever. [`FakePowercap::set_energy`] therefore writes the value with a single
//! `pwrite` at offset 0, zero-padded to a fixed [`ENERGY_WIDTH`] digits plus a newline, so
//! the file never changes length: a reader never sees it empty or shortened (which would
//! look like a reset). Truncating and rewriting would open exactly that window. What a
//! regular file still allows, and sysfs does not, is a read racing the write and returning
//! some old and some new bytes; the reader handles that by reading non-sysfs files until two
//! reads agree (see [`crate::CounterFile`]).
//!
//! # Unreadable counters, also as root
//!
//! Since Linux 5.10 `energy_uj` is mode 0400, root's. [`FakePowercap::make_unreadable`]
//! sets mode 000; a process with `CAP_DAC_OVERRIDE` (root) still reads it, so tests run the
//! reading code through [`without_file_privileges`], which drops that capability (and
//! `CAP_DAC_READ_SEARCH`) from one thread: the kernel then answers `EACCES` exactly as it
//! does to an unprivileged user.
//!
//! ```
//! use flinch_rapl::testing::FakePowercap;
//! let fake = FakePowercap::intel_server(1).unwrap();
//! fake.set_energy("intel-rapl:0", 1_000_000).unwrap();
//! assert_eq!(fake.energy("intel-rapl:0").unwrap(), 1_000_000);
//! ```

use crate::discover::{Interface, parse_zone_id};
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Digits every fake `energy_uj` value is padded to (a `u64` has at most 20).
pub const ENERGY_WIDTH: usize = 20;

/// Intel's usual range (energy unit 61.035 µJ): `(2^32 - 1) × unit`.
pub const INTEL_RANGE_UJ: u64 = 262_143_328_850;
/// AMD Zen's range (energy unit 15.259 µJ).
pub const AMD_RANGE_UJ: u64 = 65_532_610_987;
/// Intel server DRAM's range (fixed 15.3 µJ unit).
pub const INTEL_DRAM_RANGE_UJ: u64 = 65_712_999_613;

/// A powercap tree in a temporary directory (removed when dropped).
#[derive(Debug)]
pub struct FakePowercap {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ranges: Mutex<BTreeMap<String, u64>>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl FakePowercap {
    /// An empty tree: the root exists, with no zones.
    pub fn new() -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("fake-powercap").tempdir()?;
        // Traversable by everyone, so that a test may read it as another user.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let root = dir.path().join("powercap");
        fs::create_dir(&root)?;
        Ok(FakePowercap {
            _dir: dir,
            root,
            ranges: Mutex::new(BTreeMap::new()),
        })
    }

    /// A server: per socket `package-N` with `core` and `dram` subzones (DRAM with its own
    /// 15.3 µJ range).
    pub fn intel_server(sockets: u32) -> io::Result<Self> {
        let mut f = Self::new()?;
        for s in 0..sockets {
            let p = format!("intel-rapl:{s}");
            f.add_zone(&p, &format!("package-{s}"), INTEL_RANGE_UJ)?;
            f.add_zone(&format!("{p}:0"), "core", INTEL_RANGE_UJ)?;
            f.add_zone(&format!("{p}:1"), "dram", INTEL_DRAM_RANGE_UJ)?;
        }
        Ok(f)
    }

    /// A laptop: `package-0` with `core` and `uncore`, a `psys` zone, and the MMIO copy of
    /// `package-0`.
    pub fn intel_client() -> io::Result<Self> {
        let mut f = Self::new()?;
        f.add_zone("intel-rapl:0", "package-0", INTEL_RANGE_UJ)?;
        f.add_zone("intel-rapl:0:0", "core", INTEL_RANGE_UJ)?;
        f.add_zone("intel-rapl:0:1", "uncore", INTEL_RANGE_UJ)?;
        f.add_zone("intel-rapl:1", "psys", INTEL_RANGE_UJ)?;
        f.add_zone("intel-rapl-mmio:0", "package-0", INTEL_RANGE_UJ)?;
        Ok(f)
    }

    /// An AMD machine: per socket `package-N` with a `core` subzone.
    pub fn amd(sockets: u32) -> io::Result<Self> {
        let mut f = Self::new()?;
        for s in 0..sockets {
            f.add_zone(
                &format!("intel-rapl:{s}"),
                &format!("package-{s}"),
                AMD_RANGE_UJ,
            )?;
            f.add_zone(&format!("intel-rapl:{s}:0"), "core", AMD_RANGE_UJ)?;
        }
        Ok(f)
    }

    /// The root to hand to the backend (`--rapl-root`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where zone `id` lives (inside its control type and parent).
    pub fn zone_path(&self, id: &str) -> io::Result<PathBuf> {
        let (iface, idx) =
            parse_zone_id(id).ok_or_else(|| invalid(format!("{id:?} is not a zone id")))?;
        let ctype = match iface {
            Interface::Msr => "intel-rapl",
            Interface::Mmio => "intel-rapl-mmio",
        };
        let mut p = self.root.join(ctype);
        let mut sub = ctype.to_owned();
        for i in idx {
            sub.push_str(&format!(":{i}"));
            p.push(&sub);
        }
        Ok(p)
    }

    /// Adds zone `id` (`intel-rapl:0`, `intel-rapl:0:1`, `intel-rapl-mmio:0`) named `name`
    /// with its range, and a counter at 0. A subzone's parent must exist.
    pub fn add_zone(&mut self, id: &str, name: &str, max_energy_range_uj: u64) -> io::Result<()> {
        let path = self.zone_path(id)?;
        let parent = path.parent().ok_or_else(|| invalid(id.into()))?;
        let (_, idx) = parse_zone_id(id).ok_or_else(|| invalid(id.into()))?;
        if idx.len() > 1 && !parent.is_dir() {
            return Err(invalid(format!("add the parent of {id} first")));
        }
        fs::create_dir_all(parent)?;
        let ctype_dir = self.root.join(
            path.strip_prefix(&self.root)
                .ok()
                .and_then(|p| p.iter().next())
                .ok_or_else(|| invalid(id.into()))?,
        );
        let enabled = ctype_dir.join("enabled");
        if !enabled.exists() {
            fs::write(enabled, "1\n")?;
        }
        fs::create_dir(&path)?;
        fs::write(path.join("name"), format!("{name}\n"))?;
        fs::write(
            path.join("max_energy_range_uj"),
            format!("{max_energy_range_uj}\n"),
        )?;
        fs::write(path.join("enabled"), "1\n")?;
        fs::write(
            path.join("energy_uj"),
            format!("{:0w$}\n", 0, w = ENERGY_WIDTH),
        )?;
        let rel = path
            .strip_prefix(&self.root)
            .map_err(|_| invalid(id.into()))?;
        std::os::unix::fs::symlink(rel, self.root.join(id))?;
        self.ranges
            .lock()
            .map_err(|_| invalid("poisoned".into()))?
            .insert(id.to_owned(), max_energy_range_uj);
        Ok(())
    }

    /// The range zone `id` was created with.
    pub fn range_uj(&self, id: &str) -> io::Result<u64> {
        self.ranges
            .lock()
            .map_err(|_| invalid("poisoned".into()))?
            .get(id)
            .copied()
            .ok_or_else(|| invalid(format!("no zone {id}")))
    }

    /// Rewrites zone `id`'s counter in place: one `pwrite` of a fixed-width value (see the
    /// module docs for why).
    pub fn set_energy(&self, id: &str, uj: u64) -> io::Result<()> {
        let p = self.zone_path(id)?.join("energy_uj");
        let f = OpenOptions::new().write(true).open(&p)?;
        let s = format!("{uj:0w$}\n", w = ENERGY_WIDTH);
        let n = f.write_at(s.as_bytes(), 0)?;
        if n != s.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write to {}", p.display()),
            ));
        }
        Ok(())
    }

    /// Sets the counter to what a hardware counter shows after `total_uj` of energy: the
    /// total modulo the range (values run from 0 to `max_energy_range_uj`).
    pub fn set_total_energy(&self, id: &str, total_uj: u64) -> io::Result<()> {
        let range = self.range_uj(id)?;
        self.set_energy(id, total_uj % (range + 1))
    }

    /// The counter's current value.
    pub fn energy(&self, id: &str) -> io::Result<u64> {
        let p = self.zone_path(id)?.join("energy_uj");
        let s = fs::read_to_string(&p)?;
        s.trim()
            .parse()
            .map_err(|_| invalid(format!("{} holds {s:?}", p.display())))
    }

    /// Replaces the contents of one of zone `id`'s files (truncating: for broken values,
    /// not for counter updates).
    pub fn write_raw(&self, id: &str, file: &str, contents: &[u8]) -> io::Result<()> {
        let p = self.zone_path(id)?.join(file);
        let f = OpenOptions::new().write(true).open(&p)?;
        f.set_len(0)?;
        f.write_at(contents, 0)?;
        Ok(())
    }

    /// Deletes one of zone `id`'s files.
    pub fn remove(&self, id: &str, file: &str) -> io::Result<()> {
        fs::remove_file(self.zone_path(id)?.join(file))
    }

    /// Makes zone `id`'s `energy_uj` unreadable (mode 000; root still reads it unless the
    /// reading thread runs [`without_file_privileges`]).
    pub fn make_unreadable(&self, id: &str) -> io::Result<()> {
        let p = self.zone_path(id)?.join("energy_uj");
        fs::set_permissions(p, fs::Permissions::from_mode(0o000))
    }
}

/// Runs `f` on a thread whose effective capabilities lack `CAP_DAC_OVERRIDE` and
/// `CAP_DAC_READ_SEARCH`, so that file modes apply to it even when the process is root.
/// Panics if the capabilities cannot be dropped (a test must not pass by not testing).
pub fn without_file_privileges<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use rustix::thread::{CapabilitySet, capabilities, set_capabilities};
    std::thread::scope(|s| {
        let h = s.spawn(move || {
            let mut caps = capabilities(None).expect("capget failed");
            caps.effective
                .remove(CapabilitySet::DAC_OVERRIDE | CapabilitySet::DAC_READ_SEARCH);
            set_capabilities(None, caps).expect("capset failed: cannot drop file privileges");
            let now = capabilities(None).expect("capget failed");
            assert!(
                !now.effective
                    .intersects(CapabilitySet::DAC_OVERRIDE | CapabilitySet::DAC_READ_SEARCH),
                "file privileges are still effective"
            );
            f()
        });
        match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}
