"""Recording in-process: windows measured against a known power schedule (the synthetic
source, and a fake RAPL powercap tree), overlapping and nested windows, a window too
short to resolve, and the trace the recorder wrote analysed afterwards."""

import json
import math
import threading
import time
import warnings

import pytest

import flinch

# A repeating schedule the synthetic source follows exactly (its energy is known to the ns).
# Windows last 0.5 s or more: sampling at 1 ms, a step between two samples costs the
# trapezoid at most 50 W x the gap / 2, so even a sampler delayed 20 ms by a loaded machine
# stays under 1 % of a window's energy.
STEPS = [(0.3, 100.0), (0.2, 150.0)]
SCHEDULE = "100W/300ms,150W/200ms;class=gpu"


def schedule_energy(steps, origin_ns, a_ns, b_ns):
    """The exact energy of a repeating (seconds, watts) schedule between two instants."""

    def e(t_ns):
        period = sum(d for d, _ in steps)
        n, phase = divmod(max(0.0, (t_ns - origin_ns) / 1e9), period)
        total = n * sum(d * w for d, w in steps)
        for d, w in steps:
            part = min(phase, d)
            total += part * w
            phase -= part
        return total

    return e(b_ns) - e(a_ns)


def origin_of(rec):
    (src,) = [s for s in rec.sources if s["backend"] == "synthetic"]
    return int(src["attributes"]["origin_ns"])


def close_to(got, want, rel=0.01):
    return abs(got - want) <= rel * abs(want)


def test_windows_match_the_synthetic_schedule(tmp_path):
    out = tmp_path / "run.flinch.csv"
    with flinch.Recorder(sources=["synthetic"], out=out, synthetic=SCHEDULE, interval="1ms") as rec:
        origin = origin_of(rec)
        time.sleep(0.05)
        windows = []
        for length in (0.6, 0.9, 1.2):
            with rec.window("work", size=int(length * 1000)) as w:
                time.sleep(length)
            windows.append(w)
            time.sleep(0.03)
        results = [w.result(timeout=10) for w in windows]
    for w, m in zip(windows, results):
        want = schedule_energy(STEPS, origin, m.start_ns, m.end_ns)
        got = m.energy_j["synthetic"]
        assert close_to(got, want), (got, want)
        assert m.resolved and m.reason is None
        assert (m.start_ns, m.end_ns) == (w.start_ns, w.end_ns)
        assert m.duration_s == pytest.approx((m.end_ns - m.start_ns) / 1e9, abs=1e-9)
        assert m.methods["synthetic"] == "modelled"
        assert m.active_energy_j["synthetic"] is None  # no idle profile given
        assert m.span["devices"]["synthetic"]["class"] == "gpu"
    assert {m.req for m in results} == {"w1", "w2", "w3"}


def test_overlapping_and_nested_windows(tmp_path):
    out = tmp_path / "run.flinch.csv"
    with flinch.Recorder(sources=["synthetic"], out=out, synthetic=SCHEDULE, interval="1ms") as rec:
        origin = origin_of(rec)
        outer = rec.window("outer")
        a = rec.window("a")
        b = rec.window("b")
        with outer:
            time.sleep(0.1)
            a.__enter__()
            time.sleep(0.4)
            b.__enter__()  # b starts inside a ...
            time.sleep(0.3)
            a.__exit__(None, None, None)  # ... and outlives it: they overlap
            time.sleep(0.3)
            with rec.window("inner") as inner:  # nested in b and outer
                time.sleep(0.5)
            b.__exit__(None, None, None)
            time.sleep(0.05)
        ms = {w.name: w.result(timeout=10) for w in (outer, a, b, inner)}
    for name, m in ms.items():
        want = schedule_energy(STEPS, origin, m.start_ns, m.end_ns)
        assert close_to(m.energy_j["synthetic"], want), (name, m.energy_j, want)
        assert m.resolved, (name, m.reason)
    assert ms["a"].start_ns < ms["b"].start_ns < ms["a"].end_ns < ms["b"].end_ns
    assert ms["b"].start_ns < ms["inner"].start_ns < ms["inner"].end_ns < ms["b"].end_ns
    assert ms["outer"].energy_j["synthetic"] > ms["b"].energy_j["synthetic"] > ms["inner"].energy_j["synthetic"]


