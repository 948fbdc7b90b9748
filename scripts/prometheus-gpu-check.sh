#!/usr/bin/env bash
# Live export on a real GPU (issue: per-GPU energy scraped vs the NVML counter's increase,
# target <= 1 %). Runs on the GPU machine from prebuilt binaries (no Rust, no network):
#
#   scripts/build-gpu-bins.sh                      # here: flinch -> .device-carry/
#   xz -c /usr/bin/prometheus > .device-carry/prometheus.xz   # optional: a real Prometheus
#   scripts/prometheus-gpu-check.sh [BIN_DIR] [OUT_DIR]
#
# It records every GPU with `flinch record --source nvml --prometheus 127.0.0.1:PORT
# --span busy_start..busy_end` around a torch workload (matmul bursts of 0.3-2 s between
# idle pauses, ~40 s), while a Python scraper reads /metrics every second and, at the same
# moment, each GPU's NVML total-energy counter through nvidia-ml-py. When
# BIN_DIR/prometheus.xz is there, a real Prometheus scrapes flinch too and is queried at
# the end. The same recording prints a JSON row per GPU each second (--print): their
# energy vs the NVML counter, and how late they arrive. Results:
# OUT_DIR/prometheus-gpu.json and the log (with the trace).
set -u
BIN=${1:-.device-carry}
OUT=${2:-gpu-results}
mkdir -p "$OUT"
LOG="$OUT/prometheus-gpu.log"
export PYTHONUNBUFFERED=1
PROM=""
if [[ -f "$BIN/prometheus.xz" ]]; then
    # Unpacked outside OUT_DIR: only results travel back.
    PROM="$(mktemp -d)/prometheus"
    xz -dc "$BIN/prometheus.xz" > "$PROM" && chmod +x "$PROM" || PROM=""
fi
python3 - "$BIN/flinch" "$OUT" "$PROM" 2>&1 <<'PY' | tee "$LOG"
import json, os, re, socket, subprocess, sys, tempfile, textwrap, threading, time, urllib.parse, urllib.request
import pynvml

flinch, out, prom_bin = sys.argv[1], sys.argv[2], sys.argv[3]

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

port = free_port()
pynvml.nvmlInit()
n = pynvml.nvmlDeviceGetCount()
handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(n)]
def nvml_j():
    return [pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0 for h in handles]

workload = textwrap.dedent("""
    import os, time, torch
    fd = os.open(os.environ["FLINCH_MARKS"], os.O_WRONLY | os.O_NONBLOCK)
    def mark(label, **kv):
        line = f"{label} t={time.monotonic_ns()} " + " ".join(f"{k}={v}" for k, v in kv.items())
        try: os.write(fd, (line + "\\n").encode())
        except BlockingIOError: pass
    devs = [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    a = [torch.randn(8192, 8192, device=d, dtype=torch.bfloat16) for d in devs]
    torch.cuda.synchronize()
    time.sleep(2)
    for i, busy in enumerate([0.3, 1.0, 2.0, 0.5, 1.5, 0.3, 2.0, 1.0] * 2):
        mark("busy_start", req=i)
        end = time.monotonic() + busy
        while time.monotonic() < end:
            for x in a: x @ x
            torch.cuda.synchronize()
        mark("busy_end", req=i)
        time.sleep(0.7)
    time.sleep(2)
""")
wl = os.path.join(out, "prom_workload.py")
open(wl, "w").write(workload)

prom = None
if prom_bin:
    pport = free_port()
    pdir = tempfile.mkdtemp()
    open(f"{pdir}/p.yml", "w").write(
        f"global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: flinch\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n")
    prom = subprocess.Popen([prom_bin, f"--config.file={pdir}/p.yml", f"--storage.tsdb.path={pdir}/data",
                             f"--web.listen-address=127.0.0.1:{pport}"],
                            stdout=open(f"{out}/prometheus-server.log", "w"), stderr=subprocess.STDOUT)

