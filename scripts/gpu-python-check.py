#!/usr/bin/env python3
"""The Python package on a real GPU: a PyTorch loop with `rec.window(...)` around busy and
idle phases of 100 ms to 1 s, measured in-process, compared with `flinch.analyze` (and,
when the binary is given, `flinch analyze --json`) of the same recording.

    python3 scripts/gpu-python-check.py --wheel .device-carry/flinch_energy-*.whl \\
        [--flinch .device-carry/flinch] [--out DIR]

Needs torch with CUDA, pandas; installs nothing (the wheel is unpacked into a temporary
directory and imported from there). Writes into DIR: python-check.txt (the table and the
summary), python-check.json (every window: in-process and analyze side by side),
py.flinch.csv (the recording) and idle.json (the profile taken with the CUDA context open).
Takes about a minute.
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile


def load_wheel(pattern):
    paths = sorted(glob.glob(pattern))
    if not paths:
        sys.exit("no wheel matches %s: build it with scripts/build-python-wheel.sh" % pattern)
    site = tempfile.mkdtemp(prefix="flinch-wheel-")
    with zipfile.ZipFile(paths[-1]) as z:
        z.extractall(site)
    sys.path.insert(0, site)
    return paths[-1]


class DryTorch:
    """Stands in for torch without a GPU (--dry-run): the "matmul" is a short CPU loop."""

    __version__ = "dry-run"

    class cuda:  # noqa: N801
        @staticmethod
        def device_count():
            return 0

        @staticmethod
        def is_available():
            return True

        @staticmethod
        def get_device_name(_):
            return "none (dry run)"

        @staticmethod
        def synchronize():
            pass

    bfloat16 = None

    @staticmethod
    def device(name):
        return name

    class _M:
        def __matmul__(self, other):
            sum(range(20000))
            return self

    @classmethod
    def randn(cls, *a, **k):
        return cls._M()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheel", default=".device-carry/flinch_energy-*.whl")
    ap.add_argument("--flinch", default=".device-carry/flinch", help="the flinch binary (optional)")
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu-results"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--calibrate-s", type=float, default=5.0)
    ap.add_argument("--dry-run", action="store_true",
                    help="no GPU: the synthetic source and a CPU loop stand in (checks the script)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if glob.glob(a.wheel) or not a.dry_run:
        wheel = load_wheel(a.wheel)
    else:
        wheel = "(installed)"
    import flinch

    if a.dry_run:
        torch = DryTorch()
        src = {"sources": ["synthetic"], "synthetic": "120W"}
        rec_src = {"sources": ["synthetic"], "synthetic": "120W/700ms,400W/300ms;class=gpu"}
    else:
        import torch

        src = rec_src = {"sources": ["nvml"]}

    lines = []

    def say(*xs):
        s = " ".join(str(x) for x in xs)
        print(s, flush=True)
        lines.append(s)

    say("wheel", os.path.basename(wheel), "flinch", flinch.__version__, "from", flinch.__file__)
    say("python", sys.version.split()[0], "torch", torch.__version__,
        "cuda devices", torch.cuda.device_count())
    if not torch.cuda.is_available():
        sys.exit("no CUDA device")
    dev = torch.device("cuda:0")
    say("gpu", torch.cuda.get_device_name(0))
    x = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    y = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    for _ in range(5):
        x @ y
    torch.cuda.synchronize()
    time.sleep(2.0)  # let power settle after the warm-up

    # The idle level with the CUDA context open: the state the idle phases wait in. NVML's
    # energy counter read every 100 ms, in the profile as in the recording (its default
    # interval is 30 s: no rate of it in a few seconds).
    extra = {} if a.dry_run else {"nvml_energy_interval": "100ms"}
    idle_path = os.path.join(a.out, "idle.json")
    profile = flinch.calibrate(a.calibrate_s, out=idle_path, force=True, allow_busy=True,
                               **src, **extra)
    power = {k: v["mean"] for k, v in profile["channels"].items() if v["quantity"] == "power"}
    say("calibrate: idle_ok", profile["idle_ok"], "power means", json.dumps(power),
        "warnings", profile["warnings"])

    trace = os.path.join(a.out, "py.flinch.csv")
    lengths_ms = [1000, 500, 300, 200, 100]
    windows = []
    with flinch.Recorder(out=trace, force=True, idle=idle_path, meta={"check": "gpu-python-check"},
                         **rec_src, **extra) as rec:
        say("recording", rec.backends, "->", rec.out)
        time.sleep(0.5)
        for rnd in range(a.rounds):
            for ms in lengths_ms:
                with rec.window("busy", ms=ms, round=rnd) as w:
                    t_end = time.monotonic() + ms / 1e3
                    while time.monotonic() < t_end:
                        x @ y
                        torch.cuda.synchronize()
                windows.append(("busy", ms, w))
                with rec.window("idle", ms=ms, round=rnd) as w:
                    time.sleep(ms / 1e3)
                windows.append(("idle", ms, w))
        # What a window costs the caller while NVML is sampled at 100 Hz.
        costs = []
        for i in range(5000):
            t0 = time.perf_counter_ns()
            with rec.window("empty"):
                pass
            costs.append(time.perf_counter_ns() - t0)
        # How long result() waits when asked right after a window: the driver's sample
        # buffer is read about twice a second, so up to ~0.5 s.
        waits = []
        for _ in range(5):
            with rec.window("latency") as w:
                t_end = time.monotonic() + 0.2
                while time.monotonic() < t_end:
                    x @ y
                    torch.cuda.synchronize()
            t = time.perf_counter_ns()
            w.result(timeout=30)
            waits.append((time.perf_counter_ns() - t) / 1e6)
        inproc = {(name, w.req): (ms, w.result()) for name, ms, w in windows}
    costs.sort()
    say("window enter+exit on the caller's thread (5000, NVML at 100 Hz): p50 %.2f µs, "
        "p99 %.2f µs, max %.1f µs" % (costs[len(costs) // 2] / 1e3,
                                      costs[int(len(costs) * 0.99)] / 1e3, costs[-1] / 1e3))

    # The same recording analysed afterwards, as flinch analyze does. The GPU's device:
    gpu = next(d for d, v in inproc[next(iter(inproc))][1].span["devices"].items()
               if v["class"] == "gpu")
    rows = []
    cli = {}
    for name in ("busy", "idle"):
        df = flinch.analyze(trace, name + "_start", name + "_end")
        if os.access(a.flinch, os.X_OK):
            r = subprocess.run([a.flinch, "analyze", trace, "--from", name + "_start",
                                "--to", name + "_end", "--json"], capture_output=True, text=True)
            if r.returncode == 0:
                cli[name] = json.loads(r.stdout)
                same = cli[name] == flinch.analyze_report(trace, name + "_start", name + "_end")
                say("flinch analyze --json == flinch.analyze_report for", name, ":", same)
            else:
                say("flinch analyze failed:", r.stderr.strip())
        for _, s in df.iterrows():
            ms, m = inproc[(name, s.req)]
            rows.append({
                "window": name, "ms": ms, "req": s.req,
                "duration_s": m.duration_s,
                "inproc_verdict": m.verdict, "analyze_verdict": s.verdict,
                "inproc_resolved": m.resolved, "reason": m.reason,
                "inproc_energy_j": m.energy_j.get(gpu), "analyze_energy_j": s[gpu + ".energy_j"],
                "inproc_active_j": m.active_energy_j.get(gpu),
                "analyze_active_j": s[gpu + ".active_energy_j"],
                "inproc_method": m.methods.get(gpu), "analyze_method": s[gpu + ".method"],
                "counter_disagreement_pct": m.span["devices"][gpu].get("counter_disagreement_pct"),
                "same_edges": (m.start_ns, m.end_ns) == (s.start_ns, s.end_ns),
            })
    say("")
    say("%-5s %5s %4s %9s %-12s %-12s %9s %9s %9s %9s %-15s" % (
        "win", "ms", "req", "dur_s", "verdict(in)", "verdict(an)", "E_in J", "E_an J",
        "act_in J", "act_an J", "method"))
    for r in rows:
        f = lambda v: "-" if v is None or v != v else "%.3f" % v  # noqa: E731
        say("%-5s %5d %4s %9.4f %-12s %-12s %9s %9s %9s %9s %-15s" % (
            r["window"], r["ms"], r["req"], r["duration_s"], r["inproc_verdict"],
            r["analyze_verdict"], f(r["inproc_energy_j"]), f(r["analyze_energy_j"]),
            f(r["inproc_active_j"]), f(r["analyze_active_j"]), r["inproc_method"]))
    same_verdict = sum(r["inproc_verdict"] == r["analyze_verdict"] for r in rows)
    rel = [abs(r["inproc_energy_j"] - r["analyze_energy_j"]) / abs(r["analyze_energy_j"])
           for r in rows if r["inproc_energy_j"] is not None and r["analyze_energy_j"]]
    act = [abs(r["inproc_active_j"] - r["analyze_active_j"]) for r in rows
           if r["inproc_active_j"] is not None and r["analyze_active_j"] == r["analyze_active_j"]
           and r["analyze_active_j"] is not None]
    say("")
    say("windows %d; verdicts equal %d/%d; same edges %d/%d" % (
        len(rows), same_verdict, len(rows), sum(r["same_edges"] for r in rows), len(rows)))
    if rel:
        say("energy: in-process vs analyze, max relative difference %.2e, median %.2e" % (
            max(rel), statistics.median(rel)))
    if act:
        say("active energy: max absolute difference %.4f J" % max(act))
    for name in ("busy", "idle"):
        vs = [r["inproc_verdict"] for r in rows if r["window"] == name]
        say("%s windows: verdicts %s" % (name, {v: vs.count(v) for v in sorted(set(vs))}))
    say("w.result() right after a 200 ms window waited (ms): %s" % ", ".join("%.0f" % w for w in waits))
    with open(os.path.join(a.out, "python-check.json"), "w") as f:
        json.dump({"rows": rows, "window_cost_ns": {"p50": costs[len(costs) // 2],
                   "p99": costs[int(len(costs) * 0.99)], "max": costs[-1]},
                   "result_wait_ms": waits, "idle": power, "idle_ok": profile["idle_ok"]}, f, indent=1, default=str)
    with open(os.path.join(a.out, "python-check.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
