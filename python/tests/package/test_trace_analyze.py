"""read_trace and analyze on the shipped example traces, against independent readings and
against the `flinch` command line."""

import io
import json
import math
import urllib.parse

import numpy as np
import pandas as pd
import pytest

import flinch
from conftest import EXAMPLES, run_flinch

# (trace, from, to, idle_window or None)
CASES = [
    ("llm", "infer_start", "first_token", "calib_start..calib_end"),
    ("llm", "server_recv", "done", None),
    ("busy-idle", "phase_start", "phase_end", "calib_start..calib_end"),
    ("busy-idle", "square_start", "square_end", "calib_start..calib_end"),
]


def raw_rows(path):
    """The trace's rows as pandas reads the CSV, as the docs say to (comment='#')."""
    return pd.read_csv(
        path, comment="#", dtype={"channel": str, "label": str, "fields": str},
        keep_default_na=False, na_values={"value": [""]},
    )


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_samples_are_the_files_rows_channel_by_channel(name):
    path = EXAMPLES[name]
    t = flinch.read_trace(path)
    raw = raw_rows(path)
    s = raw[raw.kind == "sample"]
    assert len(t.samples) == len(s) > 1000
    order = [c["name"] for src in t.header["sources"] for c in src["channels"]]
    assert list(t.samples.channel.cat.categories) == order
    assert list(t.channels.name) == order
    # Channel by channel in header order, each sorted by time (stable: file order on ties).
    s = s.assign(k=s.channel.map({c: i for i, c in enumerate(order)}))
    s = s.sort_values(["k", "t_ns"], kind="stable")
    assert np.array_equal(t.samples.t_ns.to_numpy(), s.t_ns.to_numpy(dtype="int64"))
    assert np.array_equal(t.samples.channel.astype(str).to_numpy(), s.channel.to_numpy())
    assert np.array_equal(t.samples.value.to_numpy(), s.value.to_numpy(dtype="float64"))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_samples_equal_what_the_cli_exports(name, tmp_path):
    """`flinch export --csv` writes what the CLI's reader read: a row per timestamp, a
    column per channel. Melted back, it is the samples frame row for row."""
    path = EXAMPLES[name]
    wide = tmp_path / "wide.csv"
    run_flinch("export", path, "--csv", str(wide), "--quiet")
    w = pd.read_csv(wide)
    t = flinch.read_trace(path)
    for ch in t.channels.name:
        col = w[["t_ns", ch]].dropna()
        got = t.channel(ch)
        assert np.array_equal(got.t_ns.to_numpy(), col.t_ns.to_numpy(dtype="int64")), ch
        assert np.array_equal(got.value.to_numpy(), col[ch].to_numpy(dtype="float64")), ch


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_marks_and_header_metadata(name):
    path = EXAMPLES[name]
    t = flinch.read_trace(path)
    raw = raw_rows(path)
    m = raw[raw.kind == "mark"].sort_values("t_ns", kind="stable")
    assert list(t.marks.label) == list(m.label)
    assert list(t.marks.t_ns) == list(m.t_ns)
    for fields, text in zip(t.marks.fields, m.fields):
        expected = dict(
            (k, urllib.parse.unquote(v))
            for k, v in (f.split("=", 1) for f in text.split(" ") if f)
        )
        assert fields == expected
    assert list(t.marks.req) == [f.get("req") for f in t.marks.fields]
    # The header travels as metadata, with sources, channels, units, periods, anchors.
    with open(path) as f:
        f.readline()
        header = json.loads(f.readline()[len("# header "):])
    assert t.header == header
    assert t.samples.attrs["header"] == header and t.marks.attrs["header"] == header
    assert t.complete and t.footer["complete"]
    gpu = t.channels.set_index("name").loc["gpu0.power_samples"]
    assert (gpu.unit, gpu.method, gpu.update_period_ns) == ("W", "driver-samples", 20_000_000)
    assert t.anchors.mono_ns.iloc[0] == header["start_anchor"]["mono_ns"]
    assert t.warnings == []


