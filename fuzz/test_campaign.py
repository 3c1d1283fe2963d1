#!/usr/bin/env python3
"""Host tests of fuzz/campaign.py: reading libFuzzer's output and adding campaigns up."""

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import campaign  # noqa: E402

RUN = """INFO: Seed: 1234
#2	INITED cov: 2300 ft: 6000 corp: 400/2kb exec/s: 0 rss: 30Mb
#16384	pulse  cov: 2424 ft: 6213 corp: 406/2363b lim: 17 exec/s: 963 rss: 32Mb
#28305	DONE   cov: 2434 ft: 6530 corp: 485/3760b lim: 33 exec/s: 913 rss: 32Mb
Done 28305 runs in 31 second(s)
stat::number_of_executed_units: 28310
stat::peak_rss_mb: 32
"""

CRASH = """#100	NEW    cov: 10 ft: 11 corp: 3/9b lim: 4 exec/s: 0 rss: 30Mb
thread '<unnamed>' panicked at fuzz/src/targets/x.rs:1:1:
==1== ERROR: libFuzzer: deadly signal
artifact_prefix='/w/fuzz/artifacts/x/'; Test unit written to /w/fuzz/artifacts/x/crash-ab12
"""


class Flags(unittest.TestCase):
    def test_every_target_is_built_one_way_or_the_other(self):
        self.assertLessEqual(campaign.SCRIPTED, set(campaign.TARGETS))
        self.assertIn("--no-trace-compares", campaign.flags("blkfront"))
        self.assertNotIn("--no-trace-compares", campaign.flags("cmdline"))


class Parse(unittest.TestCase):
    def test_a_finished_run(self):
        r = campaign.parse(RUN)
        self.assertEqual((r["execs"], r["cov"], r["features"]), (28310, 2434, 6530))
        self.assertIsNone(r["artifact"])

    def test_a_crash_names_its_input(self):
        r = campaign.parse(CRASH)
        self.assertEqual(r["artifact"], "/w/fuzz/artifacts/x/crash-ab12")
        self.assertEqual(r["execs"], 100)


class Summary(unittest.TestCase):
    def row(self, target, execs, seconds, cov, outcome="ok"):
        return {"target": target, "execs": str(execs), "seconds": str(seconds), "cov": str(cov),
                "corpus_files": "7", "corpus_bytes": "1234", "outcome": outcome}

    def test_executions_add_up_and_the_latest_coverage_shows(self):
        rows = [self.row("netfront", 1000, 1800, 2000),
                self.row("netfront", 2500, 1800, 2100, "crash:/a/crash-1")]
        table = campaign.summary(rows)
        line = next(x for x in table.splitlines() if x.startswith("| `netfront`"))
        self.assertEqual(line, "| `netfront` | 3,500 | 2 | 1.0 | 2100 | 7 (1,234) | 1 |")

    def test_every_target_has_a_line(self):
        table = campaign.summary([])
        for t in campaign.TARGETS:
            self.assertIn(f"| `{t}` | 0 |", table)


if __name__ == "__main__":
    unittest.main(verbosity=1)
