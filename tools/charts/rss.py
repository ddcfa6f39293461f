#!/usr/bin/env python3
"""Chart of a broker's resident memory over a run (BENCHMARKS.md, soak runs).

Reads whitespace-separated samples (seconds since start, RSS MiB[, CPU ticks])
and writes an SVG line chart. Standard library only.

    tools/charts/rss.py docs/bench/soak-rss-2026-11-23b.tsv out.svg "title"
"""

import math
import sys

W, H, LEFT, RIGHT, TOP, BOTTOM = 720, 320, 60, 20, 40, 40


def main():
    src, dst, title = sys.argv[1], sys.argv[2], sys.argv[3]
    points = []
    with open(src) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                points.append((float(parts[0]), float(parts[1])))
    tmax = max(t for t, _ in points)
    ymax = max(20.0, math.ceil(max(r for _, r in points) * 1.1 / 20) * 20)
    x_of = lambda t: LEFT + t / tmax * (W - LEFT - RIGHT)
    y_of = lambda v: H - BOTTOM - v / ymax * (H - TOP - BOTTOM)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14">{title}</text>']
    for v in range(0, int(ymax) + 1, 20):
        y = y_of(v)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#ddd"/>'
                   f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{v}</text>')
    for minute in range(0, int(tmax // 60) + 1):
        x = x_of(minute * 60)
        out.append(f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{minute} min</text>')
    out.append(f'<text x="14" y="{(TOP + H - BOTTOM) / 2}" transform="rotate(-90 14 '
               f'{(TOP + H - BOTTOM) / 2})" text-anchor="middle">VmRSS, MiB</text>')
    path = " ".join(f"{x_of(t):.1f},{y_of(r):.1f}" for t, r in points)
    out.append(f'<polyline points="{path}" fill="none" stroke="#1f5f9f" stroke-width="1.5"/>')
    out.append("</svg>")
    with open(dst, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
