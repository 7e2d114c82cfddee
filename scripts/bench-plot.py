#!/usr/bin/env python3
"""Plot throughput against threads from criterion's output, as SVG (standard library only).

Reads every `<criterion>/**/new/benchmark.json` + `estimates.json` of the `contention/...`
groups (benches/contention.rs) and writes one SVG with a panel per group (hold x pool
size), a line per peer, throughput (million acquire+release per second, from the median
time per iteration) against threads.

    scripts/bench-plot.py [--criterion target/criterion] [--out docs/bench/throughput.svg]
                          [--tables FILE] [--latency target/heliosdb-bench/latency.json]

--tables also writes Markdown tables of every criterion group found (median, ratios to
the floor and to this pool) and of the latency summary, for pasting into BENCHMARKS.md.
"""

import argparse
import json
import os
import sys
from collections import defaultdict

COLORS = {
    "floor": "#7f7f7f",
    "heliosdb": "#d62728",
    "mutex+condvar": "#1f77b4",
    "r2d2": "#2ca02c",
    "deadpool": "#9467bd",
    "bb8": "#ff7f0e",
}


def load(criterion_dir):
    """[(group_id, function_id, value_str, median_ns)] for every benchmark found."""
    rows = []
    for root, _dirs, files in os.walk(criterion_dir):
        if os.path.basename(root) != "new" or "benchmark.json" not in files:
            continue
        with open(os.path.join(root, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(root, "estimates.json")) as f:
            est = json.load(f)
        rows.append(
            (
                bench["group_id"],
                bench.get("function_id") or "",
                bench.get("value_str") or "",
                est["median"]["point_estimate"],
            )
        )
    return sorted(rows)


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plot(rows, out):
    groups = defaultdict(lambda: defaultdict(dict))
    for group, peer, value, median_ns in rows:
        if not group.startswith("contention/"):
            continue
        try:
            threads = int(value)
        except ValueError:
            continue
        groups[group][peer][threads] = 1e3 / median_ns  # million ops per second
    if not groups:
        sys.exit("no contention/* results under the criterion folder")
    names = sorted(groups)
    pw, ph, ml, mr, mt, mb = 420, 300, 60, 20, 40, 50
    cols = 2
    nrows = (len(names) + cols - 1) // cols
    width, height = cols * pw, nrows * ph + 40
    out_lines = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">'
        "Aggregate acquire+release throughput (M ops/s, criterion median) vs threads</text>",
    ]
    all_threads = sorted({t for g in groups.values() for p in g.values() for t in p})
    for i, name in enumerate(names):
        ox, oy = (i % cols) * pw, 40 + (i // cols) * ph
        x0, y0, x1, y1 = ox + ml, oy + ph - mb, ox + pw - mr, oy + mt
        peers = groups[name]
        ymax = max(v for p in peers.values() for v in p.values()) * 1.1
        ts = [t for t in all_threads if any(t in p for p in peers.values())]

        def xp(t, ts=ts, x0=x0, x1=x1):
            k = ts.index(t)
            return x0 + (x1 - x0) * (k + 0.5) / len(ts)

        def yp(v, ymax=ymax, y0=y0, y1=y1):
            return y0 - (y0 - y1) * v / ymax

        out_lines.append(
            f'<text x="{(x0 + x1) / 2}" y="{oy + 25}" text-anchor="middle" '
            f'font-size="12">{esc(name)}</text>'
        )
        out_lines.append(
            f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" '
            'fill="none" stroke="#999"/>'
        )
        for k in range(5):
            v = ymax * k / 4
            y = yp(v)
            out_lines.append(f'<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#eee"/>')
            out_lines.append(
                f'<text x="{x0 - 4}" y="{y + 4}" text-anchor="end">{v:.1f}</text>'
            )
        for t in ts:
            out_lines.append(
                f'<text x="{xp(t)}" y="{y0 + 15}" text-anchor="middle">{t}</text>'
            )
        out_lines.append(
            f'<text x="{(x0 + x1) / 2}" y="{y0 + 32}" text-anchor="middle">threads</text>'
        )
        for j, (peer, pts) in enumerate(sorted(peers.items())):
            color = COLORS.get(peer, "#000")
            coords = [(xp(t), yp(v)) for t, v in sorted(pts.items())]
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            out_lines.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>'
            )
            for x, y in coords:
                out_lines.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
            lx, ly = x1 - 90, y1 + 12 + 13 * j
            out_lines.append(
                f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 14}" y2="{ly - 4}" '
                f'stroke="{color}" stroke-width="2"/>'
            )
            out_lines.append(f'<text x="{lx + 18}" y="{ly}">{esc(peer)}</text>')
    out_lines.append("</svg>")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(out_lines) + "\n")


