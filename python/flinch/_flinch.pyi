"""Type stubs of the compiled half of the package (``flinch._flinch``, built from
``crates/python``). Use the public API in ``flinch`` instead of this module."""

from typing import Dict, List, Optional, Sequence, Tuple

__version__: str

def read_trace(path: str) -> Dict[str, object]:
    """A trace's parts: header/footer JSON, channel names, sample columns as little-endian
    bytes (``sample_channel`` u32, ``sample_t_ns`` u64, ``sample_value`` f64), marks,
    anchors, gaps, events and warnings."""

def analyze_json(
    path: str,
    from_: Optional[str] = None,
    to: Optional[str] = None,
    idle: Optional[str] = None,
    idle_json: Optional[str] = None,
    idle_window: Optional[str] = None,
) -> str:
    """The report of ``flinch analyze --json`` (or ``{"trace", "labels"}`` without labels)."""

def calibrate(
    seconds: float, source_args: Dict[str, object], sources: Sequence[str] = ...
) -> Tuple[str, List[str], List[str]]:
    """(profile JSON, problems showing the machine was not idle, notes on skipped sources).
    ``source_args``: interval_s, synthetic, rapl_root, nvml_lib, gpus,
    nvml_energy_interval_s, dcgm_lib, dcgm_host, pid."""

class NativeRecorder:
    """A running recording (wrapped by ``flinch.Recorder``)."""

    def __new__(
        cls,
        out: str,
        source_args: Dict[str, object],
        sources: Sequence[str] = ...,
        force: bool = False,
        idle: Optional[str] = None,
        idle_json: Optional[str] = None,
        meta: Sequence[Tuple[str, str]] = ...,
        marks_fifo: Optional[str] = None,
        argv: Sequence[str] = ...,
    ) -> "NativeRecorder": ...
    def mark(self, label: str, fields: Optional[Dict[str, object]] = None) -> bool: ...
    def open_window(self, name: str, fields: Optional[Dict[str, object]] = None) -> "NativeWindow": ...
    def stop(self, ended_by: str = "stopped") -> Optional[str]: ...
    def stats(self) -> Optional[Dict[str, int]]: ...
    @property
    def running(self) -> bool: ...
    @property
    def out(self) -> str: ...
    @property
    def backends(self) -> List[str]: ...
    @property
    def notes(self) -> List[str]: ...
    @property
    def sources_json(self) -> str: ...

class NativeWindow:
    """One window (wrapped by ``flinch.Window``)."""

    def close(self) -> int: ...
    def result(self, timeout: Optional[float] = None) -> Optional[str]: ...
    @property
    def done(self) -> bool: ...
    @property
    def start_ns(self) -> int: ...
    @property
    def end_ns(self) -> Optional[int]: ...
    @property
    def req(self) -> str: ...
    @property
    def labels(self) -> Tuple[str, str]: ...
    @property
    def marks_dropped(self) -> int: ...
