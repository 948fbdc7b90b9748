//! The DCGM source: watches the power, energy and activity fields of every chosen GPU and
//! drains every value DCGM cached since the last poll, each on its own timestamp.

use crate::error::DcgmError;
use crate::ffi::{self, DcgmLib, FieldGroupId, RawNumber, RawValue};
use crate::session::{Connection, Session};
use flinch_core::DeviceClass;
use flinch_core::clock::{AnchorMap, Clock};
use flinch_core::units::{Joules, Watts};
use flinch_core::{
    ChannelSpec, CounterSpec, PowerMethod, Quantity, Readings, Source, SourceError, SourceInfo,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How a field's raw value becomes a channel value: the one place where DCGM's units are
/// converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conv {
    /// Double, W.
    Watts,
    /// Int64, mJ since the driver loaded → J.
    MilliJoules,
    /// Int64, percent 0–100.
    Percent,
    /// Int64, MHz.
    Megahertz,
    /// Double, ratio 0–1 → percent.
    Ratio,
}

/// One DCGM field this backend records.
#[derive(Clone, Copy, Debug)]
pub struct FieldDef {
    /// `DCGM_FI_*` id.
    pub id: u16,
    /// The `<what>` of the channel name `dcgm-gpu<N>.<what>`.
    pub what: &'static str,
    /// Whether it is a profiling field (1001–1005), watched in its own field group because
    /// engines without the profiling module refuse the whole group.
    pub profiling: bool,
    conv: Conv,
    description: &'static str,
}

/// `DCGM_FI_DEV_POWER_USAGE` (155).
pub const FI_POWER_USAGE: u16 = 155;
/// `DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION` (156).
pub const FI_TOTAL_ENERGY: u16 = 156;
/// `DCGM_FI_DEV_POWER_USAGE_INSTANT` (157; DCGM ≥ 3.2.5).
pub const FI_POWER_USAGE_INSTANT: u16 = 157;

/// Every field, in channel order per GPU.
pub const FIELDS: &[FieldDef] = &[
    FieldDef {
        id: FI_POWER_USAGE,
        what: "power_avg1s",
        profiling: false,
        conv: Conv::Watts,
        description: "DCGM field 155 (board power): NVML's 1-s average, lags steps by up to 1 s",
    },
    FieldDef {
        id: FI_POWER_USAGE_INSTANT,
        what: "power_instant",
        profiling: false,
        conv: Conv::Watts,
        description: "DCGM field 157 (instant board power)",
    },
    FieldDef {
        id: FI_TOTAL_ENERGY,
        what: "energy",
        profiling: false,
        conv: Conv::MilliJoules,
        description: "DCGM field 156: total energy since the driver loaded (mJ, as J); resets on reload",
    },
    FieldDef {
        id: 203,
        what: "util_gpu",
        profiling: false,
        conv: Conv::Percent,
        description: "DCGM field 203: GPU utilisation (percent of time a kernel ran)",
    },
    FieldDef {
        id: 100,
        what: "sm_clock",
        profiling: false,
        conv: Conv::Megahertz,
        description: "DCGM field 100: SM clock",
    },
    FieldDef {
        id: 1001,
        what: "gr_engine_active",
        profiling: true,
        conv: Conv::Ratio,
        description: "DCGM field 1001: graphics/compute engine active, averaged over the update period",
    },
    FieldDef {
        id: 1002,
        what: "sm_active",
        profiling: true,
        conv: Conv::Ratio,
        description: "DCGM field 1002: cycles an SM had at least one warp, averaged over the update period",
    },
    FieldDef {
        id: 1003,
        what: "sm_occupancy",
        profiling: true,
        conv: Conv::Ratio,
        description: "DCGM field 1003: resident warps over the maximum, averaged over the update period",
    },
    FieldDef {
        id: 1004,
        what: "tensor_active",
        profiling: true,
        conv: Conv::Ratio,
        description: "DCGM field 1004: tensor pipe active, averaged over the update period",
    },
    FieldDef {
        id: 1005,
        what: "dram_active",
        profiling: true,
        conv: Conv::Ratio,
        description: "DCGM field 1005: DRAM active, averaged over the update period",
    },
];

/// The device name of DCGM GPU `id`: `dcgm-gpu<id>`, so that channels never clash with the
/// NVML backend's `gpu<N>` when both record the same GPU.
pub fn device_name(gpu_id: u32) -> String {
    format!("dcgm-gpu{gpu_id}")
}

