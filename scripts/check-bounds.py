#!/usr/bin/env python3
"""Does the energy bound of `flinch analyze` hold? For every span of at least MIN_S seconds
whose preferred channel resolved it, checks that the device's bound contains the answer of
every power/energy channel named in --channels (default: the driver samples and the
counter), and reports how often, and the bound's median width.

  flinch analyze TRACE --from phase_start --to phase_end --idle-window calib_start..calib_end \
      --json > spans.json
  python3 scripts/check-bounds.py spans.json [--min-s 0.2] [--device gpu0]

Exit status 1 when fewer than --need (0.95) of the spans hold.
"""
import argparse, json, statistics, sys

ap = argparse.ArgumentParser()
ap.add_argument("json")
ap.add_argument("--min-s", type=float, default=0.2)
ap.add_argument("--device", default="gpu0")
ap.add_argument("--methods", default="driver-samples,counter")
ap.add_argument("--need", type=float, default=0.95)
a = ap.parse_args()
r = json.load(open(a.json))
methods = a.methods.split(",")
n = held = phys = 0
widths, rel, act_widths, used = [], [], [], []
for s in r["spans"]:
    d = s["devices"].get(a.device)
    if not d or s["duration_s"] < a.min_s or d["energy_bound_j"] is None:
        continue
    pref = s["energy"][d["channel"]]
    if not pref["resolved"]:
        continue
    answers = {c: e["energy_j"] for c, e in s["energy"].items()
               if e["device"] == a.device and e["method"] in methods and e["status"] == "ok"}
    if len(answers) < len(methods):
        continue
    lo, hi = d["energy_bound_j"]
    n += 1
    ok = all(lo <= x <= hi for x in answers.values())
    held += ok
    t = d["bound_terms"]
    half = t["edges_j"] + t["interior_j"]
    phys += all(abs(x - d["energy_j"]) <= half for x in answers.values())
    if half > 0:
        used.append(max(abs(x - d["energy_j"]) for x in answers.values()) / half)
    widths.append(hi - lo)
    rel.append((hi - lo) / d["energy_j"] * 100)
    if d["active_energy_bound_j"]:
        alo, ahi = d["active_energy_bound_j"]
        act_widths.append(ahi - alo)
    if not ok:
        print(f"  not held: span at {s['start_ns']} ({s['duration_s']:.3f} s): bound [{lo:.2f}, {hi:.2f}] J, answers {answers}")
if n == 0:
    print("no span qualifies"); sys.exit(1)
print(f"{n} resolved spans >= {a.min_s} s on {a.device}: the bound holds both answers in {held} ({held / n:.1%});"
      f" the sensor terms alone (edges + interior, without widening to the other channel) in {phys} ({phys / n:.1%})")
print(f"bound width: median {statistics.median(widths):.2f} J ({statistics.median(rel):.1f} % of the energy),"
      f" max {max(widths):.2f} J; active-energy bound median width {statistics.median(act_widths):.2f} J" if act_widths else "")
if used:
    print(f"the other channel's answer used {statistics.median(used):.0%} of the sensor terms' half-width"
          f" (median), {max(used):.0%} at most")
sys.exit(0 if held / n >= a.need else 1)
