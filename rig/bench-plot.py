#!/usr/bin/env python3
"""Draws benchmark logs (format: benchlog.py) as one SVG, with the standard library only.

The pv_ops rows come first: per op, one bar per platform and way of reaching it (bare
instruction, indirect call, patched site), labelled with the median ns and the ratio to the
bare instruction. Every other benchmark follows as a group of bars, one per column (platform,
event ABI, variant): the bar is the median, the whisker spans min to max, the label says
`median (min-max) unit` and how many samples failed, and the group's heading has the ratio
ours/peer against each Linux peer (above 1.00x: ours is faster). Bars are scaled within their
group: lengths compare columns of one benchmark, never two benchmarks.

    bench-plot.py [-o OUT.svg] LOG [LOG ...]     (default output: docs/bench.svg)
"""
import argparse
import sys
from html import escape
from pathlib import Path

import benchlog

WIDTH = 1000
LABEL_X = 250  # labels end here (right-aligned)
BAR_X = 260
BAR_MAX = 470
BAR_H = 14
STEP = BAR_H + 4
GROUP_GAP = 12
FONT = "font-family='DejaVu Sans, Arial, sans-serif' font-size='12'"
VIA_COLOURS = {"bare": "#8c8c8c", "indirect": "#e07b39", "direct": "#9c6ade",
               "patched": "#3a7bd5"}
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

    def bar(self, label, fraction, colour, value_text, spread=None):
        """A bar of BAR_MAX * fraction, and with spread (min, max as fractions) a whisker."""
        y = self.y
        self.text(LABEL_X, y + BAR_H - 3, label, anchor="end")
        width = max(1.0, BAR_MAX * fraction)
        self.parts.append(f"<rect class='bar' x='{BAR_X}' y='{y}' width='{width:.1f}' "
                          f"height='{BAR_H}' fill='{colour}'/>")
        end = BAR_X + width
        if spread:
            lo, hi = (BAR_X + BAR_MAX * f for f in spread)
            mid, top, bottom = y + BAR_H / 2, y + 3, y + BAR_H - 3
            self.parts.append(
                f"<path class='whisker' d='M{lo:.1f},{mid} H{hi:.1f} M{lo:.1f},{top} "
                f"V{bottom} M{hi:.1f},{top} V{bottom}' stroke='black' fill='none'/>")
            end = max(end, hi)
        self.text(end + 6, y + BAR_H - 3, value_text)
        self.y += STEP

    def no_bar(self, label, text):
        self.text(LABEL_X, self.y + BAR_H - 3, label, anchor="end")
        self.text(BAR_X + 6, self.y + BAR_H - 3, text)
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
        bars = [(f"{col.name}, {via}", via, cells[i])
                for i, col in enumerate(cols) for via, cells in mine if cells[i]]
        top = max(row.high() for _, _, (_, _, row) in bars)
        svg.y += GROUP_GAP
        svg.text(10, svg.y + 2, f"{label} ({unit})", weight="bold")
        svg.y += 8
        for name, via, (ns, ratio, row) in bars:
            ratio_text = f"  ({ratio:.2f}x)" if ratio else ""
            svg.bar(name, ns / top, VIA_COLOURS[via], f"{row.spread()} ns{ratio_text}",
                    (row.low() / top, row.high() / top))


def other_section(svg, cols):
    names = [n for n in benchlog.row_names(cols)
             if any(c.rows.get(n) and c.rows[n].values for c in cols)]
    if not names:
        return
    ours, peers = benchlog.ours_and_peers(cols)
    svg.heading("Other benchmarks: bars are medians scaled within each benchmark, "
                "whiskers min to max")
    svg.y += 4
    x = 10
    for i, c in enumerate(cols):
        if x > WIDTH - 200:
            x, svg.y = 10, svg.y + 18
        svg.parts.append(f"<rect x='{x}' y='{svg.y}' width='12' height='12' "
                         f"fill='{colour(i)}'/>")
        svg.text(x + 16, svg.y + 10, f"{c.name} (n={c.n})")
        x += 40 + 7 * len(f"{c.name} (n={c.n})")
    svg.y += 12
    for n in names:
        present = [(i, c, c.rows[n]) for i, c in enumerate(cols) if n in c.rows]
        unit = next(r.unit for _, _, r in present if r.values)
        top = max(r.high() for _, _, r in present if r.values)
        ratios = [(p.name, benchlog.row_ratio(ours, p, n)) for p in peers] if ours else []
        ratios = ", ".join(f"ours/{name} {x:.2f}x" for name, x in ratios if x is not None)
        svg.y += GROUP_GAP
        svg.text(10, svg.y + 2, f"{n} ({unit})" + (f" — {ratios}" if ratios else ""),
                 weight="bold")
        svg.y += 8
        for i, c, r in present:
            failed = f" [{len(r.failures)} failed: {r.failures[0][1]}]" if r.failures else ""
            if not r.values:
                svg.no_bar(c.name, "-" + failed)
                continue
            svg.bar(c.name, r.median() / top, colour(i), f"{r.spread()} {unit}{failed}",
                    (r.low() / top, r.high() / top))


def colour(i):
    return COLUMN_COLOURS[i % len(COLUMN_COLOURS)]


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
    out.write_text(svg.render(), encoding="utf-8")
    print(f"bench-plot: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
