//! The only module with `unsafe`: hand-written declarations of the DCGM 4.6 calls and
//! structs this crate uses, the run-time loader, and thin safe wrappers around each call.
//!
//! Every type and constant here is written from the DCGM 4.6.0 headers (`dcgm_structs.h`,
//! `dcgm_agent.h`, `dcgm_fields.h`); the struct sizes are checked at compile time against
//! the sizes those headers give on x86_64 / aarch64 Linux.
//!
//! Soundness rests on three things: the declared function types match the C prototypes
//! exactly; the [`DcgmLib`] that holds the function pointers also owns the library handle,
//! so no pointer outlives the mapping; and the engine validates the opaque handles it is
//! given (an unknown handle is an error code, not undefined behaviour). The wrappers are
//! `pub(crate)`: only the session module calls them, with handles DCGM gave it.
#![allow(unsafe_code)]

use crate::error::DcgmError;
use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_LAZY};
use std::ffi::{CStr, CString, c_char, c_double, c_int, c_longlong, c_uint, c_ushort, c_void};
use std::mem::size_of;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

/// `dcgmReturn_t`: 0 is success, negative values are `DCGM_ST_*` errors.
pub type DcgmReturn = c_int;
/// `dcgmHandle_t`: an opaque `uintptr_t` (pointer-sized, not 32 bits).
pub type DcgmHandle = usize;
/// `dcgmGpuGrp_t`: an opaque `uintptr_t`.
pub type GroupId = usize;
/// `dcgmFieldGrp_t`: an opaque `uintptr_t`.
pub type FieldGroupId = usize;

/// `DCGM_ST_OK`.
pub const ST_OK: DcgmReturn = 0;
/// `DCGM_ST_BADPARAM`.
pub const ST_BADPARAM: DcgmReturn = -1;
/// `DCGM_ST_NOT_SUPPORTED`.
pub const ST_NOT_SUPPORTED: DcgmReturn = -6;
/// `DCGM_ST_INIT_ERROR`.
pub const ST_INIT_ERROR: DcgmReturn = -7;
/// `DCGM_ST_UNINITIALIZED`.
pub const ST_UNINITIALIZED: DcgmReturn = -10;
/// `DCGM_ST_TIMEOUT`.
pub const ST_TIMEOUT: DcgmReturn = -11;
/// `DCGM_ST_VER_MISMATCH`.
pub const ST_VER_MISMATCH: DcgmReturn = -12;
/// `DCGM_ST_UNKNOWN_FIELD`.
pub const ST_UNKNOWN_FIELD: DcgmReturn = -13;
/// `DCGM_ST_NO_DATA`.
pub const ST_NO_DATA: DcgmReturn = -14;
/// `DCGM_ST_STALE_DATA`.
pub const ST_STALE_DATA: DcgmReturn = -15;
/// `DCGM_ST_NO_PERMISSION`.
pub const ST_NO_PERMISSION: DcgmReturn = -17;
/// `DCGM_ST_GPU_IS_LOST`.
pub const ST_GPU_IS_LOST: DcgmReturn = -18;
/// `DCGM_ST_CONNECTION_NOT_VALID`.
pub const ST_CONNECTION_NOT_VALID: DcgmReturn = -21;
/// `DCGM_ST_GPU_NOT_SUPPORTED`.
pub const ST_GPU_NOT_SUPPORTED: DcgmReturn = -22;
/// `DCGM_ST_REQUIRES_ROOT`.
pub const ST_REQUIRES_ROOT: DcgmReturn = -29;
/// `DCGM_ST_MODULE_NOT_LOADED`.
pub const ST_MODULE_NOT_LOADED: DcgmReturn = -33;
/// `DCGM_ST_PROFILING_NOT_SUPPORTED`.
pub const ST_PROFILING_NOT_SUPPORTED: DcgmReturn = -36;
/// `DCGM_ST_PROFILING_LIBRARY_ERROR`.
pub const ST_PROFILING_LIBRARY_ERROR: DcgmReturn = -37;
/// `DCGM_ST_PROFILING_MULTI_PASS`.
pub const ST_PROFILING_MULTI_PASS: DcgmReturn = -38;
/// `DCGM_ST_INSUFFICIENT_DRIVER_VERSION`.
pub const ST_INSUFFICIENT_DRIVER_VERSION: DcgmReturn = -44;

