#!/usr/bin/env python3
"""Chart of a --fetch-max-bytes sweep (BENCHMARKS.md, "Fetch response size").

Reads the CSV the sweep wrote (fetch_max_mib, run, mb_per_s, client_user_s,
client_sys_s, seconds) and writes an SVG with two panels over the response cap
(log scale): the consumer's MB/s and the consumer's system CPU seconds, each run
a dot and the median a line. Standard library only.

    tools/charts/fetch_max_bytes.py docs/bench/fetch-max-bytes-2026-11-23.csv out.svg
"""

import csv
import math
import statistics
import sys

WIDTH, PANEL_H, TOP, LEFT, RIGHT, GAP = 760, 220, 40, 70, 40, 60


def nice_axis(top):
    """An axis maximum above `top` and a tick step of 1, 2 or 5 times a power of ten."""
    raw = top / 5
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return math.ceil(top * 1.05 / step) * step, step


def panel(out, runs, column, y0, title, unit):
    xs = sorted({r["fetch_max_mib"] for r in runs})
    ymax, step = nice_axis(max(r[column] for r in runs))
    x_of = lambda mib: LEFT + (math.log2(mib) - math.log2(xs[0])) / (
        math.log2(xs[-1]) - math.log2(xs[0])) * (WIDTH - LEFT - RIGHT)
    y_of = lambda v: y0 + PANEL_H - v / ymax * PANEL_H
    out.append(f'<text x="{LEFT}" y="{y0 - 8}" font-size="13">{title}</text>')
    for i in range(round(ymax / step) + 1):
        v = step * i
        y = y_of(v)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{v:,.0f}{unit}</text>'
                   if ymax > 20 else
                   f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.1f}{unit}</text>')
    for mib in xs:
        x = x_of(mib)
        out.append(f'<text x="{x:.1f}" y="{y0 + PANEL_H + 16}" text-anchor="middle">{mib:g} MiB</text>')
    medians = []
    for mib in xs:
        vals = [r[column] for r in runs if r["fetch_max_mib"] == mib]
        medians.append((x_of(mib), y_of(statistics.median(vals))))
        for v in vals:
            out.append(f'<circle cx="{x_of(mib):.1f}" cy="{y_of(v):.1f}" r="3" fill="#9ab"/>')
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in medians)
    out.append(f'<polyline points="{path}" fill="none" stroke="#1f5f9f" stroke-width="2"/>')


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, newline="") as f:
        runs = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    height = TOP + 2 * PANEL_H + GAP + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           'font-family="sans-serif" font-size="11">',
           f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
           f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="13">librdkafka consumer, '
           '3 GB of 1 KiB messages from Sluice, by --fetch-max-bytes (dots: runs; line: median)</text>']
    panel(out, runs, "mb_per_s", TOP + 10, "consumed MB/s", "")
    panel(out, runs, "client_sys_s", TOP + PANEL_H + GAP + 10,
          "consumer's system CPU seconds for the 3 GB (page faults on fresh response buffers)", " s")
    out.append("</svg>")
    with open(dst, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
