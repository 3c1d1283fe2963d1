"""Reads the guest's benchmark output (shared by bench-table.py and bench-plot.py).

The guest prints, for `bench` on its command line,

    bench: begin platform=<native|xen-pv|xen-pvh> evtchn=<none|2-level|fifo>
    bench: <name> <value> <unit> <detail...>      (value and unit are "-" when not applicable)
    bench: end

Each platform (and event ABI) is one column, whatever number of begin/end blocks it has;
rows are benchmarks.

The pv_ops rows are `pvops_<op>_<via>`: the op (irq: disable+enable, flags: save_fl+restore_fl,
cpuid) reached through the bare instruction (natively and under PVH: not in PV's ring 3), the
op table's indirect call,
or the call site as boot patched it.
"""
import re

BEGIN = re.compile(r"^bench: begin platform=(\S+) evtchn=(\S+)")
ROW = re.compile(r"^bench: (\S+) (\S+) (\S+) ?(.*)$")

PVOPS_OPS = (("irq", "irq disable+enable"), ("flags", "save_fl+restore_fl"), ("cpuid", "cpuid"))
PVOPS_VIAS = ("bare", "indirect", "patched")


def columns(paths):
    """[{"name": "<platform> <evtchn>", "rows": {name: (value or None, unit, detail)}}]"""
    cols = []
    for path in paths:
        current = None
        with open(path, errors="replace") as f:
            for line in f:
                line = line.rstrip("\r\n")
                if m := BEGIN.search(line):
                    name = f"{m[1]} {m[2]}" if m[2] != "none" else m[1]
                    # Boots of the same platform (e.g. the peer's disk and network runs)
                    # share one column.
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


def value(col, name):
    return col["rows"].get(name, (None,))[0]


def is_pvops(name):
    return name.startswith("pvops_")


def pvops_bare(cols, op):
    """The bare instruction's figure: measured natively (the first column that has it),
    the reference for every column (a PV kernel runs in ring 3 and cannot execute cli,
    sti or popf itself)."""
    return next((v for c in cols if (v := value(c, f"pvops_{op}_bare"))), None)


def pvops_rows(cols):
    """[(op label, via, unit, [(ns, ratio to bare) or None per column])] for the pv_ops
    rows any column measured."""
    rows = []
    for op, label in PVOPS_OPS:
        bare = pvops_bare(cols, op)
        for via in PVOPS_VIAS:
            name = f"pvops_{op}_{via}"
            cells, unit = [], None
            for c in cols:
                v = value(c, name)
                if v is not None:
                    unit = c["rows"][name][1]
                cells.append((v, v / bare if bare else None) if v is not None else None)
            if unit:
                rows.append((label, via, unit, cells))
    return rows
