//! The NVML calls made on hot paths without the wrapper's per-call allocations:
//! `nvmlDeviceGetFieldValues` into a caller-owned array (instant power at every update),
//! `nvmlDeviceGetSamples` into a caller-owned buffer (one call per drain instead of the
//! wrapper's count-then-fetch pair), and GPM sampling into two samples allocated once
//! (the wrapper allocates and frees a sample per poll and copies three strings per metric
//! per poll).
//!
//! This is the only module of the crate with `unsafe`. The function pointers come from the
//! process-wide `Nvml` instance, which is never unloaded (see `crate::nvml_instance`), so
//! they stay valid for the life of the process.
#![allow(unsafe_code)]

use nvml_wrapper::Device;
use nvml_wrapper::error::{NvmlError, nvml_try};
use nvml_wrapper_sys::bindings::{
    NVML_GPM_METRICS_GET_VERSION, nvmlDevice_t, nvmlFieldValue_t, nvmlGpmMetricsGet_t,
    nvmlGpmSample_t, nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE,
    nvmlReturn_enum_NVML_ERROR_NOT_FOUND, nvmlReturn_enum_NVML_SUCCESS, nvmlReturn_t, nvmlSample_t,
    nvmlSamplingType_enum_NVML_TOTAL_POWER_SAMPLES, nvmlValue_t,
    nvmlValueType_enum_NVML_VALUE_TYPE_DOUBLE as NVML_VALUE_TYPE_DOUBLE,
    nvmlValueType_enum_NVML_VALUE_TYPE_SIGNED_INT as NVML_VALUE_TYPE_SIGNED_INT,
    nvmlValueType_enum_NVML_VALUE_TYPE_SIGNED_LONG_LONG as NVML_VALUE_TYPE_SIGNED_LONG_LONG,
    nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_INT as NVML_VALUE_TYPE_UNSIGNED_INT,
    nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG as NVML_VALUE_TYPE_UNSIGNED_LONG,
    nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG_LONG as NVML_VALUE_TYPE_UNSIGNED_LONG_LONG,
    nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_SHORT as NVML_VALUE_TYPE_UNSIGNED_SHORT,
};
use std::os::raw::{c_int, c_uint, c_ulonglong};

type FieldValuesFn =
    unsafe extern "C" fn(nvmlDevice_t, c_int, *mut nvmlFieldValue_t) -> nvmlReturn_t;
type SamplesFn = unsafe extern "C" fn(
    nvmlDevice_t,
    u32,
    c_ulonglong,
    *mut u32,
    *mut c_uint,
    *mut nvmlSample_t,
) -> nvmlReturn_t;

type GpmAllocFn = unsafe extern "C" fn(*mut nvmlGpmSample_t) -> nvmlReturn_t;
type GpmFreeFn = unsafe extern "C" fn(nvmlGpmSample_t) -> nvmlReturn_t;
type GpmGetFn = unsafe extern "C" fn(nvmlDevice_t, nvmlGpmSample_t) -> nvmlReturn_t;
type GpmMetricsFn = unsafe extern "C" fn(*mut nvmlGpmMetricsGet_t) -> nvmlReturn_t;

/// `NVML_SUCCESS`.
const SUCCESS: nvmlReturn_t = nvmlReturn_enum_NVML_SUCCESS;
/// `NVML_ERROR_NOT_FOUND`: no samples newer than the given timestamp.
const NOT_FOUND: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_NOT_FOUND;
/// `NVML_ERROR_INSUFFICIENT_SIZE`.
const INSUFFICIENT_SIZE: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE;
/// `NVML_TOTAL_POWER_SAMPLES`.
pub const TOTAL_POWER_SAMPLES: u32 = nvmlSamplingType_enum_NVML_TOTAL_POWER_SAMPLES;

/// A device handle plus the raw entry points, resolved once.
pub struct RawDevice {
    handle: nvmlDevice_t,
    field_values: Option<FieldValuesFn>,
    samples: Option<SamplesFn>,
}

// SAFETY: an nvmlDevice_t is an opaque handle that NVML documents as usable from any thread
// (nvml-wrapper marks Device Send + Sync on the same grounds); the function pointers are
// plain code addresses.
unsafe impl Send for RawDevice {}

impl RawDevice {
    /// Resolves the raw entry points for `device`.
    pub fn new(nvml: &'static nvml_wrapper::Nvml, device: &Device<'static>) -> Self {
        let lib = nvml.lib();
        RawDevice {
            // SAFETY: handle() only copies the opaque pointer; the device outlives every use
            // because the Nvml instance is 'static.
            handle: unsafe { device.handle() },
            field_values: lib.nvmlDeviceGetFieldValues.as_ref().ok().copied(),
            samples: lib.nvmlDeviceGetSamples.as_ref().ok().copied(),
        }
    }