/// `DCGM_OPERATION_MODE_AUTO`: the engine runs its own update threads.
const OPERATION_MODE_AUTO: c_int = 1;
/// `DCGM_GROUP_EMPTY`.
const GROUP_EMPTY: c_int = 1;
/// `DCGM_FE_GPU` (`dcgm_field_entity_group_t`).
pub const FE_GPU: u32 = 1;
/// `DCGM_FT_DOUBLE`: the field type is a character code.
pub const FT_DOUBLE: u16 = b'd' as u16;
/// `DCGM_FT_INT64`.
pub const FT_INT64: u16 = b'i' as u16;
/// `DCGM_MAX_NUM_DEVICES`: the size of the GPU id array `dcgmGetAllSupportedDevices` fills.
pub const MAX_NUM_DEVICES: usize = 32;
/// `DCGM_MAX_FIELD_IDS_PER_FIELD_GROUP`.
pub const MAX_FIELD_IDS_PER_FIELD_GROUP: usize = 128;

/// `DCGM_INT32_BLANK`; `+1` not found, `+2` not supported, `+3` not permissioned.
pub const INT32_BLANK: i64 = 0x7fff_fff0;
/// `DCGM_INT64_BLANK`; a value at or above it is blank (`DCGM_INT64_IS_BLANK`).
pub const INT64_BLANK: i64 = 0x7fff_ffff_ffff_fff0;
/// `DCGM_FP64_BLANK` (2^47); a value at or above it is blank (`DCGM_FP64_IS_BLANK`).
pub const FP64_BLANK: f64 = 140_737_488_355_328.0;

/// `MAKE_DCGM_VERSION(T, ver)`: the struct size in the low 24 bits, the version above.
pub const fn make_version(size: usize, version: u32) -> u32 {
    size as u32 | (version << 24)
}

/// The value union of `dcgmFieldValue_v1`: `i64`, `dbl`, `str[256]`, `blob[4096]`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union FieldValueUnion {
    /// `DCGM_FT_INT64` (and timestamps).
    pub i64_: i64,
    /// `DCGM_FT_DOUBLE`.
    pub dbl: f64,
    /// `DCGM_FT_STRING`, NUL-terminated.
    pub str_: [c_char; 256],
    /// `DCGM_FT_BINARY`.
    pub blob: [u8; 4096],
}

/// `dcgmFieldValue_v1`: what the `*_v2` getters hand to the enumeration callback.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FieldValueV1 {
    /// `dcgmFieldValue_version1`.
    pub version: c_uint,
    /// The field id (`DCGM_FI_*`).
    pub field_id: c_ushort,
    /// The field type, a `DCGM_FT_*` character code.
    pub field_type: c_ushort,
    /// Per-value status (`dcgmReturn_t`); non-zero means the value is not valid.
    pub status: c_int,
    /// Microseconds since 1970.
    pub ts: i64,
    /// The value.
    pub value: FieldValueUnion,
}

/// `dcgmConnectV2Params_v2`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnectV2Params {
    /// `dcgmConnectV2Params_version2`.
    pub version: c_uint,
    /// 0: watches made by this connection go away when it disconnects.
    pub persist_after_disconnect: c_uint,
    /// Connection timeout in ms (0 means 5000).
    pub timeout_ms: c_uint,
    /// 1 when the address is a unix socket path.
    pub address_is_unix_socket: c_uint,
}

