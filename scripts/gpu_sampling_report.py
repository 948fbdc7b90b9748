#!/usr/bin/env python3
"""Figures for docs/performance.md from the runs of scripts/gpu-sampling.sh (standard library
only; also runs on the build machine against synthetic traces).

    gpu_sampling_report.py traces  T1 [T2 ...]            per trace: bytes/s, rows and value
                                                           changes per channel, footer timing
    gpu_sampling_report.py merge-marks FROM INTO OUT       copy FROM's mark rows into INTO
    gpu_sampling_report.py compare BASE.json NEW.json      verdicts and span energies of two
                                                           `flinch analyze --json` outputs
    gpu_sampling_report.py side SIDE.json NGPU [TRACE...]  CPU per second per process and GPU,
                                                           ratios, from side_by_side.py

Every command prints a short text and, with --json FILE before the command name, writes
its figures there too.
"""

import json
import sys


def read_trace(path):
    """Header, footer, and per-channel (t_ns, value) rows sorted by time; the bytes of the
    sample rows and of the whole file."""
    header = footer = None
    chans = {}
    sample_bytes = total = 0
    marks = []
    with open(path, "rb") as f:
        for raw in f:
            total += len(raw)
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("# header "):
                header = json.loads(line[len("# header "):])
                continue
            if line.startswith("# end "):
                footer = json.loads(line[len("# end "):])
                continue
            if line.startswith("#") or line.startswith("t_ns,"):
                continue
            p = line.split(",")
            if len(p) != 6:
                continue
            if p[1] == "sample":
                sample_bytes += len(raw)
                chans.setdefault(p[2], []).append((int(p[0]), float(p[3])))
            elif p[1] == "mark":
                marks.append(line)
    for v in chans.values():
        v.sort()
    return header, footer, chans, sample_bytes, total, marks


def gpus_of(header):
    devs = set()
    for s in (header or {}).get("sources", []):
        if s.get("backend") == "nvml":
            for c in s.get("channels", []):
                devs.add(c.get("device"))
    return max(len(devs), 1)