    /// Reads the fields whose ids are set in `values`, in place. Check each
    /// `values[i].nvmlReturn` afterwards.
    pub fn field_values(&self, values: &mut [nvmlFieldValue_t]) -> Result<(), NvmlError> {
        let f = self.field_values.ok_or(NvmlError::FunctionNotFound)?;
        // SAFETY: `values` is a valid, writable array of `values.len()` field structs whose
        // fieldId members the caller set; NVML writes only within it.
        let rc = unsafe { f(self.handle, values.len() as c_int, values.as_mut_ptr()) };
        nvml_try(rc)
    }

    /// Fetches total-power samples newer than `last_seen_us` into `buf` (which keeps its
    /// capacity); returns the value type tag NVML reported (see [`value_number`]). An empty
    /// result leaves `buf` empty.
    pub fn power_samples(
        &self,
        last_seen_us: u64,
        buf: &mut Vec<nvmlSample_t>,
    ) -> Result<u32, NvmlError> {
        let f = self.samples.ok_or(NvmlError::FunctionNotFound)?;
        loop {
            let cap = buf.capacity().max(1);
            buf.clear();
            let mut count = cap as c_uint;
            let mut val_type = 0u32;
            // SAFETY: the buffer has room for `cap` samples; NVML writes at most `count`
            // entries and sets `count` to the number written.
            let rc = unsafe {
                f(
                    self.handle,
                    TOTAL_POWER_SAMPLES,
                    last_seen_us,
                    &mut val_type,
                    &mut count,
                    buf.as_mut_ptr(),
                )
            };
            match rc {
                SUCCESS => {
                    let n = (count as usize).min(cap);
                    // SAFETY: NVML initialised the first `n` entries.
                    unsafe { buf.set_len(n) };
                    return Ok(val_type);
                }
                NOT_FOUND => return Ok(NVML_VALUE_TYPE_UNSIGNED_INT),
                INSUFFICIENT_SIZE => buf.reserve(cap * 2),
                other => return nvml_try(other).map(|_| NVML_VALUE_TYPE_UNSIGNED_INT),
            }
        }
    }
}

/// GPM sampling without allocation per poll: two samples allocated once and used in turn,
/// and one metrics request reused.
pub struct RawGpm {
    handle: nvmlDevice_t,
    free: GpmFreeFn,
    get: GpmGetFn,
    metrics: GpmMetricsFn,
    samples: [nvmlGpmSample_t; 2],
    /// The sample the next poll fills.
    next: usize,
    /// Whether the other sample holds an earlier poll.
    primed: bool,
    request: Box<nvmlGpmMetricsGet_t>,
}

// SAFETY: the device handle is usable from any thread (see RawDevice); the two samples are
// owned by this value alone and only used through `&mut self`, so never concurrently.
unsafe impl Send for RawGpm {}

impl RawGpm {
    /// Resolves the GPM entry points and allocates two samples, for the metrics `ids`
    /// (at most the request's capacity).
    pub fn new(
        nvml: &'static nvml_wrapper::Nvml,
        device: &Device<'static>,
        ids: &[u32],
    ) -> Result<Self, NvmlError> {
        let lib = nvml.lib();
        let missing = |_| NvmlError::FunctionNotFound;
        let alloc: GpmAllocFn = *lib.nvmlGpmSampleAlloc.as_ref().map_err(missing)?;
        let free: GpmFreeFn = *lib.nvmlGpmSampleFree.as_ref().map_err(missing)?;
        let get: GpmGetFn = *lib.nvmlGpmSampleGet.as_ref().map_err(missing)?;
        let metrics: GpmMetricsFn = *lib.nvmlGpmMetricsGet.as_ref().map_err(missing)?;
        // SAFETY: nvmlGpmMetricsGet_t is plain old data (ids, codes, doubles, pointers that
        // NVML fills); all-zero is a valid value.
        let mut request: Box<nvmlGpmMetricsGet_t> = Box::new(unsafe { std::mem::zeroed() });
        if ids.len() > request.metrics.len() {
            return Err(NvmlError::InvalidArg);
        }
        request.numMetrics = ids.len() as u32;
        for (m, &id) in request.metrics.iter_mut().zip(ids) {
            m.metricId = id;
        }
        let mut samples: [nvmlGpmSample_t; 2] = [std::ptr::null_mut(); 2];
        for i in 0..2 {
            // SAFETY: alloc writes one sample handle into the pointer it is given.
            let rc = unsafe { alloc(&mut samples[i]) };
            if let Err(e) = nvml_try(rc) {
                if i == 1 {
                    // SAFETY: samples[0] was allocated just above and is not used again.
                    unsafe { free(samples[0]) };
                }
                return Err(e);
            }
        }
        Ok(RawGpm {
            // SAFETY: as in RawDevice::new.
            handle: unsafe { device.handle() },
            free,
            get,
            metrics,
            samples,
            next: 0,
            primed: false,
            request,
        })
    }