/// The largest plausible board power of one GPU, W: the energy counter's plausibility
/// guard (no GPU board draws 3 kW).
pub const MAX_GPU_POWER_W: f64 = 3000.0;

/// How to reach DCGM and what to watch.
#[derive(Clone, Debug)]
pub struct DcgmConfig {
    /// The library to load instead of `libdcgm.so.4` / `libdcgm.so.3`.
    pub library: Option<PathBuf>,
    /// The host engine (`HOST[:PORT]`, `unix:///PATH`); `None` starts an embedded engine.
    pub host: Option<String>,
    /// DCGM GPU ids to record; `None` = every supported GPU.
    pub gpus: Option<Vec<u32>>,
    /// How often DCGM samples the fields (its watch update period). Profiling fields are
    /// averages over this period.
    pub update_period: Duration,
    /// How often flinch drains DCGM's cache. Values keep their own timestamps, so this only
    /// bounds latency and the batch size.
    pub poll_interval: Duration,
    /// Whether to watch the profiling fields 1001–1005 (when the engine supports them).
    pub profiling: bool,
}

impl Default for DcgmConfig {
    fn default() -> Self {
        DcgmConfig {
            library: None,
            host: None,
            gpus: None,
            update_period: Duration::from_millis(100),
            poll_interval: Duration::from_millis(500),
            profiling: true,
        }
    }
}

/// How long DCGM keeps values (s): several poll intervals, so a late poll loses nothing.
const MAX_KEEP_AGE_S: f64 = 60.0;

struct Watched {
    fg: FieldGroupId,
    cursor_us: i64,
}

/// A DCGM source. Dropping it tears the DCGM session down (see [`crate`] docs).
pub struct DcgmSource {
    info: SourceInfo,
    /// Owns the DCGM handle and, through it, the library: dropping it tears DCGM down.
    session: Session,
    gpus: Vec<u32>,
    /// `channel_of[gpu_index][field_index]`.
    channel_of: Vec<Vec<Option<usize>>>,
    watched: Vec<Watched>,
    anchors: Vec<flinch_core::ClockAnchor>,
    last_ts_us: Vec<i64>,
    last_t_ns: Vec<u64>,
    raw: Vec<RawValue>,
    poll_interval: Duration,
    max_per_poll: usize,
    blanks: u64,
    unmapped: u64,
}

impl std::fmt::Debug for DcgmSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DcgmSource")
            .field("name", &self.info.name)
            .field("gpus", &self.gpus)
            .finish_non_exhaustive()
    }
}

impl DcgmSource {
    /// Loads DCGM, connects (or starts an embedded engine), creates the GPU group and the
    /// field groups, and starts watching. Anything that fails undoes what was done.
    pub fn open(cfg: &DcgmConfig, clock: &dyn Clock) -> Result<DcgmSource, DcgmError> {
        let connection = Connection::parse(cfg.host.as_deref())?;
        if cfg.update_period.is_zero() || cfg.poll_interval.is_zero() {
            return Err(DcgmError::InvalidInput(
                "the DCGM update period and poll interval must be positive".into(),
            ));
        }
        let lib = DcgmLib::load(cfg.library.as_deref())?;
        Self::open_with(lib, connection, cfg, clock)
    }

