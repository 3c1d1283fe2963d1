#!/usr/bin/env python3
"""Merges the guest's benchmark output from several boots into tables (format: benchlog.py).

The first table has one column per boot (platform, event ABI) and a row per benchmark, then
derived rows: the multicall and batch speed-ups over single mmu_update hypercalls, and the
ratio ours/Linux when a Linux peer's log is given. The second has the pv_ops rows: each op
through the bare instruction, the indirect call and the patched site, with the ratio to the
bare instruction.

    bench-table.py LOG [LOG ...]
"""
import sys

import benchlog


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cols = benchlog.columns(sys.argv[1:])
    if not cols:
        print("bench-table: no benchmark output found", file=sys.stderr)
        return 1
    names, units = [], {}
    for c in cols:
        for name, (_, unit, _) in c["rows"].items():
            if name not in names and not benchlog.is_pvops(name):
                names.append(name)
            if unit != "-":
                units[name] = unit
    for c in cols:
        r = c["rows"]
        single = r.get("mmu_update_single_x64", (None,))[0]
        for derived, base in (("multicall_speedup", "mmu_update_multicall_x64"),
                              ("batch_speedup", "mmu_update_batch_x64")):
            other = r.get(base, (None,))[0]
            r[derived] = ((single / other) if single and other else None, "x", "")
    names += ["multicall_speedup", "batch_speedup"]
    units.update(multicall_speedup="x", batch_speedup="x")
    pvops = benchlog.pvops_rows(cols)
    # Our guest against the Linux PV domU peer, where both measured a row: ours over Linux's
    # for rates (MiB/s, IOPS), Linux's over ours for times (us/rtt), so that above 1.0 always
    # means we are faster.
    ours = next((c for c in cols if c["name"].split()[0] == "xen-pv"), None)
    peer = next((c for c in cols if c["name"].startswith("linux-pv")), None)
    if ours and peer:
        ratio = {"name": "ours/linux", "rows": {}}
        for n in names:
            a, b = ours["rows"].get(n, (None,))[0], peer["rows"].get(n, (None,))[0]
            if a and b and units.get(n) in ("MiB/s", "IOPS"):
                ratio["rows"][n] = (a / b, "x", "")
            elif a and b and units.get(n) == "us/rtt":
                ratio["rows"][n] = (b / a, "x", "")
        cols.append(ratio)
    if len(names) > 2:
        print_main(names, units, cols)
    if pvops:
        print_pvops(pvops, [c["name"] for c in cols if c["name"] != "ours/linux"])
    return 0


def print_main(names, units, cols):
    width = max(len(n) for n in names)
    header = f"| {'benchmark':<{width}} | {'unit':<7} | " + " | ".join(f"{c['name']:>14}" for c in cols) + " |"
    print(header)
    print("|" + "-" * (len(header) - 2) + "|")
    for n in names:
        cells = []
        for c in cols:
            v = c["rows"].get(n, (None,))[0]
            cells.append(f"{v:>14.1f}" if v is not None else f"{'-':>14}")
        print(f"| {n:<{width}} | {units.get(n, '-'):<7} | " + " | ".join(cells) + " |")
    print()


def print_pvops(rows, col_names):
    """The pv_ops table: ns and the ratio to the bare instruction (natively measured, so the
    Xen columns compare with what the op costs without virtualization)."""
    keep = [i for i in range(len(col_names)) if any(r[3][i] for r in rows)]
    col_names = [col_names[i] for i in keep]
    rows = [(label, via, unit, [cells[i] for i in keep]) for label, via, unit, cells in rows]
    header = f"| {'pv_ops':<18} | {'via':<8} | {'unit':<7} | " + " | ".join(f"{n:>18}" for n in col_names) + " |"
    print(header)
    print("|" + "-" * (len(header) - 2) + "|")
    for label, via, unit, cells in rows:
        text = []
        for cell in cells:
            if cell is None:
                text.append("-")
            else:
                ns, ratio = cell
                text.append(f"{ns:.1f} ({ratio:.2f}x)" if ratio else f"{ns:.1f}")
        text = [f"{t:>18}" for t in text]
        print(f"| {label:<18} | {via:<8} | {unit:<7} | " + " | ".join(text) + " |")
    print("(x: ratio to the bare instruction, natively)")


if __name__ == "__main__":
    sys.exit(main())
