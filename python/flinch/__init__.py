"""flinch: the energy of code windows on GPUs and CPUs, measured honestly.

flinch's Rust recorder and analysis, in-process::

    import flinch
    with flinch.Recorder(sources=["nvml"], out="run.flinch.csv", idle="idle.json") as rec:
        with rec.window("prefill", req=7) as w:
            run_prefill()
        m = w.result()        # waits only until the sensors cover the window
        print(m.duration_s, m.energy_j["gpu0"], m.active_energy_j["gpu0"], m.verdict, m.resolved)

    trace = flinch.read_trace("run.flinch.csv")        # samples and marks as DataFrames
    spans = flinch.analyze("run.flinch.csv", from_="prefill_start", to="prefill_end")

- :class:`Recorder`, :meth:`Recorder.window`, :meth:`Recorder.mark`: record in this process.
- :func:`calibrate`: an idle profile of the machine left alone.
- :func:`read_trace`: a trace as pandas DataFrames.
- :func:`analyze`, :func:`analyze_report`, :func:`labels`: spans between marks, as
  ``flinch analyze`` computes them.
- :class:`Marks` (module :mod:`flinch.marks`): send marks to a recorder in another process.
- Exceptions: :class:`FlinchError` and its subclasses.
"""

from ._errors import FlinchError, InvalidInput, NotIdleError, SourceError, TraceFormatError
from ._flinch import __version__
from ._analyze import analyze, analyze_report, labels
from ._record import Measurement, Recorder, Window, calibrate
from ._trace import Trace, read_trace
from .marks import Marks

__all__ = [
    "Recorder",
    "Window",
    "Measurement",
    "calibrate",
    "read_trace",
    "Trace",
    "analyze",
    "analyze_report",
    "labels",
    "Marks",
    "FlinchError",
    "InvalidInput",
    "TraceFormatError",
    "SourceError",
    "NotIdleError",
    "__version__",
]