// Sizes from compiling the 4.6.0 headers (specs §2.3).
const _: () = assert!(size_of::<FieldValueUnion>() == 4096);
const _: () = assert!(size_of::<FieldValueV1>() == 4120);
const _: () = assert!(std::mem::offset_of!(FieldValueV1, status) == 8);
const _: () = assert!(std::mem::offset_of!(FieldValueV1, ts) == 16);
const _: () = assert!(std::mem::offset_of!(FieldValueV1, value) == 24);
const _: () = assert!(size_of::<ConnectV2Params>() == 16);
const _: () = assert!(size_of::<DcgmHandle>() == size_of::<*const c_void>());

/// `dcgmFieldValue_version1`.
pub const FIELD_VALUE_VERSION1: u32 = make_version(size_of::<FieldValueV1>(), 1);
/// `dcgmConnectV2Params_version2`.
pub const CONNECT_V2_PARAMS_VERSION2: u32 = make_version(size_of::<ConnectV2Params>(), 2);
const _: () = assert!(FIELD_VALUE_VERSION1 == 0x0100_1018);
const _: () = assert!(CONNECT_V2_PARAMS_VERSION2 == 0x0200_0010);

/// `dcgmFieldValueEntityEnumeration_f`.
type EnumerationCb = unsafe extern "C" fn(
    entity_group_id: c_uint,
    entity_id: c_uint,
    values: *mut FieldValueV1,
    num_values: c_int,
    user_data: *mut c_void,
) -> c_int;

type FnInit = unsafe extern "C" fn() -> DcgmReturn;
type FnShutdown = unsafe extern "C" fn() -> DcgmReturn;
type FnStartEmbedded = unsafe extern "C" fn(c_int, *mut DcgmHandle) -> DcgmReturn;
type FnStopEmbedded = unsafe extern "C" fn(DcgmHandle) -> DcgmReturn;
type FnConnectV2 =
    unsafe extern "C" fn(*const c_char, *mut ConnectV2Params, *mut DcgmHandle) -> DcgmReturn;
type FnDisconnect = unsafe extern "C" fn(DcgmHandle) -> DcgmReturn;
type FnErrorString = unsafe extern "C" fn(DcgmReturn) -> *const c_char;
type FnGetAllSupportedDevices =
    unsafe extern "C" fn(DcgmHandle, *mut c_uint, *mut c_int) -> DcgmReturn;
type FnGroupCreate =
    unsafe extern "C" fn(DcgmHandle, c_int, *const c_char, *mut GroupId) -> DcgmReturn;
type FnGroupAddDevice = unsafe extern "C" fn(DcgmHandle, GroupId, c_uint) -> DcgmReturn;
type FnGroupDestroy = unsafe extern "C" fn(DcgmHandle, GroupId) -> DcgmReturn;
type FnFieldGroupCreate = unsafe extern "C" fn(
    DcgmHandle,
    c_int,
    *const c_ushort,
    *const c_char,
    *mut FieldGroupId,
) -> DcgmReturn;
type FnFieldGroupDestroy = unsafe extern "C" fn(DcgmHandle, FieldGroupId) -> DcgmReturn;
type FnWatchFields = unsafe extern "C" fn(
    DcgmHandle,
    GroupId,
    FieldGroupId,
    c_longlong,
    c_double,
    c_int,
) -> DcgmReturn;
type FnUnwatchFields = unsafe extern "C" fn(DcgmHandle, GroupId, FieldGroupId) -> DcgmReturn;
type FnUpdateAllFields = unsafe extern "C" fn(DcgmHandle, c_int) -> DcgmReturn;
type FnGetValuesSinceV2 = unsafe extern "C" fn(
    DcgmHandle,
    GroupId,
    FieldGroupId,
    c_longlong,
    *mut c_longlong,
    Option<EnumerationCb>,
    *mut c_void,
) -> DcgmReturn;

