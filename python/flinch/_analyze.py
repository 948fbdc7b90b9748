"""``analyze``: spans between marks as a DataFrame, with the numbers of ``flinch analyze``."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional, Union

from . import _flinch

__all__ = ["analyze", "analyze_report", "labels", "spans_frame"]

PathLike = Union[str, "os.PathLike[str]"]
IdleArg = Union[None, str, "os.PathLike[str]", Mapping[str, Any]]


def _idle_args(idle: IdleArg) -> Dict[str, Any]:
    if idle is None:
        return {}
    if isinstance(idle, Mapping):
        return {"idle_json": json.dumps(dict(idle))}
    return {"idle": os.fspath(idle)}


def analyze_report(
    path: PathLike,
    from_: str,
    to: str,
    *,
    idle: IdleArg = None,
    idle_window: Optional[str] = None,
) -> Dict[str, Any]:
    """The whole report of ``flinch analyze TRACE --from FROM_ --to TO --json`` as a dict.

    Same arguments as :func:`analyze`. The fields are documented in flinch's
    ``docs/analysis.md`` (*--json output*): ``spans`` (per span: per channel energy,
    per device state, activity, evidence), ``unmatched``, ``summary``, ``warnings``.
    """
    text = _flinch.analyze_json(
        os.fspath(path), from_, to, idle_window=idle_window, **_idle_args(idle)
    )
    return json.loads(text)


def labels(path: PathLike) -> Dict[str, int]:
    """The mark labels of a trace with their counts (what ``flinch analyze TRACE`` lists)."""
    return json.loads(_flinch.analyze_json(os.fspath(path)))["labels"]


def _device_columns(span: Mapping[str, Any]) -> Dict[str, Any]:
    row: Dict[str, Any] = {}
    for dev, d in span.get("devices", {}).items():
        ch = d.get("channel")
        ce = span.get("energy", {}).get(ch, {}) if ch else {}
        row[dev + ".energy_j"] = d.get("energy_j")
        row[dev + ".active_energy_j"] = d.get("active_energy_j")
        row[dev + ".mean_power_w"] = d.get("mean_power_w")
        row[dev + ".idle_power_w"] = d.get("idle_power_w")
        row[dev + ".state"] = d.get("state")
        row[dev + ".method"] = d.get("method")
        row[dev + ".resolved"] = bool(ce.get("resolved", False))
        for k in ("energy", "active_energy"):
            b = d.get(k + "_bound_j")
            row[dev + "." + k + "_lo_j"] = None if b is None else b[0]
            row[dev + "." + k + "_hi_j"] = None if b is None else b[1]
    return row


def spans_frame(report: Mapping[str, Any]) -> Any:
    """The spans of an analysis report (as :func:`analyze_report` returns it) as a
    DataFrame, one row per span; see :func:`analyze` for the columns."""
    import pandas as pd

    rows = []
    for s in report.get("spans", []):
        row = {
            "from": s["from"],
            "to": s["to"],
            "req": s.get("req"),
            "start_ns": s["start_ns"],
            "end_ns": s["end_ns"],
            "duration_s": s["duration_s"],
            "verdict": s["verdict"],
        }
        row.update(_device_columns(s))
        row["evidence"] = list(s.get("evidence", []))
        rows.append(row)
    base = ["from", "to", "req", "start_ns", "end_ns", "duration_s", "verdict"]
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=base + ["evidence"])
    else:
        cols = base + sorted(c for c in df.columns if c not in base and c != "evidence")
        df = df[cols + ["evidence"]]
        for c in ("start_ns", "end_ns"):
            df[c] = df[c].astype("int64")
    for key in ("trace", "from", "to", "idle", "thresholds", "warnings", "unmatched", "summary"):
        df.attrs[key] = report.get(key)
    return df


def analyze(
    path: PathLike,
    from_: str,
    to: str,
    *,
    idle: IdleArg = None,
    idle_window: Optional[str] = None,
) -> Any:
    """Spans from marks ``from_`` to marks ``to``: duration, energy, energy above idle and
    verdict per span, computed by the code of ``flinch analyze`` (the same numbers as its
    ``--json``).

    Args:
        path: the trace.
        from_, to: mark labels. Marks pair within their ``req``; each ``to`` closes the
            oldest open ``from`` of its request. ``from_ == to``: consecutive marks.
        idle: an idle profile: a file written by ``flinch calibrate`` or
            :func:`flinch.calibrate`, or the dict ``calibrate`` returned.
        idle_window: ``"A..B"``: take the idle level from this stretch of the trace
            itself (mark labels or seconds from its start, e.g. ``"calib_start..calib_end"``
            or ``"0..2.5"``). Wins over ``idle``; without either, the profile embedded
            by ``record --idle`` is used, if any.

    Returns:
        A pandas DataFrame, one row per span in start order: ``from``, ``to``, ``req``,
        ``start_ns``, ``end_ns``, ``duration_s``, ``verdict`` (``gpu-compute``,
        ``cpu-compute``, ``idle-wait``, ``unresolved``), per device ``<device>.energy_j``,
        ``<device>.active_energy_j`` (None without an idle level), ``<device>.mean_power_w``,
        ``<device>.idle_power_w``, ``<device>.state`` (``busy``, ``idle``, ``unresolved``,
        ``unknown``), ``<device>.method`` (the channel the energy came from) and
        ``<device>.resolved`` (whether that sensor could see the span),
        ``<device>.energy_lo_j``/``_hi_j`` and ``<device>.active_energy_lo_j``/``_hi_j``
        (the bounds on the energy given the sensors' update periods, the edges and the
        idle spread; None where there are none), and ``evidence``
        (the lines that decided the verdict). ``df.attrs`` holds ``summary`` (count,
        duration distribution, histogram, verdict counts, energy statistics per device),
        ``warnings``, ``unmatched``, ``idle``, ``thresholds``, ``trace``, ``from``, ``to``.
        Everything else (per channel energies, activity) is in :func:`analyze_report`.

    Raises:
        FileNotFoundError, OSError: the trace or the idle file cannot be read.
        flinch.TraceFormatError: not a flinch trace.
        flinch.InvalidInput: a label that no mark has (the message lists those present),
            a malformed ``idle_window``, an unusable idle profile.
    """
    return spans_frame(analyze_report(path, from_, to, idle=idle, idle_window=idle_window))
