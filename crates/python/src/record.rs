//! The recorder in-process: flinch's Rust recorder on its own threads, marks and windows
//! sent from Python without waiting, and calibration.

use crate::backends::{self, Options};
use crate::errors::{IntoPy, invalid, source_error};
use crate::windows::{self, WinMsg, WindowState};
use crossbeam_channel::Sender;
use flinch_analysis::idle::IdleProfile;
use flinch_core::clock::{Clock, MonotonicClock};
use flinch_core::trace::read_trace;
use flinch_record::MarkSpec;
use flinch_record::recorder::{
    MarkSendError, MarkSender, Recorder, RecorderConfig, RecordingSetup,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long `Recorder()` waits at most for every source's first reading.
const PRIMING_TIMEOUT: Duration = Duration::from_secs(2);

fn duration(what: &str, s: f64) -> PyResult<Duration> {
    if !(s.is_finite() && s > 0.0 && s < 1e9) {
        return Err(invalid(format!(
            "{what} must be a positive number of seconds, not {s}"
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

/// The backend options shared by `Recorder` and `calibrate`, from Python keywords.
#[derive(FromPyObject, Default)]
#[pyo3(from_item_all)]
pub struct SourceArgs {
    interval_s: f64,
    synthetic: Option<String>,
    rapl_root: Option<PathBuf>,
    nvml_lib: Option<PathBuf>,
    gpus: Option<Vec<String>>,
    nvml_energy_interval_s: Option<f64>,
    dcgm_lib: Option<PathBuf>,
    dcgm_host: Option<String>,
    pid: Option<u32>,
}

fn options(a: SourceArgs) -> PyResult<Options> {
    Ok(Options {
        interval: duration("interval", a.interval_s)?,
        synthetic: a.synthetic,
        rapl_root: a.rapl_root,
        nvml_lib: a.nvml_lib,
        gpus: a.gpus,
        nvml_energy_interval: a
            .nvml_energy_interval_s
            .map(|s| duration("nvml_energy_interval", s))
            .transpose()?,
        dcgm_lib: a.dcgm_lib,
        dcgm_host: a.dcgm_host,
        pid: a.pid,
    })
}

fn open_sources(py: Python<'_>, sources: &[String], o: &Options) -> PyResult<backends::Opened> {
    py.detach(|| backends::open(sources, o))
        .map_err(|e| Python::attach(|py| source_error(py, &e)))
}

/// A mark's fields from a Python dict: `None` values are left out, others become `str()`.
fn fields(d: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    if let Some(d) = d {
        for (k, v) in d.iter() {
            if v.is_none() {
                continue;
            }
            out.push((k.str()?.to_string(), v.str()?.to_string()));
        }
    }
    Ok(out)
}

/// A mark's label and fields, checked.
fn spec(label: &str, fields: Vec<(String, String)>) -> PyResult<MarkSpec> {
    MarkSpec::new(label, fields).map_err(|e| invalid(format!("invalid mark: {e}")))
}

/// Whether a mark was taken: `Ok(true)`, dropped because the queue was full: `Ok(false)`.
fn sent(r: Result<(), MarkSendError>) -> PyResult<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(MarkSendError::Full) => Ok(false),
        Err(MarkSendError::Invalid(e)) => Err(invalid(format!("invalid mark: {e}"))),
        Err(MarkSendError::Closed) => Err(invalid("the recording has stopped")),
        Err(e) => Err(invalid(e.to_string())),
    }
}

/// A recording in this process (see `flinch.Recorder`).
#[pyclass(module = "flinch._flinch", frozen)]
pub struct NativeRecorder {
    rec: Mutex<Option<Recorder>>,
    marks: MarkSender,
    clock: Arc<dyn Clock>,
    windows: Sender<WinMsg>,
    next_id: AtomicU64,
    out: PathBuf,
    used: Vec<String>,
    notes: Vec<String>,
    sources_json: String,
}

#[pymethods]
impl NativeRecorder {
    #[new]
    #[pyo3(signature = (
        out, source_args, sources=Vec::new(), force=false, idle=None, idle_json=None,
        meta=Vec::new(), marks_fifo=None, argv=Vec::new()
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        out: PathBuf,
        source_args: SourceArgs,
        sources: Vec<String>,
        force: bool,
        idle: Option<PathBuf>,
        idle_json: Option<String>,
        meta: Vec<(String, String)>,
        marks_fifo: Option<PathBuf>,
        argv: Vec<String>,
    ) -> PyResult<Self> {
        let opts = options(source_args)?;
        let profile = match (idle, idle_json) {
            (Some(p), _) => Some(IdleProfile::read(&p).py_err()?),
            (None, Some(j)) => {
                Some(IdleProfile::from_json(&j).map_err(|e| invalid(format!("idle: {e}")))?)
            }
            (None, None) => None,
        };
        let opened = open_sources(py, &sources, &opts)?;
        let mut notes = opened.notes;
        let infos: Vec<_> = opened.sources.iter().map(|s| s.info().clone()).collect();
        if let Some(p) = &profile {
            notes.extend(
                p.coverage_warnings(&infos, &hostname())
                    .into_iter()
                    .map(|w| format!("idle: {w}")),
            );
        }
        let idle_value = profile
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| invalid(format!("idle: {e}")))?;
        let (tx, observer, primed) = windows::channel(out.clone());
        let mut setup = RecordingSetup::new(out.clone(), opened.sources);
        setup.force = force;
        setup.idle = idle_value;
        setup.meta = meta.into_iter().collect::<BTreeMap<_, _>>();
        setup.argv = argv;
        setup.marks_fifo = marks_fifo;
        setup.observers.push(Box::new(observer));
        let config = RecorderConfig {
            interval: opts.interval,
            ..Default::default()
        };
        let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
        let rec = py
            .detach(|| {
                let rec = Recorder::start(setup, config, clock.clone())?;
                // A window opened right away must find samples before it.
                primed.wait(PRIMING_TIMEOUT);
                Ok::<_, flinch_core::Error>(rec)
            })
            .py_err()?;
        Ok(NativeRecorder {
            marks: rec.mark_sender(),
            rec: Mutex::new(Some(rec)),
            clock,
            windows: tx,
            next_id: AtomicU64::new(1),
            out,
            used: opened.used,
            notes,
            sources_json: serde_json::to_string(&infos).unwrap_or_else(|_| "[]".into()),
        })
    }

    /// Sends a mark stamped now; false when the queue was full and it was dropped.
    #[pyo3(signature = (label, fields=None))]
    fn mark(&self, label: &str, fields: Option<&Bound<'_, PyDict>>) -> PyResult<bool> {
        let spec = spec(label, self::fields(fields)?)?;
        sent(self.marks.post(&spec, self.clock.now_ns()))
    }

    /// Opens a window now: sends its start mark `NAME_start` and returns its handle.
    #[pyo3(signature = (name, fields=None))]
    fn open_window(
        &self,
        name: &str,
        fields: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<NativeWindow> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut f = self::fields(fields)?;
        let req = match f.iter().find(|(k, _)| k == "req") {
            Some((_, v)) => v.clone(),
            None => {
                let r = format!("w{id}");
                f.push(("req".into(), r.clone()));
                r
            }
        };
        let start = spec(&format!("{name}_start"), f.clone())?;
        let end = spec(&format!("{name}_end"), f)?;
        let t = self.clock.now_ns();
        let taken = sent(self.marks.post(&start, t))?;
        let _ = self.windows.send(WinMsg::Open { id, t_ns: t });
        Ok(NativeWindow {
            state: Arc::new(WindowState::new(id, req, start, end, t)),
            marks_dropped: AtomicU64::new(u64::from(!taken)),
            windows: self.windows.clone(),
            marks: self.marks.clone(),
            clock: self.clock.clone(),
        })
    }

    /// Stops the recording (a last poll of every source, everything flushed, the footer
    /// written) and returns the footer as JSON; `None` when it was stopped already.
    #[pyo3(signature = (ended_by="stopped"))]
    fn stop(&self, py: Python<'_>, ended_by: &str) -> PyResult<Option<String>> {
        let rec = self.rec.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(rec) = rec else {
            return Ok(None);
        };
        let footer = py.detach(|| rec.stop(ended_by, None)).py_err()?;
        Ok(Some(serde_json::to_string(&footer).unwrap_or_default()))
    }

    /// Whether the recording is still running.
    #[getter]
    fn running(&self) -> bool {
        self.rec.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// The trace file.
    #[getter]
    fn out(&self) -> PathBuf {
        self.out.clone()
    }

    /// The backends recorded.
    #[getter]
    fn backends(&self) -> Vec<String> {
        self.used.clone()
    }

    /// Backends skipped and why, idle-profile warnings.
    #[getter]
    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    /// The sources with their channels, as JSON (as in the trace header).
    #[getter]
    fn sources_json(&self) -> String {
        self.sources_json.clone()
    }

    /// Live counts: samples, marks, bad marks, dropped readings, gaps.
    fn stats(&self) -> Option<BTreeMap<&'static str, u64>> {
        let g = self.rec.lock().unwrap_or_else(|e| e.into_inner());
        let s = g.as_ref()?.stats();
        Some(BTreeMap::from([
            ("samples", s.samples.load(Ordering::Relaxed)),
            ("marks", s.marks.load(Ordering::Relaxed)),
            ("bad_marks", s.bad_marks.load(Ordering::Relaxed)),
            ("dropped_readings", s.dropped.load(Ordering::Relaxed)),
            ("gaps", s.gaps.load(Ordering::Relaxed)),
        ]))
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// One window: its start was posted when it was made; `close` posts its end.
#[pyclass(module = "flinch._flinch", frozen)]
pub struct NativeWindow {
    /// Shared with the observer once the window is closed.
    state: Arc<WindowState>,
    marks_dropped: AtomicU64,
    windows: Sender<WinMsg>,
    marks: MarkSender,
    clock: Arc<dyn Clock>,
}

impl NativeWindow {
    /// The writer (the observer's thread) is woken at most once per window, by the first
    /// `result()` or `done` that finds no measurement yet: ending the window wakes nobody.
    fn ask_measure(&self) {
        if !self.state.asked.swap(true, Ordering::AcqRel) {
            self.marks.request_flush();
        }
    }
}

#[pymethods]
impl NativeWindow {
    /// Ends the window now: posts its end mark and hands it to the observer, which
    /// measures it once the sensors cover its end. Returns the end time; a second call does
    /// nothing and returns the first end.
    fn close(&self) -> PyResult<u64> {
        let st = &*self.state;
        let t = self.clock.now_ns().max(st.start_ns);
        if st
            .end_ns
            .compare_exchange(0, t, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Ok(st.end_ns.load(Ordering::Acquire));
        }
        if self
            .windows
            .send(WinMsg::Close(self.state.clone()))
            .is_err()
        {
            st.slot.fill(Err(
                "the recording had stopped before the window ended".into()
            ));
            return Ok(t);
        }
        match self.marks.post(&st.end, t) {
            Ok(()) => {}
            Err(MarkSendError::Full) => {
                self.marks_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(MarkSendError::Closed) => {}
            Err(e) => return Err(invalid(e.to_string())),
        }
        Ok(t)
    }

    /// Waits (the GIL released) up to `timeout` seconds (`None`: as long as it takes) for
    /// the measurement; returns it as JSON, or `None` on timeout. Raises when there is none.
    #[pyo3(signature = (timeout=None))]
    fn result(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<String>> {
        if self.state.end_ns.load(Ordering::Acquire) == 0 {
            return Err(invalid(
                "the window has not ended yet: result() is available after the `with` block",
            ));
        }
        if self.state.slot.peek().is_none() {
            self.ask_measure();
        }
        let t = timeout.map(|s| Duration::from_secs_f64(s.max(0.0)));
        match py.detach(|| self.state.slot.wait(t)) {
            None => Ok(None),
            Some(Ok(json)) => Ok(Some(json)),
            Some(Err(e)) => Err(invalid(e)),
        }
    }

    /// Whether the measurement is there (`result()` would not wait).
    #[getter]
    fn done(&self) -> bool {
        let done = self.state.slot.peek().is_some();
        if !done && self.state.end_ns.load(Ordering::Acquire) != 0 {
            self.ask_measure();
        }
        done
    }

    /// `CLOCK_MONOTONIC` ns of the start.
    #[getter]
    fn start_ns(&self) -> u64 {
        self.state.start_ns
    }

    /// `CLOCK_MONOTONIC` ns of the end (`None` while open).
    #[getter]
    fn end_ns(&self) -> Option<u64> {
        match self.state.end_ns.load(Ordering::Acquire) {
            0 => None,
            t => Some(t),
        }
    }

    /// The request id the window's marks carry.
    #[getter]
    fn req(&self) -> String {
        self.state.req.clone()
    }

    /// The labels of its start and end marks.
    #[getter]
    fn labels(&self) -> (String, String) {
        (
            self.state.start.label().to_owned(),
            self.state.end.label().to_owned(),
        )
    }

    /// Marks of this window dropped because the recorder's queue was full.
    #[getter]
    fn marks_dropped(&self) -> u64 {
        self.marks_dropped.load(Ordering::Relaxed)
    }
}

/// Records the machine left alone for `seconds` and profiles every channel. Returns the
/// profile as JSON and the problems that show it was not idle (empty when it was).
#[pyfunction]
#[pyo3(signature = (seconds, source_args, sources=Vec::new()))]
pub fn calibrate(
    py: Python<'_>,
    seconds: f64,
    source_args: SourceArgs,
    sources: Vec<String>,
) -> PyResult<(String, Vec<String>, Vec<String>)> {
    let total = duration("seconds", seconds)?;
    let opts = options(source_args)?;
    let opened = open_sources(py, &sources, &opts)?;
    let scratch = std::env::temp_dir().join(format!(
        "flinch-calibrate-{}-{}.flinch.csv",
        std::process::id(),
        flinch_core::clock::monotonic_ns()
    ));
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(scratch.clone());
    let mut setup = RecordingSetup::new(scratch.clone(), opened.sources);
    setup.force = true;
    let config = RecorderConfig {
        interval: opts.interval,
        ..Default::default()
    };
    let rec = py
        .detach(|| Recorder::start(setup, config, Arc::new(MonotonicClock)))
        .py_err()?;
    let started = Instant::now();
    while started.elapsed() < total {
        let left = total.saturating_sub(started.elapsed());
        py.detach(|| std::thread::sleep(left.min(Duration::from_millis(100))));
        if let Err(e) = py.check_signals() {
            let _ = py.detach(|| rec.stop("signal", None));
            return Err(e);
        }
    }
    let footer = py.detach(|| rec.stop("duration", None)).py_err()?;
    let trace = py.detach(|| read_trace(&scratch)).py_err()?;
    let start = trace.header.start_anchor.mono_ns;
    let end = footer.end_anchor.mono_ns.max(start + 1);
    let mut profile = IdleProfile::from_trace(&trace, start, end, "calibrate").py_err()?;
    if profile.channels.is_empty() {
        return Err(invalid(format!(
            "no channel produced samples in {seconds} s ({}); see `flinch sources`",
            profile.warnings.join("; ")
        )));
    }
    let problems = profile.assess();
    let json = serde_json::to_string_pretty(&profile)
        .map_err(|e| invalid(format!("cannot encode the profile: {e}")))?;
    Ok((json, problems, opened.notes))
}
