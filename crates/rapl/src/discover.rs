//! Finding the zones of a powercap tree.
//!
//! `/sys/class/powercap` links every zone at its top level (`intel-rapl:0`,
//! `intel-rapl:0:1`, `intel-rapl-mmio:0`) while the zones also nest inside their control
//! type and parent (`intel-rapl/intel-rapl:0/intel-rapl:0:1`); a container may mount only
//! the control type (`.../powercap/intel-rapl`). The walk accepts all three: it descends
//! into control-type and zone directories only (never `device` or `subsystem` links, which
//! loop), and keeps each zone id once.
//!
//! A zone is keyed by its `name` (the zone index is not the package id): top-level zones by
//! their own name (`package-0`, `package-0-die-1`, `psys`), subzones by their parent's key
//! and their name (`package-0.dram`). The `intel-rapl-mmio` interface exposes the same
//! package counter again: an MMIO zone whose key an `intel-rapl` zone already has is
//! skipped, so nothing is counted twice.

use crate::error::{RaplError, module_hint};
use crate::file::{read_attr, read_uj_attr};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// How deep below the root the walk looks for zones (root / control type / zone /
/// subzone / sub-subzone).
const MAX_DEPTH: u32 = 4;

/// The powercap control type a zone belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Interface {
    /// `intel-rapl`: the MSR interface (Intel, and AMD since Linux 5.11).
    Msr,
    /// `intel-rapl-mmio`: the MMIO interface of Intel client parts (same counters).
    Mmio,
}

impl Interface {
    /// The control type's name, which prefixes its zone ids.
    pub fn control_type(self) -> &'static str {
        match self {
            Interface::Msr => "intel-rapl",
            Interface::Mmio => "intel-rapl-mmio",
        }
    }
}

/// What a zone measures, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ZoneKind {
    /// A CPU package (socket) or one die of it: `package-N`, `package-N-die-M`.
    Package,
    /// The cores of a package (PP0); part of the package's energy.
    Core,
    /// The uncore / client GPU (PP1); part of the package's energy.
    Uncore,
    /// The memory attached to a package; not part of the package's energy on Intel
    /// servers (CPU + memory = package + dram).
    Dram,
    /// The whole platform (`psys`, `psys-N`): never added to package sums.
    Psys,
    /// A name flinch does not know.
    Other,
}

impl ZoneKind {
    /// Classifies a zone name.
    pub fn from_name(name: &str) -> Self {
        match name {
            "core" => ZoneKind::Core,
            "uncore" => ZoneKind::Uncore,
            "dram" => ZoneKind::Dram,
            n if n.starts_with("package") => ZoneKind::Package,
            n if n.starts_with("psys") => ZoneKind::Psys,
            _ => ZoneKind::Other,
        }
    }
    /// Short name: `package`, `core`, `uncore`, `dram`, `psys`, `other`.
    pub fn name(self) -> &'static str {
        match self {
            ZoneKind::Package => "package",
            ZoneKind::Core => "core",
            ZoneKind::Uncore => "uncore",
            ZoneKind::Dram => "dram",
            ZoneKind::Psys => "psys",
            ZoneKind::Other => "other",
        }
    }
    /// How this zone's energy relates to others, for humans and the analysis.
    pub fn scope(self) -> &'static str {
        match self {
            ZoneKind::Package => "a CPU package; excludes its dram subzone",
            ZoneKind::Core | ZoneKind::Uncore => "part of its parent package's energy",
            ZoneKind::Dram => "memory of its parent package; not part of the package's energy",
            ZoneKind::Psys => "the whole platform; never add it to package sums",
            ZoneKind::Other => "unknown RAPL domain",
        }
    }
}

impl fmt::Display for ZoneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One RAPL zone with an energy counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    /// The zone id, its directory's name: `intel-rapl:0:2`.
    pub id: String,
    /// Its control type.
    pub interface: Interface,
    /// Its directory.
    pub path: PathBuf,
    /// Its `name` as the kernel wrote it (`dram`).
    pub name: String,
    /// The unique key flinch uses as device name: `package-0`, `package-0.dram`, `psys`.
    pub key: String,
    /// The parent zone's key, for subzones.
    pub parent: Option<String>,
    /// What it measures.
    pub kind: ZoneKind,
    /// `max_energy_range_uj`: the counter's range, µJ (read once).
    pub max_energy_range_uj: u64,
}

impl Zone {
    /// The `energy_uj` file.
    pub fn energy_path(&self) -> PathBuf {
        self.path.join("energy_uj")
    }
}