    fn open_with(
        lib: Arc<DcgmLib>,
        connection: Connection,
        cfg: &DcgmConfig,
        clock: &dyn Clock,
    ) -> Result<DcgmSource, DcgmError> {
        // Values stamped before we start are someone else's (a host engine may already be
        // watching these fields): the cursor starts now.
        let start = clock.anchor();
        let mut session = Session::start(lib, connection)?;
        let available = session.supported_devices()?;
        let gpus = match &cfg.gpus {
            None => available.clone(),
            Some(want) => {
                for g in want {
                    if !available.contains(g) {
                        return Err(DcgmError::InvalidInput(format!(
                            "GPU {g} is not one DCGM supports here (DCGM GPU ids: {})",
                            list(&available)
                        )));
                    }
                }
                let mut w: Vec<u32> = Vec::with_capacity(want.len());
                for g in want {
                    if !w.contains(g) {
                        w.push(*g);
                    }
                }
                w
            }
        };
        if gpus.is_empty() {
            return Err(DcgmError::NoGpus);
        }
        session.create_group(&gpus)?;

        let update_us = i64::try_from(cfg.update_period.as_micros())
            .unwrap_or(i64::MAX)
            .max(1);
        let mut attributes = std::collections::BTreeMap::new();
        let mut wanted: Vec<bool> = FIELDS.iter().map(|f| !f.profiling).collect();
        let mut watched = Vec::new();

        // Base fields. DCGM before 3.2.5 does not know field 157: retry without it.
        let base: Vec<u16> = FIELDS
            .iter()
            .filter(|f| !f.profiling)
            .map(|f| f.id)
            .collect();
        let fg = match session.create_field_group(&base, "base") {
            Ok(fg) => fg,
            Err(e) => {
                let fewer: Vec<u16> = base
                    .iter()
                    .copied()
                    .filter(|&id| id != FI_POWER_USAGE_INSTANT)
                    .collect();
                let fg = session
                    .create_field_group(&fewer, "base")
                    .map_err(|_| e.clone())?;
                attributes.insert(
                    "power_instant".to_owned(),
                    format!("not available: field 157 refused ({e}); DCGM ≥ 3.2.5 has it"),
                );
                set_wanted(&mut wanted, FI_POWER_USAGE_INSTANT, false);
                fg
            }
        };
        session.watch(fg, update_us, MAX_KEEP_AGE_S)?;
        watched.push(fg);

        // Profiling fields: optional. An engine without the profiling module, a GPU without
        // the metrics or a user without permission refuses them; the rest goes on.
        if cfg.profiling {
            let prof: Vec<u16> = FIELDS
                .iter()
                .filter(|f| f.profiling)
                .map(|f| f.id)
                .collect();
            match session.create_field_group(&prof, "prof") {
                Ok(pfg) => match session.watch(pfg, update_us, MAX_KEEP_AGE_S) {
                    Ok(()) => {
                        watched.push(pfg);
                        for id in prof {
                            set_wanted(&mut wanted, id, true);
                        }
                        attributes.insert("profiling".into(), "watched".into());
                    }
                    Err(e) => {
                        let _ = session.destroy_field_group(pfg);
                        attributes.insert("profiling".into(), format!("not available: {e}"));
                    }
                },
                Err(e) => {
                    attributes.insert("profiling".into(), format!("not available: {e}"));
                }
            }
        } else {
            attributes.insert("profiling".into(), "off".into());
        }
        // The first values appear only after an update cycle: force one now.
        session.update_all_fields()?;

        let period_ns = cfg.update_period.as_nanos().min(u64::MAX as u128) as u64;
        let mut channels = Vec::new();
        let mut channel_of = Vec::new();
        for &gpu in &gpus {
            let dev = device_name(gpu);
            let mut row = vec![None; FIELDS.len()];
            for (i, f) in FIELDS.iter().enumerate() {
                if !wanted[i] {
                    continue;
                }
                row[i] = Some(channels.len());
                channels.push(channel_spec(&dev, f).with_update_period_ns(period_ns));
            }
            channel_of.push(row);
        }
        attributes.insert("library".into(), session.lib().path().to_owned());
        attributes.insert("connection".into(), session.connection().describe());
        attributes.insert("gpus".into(), list(&gpus));
        attributes.insert("update_period_us".into(), update_us.to_string());
        attributes.insert(
            "timestamps".into(),
            "DCGM's own (µs since 1970), mapped onto CLOCK_MONOTONIC with clock anchors".into(),
        );
        let n = channels.len();
        let per_channel = cfg
            .poll_interval
            .as_micros()
            .div_ceil(cfg.update_period.as_micros().max(1));
        let max_per_poll = n.saturating_mul((per_channel.min(10_000) as usize) + 2);
        let cursor_us = start.real_ns.div_euclid(1000);
        Ok(DcgmSource {
            info: SourceInfo::new("dcgm", "dcgm", DeviceClass::Gpu)
                .with_channels(channels)
                .with_attributes(attributes),
            session,
            gpus,
            channel_of,
            watched: watched
                .into_iter()
                .map(|fg| Watched { fg, cursor_us })
                .collect(),
            anchors: vec![start],
            last_ts_us: vec![i64::MIN; n],
            last_t_ns: vec![0; n],
            raw: Vec::new(),
            poll_interval: cfg.poll_interval,
            max_per_poll,
            blanks: 0,
            unmapped: 0,
        })
    }

