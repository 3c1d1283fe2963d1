#!/usr/bin/env python3
"""Draws the guest's benchmark logs (format: benchlog.py) as one SVG, with the standard
library only.

The pv_ops rows come first: per op, one bar per platform and way of reaching it (bare
instruction, indirect call, patched site), labelled with ns and the ratio to the bare
instruction. Every other benchmark follows as a group of bars, one per boot (platform,
event ABI). Bars are scaled within their group: lengths compare columns of one benchmark,
never two benchmarks.

    bench-plot.py [-o OUT.svg] LOG [LOG ...]     (default output: docs/bench.svg)
"""
import argparse
import sys
from html import escape
from pathlib import Path

import benchlog

WIDTH = 900
LABEL_X = 250  # labels end here (right-aligned)
BAR_X = 260
BAR_MAX = 470
BAR_H = 14
STEP = BAR_H + 4
GROUP_GAP = 12
FONT = "font-family='DejaVu Sans, Arial, sans-serif' font-size='12'"
VIA_COLOURS = {"bare": "#8c8c8c", "indirect": "#e07b39", "patched": "#3a7bd5"}
COLUMN_COLOURS = ["#3a7bd5", "#e07b39", "#4caf50", "#9c27b0", "#d32f2f", "#00897b"]


class Svg:
    def __init__(self):
        self.parts = []
        self.y = 0

    def text(self, x, y, s, anchor="start", weight="normal", size=12):
        self.parts.append(
            f"<text x='{x}' y='{y}' text-anchor='{anchor}' font-weight='{weight}' "
            f"font-size='{size}'>{escape(s)}</text>")

    def heading(self, s, size=14):
        self.y += size + 10
        self.text(10, self.y, s, weight="bold", size=size)
        self.y += 6

    def bar(self, label, fraction, colour, value_text):
        y = self.y
        self.text(LABEL_X, y + BAR_H - 3, label, anchor="end")
        width = max(1.0, BAR_MAX * fraction)
        self.parts.append(
            f"<rect x='{BAR_X}' y='{y}' width='{width:.1f}' height='{BAR_H}' fill='{colour}'/>")
        self.text(BAR_X + width + 6, y + BAR_H - 3, value_text)
        self.y += STEP

    def render(self):
        height = self.y + 16
        return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
                f"viewBox='0 0 {WIDTH} {height}' {FONT}>\n"
                f"<rect width='{WIDTH}' height='{height}' fill='white'/>\n"
                + "\n".join(self.parts) + "\n</svg>\n")


def pvops_section(svg, cols):
    rows = benchlog.pvops_rows(cols)
    if not rows:
        return
    svg.heading("pv_ops: time per op, lower is better (x: ratio to the bare instruction, natively)")
    groups = []
    for label, _, unit, _ in rows:
        if (label, unit) not in groups:
            groups.append((label, unit))
    for label, unit in groups:
        mine = [(via, cells) for op_label, via, _, cells in rows if op_label == label]
        bars = [(f"{col['name']}, {via}", via, cells[i])
                for i, col in enumerate(cols) for via, cells in mine if cells[i]]
        top = max(ns for _, _, (ns, _) in bars)
        svg.y += GROUP_GAP
        svg.text(10, svg.y + 2, f"{label} ({unit})", weight="bold")
        svg.y += 8
        for name, via, (ns, ratio) in bars:
            ratio_text = f"  ({ratio:.2f}x)" if ratio else ""
            svg.bar(name, ns / top, VIA_COLOURS[via], f"{ns:.1f} ns{ratio_text}")


def other_section(svg, cols):
    names = []
    for c in cols:
        names += [n for n in c["rows"] if not benchlog.is_pvops(n) and n not in names]
    measured = [n for n in names if any(benchlog.value(c, n) for c in cols)]
    if not measured:
        return
    svg.heading("Other benchmarks: bars scaled within each benchmark")
    svg.y += 4
    x = 10
    for i, c in enumerate(cols):
        colour = COLUMN_COLOURS[i % len(COLUMN_COLOURS)]
        svg.parts.append(f"<rect x='{x}' y='{svg.y}' width='12' height='12' fill='{colour}'/>")
        svg.text(x + 16, svg.y + 10, c["name"])
        x += 30 + 7 * len(c["name"])
    svg.y += 12
    for n in measured:
        values = [(i, c, benchlog.value(c, n)) for i, c in enumerate(cols)]
        values = [(i, c, v) for i, c, v in values if v]
        unit = values[0][1]["rows"][n][1]
        top = max(v for _, _, v in values)
        svg.y += GROUP_GAP
        svg.text(10, svg.y + 2, f"{n} ({unit})", weight="bold")
        svg.y += 8
        for i, c, v in values:
            svg.bar(c["name"], v / top, COLUMN_COLOURS[i % len(COLUMN_COLOURS)], f"{v:.1f} {unit}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default="docs/bench.svg")
    ap.add_argument("logs", nargs="+")
    args = ap.parse_args()
    cols = benchlog.columns(args.logs)
    if not cols:
        print("bench-plot: no benchmark output found", file=sys.stderr)
        return 1
    svg = Svg()
    svg.heading("Benchmarks on the rig (QEMU TCG, 2 host cores)", size=16)
    pvops_section(svg, cols)
    other_section(svg, cols)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(svg.render())
    print(f"bench-plot: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
