#!/usr/bin/env python3
"""Reads back what `flinch export TRACE --parquet DIR` wrote, with pyarrow, and checks it
against the trace itself (read with the csv module): every sample (time and value, exactly),
every mark (time, label, req), and the spans (in start order, durations consistent).

    python3 scripts/parquet_roundtrip.py examples/llm/llm.flinch.csv /tmp/llm-parquet

Run by .ci/run in a venv with pyarrow; exits non-zero, saying what differs, on a mismatch.
"""

import csv
import sys
from collections import defaultdict
from urllib.parse import unquote

import pyarrow.parquet as pq


def read_trace(path):
    samples = defaultdict(list)
    marks = []
    with open(path, newline="") as f:
        rows = csv.reader(line for line in f if not line.startswith("#"))
        assert next(rows) == ["t_ns", "kind", "channel", "value", "label", "fields"]
        for t, kind, channel, value, label, fields in rows:
            if kind == "sample":
                samples[channel].append((int(t), float(value)))
            elif kind == "mark":
                kv = dict(f.split("=", 1) for f in fields.split(" ") if f)
                req = unquote(kv["req"]) if "req" in kv else None
                marks.append((int(t), label, req))
    for v in samples.values():
        v.sort(key=lambda x: x[0])
    marks.sort(key=lambda m: m[0])
    return samples, marks


def main(trace, out):
    samples, marks = read_trace(trace)
    s = pq.read_table(f"{out}/samples.parquet").to_pydict()
    got = defaultdict(list)
    for t, c, v in zip(s["t_ns"], s["channel"], s["value"]):
        got[c].append((t, v))
    problems = []
    for c, want in samples.items():
        if got.get(c) != want:
            n = len(got.get(c, []))
            problems.append(f"channel {c}: {n} samples read back, {len(want)} in the trace")
    if set(got) - set(samples):
        problems.append(f"channels not in the trace: {sorted(set(got) - set(samples))}")
    m = pq.read_table(f"{out}/marks.parquet").to_pydict()
    back = list(zip(m["t_ns"], m["label"], m["req"]))
    if back != marks:
        problems.append(f"marks differ: {len(back)} read back, {len(marks)} in the trace")
    sp = pq.read_table(f"{out}/spans.parquet")
    d = sp.to_pydict()
    if sp.num_rows == 0:
        problems.append("no spans")
    if d["start_ns"] != sorted(d["start_ns"]):
        problems.append("spans not in start order")
    for a, b, dur in zip(d["start_ns"], d["end_ns"], d["duration_s"]):
        if abs((b - a) / 1e9 - dur) > 1e-12:
            problems.append(f"span at {a}: duration {dur} s, ends say {(b - a) / 1e9} s")
            break
    meta = pq.ParquetFile(f"{out}/samples.parquet").metadata.metadata or {}
    if b"flinch.header" not in meta:
        problems.append("samples.parquet lacks the flinch.header metadata")
    if problems:
        print("parquet round trip FAILED:\n  " + "\n  ".join(problems))
        return 1
    total = sum(len(v) for v in samples.values())
    print(
        f"parquet round trip: {total} samples on {len(samples)} channels, {len(marks)} marks, "
        f"{sp.num_rows} spans read back with pyarrow {pq.__name__}: identical"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