    /// Takes a sample; from the second on, computes the metrics between the previous
    /// sample and this one and returns them (each `Ok(value)` or the metric's NVML error
    /// code), in the order of the ids given to [`RawGpm::new`]. `None` after the first
    /// sample.
    pub fn sample(&mut self) -> Result<Option<GpmValues<'_>>, NvmlError> {
        let cur = self.samples[self.next];
        // SAFETY: `cur` is a sample this value allocated and owns; the handle is valid.
        nvml_try(unsafe { (self.get)(self.handle, cur) })?;
        let prev = self.samples[1 - self.next];
        self.next = 1 - self.next;
        if !std::mem::replace(&mut self.primed, true) {
            return Ok(None);
        }
        self.request.version = NVML_GPM_METRICS_GET_VERSION;
        self.request.sample1 = prev;
        self.request.sample2 = cur;
        // SAFETY: the request holds two valid filled samples and `numMetrics` ids within
        // its array; NVML writes results into that array only.
        nvml_try(unsafe { (self.metrics)(&mut *self.request) })?;
        Ok(Some(GpmValues {
            request: &self.request,
        }))
    }
}

impl Drop for RawGpm {
    fn drop(&mut self) {
        for s in self.samples {
            // SAFETY: each sample was allocated by nvmlGpmSampleAlloc and is freed once.
            unsafe { (self.free)(s) };
        }
    }
}

/// The metrics computed by one [`RawGpm::sample`].
pub struct GpmValues<'a> {
    request: &'a nvmlGpmMetricsGet_t,
}

impl GpmValues<'_> {
    /// The `i`-th metric asked for: its value, or NVML's return code for it.
    pub fn get(&self, i: usize) -> Result<f64, u32> {
        let n = self.request.numMetrics as usize;
        match self.request.metrics[..n].get(i) {
            Some(m) if m.nvmlReturn == SUCCESS => Ok(m.value),
            Some(m) => Err(m.nvmlReturn),
            None => Err(u32::MAX),
        }
    }
}

/// A zeroed field struct asking for `field_id`.
pub fn field_request(field_id: u32) -> nvmlFieldValue_t {
    // SAFETY: nvmlFieldValue_t is plain old data; all-zero is a valid value.
    let mut v: nvmlFieldValue_t = unsafe { std::mem::zeroed() };
    v.fieldId = field_id;
    v
}

/// A zeroed sample (buffer filler).
pub fn empty_sample() -> nvmlSample_t {
    // SAFETY: plain old data; all-zero is valid.
    unsafe { std::mem::zeroed() }
}

/// The numeric value of a field result, by its value type.
pub fn field_number(v: &nvmlFieldValue_t) -> Option<f64> {
    if v.nvmlReturn != SUCCESS {
        return None;
    }
    value_number(v.valueType, &v.value)
}

/// Reads an `nvmlValue_t` union by its type tag (`nvmlValueType_t`: double, uint, ulong,
/// ull, sll, sint, ushort).
pub fn value_number(tag: u32, v: &nvmlValue_t) -> Option<f64> {
    // SAFETY: the tag says which member NVML wrote; every member is plain data.
    unsafe {
        Some(match tag {
            NVML_VALUE_TYPE_DOUBLE => v.dVal,
            NVML_VALUE_TYPE_UNSIGNED_INT => v.uiVal as f64,
            NVML_VALUE_TYPE_UNSIGNED_LONG => v.ulVal as f64,
            NVML_VALUE_TYPE_UNSIGNED_LONG_LONG => v.ullVal as f64,
            NVML_VALUE_TYPE_SIGNED_LONG_LONG => v.sllVal as f64,
            NVML_VALUE_TYPE_SIGNED_INT => v.siVal as f64,
            NVML_VALUE_TYPE_UNSIGNED_SHORT => v.usVal as f64,
            _ => return None,
        })
    }
}