trace = os.path.join(out, "prom-gpu.flinch.csv")
# The same recording also prints a JSON row per GPU each second (--print): each row is
# stamped with when it arrived, to see how far rows trail the GPU, and the rows' energy
# is compared with the NVML counter too.
rec = subprocess.Popen([flinch, "record", "--quiet", "--source", "nvml", "--force", "--out", trace,
                        "--nvml-energy-interval", "100ms", "--prometheus", f"127.0.0.1:{port}",
                        "--prometheus-linger", "5s", "--span", "busy_start..busy_end",
                        "--print", "1s", "--print-format", "jsonl",
                        "--", "python3", wl], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
print_rows = []   # (arrival CLOCK_MONOTONIC ns, row)
def read_rows(f):
    for line in f:
        try:
            print_rows.append((time.monotonic_ns(), json.loads(line)))
        except ValueError:
            print("not a JSON row:", line.rstrip())
err_parts = []
readers = [threading.Thread(target=read_rows, args=(rec.stdout,), daemon=True),
           threading.Thread(target=lambda: err_parts.append(rec.stderr.read()), daemon=True)]
for th in readers:
    th.start()

pat = re.compile(r'^flinch_energy_joules_total\{device="(gpu\d+)",channel="(gpu\d+\.energy)"\} (\S+)$', re.M)
rows = []   # (t_mono_ns, {gpu: scraped J}, [nvml J])
while rec.poll() is None:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        t = time.monotonic_ns()
        rows.append((t, {m[0]: float(m[2]) for m in pat.findall(body)}, nvml_j(), body))
    except Exception as e:
        pass
    time.sleep(1)
rec.wait()
for th in readers:
    th.join(timeout=10)
err = "".join(err_parts)
print(err)
print("flinch exit", rec.returncode, "scrapes", len(rows))

# flinch's first and last energy reading per GPU, from the trace.
first, last = {}, {}
for line in open(trace):
    if line.startswith("#") or line.startswith("t_ns"):
        continue
    p = line.split(",")
    if len(p) > 3 and p[1] == "sample" and p[2].endswith(".energy"):
        g = p[2].split(".")[0]
        t = int(p[0])
        first.setdefault(g, t); last[g] = t

# NVML counter read by pynvml, interpolated at those times (the scraper read it each second).
def nvml_at(i, t):
    pts = [(r[0], r[2][i]) for r in rows]
    for (t0, v0), (t1, v1) in zip(pts, pts[1:]):
        if t0 <= t <= t1:
            return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return None

final = rows[-1][1] if rows else {}
result = {"gpus": {}, "scrapes": len(rows)}
for i in range(n):
    g = f"gpu{i}"
    scraped = final.get(g)
    a, b = nvml_at(i, first.get(g, -1)), nvml_at(i, last.get(g, -1))
    ref = (b - a) if a is not None and b is not None else None
    brack = rows[-1][2][i] - rows[0][2][i] if rows else None
    r = {"scraped_final_j": scraped, "nvml_increase_over_flinch_readings_j": ref,
         "nvml_increase_first_to_last_scrape_j": brack}
    if scraped is not None and ref:
        r["diff_pct"] = 100 * (scraped - ref) / ref
    result["gpus"][g] = r
    print(f"{g}: scraped {scraped} J; NVML counter increase over flinch's readings {ref} J "
          f"({r.get('diff_pct', float('nan')):+.3f} %); first-to-last scrape {brack} J")
spans = re.findall(r'^flinch_span_(?:duration_seconds|active_energy_joules|energy_joules)_(?:count|sum)\{.*$', rows[-1][3], re.M) if rows else []
print("\n".join(spans))
result["span_lines"] = spans
if prom:
    q = lambda e: json.load(urllib.request.urlopen(
        f"http://127.0.0.1:{pport}/api/v1/query?" + urllib.parse.urlencode({"query": e}), timeout=5))
    try:
        r = q('last_over_time(flinch_energy_joules_total[10m])')
        result["prometheus"] = {x["metric"]["device"]: float(x["value"][1]) for x in r["data"]["result"]}
        print("Prometheus holds:", result["prometheus"])
        print("resets():", q('resets(flinch_energy_joules_total[10m])')["data"]["result"])
    except Exception as e:
        print("Prometheus query failed:", e)
    prom.terminate()
# --print rows: per GPU, their energy vs the NVML counter over the rows' span; how late
# rows arrived after their interval ended.
lags = sorted((arr - r["end_ns"]) / 1e9 for arr, r in print_rows)
result["print"] = {"rows": len(print_rows), "gpus": {}}
if lags:
    q = lambda p: lags[min(len(lags) - 1, int(p * len(lags)))]
    result["print"]["lag_s"] = {"p50": q(0.5), "p90": q(0.9), "max": lags[-1]}
    print(f"--print rows: {len(print_rows)}, arrived after their interval ended by "
          f"p50 {q(0.5):.2f} s, p90 {q(0.9):.2f} s, max {lags[-1]:.2f} s")
for i in range(n):
    g = f"gpu{i}"
    # Only rows inside the stretch where the scraper read the NVML counter (each second).
    lo, hi = (rows[0][0], rows[-1][0]) if rows else (0, -1)
    rs = [r for _, r in print_rows
          if r.get("device") == g and r["start_ns"] >= lo and r["end_ns"] <= hi]
    if not rs:
        continue
    e = sum(r["energy_j"] or 0.0 for r in rs)
    missing = sum(1 for r in rs if r["energy_j"] is None)
    a, b = nvml_at(i, rs[0]["start_ns"]), nvml_at(i, rs[-1]["end_ns"])
    ref = (b - a) if a is not None and b is not None else None
    r = {"rows": len(rs), "rows_without_energy": missing, "energy_j": e, "nvml_increase_j": ref}
    if ref:
        r["diff_pct"] = 100 * (e - ref) / ref
    result["print"]["gpus"][g] = r
    print(f"{g} --print: {len(rs)} rows ({missing} without energy), {e:.1f} J; NVML counter "
          f"over the same span {ref} J ({r.get('diff_pct', float('nan')):+.3f} %)")
json.dump(result, open(os.path.join(out, "prometheus-gpu.json"), "w"), indent=1)
PY
