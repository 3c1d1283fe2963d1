#!/usr/bin/env python3
"""Merges benchmark logs (format: benchlog.py) into markdown tables.

    bench-table.py [--markdown-out FILE] LOG [LOG ...]

The main table has a column per platform (event ABI, variant) and a row per benchmark; a cell
is the median of the column's samples, `median (min-max)` when there are several, and says how
many samples failed and why. Then the multicall rows derived from the medians, the ratio ours
(xen-pv fifo) over each Linux peer, and the rows we lose against each peer. The second table
has the pv_ops rows: each op through the bare instruction, the indirect call and the patched
site, as medians with the ratio to the bare instruction. The tables go to stdout, and to FILE
with --markdown-out.
"""
import argparse
import sys
from pathlib import Path

import benchlog

# A long failure reason would widen its whole column; the list under the table has it all.
REASON_CHARS = 40


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown-out", metavar="FILE")
    ap.add_argument("logs", nargs="+", metavar="LOG")
    args = ap.parse_args()
    cols = benchlog.columns(args.logs)
    if not cols:
        print("bench-table: no benchmark output found", file=sys.stderr)
        return 1
    pvops = benchlog.pvops_rows(cols)
    benchlog.add_derived(cols)
    lines = []
    if names := benchlog.row_names(cols):
        lines += main_table(names, cols)
    if pvops:
        lines += pvops_table(pvops, [c.name for c in cols])
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.markdown_out:
        Path(args.markdown_out).write_text(text)
    return 0


def cell(row, col_n):
    """`median (min-max)`, `-` if nothing measured, then what failed and, when a sample is
    missing without having failed (a run cut short), how many there are."""
    if row is None:
        return "-"
    text = row.spread()
    if row.failures:
        reason = row.failures[0][1]
        if not row.values:
            if len(reason) > REASON_CHARS:
                reason = reason[:REASON_CHARS - 3] + "..."
            text += f" [{len(row.failures)} failed: {reason}]"
        else:
            text += f" [{len(row.failures)} failed]"
    if not row.derived and row.n < col_n:
        text += f" [n={row.n}]"
    return text.replace("|", "\\|")


def markdown(header, rows, right_from):
    """A markdown table, columns from index right_from on right-aligned."""
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if i >= right_from else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if i >= right_from else "-" * (w + 2)
                          for i, w in enumerate(widths)) + "|"
    return [line(header), rule] + [line(r) for r in rows]


def main_table(names, cols):
    ours, peers = benchlog.ours_and_peers(cols)
    if ours is None:
        peers = []
    units = {}
    for c in cols:
        for n, r in c.rows.items():
            if r.unit != "-":
                units.setdefault(n, r.unit)
    header = ["benchmark", "unit"] + [f"{c.name} (n={c.n})" for c in cols]
    header += [f"ours/{p.name}" for p in peers]
    rows = []
    lose, unknown = {p.name: [] for p in peers}, {p.name: [] for p in peers}
    for n in names:
        r = [n, units.get(n, "-")] + [cell(c.rows.get(n), c.n) for c in cols]
        for p in peers:
            x = benchlog.row_ratio(ours, p, n)
            r.append("-" if x is None else f"{x:.2f}x")
            if x is not None and x < 1.0:
                lose[p.name].append(f"{n} ({x:.2f}x)")
            elif x is None and all_failed(ours, p, n):
                unknown[p.name].append(n)
        rows.append(r)
    out = markdown(header, rows, 2) + [""]
    if peers:
        out.append(f"(ours: {ours.name}; ratios from the medians, above 1.00x means ours is "
                   "faster: ours/peer for rates, peer/ours for times)")
        for p in peers:
            line = f"Rows we lose against {p.name}: {', '.join(lose[p.name]) or 'none'}"
            if unknown[p.name]:
                line += f" (not compared, all samples of a side failed: {', '.join(unknown[p.name])})"
            out.append(line)
        out.append("")
    failed = failure_notes(names, cols)
    if failed:
        out += ["Failed samples:"] + failed + [""]
    return out


def all_failed(ours, peer, name):
    """Both measured the row, but one side has no value: a comparison we cannot make, which a
    "none" among the lost rows must not hide."""
    a, b = ours.rows.get(name), peer.rows.get(name)
    return a is not None and b is not None and not (a.values and b.values)


def failure_notes(names, cols):
    """Every failed sample whose reason its cell does not show in full."""
    notes = []
    for n in names:
        for c in cols:
            r = c.rows.get(n)
            if r is None or not r.failures:
                continue
            reasons = {why for _, why in r.failures}
            shown = r.failures[0][1]
            if r.values or len(reasons) > 1 or len(shown) > REASON_CHARS:
                notes += [f"- {c.name}, {n}, {where}: {why}" for where, why in r.failures]
    return notes


def pvops_table(rows, col_names):
    """The pv_ops table: median ns and the ratio to the bare instruction (natively measured, so
    the Xen columns compare with what the op costs without virtualization)."""
    keep = [i for i in range(len(col_names)) if any(r[3][i] for r in rows)]
    header = ["pv_ops", "via", "unit"] + [col_names[i] for i in keep]
    body = []
    for label, via, unit, cells in rows:
        text = []
        for i in keep:
            if cells[i] is None:
                text.append("-")
            else:
                ns, x, _ = cells[i]
                text.append(f"{ns:.1f} ({x:.2f}x)" if x else f"{ns:.1f}")
        body.append([label, via, unit] + text)
    return markdown(header, body, 3) + ["(medians; x: ratio to the bare instruction, natively)"]


if __name__ == "__main__":
    sys.exit(main())
