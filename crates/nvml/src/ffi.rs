//! The two NVML calls made on hot paths without the wrapper's per-call allocations:
//! `nvmlDeviceGetFieldValues` into a caller-owned array (instant power every 10 ms) and
//! `nvmlDeviceGetSamples` into a caller-owned buffer (one call per drain instead of the
//! wrapper's count-then-fetch pair).
//!
//! This is the only module of the crate with `unsafe`. The function pointers come from the
//! process-wide `Nvml` instance, which is never unloaded (see `crate::nvml_instance`), so
//! they stay valid for the life of the process.
#![allow(unsafe_code)]

use nvml_wrapper::Device;
use nvml_wrapper::error::{NvmlError, nvml_try};
use nvml_wrapper_sys::bindings::{
    nvmlDevice_t, nvmlFieldValue_t, nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE,
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
