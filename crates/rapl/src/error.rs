//! What can go wrong with RAPL, each case with the file involved and what to do about it,
//! and the mapping onto the kinds a caller acts on ([`flinch_core::ErrorKind`]).

use flinch_core::{ErrorKind, SourceError};
use std::io;
use std::path::{Path, PathBuf};

/// The backend name used in errors and source infos.
pub const BACKEND: &str = "rapl";

/// Kernel modules that provide (or reveal) RAPL, as named in `/proc/modules`.
const RAPL_MODULES: [&str; 5] = [
    "intel_rapl_msr",
    "intel_rapl_common",
    "processor_thermal_rapl",
    "intel_rapl_tpmi",
    "rapl",
];

/// A failure of the RAPL backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RaplError {
    /// The powercap root does not exist.
    #[error("no powercap tree at {}: RAPL is not exposed here. {hint}", root.display())]
    NoTree {
        /// The root that was looked at.
        root: PathBuf,
        /// Why that may be, from `/proc/modules`.
        hint: String,
    },
    /// The root exists but is not a directory.
    #[error(
        "{} is not a directory: --rapl-root must name a powercap directory (default /sys/class/powercap)",
        root.display()
    )]
    NotADirectory {
        /// The root.
        root: PathBuf,
    },
    /// The root holds no `intel-rapl` / `intel-rapl-mmio` zones.
    #[error(
        "{} has no RAPL zones (no intel-rapl:N or intel-rapl-mmio:N entries; it holds: {found}). {hint}",
        root.display()
    )]
    NoZones {
        /// The root.
        root: PathBuf,
        /// What the root holds instead (comma-separated, or `nothing`).
        found: String,
        /// Why that may be, from `/proc/modules`.
        hint: String,
    },
    /// A file or directory exists but this process may not read it (CVE-2020-8694).
    #[error("cannot read {}: permission denied. {}", path.display(), permission_fix(root))]
    PermissionDenied {
        /// The file that could not be read.
        path: PathBuf,
        /// The powercap root, for the fix commands.
        root: PathBuf,
    },
    /// Any other I/O failure.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was being done (`open`, `read`, `list`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file did not hold what the kernel writes there.
    #[error("{} holds {content:?}, not {expected}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held (at most 64 bytes, lossily decoded).
        content: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A (non-sysfs) counter file changed on every read, so no consistent value was seen.
    #[error(
        "{} changed between every one of {attempts} consecutive reads, so no consistent value was read (a file rewritten faster than it can be read is not a RAPL counter)",
        path.display()
    )]
    Unstable {
        /// The file.
        path: PathBuf,
        /// How many reads were made.
        attempts: u32,
    },
    /// A zone has a counter but no usable wrap range, so its wraps could not be corrected.
    #[error(
        "{} holds {content:?}: without a positive max_energy_range_uj the counter's wraps cannot be corrected, so the zone is not used",
        path.display()
    )]
    BadRange {
        /// The `max_energy_range_uj` file.
        path: PathBuf,
        /// What it held (at most 64 bytes, lossily decoded).
        content: String,
    },
    /// Zones were found, but none with a usable energy counter.
    #[error("the RAPL zones under {} offer no energy counter: {zones}", root.display())]
    NoCounters {
        /// The root.
        root: PathBuf,
        /// Each zone and why it is not used.
        zones: String,
    },
    /// Every zone was found but none could be used; the first zone's error is kept.
    #[error("no usable RAPL zone under {}: {first}{}", root.display(), more_note(*others))]
    NoUsableZones {
        /// The root.
        root: PathBuf,
        /// Why the first zone could not be used.
        first: Box<RaplError>,
        /// How many more zones failed.
        others: usize,
    },
}

fn more_note(others: usize) -> String {
    match others {
        0 => String::new(),
        1 => " (and 1 more zone)".into(),
        n => format!(" (and {n} more zones)"),
    }
}

impl RaplError {
    /// The kind a caller acts on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RaplError::NoTree { .. } | RaplError::NoZones { .. } => ErrorKind::NotAvailable,
            RaplError::NotADirectory { .. } => ErrorKind::InvalidInput,
            RaplError::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            RaplError::Io { source, .. } => io_kind(source),
            RaplError::Parse { .. } | RaplError::Unstable { .. } => ErrorKind::Transient,
            RaplError::BadRange { .. } | RaplError::NoCounters { .. } => ErrorKind::NotSupported,
            RaplError::NoUsableZones { first, .. } => first.kind(),
        }
    }

    /// An I/O error on `path`, turned into [`RaplError::PermissionDenied`] when that is
    /// what it is.
    pub(crate) fn io(what: &'static str, path: &Path, root: &Path, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::PermissionDenied {
            RaplError::PermissionDenied {
                path: path.to_owned(),
                root: root.to_owned(),
            }
        } else {
            RaplError::Io {
                what,
                path: path.to_owned(),
                source,
            }
        }
    }
}

/// The kind of an I/O failure: a vanished file or device is `Lost` (a driver reload may
/// bring it back), an interrupted or would-block read `Transient`.
fn io_kind(e: &io::Error) -> ErrorKind {
    const ENODEV: i32 = 19;
    const ENXIO: i32 = 6;
    match e.kind() {
        io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        io::ErrorKind::NotFound => ErrorKind::Lost,
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            ErrorKind::Transient
        }
        _ if matches!(e.raw_os_error(), Some(ENODEV | ENXIO)) => ErrorKind::Lost,
        _ => ErrorKind::Other,
    }
}