    /// The DCGM GPU ids recorded.
    pub fn gpus(&self) -> &[u32] {
        &self.gpus
    }

    /// Values DCGM returned blank (or with an error status) and that were left out: gaps in
    /// their channels, never zeros.
    pub fn blank_values(&self) -> u64 {
        self.blanks
    }

    /// Values that could not be placed: unknown entity or field, a type other than the
    /// documented one, or a timestamp before monotonic zero.
    pub fn unmapped_values(&self) -> u64 {
        self.unmapped
    }

    fn drain(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        let anchor = out.clock().anchor();
        // Values of this poll lie between the previous anchor and this one: two anchors are
        // all the map needs, and it stays small however long the recording.
        if self.anchors.len() >= 2 {
            self.anchors.remove(0);
        }
        self.anchors.push(anchor);
        let mut map = AnchorMap::new();
        for a in &self.anchors {
            map.push(*a);
        }
        let now_ns = out.now_ns();
        for w in 0..self.watched.len() {
            self.raw.clear();
            let (fg, since) = (self.watched[w].fg, self.watched[w].cursor_us);
            let next = self
                .session
                .values_since(fg, since, &mut self.raw)
                .map_err(SourceError::from)?;
            self.watched[w].cursor_us = next.max(since);
            // Per channel in time order, whatever order DCGM enumerated them in.
            self.raw.sort_by_key(|v| (v.entity_id, v.field_id, v.ts_us));
            for i in 0..self.raw.len() {
                let v = self.raw[i];
                self.place(v, &map, now_ns, out);
            }
        }
        Ok(())
    }

    fn place(&mut self, v: RawValue, map: &AnchorMap, now_ns: u64, out: &mut Readings<'_>) {
        let Some(gi) = self.gpus.iter().position(|&g| g == v.entity_id) else {
            self.unmapped += 1;
            return;
        };
        let Some(fi) = FIELDS.iter().position(|f| f.id == v.field_id) else {
            self.unmapped += 1;
            return;
        };
        if v.entity_group != ffi::FE_GPU {
            self.unmapped += 1;
            return;
        }
        let Some(ch) = self.channel_of[gi][fi] else {
            self.unmapped += 1;
            return;
        };
        // A value already seen (a cursor that includes its own timestamp) is skipped.
        if v.ts_us <= self.last_ts_us[ch] {
            return;
        }
        self.last_ts_us[ch] = v.ts_us;
        let value = match convert(FIELDS[fi].conv, v.status, v.value) {
            Converted::Value(x) => x,
            Converted::Blank => {
                self.blanks += 1;
                return;
            }
            Converted::WrongType => {
                self.unmapped += 1;
                return;
            }
        };
        let Some(t) = map.us_to_mono_ns(v.ts_us) else {
            self.unmapped += 1;
            return;
        };
        // The anchor pair is good to about a microsecond: never stamp after the poll, never
        // go backwards within a channel.
        let t = t.min(now_ns).max(self.last_t_ns[ch]);
        self.last_t_ns[ch] = t;
        out.push(ch, t, value);
    }
}

fn set_wanted(wanted: &mut [bool], id: u16, on: bool) {
    if let Some(i) = FIELDS.iter().position(|f| f.id == id) {
        wanted[i] = on;
    }
}

fn list(ids: &[u32]) -> String {
    let v: Vec<String> = ids.iter().map(u32::to_string).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}

fn channel_spec(dev: &str, f: &FieldDef) -> ChannelSpec {
    let c = match f.conv {
        Conv::Watts if f.id == FI_POWER_USAGE => {
            ChannelSpec::power(dev, f.what, PowerMethod::Average { window_ms: 1000 })
        }
        Conv::Watts => ChannelSpec::power(dev, f.what, PowerMethod::Instant),
        Conv::MilliJoules => ChannelSpec::energy_counter(
            dev,
            f.what,
            CounterSpec {
                wrap_range: None,
                max_rate: Some(MAX_GPU_POWER_W),
            },
        ),
        Conv::Percent => ChannelSpec::gauge(dev, f.what, Quantity::Utilization),
        Conv::Megahertz => ChannelSpec::gauge(dev, f.what, Quantity::Clock),
        Conv::Ratio => ChannelSpec::gauge(dev, f.what, Quantity::Activity),
    };
    c.with_description(f.description)
}