/// Every symbol this crate needs, in the order they are resolved at load.
pub const REQUIRED_SYMBOLS: &[&str] = &[
    "dcgmInit",
    "dcgmShutdown",
    "dcgmStartEmbedded",
    "dcgmStopEmbedded",
    "dcgmConnect_v2",
    "dcgmDisconnect",
    "errorString",
    "dcgmGetAllSupportedDevices",
    "dcgmGroupCreate",
    "dcgmGroupAddDevice",
    "dcgmGroupDestroy",
    "dcgmFieldGroupCreate",
    "dcgmFieldGroupDestroy",
    "dcgmWatchFields",
    "dcgmUnwatchFields",
    "dcgmUpdateAllFields",
    "dcgmGetValuesSince_v2",
];

/// The sonames tried, in order, when no path is given.
pub const DEFAULT_LIBRARY_NAMES: &[&str] = &["libdcgm.so.4", "libdcgm.so.3"];

struct Api {
    init: FnInit,
    shutdown: FnShutdown,
    start_embedded: FnStartEmbedded,
    stop_embedded: FnStopEmbedded,
    connect_v2: FnConnectV2,
    disconnect: FnDisconnect,
    error_string: FnErrorString,
    get_all_supported_devices: FnGetAllSupportedDevices,
    group_create: FnGroupCreate,
    group_add_device: FnGroupAddDevice,
    group_destroy: FnGroupDestroy,
    field_group_create: FnFieldGroupCreate,
    field_group_destroy: FnFieldGroupDestroy,
    watch_fields: FnWatchFields,
    unwatch_fields: FnUnwatchFields,
    update_all_fields: FnUpdateAllFields,
    get_values_since_v2: FnGetValuesSinceV2,
}

/// A loaded DCGM library with every required symbol resolved.
///
/// Shared as an `Arc`: the library stays mapped while any session made from it lives.
/// `dcgmInit` / `dcgmShutdown` are process-wide, so the library counts its users and only
/// the last one shuts DCGM down.
pub struct DcgmLib {
    api: Api,
    path: String,
    users: Mutex<usize>,
    // Declared last: dropped after everything that points into it.
    _lib: Library,
}

impl std::fmt::Debug for DcgmLib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DcgmLib").field("path", &self.path).finish()
    }
}

/// Libraries loaded by this process, by the name or canonical path they were opened with,
/// so that two users of the same library share one `dcgmInit` count.
static LOADED: Mutex<Vec<(String, Weak<DcgmLib>)>> = Mutex::new(Vec::new());

fn open(name: &str) -> Result<Library, libloading::Error> {
    // SAFETY: loading a shared library runs its initialisers; libdcgm's are those of a
    // well-behaved C/C++ library. RTLD_GLOBAL mirrors NVIDIA's own Go bindings, whose
    // modules are resolved against the library's global symbols.
    unsafe { Library::open(Some(name), RTLD_LAZY | RTLD_GLOBAL) }
}

fn symbol<T: Copy>(lib: &Library, name: &'static str, path: &str) -> Result<T, DcgmError> {
    let mut cname = Vec::with_capacity(name.len() + 1);
    cname.extend_from_slice(name.as_bytes());
    cname.push(0);
    // SAFETY: `T` is the function-pointer type declared above from the exact prototype of
    // `name` in dcgm_agent.h; the pointer is only used while `lib` (kept in the same
    // `DcgmLib`) stays loaded.
    match unsafe { lib.get::<T>(&cname) } {
        Ok(s) => Ok(*s),
        Err(e) => Err(DcgmError::SymbolMissing {
            symbol: name,
            library: path.to_owned(),
            detail: e.to_string(),
        }),
    }
}