impl From<RaplError> for SourceError {
    fn from(e: RaplError) -> Self {
        let kind = e.kind();
        let retryable = matches!(kind, ErrorKind::Transient | ErrorKind::Lost)
            || matches!(e, RaplError::Io { .. });
        SourceError::new(kind, BACKEND, e.to_string())
            .with_retryable(retryable)
            .with_cause(e)
    }
}

/// What to do when `energy_uj` is root-only.
pub fn permission_fix(root: &Path) -> String {
    let r = root.display();
    format!(
        "Since Linux 5.10 (and stable kernels patched for CVE-2020-8694, \"Platypus\") energy_uj \
         is readable by root only. Fixes: run flinch as root (sudo); or make the counters \
         readable: `sudo chmod a+r {r}/intel-rapl:*/energy_uj {r}/intel-rapl:*:*/energy_uj` \
         (until reboot), or for good with a udev rule such as \
         `ACTION==\"add\", SUBSYSTEM==\"powercap\", RUN+=\"/bin/chmod a+r /sys%p/energy_uj\"` \
         (this re-opens the Platypus side channel to every local user); or use the perf_event \
         `power` PMU, which needs CAP_PERFMON (or kernel.perf_event_paranoid <= 0) rather than \
         file access (flinch does not read it yet; `perf stat -a -e power/energy-pkg/` does)."
    )
}

/// Why no powercap tree may be visible, from the text of `/proc/modules` (`None` when it
/// could not be read, with the reason).
pub fn module_hint(proc_modules: Result<&str, &io::Error>) -> String {
    let text = match proc_modules {
        Ok(t) => t,
        Err(e) => {
            return format!(
                "Likely causes: a virtual machine that hides RAPL, a container without \
                 /sys/class/powercap mounted (mount it, or point --rapl-root at where it is), or \
                 the intel_rapl_msr driver not loaded (/proc/modules could not be read to check: \
                 {e})."
            );
        }
    };
    let loaded: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|m| RAPL_MODULES.contains(m))
        .collect();
    let drivers: Vec<&str> = loaded.iter().copied().filter(|m| *m != "rapl").collect();
    if !drivers.is_empty() {
        format!(
            "The RAPL driver is loaded ({}), so the tree exists on the host but is not visible \
             here: in a container, mount it (e.g. `-v /sys/class/powercap:/sys/class/powercap:ro`) \
             or point --rapl-root at where it is mounted.",
            drivers.join(", ")
        )
    } else {
        let perf = if loaded.contains(&"rapl") {
            " The perf `power` PMU module (rapl) is loaded, so the CPU does offer RAPL."
        } else {
            ""
        };
        format!(
            "No RAPL powercap driver is loaded (/proc/modules lists none of intel_rapl_msr, \
             intel_rapl_common): on bare metal run `sudo modprobe intel_rapl_msr` (Intel, and AMD \
             since Linux 5.11); in a virtual machine the hypervisor usually hides RAPL; a kernel \
             with the driver built in but no tree means the CPU does not offer it.{perf}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_say_what_proc_modules_shows() {
        let loaded = "intel_rapl_msr 20480 0 - Live 0x0\nintel_rapl_common 40960 1 intel_rapl_msr, Live 0x0\nkvm 1 0 - Live 0\n";
        let h = module_hint(Ok(loaded));
        assert!(h.contains("intel_rapl_msr, intel_rapl_common"), "{h}");
        assert!(h.contains("container"), "{h}");
        let none = "kvm 1 0 - Live 0\n";
        let h = module_hint(Ok(none));
        assert!(h.contains("modprobe intel_rapl_msr"), "{h}");
        assert!(!h.contains("perf"), "{h}");
        let perf_only = "rapl 20480 0 - Live 0\n";
        let h = module_hint(Ok(perf_only));
        assert!(
            h.contains("modprobe") && h.contains("perf `power` PMU"),
            "{h}"
        );
        let e = io::Error::from(io::ErrorKind::NotFound);
        let h = module_hint(Err(&e));
        assert!(h.contains("could not be read"), "{h}");
    }

    #[test]
    fn errors_map_to_the_kinds_callers_act_on() {
        let root = Path::new("/x");
        let denied = RaplError::io(
            "open",
            Path::new("/x/intel-rapl:0/energy_uj"),
            root,
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert_eq!(denied.kind(), ErrorKind::PermissionDenied);
        let msg = denied.to_string();
        for needle in [
            "/x/intel-rapl:0/energy_uj",
            "CVE-2020-8694",
            "5.10",
            "root",
            "chmod a+r /x/intel-rapl:*/energy_uj",
            "udev",
            "CAP_PERFMON",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in {msg}");
        }
        let se = SourceError::from(denied);
        assert_eq!(se.kind, ErrorKind::PermissionDenied);
        assert!(!se.retryable);
        assert_eq!(se.backend, "rapl");

        let gone = RaplError::io("read", root, root, io::Error::from_raw_os_error(19));
        assert_eq!(gone.kind(), ErrorKind::Lost);
        assert!(SourceError::from(gone).retryable);
        let missing = RaplError::io("open", root, root, io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(missing.kind(), ErrorKind::Lost);
        let tree = RaplError::NoTree {
            root: root.into(),
            hint: "h".into(),
        };
        assert_eq!(tree.kind(), ErrorKind::NotAvailable);
        assert!(tree.to_string().contains("RAPL is not exposed here"));
        let nested = RaplError::NoUsableZones {
            root: root.into(),
            first: Box::new(RaplError::BadRange {
                path: root.into(),
                content: "0\n".into(),
            }),
            others: 2,
        };
        assert_eq!(nested.kind(), ErrorKind::NotSupported);
        assert!(nested.to_string().ends_with("(and 2 more zones)"));
    }
}