#[derive(Debug, PartialEq)]
enum Converted {
    Value(f64),
    Blank,
    WrongType,
}

/// DCGM's value → the channel's unit. Blank sentinels and error statuses are missing
/// values, never zeros.
fn convert(conv: Conv, status: i32, raw: RawNumber) -> Converted {
    if status != ffi::ST_OK {
        return Converted::Blank;
    }
    match (conv, raw) {
        (Conv::Watts | Conv::Ratio, RawNumber::Double(x)) => {
            if !x.is_finite() || x >= ffi::FP64_BLANK {
                Converted::Blank
            } else if conv == Conv::Ratio {
                Converted::Value(x * 100.0)
            } else {
                Converted::Value(Watts(x).0)
            }
        }
        (Conv::MilliJoules, RawNumber::Int(x)) => {
            if !(0..ffi::INT64_BLANK).contains(&x) {
                Converted::Blank
            } else {
                Converted::Value(Joules::from_millijoules(x as u64).0)
            }
        }
        // Percent and MHz never come near 2^31: a value in the 32-bit blank range there is
        // a sentinel that went through a 32-bit path.
        (Conv::Percent | Conv::Megahertz, RawNumber::Int(x)) => {
            if !(0..ffi::INT32_BLANK).contains(&x) {
                Converted::Blank
            } else {
                Converted::Value(x as f64)
            }
        }
        _ => Converted::WrongType,
    }
}

impl Source for DcgmSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        self.drain(out)
    }
    fn interval(&self) -> Option<Duration> {
        Some(self.poll_interval)
    }
    fn max_readings_per_poll(&self) -> usize {
        self.max_per_poll
    }
    /// Forces one more update cycle (so the energy counter is read at the stop), then
    /// drains.
    fn finish(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        let forced = self.session.update_all_fields();
        self.drain(out)?;
        forced.map_err(SourceError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_turns_sentinels_into_gaps_and_units_into_flinch_units() {
        use Converted::*;
        use RawNumber::*;
        assert_eq!(convert(Conv::Watts, 0, Double(312.5)), Value(312.5));
        assert_eq!(convert(Conv::Watts, 0, Double(ffi::FP64_BLANK)), Blank);
        assert_eq!(
            convert(Conv::Watts, 0, Double(ffi::FP64_BLANK + 2.0)),
            Blank
        );
        assert_eq!(convert(Conv::Watts, -6, Double(0.0)), Blank);
        assert_eq!(convert(Conv::Watts, 0, Int(3)), WrongType);
        assert_eq!(convert(Conv::Ratio, 0, Double(0.25)), Value(25.0));
        assert_eq!(
            convert(Conv::MilliJoules, 0, Int(1_234_567)),
            Value(1234.567)
        );
        assert_eq!(
            convert(Conv::MilliJoules, 0, Int(ffi::INT64_BLANK + 3)),
            Blank
        );
        // 2^31 mJ is a real reading of the energy counter, not a 32-bit sentinel.
        assert_eq!(
            convert(Conv::MilliJoules, 0, Int(ffi::INT32_BLANK)),
            Value(ffi::INT32_BLANK as f64 / 1e3)
        );
        assert_eq!(convert(Conv::Percent, 0, Int(ffi::INT32_BLANK + 1)), Blank);
        assert_eq!(convert(Conv::Megahertz, 0, Int(1980)), Value(1980.0));
        assert_eq!(convert(Conv::Percent, 0, Other(b's' as u16)), WrongType);
    }

    #[test]
    fn channel_table_matches_the_issue() {
        let ids: Vec<u16> = FIELDS.iter().map(|f| f.id).collect();
        assert_eq!(ids, [155, 157, 156, 203, 100, 1001, 1002, 1003, 1004, 1005]);
        let avg = channel_spec("dcgm-gpu0", &FIELDS[0]);
        assert_eq!(avg.name, "dcgm-gpu0.power_avg1s");
        assert_eq!(avg.method, Some(PowerMethod::Average { window_ms: 1000 }));
        assert_eq!(
            channel_spec("d", &FIELDS[1]).method,
            Some(PowerMethod::Instant)
        );
        let e = channel_spec("d", &FIELDS[2]);
        assert_eq!(e.counter_spec().unwrap().wrap_range, None);
        assert_eq!(channel_spec("d", &FIELDS[6]).quantity, Quantity::Activity);
    }
}
