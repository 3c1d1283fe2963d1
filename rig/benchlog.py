"""Reads benchmark logs into columns of samples (shared by bench-table.py and bench-plot.py).

This docstring is the reference for the input format.

A benchmarking guest (ours with `bench` on its command line, the Linux PV peer with its
rigtest) prints one block per boot on its console:

    bench: begin platform=<native|xen-pv|xen-pvh|linux-pv> evtchn=<none|2-level|fifo|linux> [variant=<v>]
    bench: <name> <value> <unit> <detail...>
    bench: end

A <value> of `-` (unit `-` too) is a failed sample; its detail says why. Lines that are not
rows (`bench: stopped by the toolstack ...`) are ignored.

A log of rig/xen-rig.py frames each run of one rig boot, and dom0 measures the network for
the run, from its side, in lines prefixed with the controller's timestamp:

    rig: run <N> begin: ...
    bench: begin ...  /  bench: <row>  /  bench: end          (the guest's console)
    rig: control: [<t>] bench: <name> <value> <unit> <detail...>
    rig: run <N> end: ...

A dom0 row belongs to the column of its run's `bench: begin` (wherever in the run it comes).
A log of rig/run-native.sh has no framing and no dom0 rows. Every begin/end block is one
sample of every row it has, so the rounds of one boot (ours, linux, linux indirect256, ours,
...) and the boots in several logs add up.

A column is `<platform> <evtchn>` (no evtchn if `none`), plus `<variant>` unless it is
`default`; Linux's evtchn `linux` says nothing and is left out: `xen-pv fifo`, `native`,
`linux-pv`, `linux-pv indirect256`. Columns and rows keep their order of first appearance.

The pv_ops rows are `pvops_<op>_<via>`: the op (irq: disable+enable, flags: save_fl+restore_fl,
cpuid) reached through the bare instruction (natively and under PVH: not in PV's ring 3), the
op table's indirect call, a direct call to Xen PV's function (PV only: what its patched sites
were before irq_disable and save_fl went inline), or the call site as boot patched it.
"""
import math
import os
import re
import statistics
import sys
from dataclasses import dataclass, field

# A run's marker may end a guest's last line, one that had no newline (xen-rig.py allows for it).
RUN = re.compile(r"rig: run (\d+) (begin|end): ")
DOM0 = re.compile(r"^rig: control: \[[^\]]*\] (bench: .*)$")
BEGIN = re.compile(r"^bench: begin platform=(\S+) evtchn=(\S+)")
VARIANT = re.compile(r"\bvariant=(\S+)")
ROW = re.compile(r"^bench: (\S+) (\S+) (\S+) ?(.*)$")

PVOPS_OPS = (("irq", "irq disable+enable"), ("flags", "save_fl+restore_fl"), ("cpuid", "cpuid"))
PVOPS_VIAS = ("bare", "indirect", "direct", "patched")

RATE_UNITS = ("MiB/s", "IOPS", "pps", "x")
TIME_PREFIXES = ("ns/", "us/", "ms/")


@dataclass
class Row:
    unit: str = "-"
    values: list = field(default_factory=list)
    # (where, detail) of each `-` sample: the reason is part of the result.
    failures: list = field(default_factory=list)
    derived: bool = False

    @property
    def n(self):
        return len(self.values) + len(self.failures)

    def median(self):
        return statistics.median(self.values) if self.values else None

    def low(self):
        return min(self.values) if self.values else None

    def high(self):
        return max(self.values) if self.values else None

    def spread(self):
        """`median (min-max)`, just the median when they agree, `-` when nothing measured:
        how the table and the plot both show a cell."""
        lo, mid, hi = self.low(), self.median(), self.high()
        if mid is None:
            return "-"
        return f"{mid:.1f}" if lo == hi else f"{mid:.1f} ({lo:.1f}-{hi:.1f})"


@dataclass
class Column:
    name: str
    rows: dict = field(default_factory=dict)

    @property
    def n(self):
        """Samples of the best-sampled row: the peer's disk and network runs are separate
        boots whose rows never meet, which is one sample each, not two."""
        return max((r.n for r in self.rows.values() if not r.derived), default=0)


def column_name(platform, evtchn, variant=None):
    words = [platform]
    if evtchn != "none" and not (platform == "linux-pv" and evtchn == "linux"):
        words.append(evtchn)
    if variant and variant != "default":
        words.append(variant)
    return " ".join(words)


def columns(paths):
    """[Column] in order of first appearance, over all logs."""
    cols = {}
    for path in paths:
        with open(path, errors="replace") as f:
            _read(f, os.path.basename(path), cols)
    return list(cols.values())