/// A zone that was found but is not used, and why.
#[derive(Debug)]
pub struct Skipped {
    /// The zone id.
    pub id: String,
    /// The key it would have had.
    pub key: String,
    /// Why it is not used (one line).
    pub why: String,
    /// The error behind it, when it is a failure rather than a choice.
    pub error: Option<RaplError>,
}

/// What a powercap tree holds.
#[derive(Debug)]
pub struct Discovery {
    /// The root that was walked.
    pub root: PathBuf,
    /// Usable zones, by interface and zone index.
    pub zones: Vec<Zone>,
    /// Zones found but not used.
    pub skipped: Vec<Skipped>,
    /// Other things worth saying (unnamed zones, unlistable directories).
    pub notes: Vec<String>,
}

/// Splits a zone id (`intel-rapl:0:1`, `intel-rapl-mmio:0`) into interface and indices.
pub fn parse_zone_id(s: &str) -> Option<(Interface, Vec<u32>)> {
    let (iface, rest) = if let Some(r) = s.strip_prefix("intel-rapl-mmio:") {
        (Interface::Mmio, r)
    } else {
        (Interface::Msr, s.strip_prefix("intel-rapl:")?)
    };
    let idx: Option<Vec<u32>> = rest
        .split(':')
        .map(|p| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        })
        .collect();
    Some((iface, idx?))
}

/// Makes a zone name usable in channel names (`[A-Za-z0-9_:/-]`, the dot being the key's
/// separator).
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '/') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

type Found = BTreeMap<(Interface, Vec<u32>), PathBuf>;

struct Walk<'a> {
    root: &'a Path,
    found: Found,
    others: Vec<String>,
    notes: Vec<String>,
}

impl Walk<'_> {
    fn dir(&mut self, dir: &Path, depth: u32) -> Result<(), RaplError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if depth == 0 => return Err(root_error(self.root, e)),
            Err(e) => {
                self.notes.push(format!(
                    "cannot list {} ({e}): zones below it are not seen",
                    dir.display()
                ));
                return Ok(());
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let is_zone = parse_zone_id(&name);
            let is_control = name == "intel-rapl" || name == "intel-rapl-mmio";
            if is_zone.is_none() && !is_control {
                if depth == 0 {
                    self.others.push(name);
                }
                continue;
            }
            if !std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            if let Some(id) = is_zone {
                self.found.entry(id).or_insert_with(|| path.clone());
            }
            if depth < MAX_DEPTH {
                self.dir(&path, depth + 1)?;
            }
        }
        Ok(())
    }
}

fn root_error(root: &Path, e: std::io::Error) -> RaplError {
    const ENOTDIR: i32 = 20;
    match e.kind() {
        std::io::ErrorKind::NotFound => RaplError::NoTree {
            root: root.to_owned(),
            hint: String::new(),
        },
        _ if e.raw_os_error() == Some(ENOTDIR) => RaplError::NotADirectory {
            root: root.to_owned(),
        },
        _ => RaplError::io("list", root, root, e),
    }
}

fn id_string(iface: Interface, idx: &[u32]) -> String {
    let mut s = iface.control_type().to_owned();
    for i in idx {
        s.push(':');
        s.push_str(&i.to_string());
    }
    s
}

