//! A fake `libdcgm` for tests (feature `testing`), built from C when a test asks for it.
//!
//! The fake exports the DCGM symbols this crate resolves, with the prototypes and struct
//! layouts of the DCGM 4.6 headers (its own `_Static_assert`s check the sizes), so tests go
//! through the real loader and the real FFI path. It reads a script next to itself
//! (`<lib>.script`: GPUs, values to serve with their timestamps, blanks, failing calls) and
//! logs every call and every value served to `<lib>.log`. The script format is described
//! at the top of `fake/fake_dcgm.c`.
//!
//! ```no_run
//! use flinch_dcgm::testing::FakeDcgm;
//! let fake = FakeDcgm::build().expect("a C compiler (cc) is needed to build the fake libdcgm");
//! fake.script("gpus 0\nsample 1 0 155 ago:1000 250.5\n");
//! // ... open a DcgmSource with `library: Some(fake.path().into())` ...
//! assert_eq!(fake.calls().first().map(String::as_str), Some("dcgmInit"));
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

/// The fake library's C source.
pub const FAKE_SOURCE: &str = include_str!("../fake/fake_dcgm.c");

/// A fake libdcgm compiled into its own temporary directory. Each one is a distinct file,
/// so several can be loaded into one process without sharing state.
#[derive(Debug)]
pub struct FakeDcgm {
    dir: tempfile::TempDir,
    lib: PathBuf,
}

/// One value the fake handed to flinch, from its log.
#[derive(Clone, Debug, PartialEq)]
pub struct Served {
    /// DCGM GPU id.
    pub gpu: u32,
    /// Field id.
    pub field: u16,
    /// Timestamp served, µs since 1970.
    pub ts_us: i64,
    /// The value as scripted: a number, or `blank`, `notfound`, `notsupported`, `noperm`,
    /// `status:CODE`.
    pub value: String,
}

impl FakeDcgm {
    /// Compiles the fake with `$CC` (default `cc`).
    pub fn build() -> Result<FakeDcgm, String> {
        Self::build_with(&[])
    }

    /// Compiles the fake with extra `-D` defines (e.g. `FAKE_OMIT_GET_VALUES_SINCE` leaves
    /// out `dcgmGetValuesSince_v2`).
    pub fn build_with(defines: &[&str]) -> Result<FakeDcgm, String> {
        let dir = tempfile::Builder::new()
            .prefix("flinch-fake-dcgm-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let src = dir.path().join("fake_dcgm.c");
        std::fs::write(&src, FAKE_SOURCE)
            .map_err(|e| format!("cannot write {}: {e}", src.display()))?;
        let lib = dir.path().join("libdcgm-fake.so");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let mut cmd = Command::new(&cc);
        cmd.args([
            "-shared",
            "-fPIC",
            "-O1",
            "-std=c11",
            "-Wall",
            "-Werror",
            "-fvisibility=hidden",
            "-Wl,-Bsymbolic",
        ]);
        for d in defines {
            cmd.arg(format!("-D{d}"));
        }
        cmd.arg("-o").arg(&lib).arg(&src).arg("-ldl");
        let out = cmd.output().map_err(|e| {
            format!("cannot run the C compiler {cc:?} (set CC or install gcc): {e}")
        })?;
        if !out.status.success() {
            return Err(format!(
                "{cc} failed to build the fake libdcgm:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(FakeDcgm { dir, lib })
    }

    /// The library to load (`--dcgm-lib`).
    pub fn path(&self) -> &Path {
        &self.lib
    }

    /// The directory the fake lives in (deleted when the fake is dropped).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the script the fake reads on its first call.
    pub fn script(&self, text: &str) {
        let p = self.script_path();
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
    }

    /// Where the script goes: `<lib>.script`.
    pub fn script_path(&self) -> PathBuf {
        with_suffix(&self.lib, ".script")
    }

    /// Where the log goes: `<lib>.log`.
    pub fn log_path(&self) -> PathBuf {
        with_suffix(&self.lib, ".log")
    }

    /// The whole log (empty before the first call).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The DCGM calls made, in order, by function name.
    pub fn calls(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.starts_with("dcgm") || l.starts_with("errorString"))
            .filter(|l| !l.contains(" -> "))
            .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
            .collect()
    }

    /// Log lines of calls that returned an error (`FUNCTION -> CODE`).
    pub fn failures(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" -> "))
            .map(str::to_owned)
            .collect()
    }

    /// Lines that report a problem in the fake itself or in the caller's use of it:
    /// resources still alive at `dcgmShutdown` (`LEAK`), a field group destroyed while
    /// watched (`WARN`), an unreadable script line (`SCRIPT-ERROR`).
    pub fn problems(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| {
                l.starts_with("LEAK") || l.starts_with("WARN") || l.starts_with("SCRIPT-ERROR")
            })
            .map(str::to_owned)
            .collect()
    }

    /// Every value handed to a callback, in order.
    pub fn served(&self) -> Vec<Served> {
        self.log()
            .lines()
            .filter_map(|l| l.strip_prefix("served "))
            .filter_map(|rest| {
                let mut gpu = None;
                let mut field = None;
                let mut ts = None;
                let mut value = None;
                for kv in rest.split_whitespace() {
                    match kv.split_once('=') {
                        Some(("gpu", v)) => gpu = v.parse().ok(),
                        Some(("field", v)) => field = v.parse().ok(),
                        Some(("ts", v)) => ts = v.parse().ok(),
                        Some(("value", v)) => value = Some(v.to_owned()),
                        _ => {}
                    }
                }
                Some(Served {
                    gpu: gpu?,
                    field: field?,
                    ts_us: ts?,
                    value: value?,
                })
            })
            .collect()
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