def _read(lines, source, cols):
    block = None  # the open begin/end block's column: where the guest's rows go
    # The run's column outlives the block: dom0's rows come after the guest's `bench: end`,
    # and a row that comes before the begin line waits in pending.
    run, run_col, pending, nblock = None, None, [], 0

    def add(col, m):
        row = col.rows.setdefault(m[1], Row())
        if m[2] == "-":
            where = f"{source} run {run}" if run is not None else f"{source} block {nblock}"
            row.failures.append((where, m[4] or "no reason given"))
        else:
            row.values.append(float(m[2]))
            row.unit = m[3]

    def take(line):
        nonlocal block, run_col, pending, nblock
        if m := BEGIN.search(line):
            v = VARIANT.search(line)
            name = column_name(m[1], m[2], v[1] if v else None)
            block = run_col = cols.setdefault(name, Column(name))
            nblock += 1
            for r in pending:
                add(run_col, r)
            pending = []
        elif line == "bench: end":
            block = None
        elif (d := DOM0.search(line)) and (m := ROW.search(d[1])) and is_sample(m):
            if run_col is not None:
                add(run_col, m)
            else:
                pending.append(m)
        elif block is not None and (m := ROW.search(line)) and is_sample(m):
            add(block, m)

    def end_run():
        if pending:
            print(f"benchlog: {source} run {run}: {len(pending)} dom0 row(s) but no "
                  "'bench: begin' in the run: not counted", file=sys.stderr)

    for line in lines:
        line = line.rstrip("\r\n")
        if m := RUN.search(line):
            take(line[:m.start()])
            end_run()
            block, run_col, pending = None, None, []
            run = int(m[1]) if m[2] == "begin" else None
        else:
            take(line)
    end_run()


def is_sample(m):
    """A row, not a line that only starts like one (`bench: stopped by the toolstack ...`)."""
    if m[1] in ("begin", "end"):
        return False
    try:
        return m[2] == "-" or math.isfinite(float(m[2]))
    except ValueError:
        return False


def median(col, name):
    row = col.rows.get(name)
    return row.median() if row else None


def row_names(cols):
    """Non-pv_ops rows in order of first appearance; a derived row where DERIVED_PLACE says."""
    names = []
    for c in cols:
        names += [n for n, r in c.rows.items()
                  if not is_pvops(n) and not r.derived and n not in names]
    for name, after in DERIVED_PLACE.items():
        if any(name in c.rows for c in cols):
            names.insert(names.index(after) + 1 if after in names else len(names), name)
    return names


# Under software emulation Xen's own work per update dwarfs the guest/Xen transition, so no
# batching reaches the >= 5x a hardware host shows; what batching saves per entry, next to
# what one transition costs (null_hypercall), is the comparison that carries over.
DERIVED_PLACE = {"multicall_saving_per_entry": "null_hypercall",
                 "multicall_speedup": None, "batch_speedup": None}


def add_derived(cols):
    """The multicall rows, from each column's medians."""
    for c in cols:
        single = median(c, "mmu_update_single_x64")
        multi = median(c, "mmu_update_multicall_x64")
        batch = median(c, "mmu_update_batch_x64")
        if single is not None and multi is not None:
            c.rows["multicall_saving_per_entry"] = Row(
                "ns/entry", [(single - multi) * 1000 / 64], derived=True)
        for name, other in (("multicall_speedup", multi), ("batch_speedup", batch)):
            if single is not None and other:
                c.rows[name] = Row("x", [single / other], derived=True)


def ours_and_peers(cols):
    """Our guest's column (PV with FIFO events, else the first PV one) and the Linux peers'."""
    ours = next((c for c in cols if c.name == "xen-pv fifo"), None)
    ours = ours or next((c for c in cols if c.name.split()[0] == "xen-pv"), None)
    return ours, [c for c in cols if c.name.split()[0] == "linux-pv"]


def ratio(unit, ours, peer):
    """ours/peer for rates, peer/ours for times: above 1.0 always means we are faster. None
    for amounts (MiB verified, calls/64) and other units, which are not a speed."""
    if not ours or not peer:
        return None
    if unit in RATE_UNITS:
        return ours / peer
    if unit.startswith(TIME_PREFIXES):
        return peer / ours
    return None


def row_ratio(ours, peer, name):
    row = ours.rows.get(name)
    if row is None or row.derived or name not in peer.rows:
        return None
    return ratio(row.unit, row.median(), peer.rows[name].median())


def is_pvops(name):
    return name.startswith("pvops_")


def pvops_bare(cols, op):
    """The bare instruction's figure: measured natively (the first column that has it),
    the reference for every column (a PV kernel runs in ring 3 and cannot execute cli,
    sti or popf itself)."""
    return next((v for c in cols if (v := median(c, f"pvops_{op}_bare"))), None)


def pvops_rows(cols):
    """[(op label, via, unit, [(median ns, ratio to bare, Row) or None per column])] for the
    pv_ops rows any column measured."""
    rows = []
    for op, label in PVOPS_OPS:
        bare = pvops_bare(cols, op)
        for via in PVOPS_VIAS:
            name = f"pvops_{op}_{via}"
            cells, unit = [], None
            for c in cols:
                v = median(c, name)
                if v is not None:
                    unit = c.rows[name].unit
                cells.append((v, v / bare if bare else None, c.rows[name])
                             if v is not None else None)
            if unit:
                rows.append((label, via, unit, cells))
    return rows
