//! One connection to DCGM and everything created on it, torn down in the right order on
//! every exit path.
//!
//! Each resource is recorded the moment DCGM hands it over, so dropping a half-built
//! session (an error in the middle of setting up) undoes exactly what was done: unwatch
//! every watched field group, destroy the field groups, destroy the GPU group, disconnect
//! (or stop the embedded engine), and finally `dcgmShutdown` when this was the library's
//! last user.

use crate::error::DcgmError;
use crate::ffi::{DcgmHandle, DcgmLib, FieldGroupId, GroupId, RawValue};
use std::ffi::CString;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the session's engine runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connection {
    /// An engine started inside this process (`dcgmStartEmbedded`).
    Embedded,
    /// A running `nv-hostengine` reached over TCP.
    Tcp(String),
    /// A running `nv-hostengine` reached over a unix socket.
    UnixSocket(String),
}

impl Connection {
    /// Parses a `--dcgm-host` value: `HOST`, `HOST:PORT`, `tcp://HOST[:PORT]`,
    /// `unix:///PATH` or an absolute socket path `/PATH`. `None` means embedded.
    pub fn parse(host: Option<&str>) -> Result<Connection, DcgmError> {
        let Some(raw) = host else {
            return Ok(Connection::Embedded);
        };
        let h = raw.trim();
        let bad = |why: &str| {
            DcgmError::InvalidInput(format!(
                "--dcgm-host {raw:?}: {why}; give HOST, HOST:PORT (default port 5555), \
                 unix:///PATH or /PATH of nv-hostengine's socket"
            ))
        };
        if h.contains('\0') {
            return Err(bad("contains a NUL byte"));
        }
        if let Some(p) = h.strip_prefix("unix://") {
            if !p.starts_with('/') {
                return Err(bad("a unix socket path must be absolute"));
            }
            return Ok(Connection::UnixSocket(p.to_owned()));
        }
        if h.starts_with('/') {
            return Ok(Connection::UnixSocket(h.to_owned()));
        }
        let tcp = h.strip_prefix("tcp://").unwrap_or(h);
        if tcp.is_empty() {
            return Err(bad("the address is empty"));
        }
        if tcp.contains("://") || tcp.contains(char::is_whitespace) {
            return Err(bad("not an address"));
        }
        Ok(Connection::Tcp(tcp.to_owned()))
    }

    /// A short description for attributes and messages.
    pub fn describe(&self) -> String {
        match self {
            Connection::Embedded => "embedded".into(),
            Connection::Tcp(a) => format!("tcp {a}"),
            Connection::UnixSocket(p) => format!("unix {p}"),
        }
    }
}

