#!/usr/bin/env bash
# Every GPU of a host at once (issue 18): default `flinch record` on all GPUs while
# examples/workloads/multi_gpu.py keeps each GPU busy, light or idle in turn (marks carry
# `gpu=`), once with the live exporter scraped every second and once without it. Runs on
# the GPU machine from a prebuilt flinch (no Rust there):
#
#   scripts/build-gpu-bins.sh                     # here: flinch -> .device-carry/
#   scripts/gpu-multi.sh [BIN_DIR] [OUT_DIR]      # there, from the repository root
#
# Writes OUT_DIR/gpu-multi.json (every figure), OUT_DIR/gpu-multi.log and the two traces.
# About 3 minutes on 2 GPUs (three recordings: all GPUs with and without the exporter, GPU 0).
set -u
BIN=${1:-.device-carry}
OUT=${2:-${OUT:-gpu-results}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 - "$BIN/flinch" "$OUT" <<'PY' 2>&1 | tee "$OUT/gpu-multi.log"
import json, os, re, socket, subprocess, sys, threading, time, urllib.request
import pandas as pd
import pynvml

flinch, out = sys.argv[1], sys.argv[2]
pynvml.nvmlInit()
ngpu = pynvml.nvmlDeviceGetCount()
handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(ngpu)]
result = {"gpus": ngpu, "gpu_names": [pynvml.nvmlDeviceGetName(h) for h in handles], "runs": {}}
print(f"{ngpu} GPU(s)", flush=True)


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def proc_cpu_s(pid):
    """utime + stime of a live process, s."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads_cpu_s(pid):
    """utime + stime of each thread of a live process, summed by thread name, s."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
            comm = head.split("(", 1)[1]
            fields = rest.split()
            out[comm] = out.get(comm, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return out


def record(name, exporter, gpus=None):
    trace = os.path.join(out, f"multi-{name}.flinch.csv")
    cmd = [flinch, "record", "--quiet", "--force", "--out", trace]
    if gpus is not None:
        cmd += ["--gpus", ",".join(map(str, gpus))]
    nrec = len(gpus) if gpus is not None else ngpu
    port = None
    if exporter:
        port = free_port()
        cmd += ["--prometheus", f"127.0.0.1:{port}", "--span", "phase_start..phase_end"]
    cmd += ["--", "python3", "examples/workloads/multi_gpu.py"]
    t0 = time.monotonic()
    rec = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    err = []
    threading.Thread(target=lambda: err.append(rec.stderr.read()), daemon=True).start()
    scrapes, cpu, last_body = [], [], ""
    while rec.poll() is None:
        try:
            cpu.append((time.monotonic(), proc_cpu_s(rec.pid), threads_cpu_s(rec.pid)))
        except (OSError, IndexError, ValueError):
            pass
        if port:
            a = time.monotonic()
            try:
                raw = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
                ms = (time.monotonic() - a) * 1e3
                last_body = raw.decode()
                scrapes.append({"t": a - t0, "ms": ms, "bytes": len(raw),
                                "series": sum(1 for l in last_body.splitlines() if l and not l.startswith("#"))})
            except Exception as e:  # noqa: BLE001
                scrapes.append({"t": a - t0, "error": str(e)})
        time.sleep(1.0)
    rec.wait()
    time.sleep(0.2)
    r = {"exit": rec.returncode, "stderr": "".join(err)[-2000:], "trace": trace,
         "wall_s": time.monotonic() - t0}
    # CPU over the steady middle: from the 5th CPU sample to the last (start-up excluded)
    if len(cpu) > 6:
        (ta, ca, tha), (tb, cb, thb) = cpu[4], cpu[-1]
        r["cpu_ms_per_s"] = (cb - ca) / (tb - ta) * 1e3
        # by thread: the exporter's cost is flinch-metrics (serving) plus its share of
        # flinch-writer (the observer that keeps the metrics, on the writer thread)
        r["cpu_ms_per_s_by_thread"] = {k: (thb.get(k, 0.0) - tha.get(k, 0.0)) / (tb - ta) * 1e3
                                       for k in thb}
        r["cpu_ms_per_s_per_gpu"] = r["cpu_ms_per_s"] / nrec
    r["gpus_recorded"] = nrec
    ok = [s for s in scrapes if "ms" in s]
    if scrapes:
        ms = sorted(s["ms"] for s in ok)
        r["scrapes"] = {"count": len(scrapes), "failed": len(scrapes) - len(ok),
                        "ms_p50": ms[len(ms) // 2] if ms else None, "ms_max": ms[-1] if ms else None,
                        "bytes_last": ok[-1]["bytes"] if ok else None,
                        "series_last": ok[-1]["series"] if ok else None}
        series = [l for l in last_body.splitlines() if l and not l.startswith("#")]
        r["scrapes"]["series_per_gpu"] = {f"gpu{g}": sum(1 for l in series if f'"gpu{g}' in l) for g in range(ngpu)}
        r["scrapes"]["series_without_gpu"] = sum(1 for l in series if '"gpu' not in l)
        with open(os.path.join(out, f"multi-{name}.metrics.txt"), "w") as fh:
            fh.write(last_body)
    return r


def footer(trace):
    with open(trace) as f:
        for line in f:
            if line.startswith("# end "):
                return json.loads(line[len("# end "):])
    return None


def analyse(trace, gpus):
    a = {}
    a["bytes"] = os.path.getsize(trace)
    df = pd.read_csv(trace, comment="#")
    s = df[df.kind == "sample"]
    dur = (df.t_ns.max() - df.t_ns.min()) / 1e9
    a["duration_s"] = dur
    a["bytes_per_s_per_gpu"] = a["bytes"] / dur / len(gpus)
    # each GPU's recorded energy vs its own counter: driver samples integrated between the
    # counter's first and last readings
    per = {}
    for g in gpus:
        e = s[s.channel == f"gpu{g}.energy"]
        p = s[s.channel == f"gpu{g}.power_samples"].sort_values("t_ns")
        if len(e) < 2 or len(p) < 2:
            continue
        t0, t1 = e.t_ns.iloc[0], e.t_ns.iloc[-1]
        counter = e.value.iloc[-1] - e.value.iloc[0]
        q = p[(p.t_ns >= t0) & (p.t_ns <= t1)]
        t = q.t_ns.to_numpy() / 1e9
        v = q.value.to_numpy()
        integ = float(((v[1:] + v[:-1]) / 2 * (t[1:] - t[:-1])).sum())
        per[f"gpu{g}"] = {"counter_j": counter, "samples_j": integ, "over_s": (t1 - t0) / 1e9,
                          "diff_pct": (integ - counter) / counter * 100}
    a["energy_vs_counter"] = per
    f = footer(trace)
    if f:
        a["footer_cadences"] = [
            {k: c.get(k) for k in ("interval_ns", "sources", "ticks", "cpu_ns", "deviation_p50_ns",
                                    "deviation_p99_ns", "deviation_max_ns", "missed_ticks", "thread")}
            for c in f.get("cadences", [])]
        a["footer_threads"] = f.get("threads")
    rep = subprocess.run([flinch, "analyze", trace, "--from", "phase_start", "--to", "phase_end",
                          "--idle-window", "calib_start..calib_end", "--json"],
                         capture_output=True, text=True)
    if rep.returncode != 0:
        a["analyze_error"] = rep.stderr[-2000:]
        return a
    report = json.loads(rep.stdout)
    rows, right, wrong, unresolved = [], 0, 0, 0
    for sp in report["spans"]:
        fields = dict(sp.get("from_fields") or {})
        g, kind = fields.get("gpu"), fields.get("kind")
        if g is None or int(g) not in gpus:
            continue  # a GPU this run does not record
        d = sp["devices"].get(f"gpu{g}", {})
        state = d.get("state")
        expect = "idle" if kind == "idle" else "busy"
        others = {k: v.get("state") for k, v in sp["devices"].items() if k.startswith("gpu") and k != f"gpu{g}"}
        verdict_ok = state == expect
        if state == "unresolved":
            unresolved += 1
        elif verdict_ok:
            right += 1
        else:
            wrong += 1
        rows.append({"req": sp.get("req"), "gpu": g, "kind": kind, "state": state,
                     "energy_j": d.get("energy_j"), "active_energy_j": d.get("active_energy_j"),
                     "bound": d.get("active_energy_bound_j"), "verdict": sp.get("verdict"),
                     "other_gpus": others})
    a["per_gpu_states"] = {"right": right, "wrong": wrong, "unresolved": unresolved, "spans": len(rows)}
    a["spans"] = rows
    return a


# All GPUs with the exporter scraped each second, all GPUs without it, and GPU 0 alone (the
# same workload on every GPU: what one recorded GPU costs next to all of them).
runs = [("exporter", True, None), ("plain", False, None)]
if ngpu > 1:
    runs.append(("one", False, [0]))
for name, exporter, gpus in runs:
    print(f"== run {name}", flush=True)
    r = record(name, exporter, gpus)
    if os.path.exists(r["trace"]):
        r["analysis"] = analyse(r["trace"], gpus if gpus is not None else list(range(ngpu)))
    result["runs"][name] = r
    print(json.dumps({k: v for k, v in r.items() if k not in ("analysis",)}, indent=1)[:3000], flush=True)
    an = r.get("analysis", {})
    print(json.dumps({k: an.get(k) for k in ("bytes_per_s_per_gpu", "energy_vs_counter", "per_gpu_states",
                                             "footer_cadences", "footer_threads")}, indent=1)[:6000], flush=True)
e, p = result["runs"].get("exporter", {}), result["runs"].get("plain", {})
if "cpu_ms_per_s" in e and "cpu_ms_per_s" in p:
    result["exporter_cost_ms_per_s"] = e["cpu_ms_per_s"] - p["cpu_ms_per_s"]
    print("exporter cost", result["exporter_cost_ms_per_s"], "ms CPU per s", flush=True)
json.dump(result, open(os.path.join(out, "gpu-multi.json"), "w"), indent=1, default=str)
PY