impl DcgmLib {
    /// Loads DCGM: `path` when given (and nothing else), otherwise `libdcgm.so.4`, then
    /// `libdcgm.so.3`. Every required symbol is resolved now, so a library of the wrong
    /// kind fails here with the symbol's name rather than later.
    pub fn load(path: Option<&Path>) -> Result<Arc<DcgmLib>, DcgmError> {
        let candidates: Vec<String> = match path {
            Some(p) => vec![p.display().to_string()],
            None => DEFAULT_LIBRARY_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let mut tried = Vec::new();
        for name in candidates {
            let key = match path {
                Some(p) => std::fs::canonicalize(p)
                    .unwrap_or_else(|_| PathBuf::from(p))
                    .display()
                    .to_string(),
                None => name.clone(),
            };
            let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
            loaded.retain(|(_, w)| w.strong_count() > 0);
            if let Some(lib) = loaded
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, w)| w.upgrade())
            {
                return Ok(lib);
            }
            match open(&name) {
                Ok(lib) => {
                    let lib = Arc::new(Self::resolve(lib, name)?);
                    loaded.push((key, Arc::downgrade(&lib)));
                    return Ok(lib);
                }
                Err(e) => {
                    let detail = dlopen_detail(&name, &e);
                    tried.push((name, detail))
                }
            }
        }
        Err(DcgmError::LibraryNotFound {
            tried,
            user_path: path.map(Path::to_path_buf),
        })
    }

    fn resolve(lib: Library, path: String) -> Result<DcgmLib, DcgmError> {
        let p = path.as_str();
        let api = Api {
            init: symbol(&lib, "dcgmInit", p)?,
            shutdown: symbol(&lib, "dcgmShutdown", p)?,
            start_embedded: symbol(&lib, "dcgmStartEmbedded", p)?,
            stop_embedded: symbol(&lib, "dcgmStopEmbedded", p)?,
            connect_v2: symbol(&lib, "dcgmConnect_v2", p)?,
            disconnect: symbol(&lib, "dcgmDisconnect", p)?,
            error_string: symbol(&lib, "errorString", p)?,
            get_all_supported_devices: symbol(&lib, "dcgmGetAllSupportedDevices", p)?,
            group_create: symbol(&lib, "dcgmGroupCreate", p)?,
            group_add_device: symbol(&lib, "dcgmGroupAddDevice", p)?,
            group_destroy: symbol(&lib, "dcgmGroupDestroy", p)?,
            field_group_create: symbol(&lib, "dcgmFieldGroupCreate", p)?,
            field_group_destroy: symbol(&lib, "dcgmFieldGroupDestroy", p)?,
            watch_fields: symbol(&lib, "dcgmWatchFields", p)?,
            unwatch_fields: symbol(&lib, "dcgmUnwatchFields", p)?,
            update_all_fields: symbol(&lib, "dcgmUpdateAllFields", p)?,
            get_values_since_v2: symbol(&lib, "dcgmGetValuesSince_v2", p)?,
        };
        Ok(DcgmLib {
            api,
            path,
            users: Mutex::new(0),
            _lib: lib,
        })
    }

    /// The name or path the library was loaded from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// DCGM's text for a return code (`errorString`), or a generic text for codes it does
    /// not know.
    pub fn error_string(&self, code: DcgmReturn) -> String {
        // SAFETY: errorString takes any int and returns NULL or a pointer to a static,
        // NUL-terminated string owned by the library, which outlives this call.
        let p = unsafe { (self.api.error_string)(code) };
        if p.is_null() {
            return format!("unknown DCGM error {code}");
        }
        // SAFETY: non-NULL results point to static NUL-terminated strings (see above).
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    fn check(&self, function: &'static str, rc: DcgmReturn) -> Result<(), DcgmError> {
        if rc == ST_OK {
            Ok(())
        } else {
            Err(DcgmError::Call {
                function,
                code: rc,
                message: self.error_string(rc),
            })
        }
    }

    /// Counts one more user; the first one calls `dcgmInit`.
    pub(crate) fn acquire(&self) -> Result<(), DcgmError> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if *users == 0 {
            // SAFETY: dcgmInit takes no arguments; calling it once per process lifetime
            // of the library (guarded by the count) is its documented use.
            let rc = unsafe { (self.api.init)() };
            self.check("dcgmInit", rc)?;
        }
        *users += 1;
        Ok(())
    }

    /// Counts one user less; the last one calls `dcgmShutdown`.
    pub(crate) fn release(&self) -> Result<(), DcgmError> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        match *users {
            0 => Ok(()),
            1 => {
                *users = 0;
                // SAFETY: no arguments; every session of this library has ended.
                let rc = unsafe { (self.api.shutdown)() };
                self.check("dcgmShutdown", rc)
            }
            _ => {
                *users -= 1;
                Ok(())
            }
        }
    }

    /// `dcgmStartEmbedded(DCGM_OPERATION_MODE_AUTO, &h)`.
    pub(crate) fn start_embedded(&self) -> Result<DcgmHandle, DcgmError> {
        let mut h: DcgmHandle = 0;
        // SAFETY: `h` is a valid out-pointer for the duration of the call.
        let rc = unsafe { (self.api.start_embedded)(OPERATION_MODE_AUTO, &mut h) };
        self.check("dcgmStartEmbedded", rc)?;
        Ok(h)
    }

    /// `dcgmStopEmbedded(h)`.
    pub(crate) fn stop_embedded(&self, h: DcgmHandle) -> Result<(), DcgmError> {
        // SAFETY: plain integer argument; the engine validates the handle.
        let rc = unsafe { (self.api.stop_embedded)(h) };
        self.check("dcgmStopEmbedded", rc)
    }

    /// `dcgmConnect_v2(address, {version2, persist=0, timeout, unix}, &h)`.
    pub(crate) fn connect(
        &self,
        address: &CString,
        unix_socket: bool,
        timeout_ms: u32,
    ) -> Result<DcgmHandle, DcgmError> {
        let mut params = ConnectV2Params {
            version: CONNECT_V2_PARAMS_VERSION2,
            persist_after_disconnect: 0,
            timeout_ms,
            address_is_unix_socket: unix_socket as c_uint,
        };
        let mut h: DcgmHandle = 0;
        // SAFETY: `address` is NUL-terminated and outlives the call; `params` is the
        // versioned struct the prototype takes; `h` is a valid out-pointer.
        let rc = unsafe { (self.api.connect_v2)(address.as_ptr(), &mut params, &mut h) };
        self.check("dcgmConnect_v2", rc)?;
        Ok(h)
    }

    /// `dcgmDisconnect(h)`.
    pub(crate) fn disconnect(&self, h: DcgmHandle) -> Result<(), DcgmError> {
        // SAFETY: plain integer argument; the engine validates the handle.
        let rc = unsafe { (self.api.disconnect)(h) };
        self.check("dcgmDisconnect", rc)
    }

    /// `dcgmGetAllSupportedDevices`: the DCGM GPU ids.
    pub(crate) fn supported_devices(&self, h: DcgmHandle) -> Result<Vec<u32>, DcgmError> {
        let mut ids = [0 as c_uint; MAX_NUM_DEVICES];
        let mut count: c_int = 0;
        // SAFETY: `ids` has DCGM_MAX_NUM_DEVICES elements as the prototype requires;
        // `count` is a valid out-pointer.
        let rc = unsafe { (self.api.get_all_supported_devices)(h, ids.as_mut_ptr(), &mut count) };
        self.check("dcgmGetAllSupportedDevices", rc)?;
        let n = (count.max(0) as usize).min(MAX_NUM_DEVICES);
        Ok(ids[..n].to_vec())
    }

    /// `dcgmGroupCreate(h, DCGM_GROUP_EMPTY, name, &g)`.
    pub(crate) fn group_create(&self, h: DcgmHandle, name: &CString) -> Result<GroupId, DcgmError> {
        let mut g: GroupId = 0;
        // SAFETY: `name` is NUL-terminated and outlives the call; `g` is a valid out-pointer.
        let rc = unsafe { (self.api.group_create)(h, GROUP_EMPTY, name.as_ptr(), &mut g) };
        self.check("dcgmGroupCreate", rc)?;
        Ok(g)
    }

    /// `dcgmGroupAddDevice(h, g, gpu)`.
    pub(crate) fn group_add_device(
        &self,
        h: DcgmHandle,
        g: GroupId,
        gpu: u32,
    ) -> Result<(), DcgmError> {
        // SAFETY: plain integer arguments; the engine validates them.
        let rc = unsafe { (self.api.group_add_device)(h, g, gpu) };
        self.check("dcgmGroupAddDevice", rc)
    }

    /// `dcgmGroupDestroy(h, g)`.
    pub(crate) fn group_destroy(&self, h: DcgmHandle, g: GroupId) -> Result<(), DcgmError> {
        // SAFETY: plain integer arguments; the engine validates them.
        let rc = unsafe { (self.api.group_destroy)(h, g) };
        self.check("dcgmGroupDestroy", rc)
    }

    /// `dcgmFieldGroupCreate(h, n, ids, name, &fg)`.
    pub(crate) fn field_group_create(
        &self,
        h: DcgmHandle,
        ids: &[u16],
        name: &CString,
    ) -> Result<FieldGroupId, DcgmError> {
        if ids.is_empty() || ids.len() > MAX_FIELD_IDS_PER_FIELD_GROUP {
            return Err(DcgmError::Call {
                function: "dcgmFieldGroupCreate",
                code: ST_BADPARAM,
                message: format!(
                    "a field group needs 1 to {MAX_FIELD_IDS_PER_FIELD_GROUP} fields, not {}",
                    ids.len()
                ),
            });
        }
        let mut fg: FieldGroupId = 0;
        // SAFETY: `ids` holds `ids.len()` u16s (checked to fit a c_int); the engine copies
        // them. `name` is NUL-terminated; `fg` is a valid out-pointer.
        let rc = unsafe {
            (self.api.field_group_create)(
                h,
                ids.len() as c_int,
                ids.as_ptr(),
                name.as_ptr(),
                &mut fg,
            )
        };
        self.check("dcgmFieldGroupCreate", rc)?;
        Ok(fg)
    }

    /// `dcgmFieldGroupDestroy(h, fg)`.
    pub(crate) fn field_group_destroy(
        &self,
        h: DcgmHandle,
        fg: FieldGroupId,
    ) -> Result<(), DcgmError> {
        // SAFETY: plain integer arguments; the engine validates them.
        let rc = unsafe { (self.api.field_group_destroy)(h, fg) };
        self.check("dcgmFieldGroupDestroy", rc)
    }

    /// `dcgmWatchFields(h, g, fg, update_us, max_keep_age_s, max_keep_samples)`.
    pub(crate) fn watch_fields(
        &self,
        h: DcgmHandle,
        g: GroupId,
        fg: FieldGroupId,
        update_us: i64,
        max_keep_age_s: f64,
        max_keep_samples: i32,
    ) -> Result<(), DcgmError> {
        // SAFETY: plain value arguments; the engine validates the handles.
        let rc = unsafe {
            (self.api.watch_fields)(h, g, fg, update_us, max_keep_age_s, max_keep_samples)
        };
        self.check("dcgmWatchFields", rc)
    }

    /// `dcgmUnwatchFields(h, g, fg)`.
    pub(crate) fn unwatch_fields(
        &self,
        h: DcgmHandle,
        g: GroupId,
        fg: FieldGroupId,
    ) -> Result<(), DcgmError> {
        // SAFETY: plain integer arguments; the engine validates them.
        let rc = unsafe { (self.api.unwatch_fields)(h, g, fg) };
        self.check("dcgmUnwatchFields", rc)
    }

    /// `dcgmUpdateAllFields(h, wait)`.
    pub(crate) fn update_all_fields(&self, h: DcgmHandle, wait: bool) -> Result<(), DcgmError> {
        // SAFETY: plain value arguments; the engine validates the handle.
        let rc = unsafe { (self.api.update_all_fields)(h, wait as c_int) };
        self.check("dcgmUpdateAllFields", rc)
    }

    /// `dcgmGetValuesSince_v2`: appends every value stamped since `since_us` to `out` and
    /// returns the cursor for the next call. `DCGM_ST_NO_DATA` is an empty answer.
    pub(crate) fn values_since(
        &self,
        h: DcgmHandle,
        g: GroupId,
        fg: FieldGroupId,
        since_us: i64,
        out: &mut Vec<RawValue>,
    ) -> Result<i64, DcgmError> {
        let mut next: c_longlong = since_us;
        // SAFETY: `collect` has the callback's exact signature and only touches the
        // `Vec<RawValue>` passed as user data, which is exclusively borrowed for the whole
        // call (DCGM calls back synchronously, before dcgmGetValuesSince_v2 returns).
        // `next` is a valid out-pointer.
        let rc = unsafe {
            (self.api.get_values_since_v2)(
                h,
                g,
                fg,
                since_us,
                &mut next,
                Some(collect),
                out as *mut Vec<RawValue> as *mut c_void,
            )
        };
        if rc == ST_NO_DATA {
            return Ok(since_us);
        }
        self.check("dcgmGetValuesSince_v2", rc)?;
        Ok(next)
    }
}

