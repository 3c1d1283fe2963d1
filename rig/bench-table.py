#!/usr/bin/env python3
"""Merges the guest's benchmark output from several boots into one table.

The guest prints, for `bench` on its command line,

    bench: begin platform=<native|xen-pv> evtchn=<none|2-level|fifo>
    bench: <name> <value> <unit> <detail...>      (value and unit are "-" when not applicable)
    bench: end

Each begin/end block is one column (platform, event ABI); rows are benchmarks. Derived rows
follow: the multicall and batch speed-ups over single mmu_update hypercalls.

    bench-table.py LOG [LOG ...]
"""
import re
import sys

BEGIN = re.compile(r"^bench: begin platform=(\S+) evtchn=(\S+)")
ROW = re.compile(r"^bench: (\S+) (\S+) (\S+) ?(.*)$")


def columns(paths):
    cols = []
    for path in paths:
        current = None
        for line in open(path, errors="replace"):
            line = line.rstrip("\r\n")
            if m := BEGIN.search(line):
                name = f"{m[1]} {m[2]}" if m[2] != "none" else m[1]
                # Boots of the same platform (e.g. the peer's disk and network runs) share
                # one column.
                current = next((c for c in cols if c["name"] == name), None)
                if current is None:
                    current = {"name": name, "rows": {}}
                    cols.append(current)
            elif line.endswith("bench: end"):
                current = None
            elif current is not None and (m := ROW.search(line)):
                value = None if m[2] == "-" else float(m[2])
                current["rows"][m[1]] = (value, m[3], m[4])
    return cols


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cols = columns(sys.argv[1:])
    if not cols:
        print("bench-table: no benchmark output found", file=sys.stderr)
        return 1
    names, units = [], {}
    for c in cols:
        for name, (_, unit, _) in c["rows"].items():
            if name not in names:
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
    # Our guest against the Linux PV domU peer, where both measured a row: ours over Linux's
    # for rates (MiB/s, IOPS), Linux's over ours for times (us/rtt), so that above 1.0 always
    # means we are faster.
    ours = next((c for c in cols if c["name"].startswith("xen-pv")), None)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