@pytest.mark.parametrize("name,from_,to,idle_window", CASES)
def test_analyze_gives_the_numbers_of_flinch_analyze_json(name, from_, to, idle_window):
    path = EXAMPLES[name]
    args = ["analyze", path, "--from", from_, "--to", to, "--json"]
    if idle_window:
        args += ["--idle-window", idle_window]
    cli = json.loads(run_flinch(*args))
    report = flinch.analyze_report(path, from_, to, idle_window=idle_window)
    assert report == cli  # every span, every number, every warning

    df = flinch.analyze(path, from_, to, idle_window=idle_window)
    assert len(df) == len(cli["spans"]) > 0
    for (_, row), span in zip(df.iterrows(), cli["spans"]):
        for k in ("from", "to", "req", "start_ns", "end_ns", "duration_s", "verdict"):
            assert row[k] == span[k], k
        assert row["evidence"] == span["evidence"]
        for dev, d in span["devices"].items():
            for k in ("energy_j", "active_energy_j", "mean_power_w", "state", "method"):
                got, want = row[dev + "." + k], d[k]
                if want is None:
                    assert got is None or (isinstance(got, float) and math.isnan(got)), (dev, k)
                else:
                    assert got == want, (dev, k)
            for k in ("energy", "active_energy"):
                want = d.get(k + "_bound_j")
                got = (row[dev + "." + k + "_lo_j"], row[dev + "." + k + "_hi_j"])
                if want is None:
                    assert all(g is None or math.isnan(g) for g in got), (dev, k)
                else:
                    assert list(got) == want, (dev, k)
    assert df.attrs["summary"] == cli["summary"]
    assert df.attrs["warnings"] == cli["warnings"]
    assert df.attrs["unmatched"] == cli["unmatched"]


def test_analyze_with_an_idle_profile_file_and_dict(tmp_path):
    """An idle profile given as a file (as `flinch calibrate` writes it) or as the dict
    `flinch.calibrate` returns gives the CLI's numbers with `--idle FILE`."""
    path = EXAMPLES["busy-idle"]
    profile = {
        "format": "flinch-idle", "version": 1, "created": "2026-11-28T00:00:00+00:00",
        "host": "vm", "kernel": "", "origin": "test", "duration_s": 3.0, "idle_ok": True,
        "warnings": [],
        "channels": {
            "gpu0.power_samples": {
                "device": "gpu0", "quantity": "power", "unit": "W", "method": "driver-samples",
                "stat_of": "samples", "mean": 120.0, "median": 120.0, "p5": 119.0, "p95": 121.0,
                "std": 0.5, "min": 118.0, "max": 122.0, "samples": 150, "drift": 0.1,
            }
        },
        "conditions": {}, "sources": [],
    }
    f = tmp_path / "idle.json"
    f.write_text(json.dumps(profile))
    cli = json.loads(run_flinch("analyze", path, "--from", "phase_start", "--to", "phase_end",
                                "--idle", str(f), "--json"))
    assert flinch.analyze_report(path, "phase_start", "phase_end", idle=str(f)) == cli
    from_dict = flinch.analyze_report(path, "phase_start", "phase_end", idle=profile)
    assert from_dict["idle"]["via"] == "profile"
    assert from_dict["spans"] == cli["spans"] and from_dict["summary"] == cli["summary"]
    spans = [s["devices"]["gpu0"]["idle_power_w"] for s in cli["spans"]]
    assert spans and all(p == 120.0 for p in spans)


def test_labels_are_those_the_cli_lists():
    path = EXAMPLES["llm"]
    cli = json.loads(run_flinch("analyze", path, "--json"))
    assert flinch.labels(path) == cli["labels"]
    assert flinch.labels(path)["first_token"] == 16


def test_the_readmes_dataframe_example_runs(monkeypatch):
    """The README's "From Python" DataFrame example, run as written from the repository."""
    import os
    import re

    from conftest import REPO

    readme = open(os.path.join(REPO, "README.md")).read()
    section = readme.split("## From Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    code = next(b for b in blocks if "read_trace" in b)
    monkeypatch.chdir(REPO)
    ns = {"flinch": flinch}
    exec(code, ns)
    assert len(ns["spans"]) == 16
    assert ns["spans"].verdict.iloc[0] == "cpu-compute"
    assert len(ns["t"].marks) == 418