def fmt_ns(ns):
    return f"{ns:.1f}" if ns < 1000 else f"{ns:,.0f}"


def tables(rows, latency_path):
    lines = []
    by_group = defaultdict(list)
    for group, peer, value, median_ns in rows:
        by_group[group].append((peer, value, median_ns))
    for group in sorted(by_group):
        entries = by_group[group]
        contention = group.startswith("contention/") or group.startswith("async")
        lines.append(f"#### {group}\n")
        if contention:
            lines.append("| peer | threads/hold | median ns per op (all threads) | M ops/s | ratio to floor | peer time / heliosdb time |")
            lines.append("|---|---|---|---|---|---|")
        else:
            lines.append("| benchmark | median ns | ratio to floor | time / heliosdb try_acquire time |")
            lines.append("|---|---|---|---|")
        by_value = defaultdict(dict)
        for peer, value, ns in entries:
            by_value[value][peer] = ns
        for value in sorted(by_value, key=lambda v: (len(v), v)):
            peers = by_value[value]
            floor = next((ns for p, ns in peers.items() if p.startswith("floor")), None)
            helios = peers.get("heliosdb") or next(
                (ns for p, ns in peers.items() if p.startswith("heliosdb: try_acquire")), None
            )
            for peer, ns in sorted(peers.items(), key=lambda kv: kv[1]):
                rf = f"{ns / floor:.2f}x" if floor else "-"
                rh = f"{ns / helios:.2f}x" if helios else "-"
                if contention:
                    lines.append(f"| {peer} | {value} | {fmt_ns(ns)} | {1e3 / ns:.2f} | {rf} | {rh} |")
                else:
                    name = f"{peer} {value}".strip()
                    lines.append(f"| {name} | {fmt_ns(ns)} | {rf} | {rh} |")
        lines.append("")
    if latency_path and os.path.exists(latency_path):
        with open(latency_path) as f:
            lat = json.load(f)
        lines.append("#### Latency and fairness (own harness)\n")
        lines.append("| group | peer | threads | pool | M ops/s | p50 ns | p99 ns | p99.9 ns | max ns | p99/p50 | fairness (200 ms windows) | longest/median thread wait | most/fewest ops per thread |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in lat:
            lines.append(
                f"| {r['group']} | {r['peer']} | {r['threads']} | {r['pool_size']} | "
                f"{r['ops_per_sec'] / 1e6:.2f} | {r['p50_ns']} | {r['p99_ns']} | {r['p999_ns']} | "
                f"{r['max_ns']:,} | {r['p99_over_p50']:.1f} | "
                f"{r.get('fairness_window_slowest_over_fastest_thread', float('nan')):.2f} | "
                f"{r['fairness_longest_over_median_thread_wait']:.2f} | {r['ops_max_over_min_thread']:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--criterion", default=os.environ.get("CRITERION_HOME", "target/criterion"))
    ap.add_argument("--out", default="docs/bench/throughput.svg")
    ap.add_argument("--tables", help="also write Markdown tables here")
    ap.add_argument("--latency", default="target/heliosdb-bench/latency.json")
    args = ap.parse_args()
    rows = load(args.criterion)
    if not rows:
        sys.exit(f"no criterion results under {args.criterion}")
    plot(rows, args.out)
    print(f"wrote {args.out}")
    if args.tables:
        with open(args.tables, "w") as f:
            f.write(tables(rows, args.latency))
        print(f"wrote {args.tables}")


if __name__ == "__main__":
    main()
