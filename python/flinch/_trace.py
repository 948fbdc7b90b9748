"""``read_trace``: a flinch trace as pandas DataFrames."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

from . import _flinch

__all__ = ["Trace", "read_trace"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class Trace:
    """A trace read by flinch's own reader (the one ``flinch analyze`` uses).

    Attributes:
        path: the file.
        samples: one row per sample: ``t_ns`` (``CLOCK_MONOTONIC`` ns, int64), ``channel``
            (categorical, in header order) and ``value`` (float64, in the channel's unit).
            Rows come channel by channel in header order, each channel sorted by time,
            exactly as the reader holds them.
        marks: one row per mark, sorted by time: ``t_ns``, ``label``, ``req`` (None
            without one), ``fields`` (a dict of the mark's other fields, ``req`` included),
            ``via`` (``fifo``, ``file``, ``api``), ``recv_ns`` (when the recorder received
            it) and ``t_from_client`` (whether the client stamped ``t=``).
        channels: one row per channel, in header order: ``name``, ``source``, ``backend``,
            ``device``, ``quantity``, ``unit``, ``kind`` (``gauge``/``counter``),
            ``method`` (power only), ``update_period_ns``, ``wrap_range``, ``max_rate``,
            ``description``.
        header: the header as a dict (sources, channels, units, update periods, the start
            anchor, host, ``meta``, the embedded idle profile, ...); also in
            ``samples.attrs["header"]`` and ``marks.attrs["header"]``.
        footer: the footer as a dict, or None when the recording was cut short.
        anchors: the (``mono_ns``, ``real_ns``) clock anchor rows.
        gaps: stretches when a source did not answer: ``source``, ``start_ns``,
            ``end_ns`` (None: never answered again), ``reason``.
        events: resets, flags, drops, malformed marks and other events: ``t_ns``,
            ``kind``, ``channel``, ``value``, ``label``, ``text``, ``line``.
        warnings: what the reader found wrong but not fatal (a cut last line, no footer).
    """

    path: str
    samples: Any
    marks: Any
    channels: Any
    header: Dict[str, Any]
    footer: Optional[Dict[str, Any]]
    anchors: Any
    gaps: Any
    events: Any
    warnings: List[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether the recording ended cleanly (a footer with ``complete: true``)."""
        return bool(self.footer and self.footer.get("complete"))

    def channel(self, name: str) -> Any:
        """The samples of one channel (``t_ns``, ``value``), sorted by time."""
        s = self.samples
        return s.loc[s["channel"] == name, ["t_ns", "value"]].reset_index(drop=True)

    def __repr__(self) -> str:
        return "Trace(%r: %d samples of %d channels, %d marks%s)" % (
            self.path,
            len(self.samples),
            len(self.channels),
            len(self.marks),
            "" if self.complete else ", cut short",
        )


def _ints(buf: bytes) -> Any:
    import numpy as np

    a = np.frombuffer(buf, dtype="<u8")
    # CLOCK_MONOTONIC ns stay far below 2**63 (292 years of uptime): int64 is exact and
    # lets differences go negative.
    if len(a) and int(a.max()) >= 2**63:
        return a.copy()
    return a.astype(np.int64)


def _method(ch: Dict[str, Any]) -> Optional[str]:
    m = ch.get("method")
    if m is None:
        return "counter" if ch.get("quantity") == "energy" else None
    if isinstance(m, dict):  # {"average": {"window_ms": 1000}}
        return next(iter(m))
    return str(m)


def read_trace(path: PathLike) -> Trace:
    """Reads a flinch trace (``*.flinch.csv``) into pandas DataFrames.

    The file is parsed by flinch's Rust reader with the GIL released, so the rows are
    exactly those ``flinch analyze`` works on: counters raw as recorded, marks with their
    fields unescaped, a cut-short last line dropped (with a warning).

    Raises:
        FileNotFoundError, PermissionError, OSError: the file cannot be read.
        flinch.TraceFormatError: it is not a flinch trace, or it is damaged (the message
            names the line).

    >>> t = flinch.read_trace("examples/llm/llm.flinch.csv")     # doctest: +SKIP
    >>> t.samples[t.samples.channel == "gpu0.power_samples"].value.mean()  # doctest: +SKIP
    """
    import numpy as np
    import pandas as pd

    raw = _flinch.read_trace(os.fspath(path))
    header = json.loads(raw["header"])
    footer = json.loads(raw["footer"]) if raw["footer"] else None
    names = list(raw["channels"])
    codes = np.frombuffer(raw["sample_channel"], dtype="<u4").astype(np.int32)
    samples = pd.DataFrame(
        {
            "t_ns": _ints(raw["sample_t_ns"]),
            "channel": pd.Categorical.from_codes(codes, categories=names),
            "value": np.frombuffer(raw["sample_value"], dtype="<f8").copy(),
        }
    )
    fields = raw["mark_fields"]
    marks = pd.DataFrame(
        {
            "t_ns": _ints(raw["mark_t_ns"]),
            "label": pd.Series(raw["mark_label"], dtype=object),
            "req": pd.Series([f.get("req") for f in fields], dtype=object),
            "fields": pd.Series(fields, dtype=object),
            "via": pd.Series(raw["mark_via"], dtype=object),
            "recv_ns": _ints(raw["mark_recv_ns"]),
            "t_from_client": pd.Series(raw["mark_t_from_client"], dtype=bool),
        }
    )
    rows = []
    for s in header.get("sources", []):
        for c in s.get("channels", []):
            rows.append(
                {
                    "name": c["name"],
                    "source": s["name"],
                    "backend": s.get("backend"),
                    "device": c.get("device"),
                    "quantity": c.get("quantity"),
                    "unit": c.get("unit"),
                    "kind": c.get("kind"),
                    "method": _method(c),
                    "update_period_ns": c.get("update_period_ns"),
                    "wrap_range": c.get("wrap_range"),
                    "max_rate": c.get("max_rate"),
                    "description": c.get("description"),
                }
            )
    channels = pd.DataFrame(
        rows,
        columns=[
            "name", "source", "backend", "device", "quantity", "unit", "kind", "method",
            "update_period_ns", "wrap_range", "max_rate", "description",
        ],
    )
    channels["update_period_ns"] = channels["update_period_ns"].astype("Int64")
    anchors = pd.DataFrame(raw["anchors"], columns=["mono_ns", "real_ns"], dtype="int64")
    gaps = pd.DataFrame(raw["gaps"], columns=["source", "start_ns", "end_ns", "reason"])
    events = pd.DataFrame(
        raw["events"], columns=["t_ns", "kind", "channel", "value", "label", "text", "line"]
    )
    samples.attrs["header"] = header
    marks.attrs["header"] = header
    return Trace(
        path=raw["path"],
        samples=samples,
        marks=marks,
        channels=channels,
        header=header,
        footer=footer,
        anchors=anchors,
        gaps=gaps,
        events=events,
        warnings=list(raw["warnings"]),
    )