static NAME_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name unique per process and per call: `flinch-<pid>-<n>-<what>` (DCGM requires field
/// group names to be unique on the host engine, which other processes share).
pub(crate) fn unique_name(what: &str) -> CString {
    let n = NAME_COUNTER.fetch_add(1, Ordering::Relaxed);
    CString::new(format!("flinch-{}-{n}-{what}", std::process::id()))
        .expect("the name has no NUL byte")
}

/// A live DCGM session. See the module docs for the teardown order.
pub(crate) struct Session {
    lib: Arc<DcgmLib>,
    acquired: bool,
    handle: Option<DcgmHandle>,
    connection: Connection,
    group: Option<GroupId>,
    field_groups: Vec<FieldGroupId>,
    watched: Vec<FieldGroupId>,
}

impl Session {
    /// `dcgmInit` (once per library), then connect or start an embedded engine.
    pub(crate) fn start(lib: Arc<DcgmLib>, connection: Connection) -> Result<Session, DcgmError> {
        let mut s = Session {
            lib,
            acquired: false,
            handle: None,
            connection,
            group: None,
            field_groups: Vec::new(),
            watched: Vec::new(),
        };
        s.lib.acquire()?;
        s.acquired = true;
        let h = match &s.connection {
            Connection::Embedded => s.lib.start_embedded()?,
            Connection::Tcp(a) | Connection::UnixSocket(a) => {
                let unix = matches!(s.connection, Connection::UnixSocket(_));
                let addr = CString::new(a.as_str())
                    .map_err(|_| DcgmError::InvalidInput(format!("{a:?} contains a NUL byte")))?;
                s.lib
                    .connect(&addr, unix, 5000)
                    .map_err(|e| DcgmError::Connect {
                        address: a.clone(),
                        cause: Box::new(e),
                    })?
            }
        };
        s.handle = Some(h);
        Ok(s)
    }

    fn h(&self) -> DcgmHandle {
        self.handle.expect("a started session has a handle")
    }

    pub(crate) fn lib(&self) -> &Arc<DcgmLib> {
        &self.lib
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }

    pub(crate) fn supported_devices(&self) -> Result<Vec<u32>, DcgmError> {
        self.lib.supported_devices(self.h())
    }

    /// Creates the session's GPU group with these GPUs.
    pub(crate) fn create_group(&mut self, gpus: &[u32]) -> Result<GroupId, DcgmError> {
        let g = self.lib.group_create(self.h(), &unique_name("gpus"))?;
        self.group = Some(g);
        for &gpu in gpus {
            self.lib.group_add_device(self.h(), g, gpu)?;
        }
        Ok(g)
    }

    pub(crate) fn create_field_group(
        &mut self,
        ids: &[u16],
        what: &str,
    ) -> Result<FieldGroupId, DcgmError> {
        let fg = self
            .lib
            .field_group_create(self.h(), ids, &unique_name(what))?;
        self.field_groups.push(fg);
        Ok(fg)
    }

    /// Destroys one field group now (one whose watch failed).
    pub(crate) fn destroy_field_group(&mut self, fg: FieldGroupId) -> Result<(), DcgmError> {
        self.field_groups.retain(|&x| x != fg);
        self.lib.field_group_destroy(self.h(), fg)
    }

    pub(crate) fn watch(
        &mut self,
        fg: FieldGroupId,
        update_us: i64,
        max_keep_age_s: f64,
    ) -> Result<(), DcgmError> {
        let g = self.group.expect("watch after create_group");
        self.lib
            .watch_fields(self.h(), g, fg, update_us, max_keep_age_s, 0)?;
        self.watched.push(fg);
        Ok(())
    }

    pub(crate) fn update_all_fields(&self) -> Result<(), DcgmError> {
        self.lib.update_all_fields(self.h(), true)
    }

    pub(crate) fn values_since(
        &self,
        fg: FieldGroupId,
        since_us: i64,
        out: &mut Vec<RawValue>,
    ) -> Result<i64, DcgmError> {
        let g = self.group.expect("values after create_group");
        self.lib.values_since(self.h(), g, fg, since_us, out)
    }

    /// Undoes everything, in order. Errors are collected, not fatal: each later step still
    /// runs.
    pub(crate) fn teardown(&mut self) -> Vec<DcgmError> {
        let mut errors = Vec::new();
        let mut keep = |r: Result<(), DcgmError>| {
            if let Err(e) = r {
                errors.push(e);
            }
        };
        if let Some(h) = self.handle {
            if let Some(g) = self.group {
                for fg in std::mem::take(&mut self.watched).into_iter().rev() {
                    keep(self.lib.unwatch_fields(h, g, fg));
                }
            }
            for fg in std::mem::take(&mut self.field_groups).into_iter().rev() {
                keep(self.lib.field_group_destroy(h, fg));
            }
            if let Some(g) = self.group.take() {
                keep(self.lib.group_destroy(h, g));
            }
            self.handle = None;
            keep(match self.connection {
                Connection::Embedded => self.lib.stop_embedded(h),
                _ => self.lib.disconnect(h),
            });
        }
        if std::mem::take(&mut self.acquired) {
            keep(self.lib.release());
        }
        errors
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_strings_parse_into_connections() {
        assert_eq!(Connection::parse(None).unwrap(), Connection::Embedded);
        assert_eq!(
            Connection::parse(Some("127.0.0.1")).unwrap(),
            Connection::Tcp("127.0.0.1".into())
        );
        assert_eq!(
            Connection::parse(Some("tcp://node7:5555")).unwrap(),
            Connection::Tcp("node7:5555".into())
        );
        assert_eq!(
            Connection::parse(Some("unix:///tmp/nv-hostengine")).unwrap(),
            Connection::UnixSocket("/tmp/nv-hostengine".into())
        );
        assert_eq!(
            Connection::parse(Some("/run/dcgm.sock")).unwrap(),
            Connection::UnixSocket("/run/dcgm.sock".into())
        );
        for bad in ["", "  ", "unix://relative", "http://x", "a b", "x\0y"] {
            let e = Connection::parse(Some(bad)).unwrap_err();
            assert!(
                matches!(e, DcgmError::InvalidInput(ref m) if m.contains("--dcgm-host")),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn names_are_unique_and_carry_the_pid() {
        let a = unique_name("x");
        let b = unique_name("x");
        assert_ne!(a, b);
        let pid = std::process::id().to_string();
        assert!(a.to_str().unwrap().contains(&pid));
    }
}