def test_a_window_too_short_to_resolve_says_so(tmp_path):
    # The modelled power is sampled every 10 ms: a window of well under one sample
    # interval holds at most one sensor update.
    with flinch.Recorder(sources=["synthetic"], out=tmp_path / "t.csv", synthetic="80W") as rec:
        time.sleep(0.05)
        with rec.window("blink") as w:
            pass
        m = w.result(timeout=10)
        time.sleep(0.05)
        with rec.window("long_enough") as w2:
            time.sleep(0.2)
        m2 = w2.result(timeout=10)
    assert m.resolved is False
    assert "sensor update" in m.reason and "synthetic.power" in m.reason
    assert m.verdict == "unresolved"
    # The energy is the interpolated share, not a silent 0 J, and is labelled unresolved.
    assert m.energy_j["synthetic"] == pytest.approx(80.0 * m.duration_s, rel=1e-6)
    assert m.span["energy"]["synthetic.power"]["resolved"] is False
    assert m2.resolved and m2.reason is None
    assert m2.energy_j["synthetic"] == pytest.approx(80.0 * m2.duration_s, rel=1e-6)


def test_the_decorator_and_threads(tmp_path):
    out = tmp_path / "run.flinch.csv"
    with flinch.Recorder(sources=["synthetic"], out=out, synthetic=SCHEDULE, interval="1ms") as rec:
        origin = origin_of(rec)

        @rec.window("step", phase="train")
        def step(depth):
            time.sleep(0.5)
            if depth:
                step(depth - 1)  # the same window name, nested
            return depth

        assert step.__name__ == "step"
        assert step(1) == 1
        outer_w = step.last_window
        seen = []

        def worker():
            for _ in range(2):
                with rec.window("io") as w:
                    time.sleep(0.5)
                seen.append(w)

        ts = [threading.Thread(target=worker) for _ in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        results = [w.result(timeout=10) for w in seen]
        outer = outer_w.result(timeout=10)
    assert len(results) == 6
    for m in results + [outer]:
        want = schedule_energy(STEPS, origin, m.start_ns, m.end_ns)
        assert close_to(m.energy_j["synthetic"], want)
    assert outer.duration_s > 1.0  # it holds the inner call

    # Windows are marks in the trace: flinch.analyze of the file pairs them exactly (each
    # window has its own req) and gives the numbers measured in-process.
    spans = flinch.analyze(out, "step_start", "step_end")
    assert len(spans) == 2
    outer_span = spans[spans.req == outer.req].iloc[0]
    assert (outer_span.start_ns, outer_span.end_ns) == (outer.start_ns, outer.end_ns)
    assert outer_span["synthetic.energy_j"] == pytest.approx(outer.energy_j["synthetic"], rel=1e-9)
    io_spans = flinch.analyze(out, "io_start", "io_end")
    assert sorted(io_spans.req) == sorted(m.req for m in results)
    by_req = {m.req: m for m in results}
    for _, row in io_spans.iterrows():
        m = by_req[row.req]
        assert (row.start_ns, row.end_ns) == (m.start_ns, m.end_ns)
        assert row["synthetic.energy_j"] == pytest.approx(m.energy_j["synthetic"], rel=1e-9)
        lo, hi = m.energy_bound_j["synthetic"]
        assert lo <= m.energy_j["synthetic"] <= hi
        assert (row["synthetic.energy_lo_j"], row["synthetic.energy_hi_j"]) == pytest.approx((lo, hi), rel=1e-9)
        assert row.verdict == m.verdict
    marks = flinch.read_trace(out).marks
    starts = marks[marks.label == "step_start"]
    assert all(f["phase"] == "train" for f in starts.fields)


def test_windows_on_a_fake_rapl_tree(tmp_path, fake_rapl):
    steps = [(0.3, 10.0), (0.3, 45.0)]
    fake = fake_rapl(steps)
    out = tmp_path / "rapl.flinch.csv"
    with flinch.Recorder(sources=["rapl"], rapl_root=fake.root, out=out, interval="5ms") as rec:
        assert rec.backends == ["rapl"]
        (zone,) = rec.sources
        assert zone["backend"] == "rapl"
        time.sleep(0.1)
        ws = []
        # Long enough that the fake's own staleness (its writer thread wakes every ~0.5 ms,
        # later on a loaded machine) stays far below 1 %.
        for length in (1.0, 1.3):
            with rec.window("cpu_work") as w:
                time.sleep(length)
            ws.append(w)
        ms = [w.result(timeout=10) for w in ws]
    for m in ms:
        (dev,) = m.energy_j
        want = fake.energy_j(m.end_ns) - fake.energy_j(m.start_ns)
        assert close_to(m.energy_j[dev], want), (m.energy_j, want)
        # The bound holds the measured energy, and the true one up to the fake's own
        # staleness (its counter is written a fraction of a millisecond late).
        lo, hi = m.energy_bound_j[dev]
        assert lo <= m.energy_j[dev] <= hi
        slack = 1e-3 * want
        assert lo - slack <= want <= hi + slack, (lo, want, hi)
        assert m.methods[dev] == "counter"
        assert m.resolved, m.reason
    trace = flinch.read_trace(out)
    assert trace.channels.kind.tolist() == ["counter"]


def test_calibrate_and_active_energy(tmp_path):
    idle_file = tmp_path / "idle.json"
    profile = flinch.calibrate(
        0.6, sources=["synthetic"], synthetic="40W;class=gpu", out=idle_file
    )
    assert profile["format"] == "flinch-idle" and profile["idle_ok"]
    assert profile["channels"]["synthetic.power"]["mean"] == pytest.approx(40.0)
    assert json.loads(idle_file.read_text()) == profile
    with pytest.raises(FileExistsError):
        flinch.calibrate(0.2, sources=["synthetic"], out=idle_file)

    with flinch.Recorder(
        sources=["synthetic"], out=tmp_path / "t.csv", synthetic="40W/300ms,140W/300ms;class=gpu",
        idle=idle_file, interval="2ms",
    ) as rec:
        origin = origin_of(rec)
        # Wait for a busy step to begin, then measure most of it.
        period_ns = 600_000_000
        now = time.monotonic_ns()
        next_busy = origin + ((now - origin) // period_ns + 1) * period_ns - 300_000_000
        if next_busy < now:
            next_busy += period_ns
        time.sleep((next_busy - now) / 1e9 + 0.05)
        with rec.window("busy") as w:
            time.sleep(0.2)
        m = w.result(timeout=10)
    assert m.idle_power_w["synthetic"] == pytest.approx(40.0)
    assert m.active_energy_j["synthetic"] == pytest.approx(
        m.energy_j["synthetic"] - 40.0 * m.duration_s, rel=1e-9
    )
    steps = [(0.3, 40.0), (0.3, 140.0)]
    busy = schedule_energy(steps, origin, m.start_ns, m.end_ns) - 40.0 * m.duration_s
    assert close_to(m.active_energy_j["synthetic"], busy)
    assert busy > 50.0 * m.duration_s, "the window lies mostly in the 140 W step"
    assert m.verdict == "gpu-compute"
    # The trace carries the profile: flinch.analyze uses it (via "embedded").
    assert flinch.read_trace(rec.out).header["idle"]["channels"]["synthetic.power"]["mean"] == pytest.approx(40.0)


def test_calibrate_refuses_a_busy_machine(tmp_path):
    out = tmp_path / "idle.json"
    with pytest.raises(flinch.NotIdleError) as e:
        flinch.calibrate(0.6, sources=["synthetic"], synthetic="20W/100ms,200W/100ms;class=gpu", out=out)
    assert e.value.problems and "something ran on the GPU" in str(e.value)
    assert e.value.profile["idle_ok"] is False
    assert not out.exists()
    p = flinch.calibrate(0.6, sources=["synthetic"], synthetic="20W/100ms,200W/100ms;class=gpu",
                         out=out, allow_busy=True)
    assert p["idle_ok"] is False and out.exists()


def test_no_sources_records_what_is_here_and_says_what_is_not(tmp_path):
    # Here: procfs (the cpu source), no NVIDIA driver, no DCGM, no powercap tree.
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        rec = flinch.Recorder(out=tmp_path / "t.csv", rapl_root=tmp_path / "none",
                              nvml_lib=tmp_path / "none.so", dcgm_lib=tmp_path / "none.so")
    said = [str(w.message) for w in seen if issubclass(w.category, RuntimeWarning)]
    assert any("nvml:" in s and "none.so" in s for s in said), said
    assert any("dcgm:" in s for s in said), said
    assert any("rapl:" in s and "no powercap tree" in s for s in said), said
    with rec:
        assert rec.backends == ["cpu"]
        assert rec.mark("hello", n=1) is True
        time.sleep(0.05)
        with rec.window("spin") as busy:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 0.6:
                pass
        with rec.window("nap") as nap:
            time.sleep(0.6)
        b, n = busy.result(timeout=10), nap.result(timeout=10)
    assert rec.footer["marks"] == 5
    t = flinch.read_trace(rec.out)
    assert t.marks.label.tolist()[0] == "hello" and t.marks.fields[0] == {"n": "1"}
    # The cpu source follows this process: its CPU time tells spinning from napping.
    spin = b.span["activity"]["proc.cpu_time"]["mean"]
    rest = n.span["activity"]["proc.cpu_time"]["mean"]
    assert spin > 0.2 and spin > 5 * rest, (spin, rest)
    assert n.verdict == "idle-wait", n.evidence


def test_the_synthetic_source_stands_in_when_asked_for_nothing_but_it(tmp_path):
    with flinch.Recorder(sources="synthetic", out=tmp_path / "t.csv") as rec:
        assert rec.backends == ["synthetic"]


def test_sampling_goes_on_while_python_holds_the_gil(tmp_path):
    """`sum(range(n))` runs in C without ever releasing the GIL; the recorder's threads,
    which never take it, sample through it at their interval."""
    out = tmp_path / "gil.flinch.csv"
    with flinch.Recorder(sources=["synthetic"], out=out, synthetic="50W", interval="5ms") as rec:
        time.sleep(0.05)
        with rec.window("hold") as w:
            t0 = time.monotonic()
            n = 10**6
            while time.monotonic() - t0 < 0.3:  # grow until one call holds the GIL >= 0.3 s
                t1 = time.monotonic()
                sum(range(n))
                if time.monotonic() - t1 >= 0.3:
                    break
                n *= 2
        m = w.result(timeout=10)
    t = flinch.read_trace(out)
    s = t.channel("synthetic.power")
    inside = s[(s.t_ns >= m.start_ns) & (s.t_ns <= m.end_ns)].t_ns
    held_s = m.duration_s
    assert held_s >= 0.3
    gaps_ms = inside.diff().dropna() / 1e6
    assert len(inside) >= held_s / 0.005 * 0.5, (len(inside), held_s)
    assert gaps_ms.max() < 100, gaps_ms.max()
    assert m.resolved


def test_a_window_still_open_when_the_recording_stops(tmp_path):
    rec = flinch.Recorder(sources=["synthetic"], out=tmp_path / "t.csv")
    w = rec.window("late")
    w.__enter__()
    rec.stop()
    w.__exit__(None, None, None)
    with pytest.raises(flinch.InvalidInput) as e:
        w.result(timeout=5)
    assert "stopped before the window ended" in str(e.value)
    marks = flinch.read_trace(rec.out).marks
    assert marks.label.tolist() == ["late_start"]


def test_calibrate_writes_idle_json_like_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = flinch.calibrate(0.3, sources="synthetic", synthetic="30W")
    assert json.loads((tmp_path / "idle.json").read_text()) == p
    assert flinch.calibrate(0.3, sources="synthetic", synthetic="30W", out=None)["idle_ok"]