def trace_figures(path):
    header, footer, chans, sample_bytes, total, marks = read_trace(path)
    ts = [r[0] for v in chans.values() for r in v]
    dur = (max(ts) - min(ts)) / 1e9 if ts else 0.0
    ngpu = gpus_of(header)
    per = {}
    for name, rows in sorted(chans.items()):
        changes = sum(1 for a, b in zip(rows, rows[1:]) if a[1] != b[1])
        gaps = sorted(b[0] - a[0] for a, b in zip(rows, rows[1:]))
        per[name] = {
            "rows": len(rows),
            "median_spacing_ms": gaps[len(gaps) // 2] / 1e6 if gaps else None,
            "max_spacing_ms": gaps[-1] / 1e6 if gaps else None,
            "rows_per_s": len(rows) / dur if dur else 0.0,
            "changes_per_s": changes / dur if dur else 0.0,
            "held": any(c.get("name") == name and c.get("heartbeat_ns")
                        for s in header.get("sources", []) for c in s.get("channels", [])),
        }
    return {
        "trace": path,
        "duration_s": dur,
        "gpus": ngpu,
        "bytes": total,
        "sample_bytes": sample_bytes,
        "bytes_per_s_per_gpu": total / dur / ngpu if dur else 0.0,
        "sample_bytes_per_s_per_gpu": sample_bytes / dur / ngpu if dur else 0.0,
        "channels": per,
        "cadences": (footer or {}).get("cadences", []),
        "threads": (footer or {}).get("threads", []),
        "marks": len(marks),
    }


def print_trace(fig):
    print(f"{fig['trace']}: {fig['duration_s']:.1f} s, {fig['gpus']} GPU(s), "
          f"{fig['bytes_per_s_per_gpu'] / 1e3:.2f} kB/s per GPU ({fig['sample_bytes_per_s_per_gpu'] / 1e3:.2f} kB/s of sample rows)")
    for name, c in fig["channels"].items():
        sp = "" if c["median_spacing_ms"] is None else f"  spacing median {c['median_spacing_ms']:.1f} max {c['max_spacing_ms']:.1f} ms"
        print(f"  {name:28s} {c['rows_per_s']:7.1f} rows/s  {c['changes_per_s']:7.2f} changes/s{sp}{'  (held)' if c['held'] else ''}")
    for c in fig["cadences"]:
        ticks = max(c.get("ticks", 0), 1)
        lock = c.get("phase_lock")
        print(f"  cadence {c['interval_ns'] / 1e6:g} ms {','.join(c['sources'])} [{c.get('thread', '')}]: "
              f"{c['ticks']} polls, cpu {c['cpu_ns'] / ticks / 1e3:.1f} us/poll, "
              f"dev p50 {c['deviation_p50_ns'] / 1e3:.0f} p99 {c['deviation_p99_ns'] / 1e3:.0f} max {c['deviation_max_ns'] / 1e3:.0f} us, "
              f"missed {c['missed_ticks']}" + (f", lock {lock}" if lock else ""))
    for t in fig["threads"]:
        print(f"  thread {t['name']}: {t['wakeups']} wake-ups, cpu {t['cpu_ns'] / 1e6:.1f} ms "
              f"({t['cpu_ns'] / max(t['wakeups'], 1) / 1e3:.1f} us per wake-up)")


def merge_marks(src, into, out):
    """Copies src's mark rows into a copy of into (before its footer)."""
    marks = read_trace(src)[5]
    lines = open(into, "rb").read().decode("utf-8", "replace").splitlines(keepends=True)
    end = len(lines)
    if lines and lines[-1].startswith("# end "):
        end -= 1
    with open(out, "w") as f:
        f.writelines(lines[:end])
        for m in marks:
            f.write(m + "\n")
        f.writelines(lines[end:])
    return {"marks_copied": len(marks)}


def compare(base_path, new_path):
    """Span by span: the verdict, and each device's preferred energy and energy above idle."""
    b = json.load(open(base_path))
    n = json.load(open(new_path))
    key = lambda s: (s["from"], s["to"], s.get("req"), s["start_ns"])
    bs = {key(s): s for s in b["spans"]}
    out = {"spans": 0, "verdicts_differ": [], "energy": {}, "missing": 0}
    worst = {}
    for s in n["spans"]:
        k = key(s)
        if k not in bs:
            out["missing"] += 1
            continue
        o = bs[k]
        out["spans"] += 1
        if o["verdict"] != s["verdict"]:
            out["verdicts_differ"].append({"span": list(k), "base": o["verdict"], "new": s["verdict"],
                                           "evidence_new": s["evidence"], "evidence_base": o["evidence"]})
        for dev, d in s["devices"].items():
            od = o["devices"].get(dev)
            if not od:
                continue
            for f in ("energy_j", "active_energy_j"):
                x, y = od.get(f), d.get(f)
                if x is None or y is None:
                    continue
                rel = abs(y - x) / max(abs(x), 1e-9)
                w = worst.setdefault(f"{dev}.{f}", {"max_rel": 0.0, "max_abs_j": 0.0, "n": 0, "sum_base": 0.0, "sum_new": 0.0})
                w["n"] += 1
                w["sum_base"] += x
                w["sum_new"] += y
                w["max_abs_j"] = max(w["max_abs_j"], abs(y - x))
                if f == "energy_j":
                    w["max_rel"] = max(w["max_rel"], rel)
        for ch, e in s["energy"].items():
            oe = o["energy"].get(ch)
            if not oe or e.get("energy_j") is None or oe.get("energy_j") is None:
                continue
            x, y = oe["energy_j"], e["energy_j"]
            w = worst.setdefault(f"channel {ch}", {"max_rel": 0.0, "max_abs_j": 0.0, "n": 0, "sum_base": 0.0, "sum_new": 0.0})
            w["n"] += 1
            w["sum_base"] += x
            w["sum_new"] += y
            w["max_abs_j"] = max(w["max_abs_j"], abs(y - x))
            w["max_rel"] = max(w["max_rel"], abs(y - x) / max(abs(x), 1e-9))
    out["energy"] = worst
    out["verdict_counts"] = {"base": b["summary"]["verdicts"], "new": n["summary"]["verdicts"]}
    return out


def print_compare(c):
    print(f"{c['spans']} spans matched ({c['missing']} not found); verdicts differ in "
          f"{len(c['verdicts_differ'])}; verdict counts base {c['verdict_counts']['base']} new {c['verdict_counts']['new']}")
    for d in c["verdicts_differ"]:
        print(f"  {d['span']}: {d['base']} -> {d['new']}")
    for k, w in sorted(c["energy"].items()):
        tot = abs(w["sum_new"] - w["sum_base"]) / max(abs(w["sum_base"]), 1e-9) * 100
        print(f"  {k:36s} {w['n']:3d} spans: worst {w['max_rel'] * 100:6.2f} % ({w['max_abs_j']:.2f} J), "
              f"summed {w['sum_base']:.1f} J vs {w['sum_new']:.1f} J ({tot:.2f} %)")


def side(path, ngpu, traces):
    s = json.load(open(path))
    procs = s["processes"]
    out = {"window_s": s["window_s"], "gpus": ngpu, "processes": {}}
    for name, p in procs.items():
        if "cpu_ms_per_s" not in p:
            out["processes"][name] = {"error": p.get("error")}
            continue
        out["processes"][name] = {
            "cpu_ms_per_s": p["cpu_ms_per_s"],
            "cpu_ms_per_s_per_gpu": p["cpu_ms_per_s"] / ngpu,
        }
    names = [n for n in out["processes"] if out["processes"][n].get("cpu_ms_per_s")]
    out["ratios"] = {f"{a}/{b}": out["processes"][a]["cpu_ms_per_s"] / out["processes"][b]["cpu_ms_per_s"]
                     for a in names for b in names if a != b}
    out["traces"] = []
    for t in traces:
        try:
            out["traces"].append(trace_figures(t))
        except OSError as e:
            print(f"{t}: {e}", file=sys.stderr)
    return out


def print_side(o):
    print(f"side by side over {o['window_s']:.1f} s, {o['gpus']} GPU(s):")
    for n, p in o["processes"].items():
        if "error" in p:
            print(f"  {n:10s} {p['error']}")
        else:
            print(f"  {n:10s} {p['cpu_ms_per_s']:8.3f} ms CPU per s   {p['cpu_ms_per_s_per_gpu']:8.3f} per GPU")
    for k, v in sorted(o["ratios"].items()):
        print(f"  {k}: {v:.2f}")
    for t in o["traces"]:
        print_trace(t)


def main(argv):
    json_out = None
    if len(argv) > 2 and argv[1] == "--json":
        json_out = argv[2]
        argv = [argv[0]] + argv[3:]
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "traces":
        res = [trace_figures(t) for t in args]
        for r in res:
            print_trace(r)
    elif cmd == "merge-marks":
        res = merge_marks(*args)
        print(res)
    elif cmd == "compare":
        res = compare(*args)
        print_compare(res)
    elif cmd == "side":
        res = side(args[0], int(args[1]), args[2:])
        print_side(res)
    else:
        print(__doc__)
        return 2
    if json_out:
        with open(json_out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