/// A value as DCGM typed it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RawNumber {
    /// `DCGM_FT_INT64`.
    Int(i64),
    /// `DCGM_FT_DOUBLE`.
    Double(f64),
    /// Any other type (string, blob, timestamp): not used by this crate.
    Other(u16),
}

/// One value copied out of the enumeration callback.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RawValue {
    /// `dcgm_field_entity_group_t` of the entity.
    pub entity_group: u32,
    /// The entity id (the DCGM GPU id for `DCGM_FE_GPU`).
    pub entity_id: u32,
    /// `DCGM_FI_*`.
    pub field_id: u16,
    /// Per-value status; non-zero means no valid value.
    pub status: i32,
    /// Microseconds since 1970.
    pub ts_us: i64,
    /// The value.
    pub value: RawNumber,
}

/// The enumeration callback: copies every value into the `Vec<RawValue>` behind
/// `user_data` (DCGM's buffer is only valid during the call). Never unwinds.
unsafe extern "C" fn collect(
    entity_group_id: c_uint,
    entity_id: c_uint,
    values: *mut FieldValueV1,
    num_values: c_int,
    user_data: *mut c_void,
) -> c_int {
    if user_data.is_null() || values.is_null() || num_values <= 0 {
        return 0;
    }
    // SAFETY: `user_data` is the `&mut Vec<RawValue>` that `values_since` passed, alive and
    // not otherwise borrowed during this synchronous callback.
    let out = unsafe { &mut *(user_data as *mut Vec<RawValue>) };
    // SAFETY: DCGM passes `num_values` consecutive, initialised `dcgmFieldValue_v1`
    // structs, valid until the callback returns; we only read them.
    let values = unsafe { std::slice::from_raw_parts(values, num_values as usize) };
    for v in values {
        let value = match v.field_type {
            // SAFETY: the field type says which union member DCGM wrote; both are plain
            // 8-byte numbers, valid for any bit pattern.
            FT_INT64 => RawNumber::Int(unsafe { v.value.i64_ }),
            // SAFETY: as above.
            FT_DOUBLE => RawNumber::Double(unsafe { v.value.dbl }),
            other => RawNumber::Other(other),
        };
        out.push(RawValue {
            entity_group: entity_group_id,
            entity_id,
            field_id: v.field_id,
            status: v.status,
            ts_us: v.ts,
            value,
        });
    }
    0
}

/// The loader's reason, without the name it starts with (the error lists it already).
fn dlopen_detail(name: &str, e: &libloading::Error) -> String {
    let text = e.to_string();
    match text.strip_prefix(name).and_then(|t| t.strip_prefix(": ")) {
        Some(rest) => rest.to_owned(),
        None => text,
    }
}