/// Walks the powercap tree at `root`. `proc_modules` (normally `/proc/modules`) is read only
/// to say why there is no tree or no zone.
pub fn discover(root: &Path, proc_modules: &Path) -> Result<Discovery, RaplError> {
    let hint = || {
        let text = std::fs::read_to_string(proc_modules);
        module_hint(text.as_deref())
    };
    let mut walk = Walk {
        root,
        found: BTreeMap::new(),
        others: Vec::new(),
        notes: Vec::new(),
    };
    match walk.dir(root, 0) {
        Err(RaplError::NoTree { root, .. }) => {
            return Err(RaplError::NoTree { root, hint: hint() });
        }
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    if walk.found.is_empty() {
        let found = if walk.others.is_empty() {
            "nothing".to_owned()
        } else {
            walk.others.join(", ")
        };
        return Err(RaplError::NoZones {
            root: root.to_owned(),
            found,
            hint: hint(),
        });
    }

    // Names first, so that a subzone's key can use its parent's.
    let mut names: HashMap<(Interface, Vec<u32>), String> = HashMap::new();
    let mut notes = walk.notes;
    for ((iface, idx), path) in &walk.found {
        let id = id_string(*iface, idx);
        let name = match read_attr(&path.join("name"), root) {
            Ok(b) => String::from_utf8_lossy(&b).trim().to_owned(),
            Err(e) => {
                notes.push(format!("{id} has no readable name ({e}): keyed by its id"));
                String::new()
            }
        };
        let name = if name.is_empty() { id.clone() } else { name };
        names.insert((*iface, idx.clone()), name);
    }
    let key_of = |iface: Interface, idx: &[u32]| -> String {
        let mut parts = Vec::with_capacity(idx.len());
        for depth in 1..=idx.len() {
            let sub = &idx[..depth];
            let name = names
                .get(&(iface, sub.to_vec()))
                .cloned()
                .unwrap_or_else(|| id_string(iface, sub));
            parts.push(sanitize(&name));
        }
        parts.join(".")
    };

    let mut zones: Vec<Zone> = Vec::new();
    let mut skipped = Vec::new();
    let mut msr_keys: HashMap<String, String> = HashMap::new();
    for ((iface, idx), path) in &walk.found {
        let id = id_string(*iface, idx);
        let mut key = key_of(*iface, idx);
        let name = names[&(*iface, idx.clone())].clone();
        match iface {
            Interface::Msr => {
                if let Some(first) = msr_keys.get(&key) {
                    let unique = format!("{key}-{id}");
                    notes.push(format!(
                        "{id} has the same name as {first} ({key}): keyed as {unique}"
                    ));
                    key = unique;
                }
                msr_keys.insert(key.clone(), id.clone());
            }
            Interface::Mmio => {
                if let Some(msr) = msr_keys.get(&key) {
                    skipped.push(Skipped {
                        id: id.clone(),
                        key: key.clone(),
                        why: format!(
                            "the MMIO interface to the counter {msr} already reads: counted once"
                        ),
                        error: None,
                    });
                    continue;
                }
                if zones.iter().any(|z| z.key == key) {
                    key = format!("{key}-{id}");
                }
            }
        }
        let energy = path.join("energy_uj");
        if let Err(e) = std::fs::symlink_metadata(&energy)
            && e.kind() == std::io::ErrorKind::NotFound
        {
            skipped.push(Skipped {
                id,
                key,
                why: "it has no energy_uj (no energy counter)".into(),
                error: None,
            });
            continue;
        }
        let range_path = path.join("max_energy_range_uj");
        // A range that is zero or not a number makes the zone unusable (not a transient
        // failure: the file is read once).
        let max = match read_uj_attr(&range_path, root) {
            Ok(0) => Err(RaplError::BadRange {
                path: range_path,
                content: "0".into(),
            }),
            Err(RaplError::Parse { path, content, .. }) => {
                Err(RaplError::BadRange { path, content })
            }
            other => other,
        };
        let max = match max {
            Ok(m) => m,
            Err(e) => {
                skipped.push(Skipped {
                    id,
                    key,
                    why: format!("its wrap range is unusable: {e}"),
                    error: Some(e),
                });
                continue;
            }
        };
        let parent = (idx.len() > 1).then(|| key_of(*iface, &idx[..idx.len() - 1]));
        zones.push(Zone {
            id,
            interface: *iface,
            path: path.clone(),
            kind: ZoneKind::from_name(&name),
            name,
            key,
            parent,
            max_energy_range_uj: max,
        });
    }
    Ok(Discovery {
        root: root.to_owned(),
        zones,
        skipped,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_ids_parse_and_garbage_does_not() {
        assert_eq!(
            parse_zone_id("intel-rapl:0"),
            Some((Interface::Msr, vec![0]))
        );
        assert_eq!(
            parse_zone_id("intel-rapl:1:12"),
            Some((Interface::Msr, vec![1, 12]))
        );
        assert_eq!(
            parse_zone_id("intel-rapl-mmio:0"),
            Some((Interface::Mmio, vec![0]))
        );
        for bad in [
            "intel-rapl",
            "intel-rapl:",
            "intel-rapl:a",
            "intel-rapl:0:",
            "intel-rapl:-1",
            "intel-rapl:+1",
            "dtpm",
            "intel-rapl-mmio",
        ] {
            assert_eq!(parse_zone_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn kinds_and_sanitized_keys() {
        assert_eq!(ZoneKind::from_name("package-0-die-1"), ZoneKind::Package);
        assert_eq!(ZoneKind::from_name("psys-1"), ZoneKind::Psys);
        assert_eq!(ZoneKind::from_name("dram"), ZoneKind::Dram);
        assert_eq!(ZoneKind::from_name("gpu"), ZoneKind::Other);
        assert_eq!(sanitize("package-0"), "package-0");
        assert_eq!(sanitize("odd name.x"), "odd_name_x");
    }
}
