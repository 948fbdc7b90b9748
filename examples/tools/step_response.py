"""How fast each power channel of a flinch trace follows the load steps of
examples/workloads/busy_idle.py, and whether the energy counter and the integrated driver
samples agree over the whole recording. Standard library only.

    python3 examples/tools/step_response.py TRACE [DEVICE]

For every busy phase of at least 200 ms it reports, per power channel, the delay from the
phase_start mark to the first reading above the midpoint between idle and busy power, and
from phase_end to the first reading back below it.
"""

import json
import sys
from bisect import bisect_left


def load(path):
    header, channels, marks = None, {}, []
    with open(path) as f:
        for line in f:
            if line.startswith("# header "):
                header = json.loads(line[9:])
                continue
            if line.startswith("#") or line.startswith("t_ns,"):
                continue
            t, kind, ch, val, label, fields = line.rstrip("\n").split(",")
            if kind == "sample":
                channels.setdefault(ch, []).append((int(t), float(val)))
            elif kind == "mark":
                kv = dict(x.split("=", 1) for x in fields.split(" ") if "=" in x)
                marks.append((int(t), label, kv))
    for v in channels.values():
        v.sort()
    marks.sort(key=lambda m: m[0])
    return header, channels, marks


def trapezoid(series, t0, t1):
    e = 0.0
    for (ta, va), (tb, vb) in zip(series, series[1:]):
        lo, hi = max(ta, t0), min(tb, t1)
        if hi <= lo:
            continue
        # linear interpolation inside [ta, tb]
        fa = va + (vb - va) * (lo - ta) / (tb - ta)
        fb = va + (vb - va) * (hi - ta) / (tb - ta)
        e += (fa + fb) / 2 * (hi - lo) / 1e9
    return e


def first_crossing(series, t_from, level, above):
    i = bisect_left(series, (t_from, -1e300))
    for t, v in series[i:]:
        if (v > level) if above else (v < level):
            return t - t_from
    return None


def main():
    path = sys.argv[1]
    dev = sys.argv[2] if len(sys.argv) > 2 else "gpu0"
    header, ch, marks = load(path)
    energy = ch.get(f"{dev}.energy", [])
    samples = ch.get(f"{dev}.power_samples", [])
    if len(energy) >= 2 and samples:
        t0, t1 = energy[0][0], energy[-1][0]
        e_counter = energy[-1][1] - energy[0][1]
        e_samples = trapezoid(samples, t0, t1)
        print(f"whole recording ({(t1 - t0) / 1e9:.1f} s): energy counter {e_counter:.1f} J, "
              f"driver samples {e_samples:.1f} J, difference {100 * (e_samples - e_counter) / e_counter:+.2f} %")
    starts = {m[2].get("req"): m for m in marks if m[1] == "phase_start"}
    ends = {m[2].get("req"): m for m in marks if m[1] == "phase_end"}
    calib = [m[0] for m in marks if m[1] in ("calib_start", "calib_end")]
    power = {n: s for n, s in ch.items() if n.startswith(dev + ".power")}
    if len(calib) == 2 and samples:
        idle = trapezoid(samples, calib[0], calib[1]) / ((calib[1] - calib[0]) / 1e9)
    else:
        idle = min(v for _, v in samples)
    rows = []
    for req, s in starts.items():
        e = ends.get(req)
        if not e or s[2].get("kind") != "busy" or int(s[2].get("ms", 0)) < 200:
            continue
        busy = trapezoid(samples, s[0] + 200_000_000, e[0]) / ((e[0] - s[0] - 200_000_000) / 1e9)
        level = (idle + busy) / 2
        row = {"req": req, "ms": s[2]["ms"], "busy_w": busy}
        for name, series in power.items():
            up = first_crossing(series, s[0], level, True)
            down = first_crossing(series, e[0], level, False)
            row[name] = (up, down)
        rows.append(row)
    print(f"idle {idle:.1f} W (calib window); step delays to cross the idle/busy midpoint, ms (rise / fall):")
    names = sorted(power)
    print("  busy phase      " + "".join(f"{n.split('.', 1)[1]:>26}" for n in names))
    for r in rows:
        cells = []
        for n in names:
            up, down = r[n]
            f = lambda x: "never" if x is None else f"{x / 1e6:.0f}"
            cells.append(f"{f(up) + ' / ' + f(down):>26}")
        print(f"  req {r['req']:>3} {r['ms']:>5} ms " + "".join(cells) + f"   ({r['busy_w']:.0f} W)")
    for n in names:
        ups = sorted(r[n][0] for r in rows if r[n][0] is not None)
        downs = sorted(r[n][1] for r in rows if r[n][1] is not None)
        if ups and downs:
            print(f"  {n}: median rise {ups[len(ups) // 2] / 1e6:.0f} ms, median fall {downs[len(downs) // 2] / 1e6:.0f} ms, "
                  f"worst {max(ups) / 1e6:.0f} / {max(downs) / 1e6:.0f} ms")


if __name__ == "__main__":
    main()
