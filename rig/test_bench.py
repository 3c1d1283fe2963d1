#!/usr/bin/env python3
"""Tests of benchlog.py, bench-table.py and bench-plot.py on the logs in testdata/bench/.

    python3 rig/test_bench.py
    python3 -m unittest discover -s rig -p 'test_*.py'

alternated.log: one rig boot, three rounds of ours (xen-pv fifo), Linux and Linux with
indirect256, the network rows from dom0 (run 4's first one before the guest's begin line,
run 2's end marker on the guest's last line), Linux's net_tcp_recv failing once and
indirect256's net_tcp_send every time. native.log: two begin/end blocks of one
run-native.sh boot. oldstyle.log: one sample per row, guest-measured network, a run cut
short by the toolstack.
"""
import os
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import benchlog  # noqa: E402

DATA = HERE / "testdata" / "bench"
ALTERNATED, NATIVE, OLDSTYLE = (str(DATA / f) for f in ("alternated.log", "native.log",
                                                          "oldstyle.log"))
SVG = "{http://www.w3.org/2000/svg}"


def by_name(cols):
    return {c.name: c for c in cols}


def run_script(script, *args):
    done = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True,
                          text=True, check=True)
    return done.stdout


def table_rows(text):
    """{benchmark: {header: cell}} of the first markdown table in text."""
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("| benchmark"))
    header = [c.strip() for c in lines[start].strip("|").split(" | ")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows[cells[0]] = dict(zip(header, cells))
    return header, rows


class ColumnNames(unittest.TestCase):
    def test_names(self):
        self.assertEqual(benchlog.column_name("xen-pv", "fifo"), "xen-pv fifo")
        self.assertEqual(benchlog.column_name("xen-pv", "2-level", None), "xen-pv 2-level")
        self.assertEqual(benchlog.column_name("xen-pvh", "fifo"), "xen-pvh fifo")
        self.assertEqual(benchlog.column_name("native", "none"), "native")
        self.assertEqual(benchlog.column_name("linux-pv", "linux", "default"), "linux-pv")
        self.assertEqual(benchlog.column_name("linux-pv", "linux", "indirect256"),
                         "linux-pv indirect256")


class Alternated(unittest.TestCase):
    def setUp(self):
        self.cols = benchlog.columns([ALTERNATED])
        self.col = by_name(self.cols)

    def test_columns_in_order_of_appearance(self):
        self.assertEqual([c.name for c in self.cols],
                         ["xen-pv fifo", "linux-pv", "linux-pv indirect256"])
        self.assertEqual([c.n for c in self.cols], [3, 3, 3])

    def test_median_min_max(self):
        row = self.col["xen-pv fifo"].rows["blk_seq_read_1m"]
        self.assertEqual(row.values, [256.0, 241.2, 260.1])
        self.assertEqual((row.median(), row.low(), row.high()), (256.0, 241.2, 260.1))
        self.assertEqual(row.unit, "MiB/s")

    def test_dom0_rows_go_to_their_runs_column(self):
        # Run 4's ping (790.5) came before the guest's begin line.
        self.assertEqual(self.col["xen-pv fifo"].rows["net_ping_rtt"].values,
                         [812.0, 790.5, 845.0])
        self.assertEqual(self.col["linux-pv"].rows["net_ping_rtt"].values,
                         [1624.0, 1580.2, 1700.3])
        self.assertEqual(self.col["linux-pv indirect256"].rows["net_ping_rtt"].values,
                         [1500.0, 1450.0, 1490.0])

    def test_failed_samples_keep_their_reason(self):
        row = self.col["linux-pv"].rows["net_tcp_recv"]
        self.assertEqual(row.values, [0.6, 0.8])
        self.assertEqual(row.failures,
                         [("alternated.log run 5", "far end sent 0 of 33554432 bytes")])
        self.assertEqual(row.n, 3)
        row = self.col["linux-pv indirect256"].rows["net_tcp_send"]
        self.assertEqual((row.values, len(row.failures)), ([], 3))
        self.assertIsNone(row.median())

    def test_ratio_direction(self):
        self.assertEqual(benchlog.ratio("MiB/s", 4.0, 2.0), 2.0)
        self.assertEqual(benchlog.ratio("IOPS", 4.0, 2.0), 2.0)
        self.assertEqual(benchlog.ratio("us/rtt", 2.0, 4.0), 2.0)
        self.assertEqual(benchlog.ratio("ns/call", 2.0, 4.0), 2.0)
        self.assertIsNone(benchlog.ratio("MiB", 16.0, 16.0))
        self.assertIsNone(benchlog.ratio("calls/64", 1.0, 64.0))
        ours, peers = benchlog.ours_and_peers(self.cols)
        self.assertEqual((ours.name, [p.name for p in peers]),
                         ("xen-pv fifo", ["linux-pv", "linux-pv indirect256"]))
        linux = peers[0]
        self.assertAlmostEqual(benchlog.row_ratio(ours, linux, "blk_seq_read_1m"), 256.0 / 73.3)
        self.assertAlmostEqual(benchlog.row_ratio(ours, linux, "net_ping_rtt"), 1624.0 / 812.0)
        self.assertIsNone(benchlog.row_ratio(ours, linux, "blk_verify"))

    def test_derived_multicall_rows(self):
        benchlog.add_derived(self.cols)
        rows = self.col["xen-pv fifo"].rows
        self.assertEqual(rows["multicall_saving_per_entry"].median(), (80.0 - 60.0) * 1000 / 64)
        self.assertEqual(rows["multicall_saving_per_entry"].unit, "ns/entry")
        self.assertAlmostEqual(rows["multicall_speedup"].median(), 80.0 / 60.0)
        self.assertAlmostEqual(rows["batch_speedup"].median(), 2.0)
        self.assertNotIn("multicall_speedup", self.col["linux-pv"].rows)
        names = benchlog.row_names(self.cols)
        self.assertEqual(names[names.index("null_hypercall") + 1], "multicall_saving_per_entry")
        self.assertEqual(names[-2:], ["multicall_speedup", "batch_speedup"])


class Table(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with tempfile.TemporaryDirectory() as tmp:
            md = os.path.join(tmp, "bench.md")
            cls.out = run_script("bench-table.py", "--markdown-out", md, ALTERNATED)
            cls.md = Path(md).read_text()
        cls.header, cls.rows = table_rows(cls.out)

    def test_markdown_file_is_the_output(self):
        self.assertEqual(self.md, self.out)

    def test_header(self):
        self.assertEqual(self.header, ["benchmark", "unit", "xen-pv fifo (n=3)", "linux-pv (n=3)",
                                       "linux-pv indirect256 (n=3)", "ours/linux-pv",
                                       "ours/linux-pv indirect256"])
        rule = self.out.splitlines()[1]
        self.assertTrue(rule.startswith("|---") and rule.endswith(":|"), rule)

    def test_cells(self):
        row = self.rows["blk_seq_read_1m"]
        self.assertEqual(row["xen-pv fifo (n=3)"], "256.0 (241.2-260.1)")
        self.assertEqual(row["ours/linux-pv"], "3.49x")
        self.assertEqual(row["ours/linux-pv indirect256"], "1.30x")
        self.assertEqual(self.rows["net_ping_rtt"]["ours/linux-pv"], "2.00x")
        self.assertEqual(self.rows["net_tcp_recv"]["linux-pv (n=3)"], "0.7 (0.6-0.8) [1 failed]")
        self.assertEqual(self.rows["net_tcp_send"]["linux-pv indirect256 (n=3)"],
                         "- [3 failed: nc: connection refused]")
        self.assertEqual(self.rows["net_tcp_send"]["ours/linux-pv indirect256"], "-")
        self.assertEqual(self.rows["blk_verify"]["ours/linux-pv"], "-")
        self.assertEqual(self.rows["mmu_hypercalls_single_x64"]["unit"], "calls/64")
        self.assertEqual(self.rows["mmu_hypercalls_single_x64"]["xen-pv fifo (n=3)"], "64.0")
        self.assertEqual(self.rows["mmu_hypercalls_batch_x64"]["ours/linux-pv"], "-")
        self.assertEqual(self.rows["null_hypercall"]["linux-pv (n=3)"], "-")

    def test_derived_rows(self):
        names = list(self.rows)
        self.assertEqual(names[names.index("null_hypercall") + 1], "multicall_saving_per_entry")
        self.assertEqual(self.rows["multicall_saving_per_entry"]["unit"], "ns/entry")
        self.assertEqual(self.rows["multicall_saving_per_entry"]["xen-pv fifo (n=3)"], "312.5")
        self.assertEqual(self.rows["multicall_speedup"]["xen-pv fifo (n=3)"], "1.3")
        self.assertEqual(self.rows["batch_speedup"]["xen-pv fifo (n=3)"], "2.0")

    def test_rows_we_lose_are_listed(self):
        self.assertIn("Rows we lose against linux-pv: net_tcp_send (0.28x)\n", self.out)
        self.assertIn("Rows we lose against linux-pv indirect256: none (not compared", self.out)
        self.assertEqual(self.rows["net_tcp_send"]["ours/linux-pv"], "0.28x")

    def test_reason_of_a_partly_failed_cell_is_shown(self):
        self.assertIn("- linux-pv, net_tcp_recv, alternated.log run 5: "
                      "far end sent 0 of 33554432 bytes", self.out)


class NativeAndOldStyle(unittest.TestCase):
    def test_native_blocks_are_samples(self):
        (col,) = benchlog.columns([NATIVE])
        self.assertEqual((col.name, col.n), ("native", 2))
        self.assertEqual(col.rows["pvops_irq_bare"].values, [21.5, 22.5])
        self.assertEqual(col.rows["null_hypercall"].failures,
                         [("native.log block 1", "needs Xen"), ("native.log block 2", "needs Xen")])
        out = run_script("bench-table.py", NATIVE)
        self.assertIn("- [2 failed: needs Xen]", out)
        self.assertIn("| irq disable+enable | bare     | ns/pair | 22.0 (1.00x) |", out)

    def test_old_style_single_samples(self):
        cols = benchlog.columns([OLDSTYLE])
        self.assertEqual([(c.name, c.n) for c in cols], [("xen-pv fifo", 1), ("xen-pv 2-level", 1)])
        self.assertNotIn("stopped", cols[1].rows)
        out = run_script("bench-table.py", OLDSTYLE)
        header, rows = table_rows(out)
        self.assertEqual(header, ["benchmark", "unit", "xen-pv fifo (n=1)", "xen-pv 2-level (n=1)"])
        self.assertEqual(rows["net_ping_rtt"]["xen-pv fifo (n=1)"], "4017.0")
        self.assertEqual(rows["null_hypercall"]["xen-pv 2-level (n=1)"], "381.3")
        self.assertNotIn("Rows we lose", out)

    def test_dom0_rows_of_a_run_without_begin_are_not_counted(self):
        log = ("rig: run 1 begin: @bench\n"
               "bench: begin platform=xen-pv evtchn=fifo\n"
               "bench: end\n"
               "rig: control: [1.0] bench: net_ping_rtt 800.0 us/rtt from dom0\n"
               "rig: run 1 end: xl exit=0\n"
               "rig: run 2 begin: @bench\n"
               "rig: control: [9.0] bench: net_ping_rtt 900.0 us/rtt from dom0\n"
               "rig: run 2 end: xl exit=1 reason=crash\n")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "crash.log")
            Path(path).write_text(log)
            done = subprocess.run([sys.executable, "-c", "import benchlog, sys; "
                                   "print(benchlog.columns(sys.argv[1:])[0].rows)", path],
                                  cwd=HERE, capture_output=True, text=True, check=True)
        self.assertIn("values=[800.0]", done.stdout)
        self.assertIn("crash.log run 2: 1 dom0 row(s) but no 'bench: begin'", done.stderr)


class Plot(unittest.TestCase):
    def test_svg(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "bench.svg")
            run_script("bench-plot.py", "-o", out, ALTERNATED, NATIVE)
            root = ET.parse(out).getroot()
        bars = [e for e in root.iter(f"{SVG}rect") if e.get("class") == "bar"]
        whiskers = [e for e in root.iter(f"{SVG}path") if e.get("class") == "whisker"]
        # 3 pv_ops bars, then 14 rows: 7 of ours alone, 7 of three columns less one that
        # failed every time (native's null_hypercall has no bar either).
        self.assertEqual(len(bars), 3 + 7 + 7 * 3 - 1)
        self.assertEqual(len(whiskers), len(bars))
        texts = [e.text for e in root.iter(f"{SVG}text")]
        self.assertIn("blk_seq_read_1m (MiB/s) — ours/linux-pv 3.49x, "
                      "ours/linux-pv indirect256 1.30x", texts)
        self.assertIn("256.0 (241.2-260.1) MiB/s", texts)
        self.assertIn("0.7 (0.6-0.8) MiB/s [1 failed: far end sent 0 of 33554432 bytes]", texts)
        self.assertIn("- [3 failed: nc: connection refused]", texts)
        self.assertIn("- [2 failed: needs Xen]", texts)
        self.assertIn("linux-pv indirect256 (n=3)", texts)


if __name__ == "__main__":
    unittest.main()
