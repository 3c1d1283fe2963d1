#!/usr/bin/env python3
"""Fuzz campaigns that count: each target runs under libFuzzer (cargo-fuzz) on its checked-in
corpus (fuzz/corpus/<target>/), the corpus is minimised afterwards, and one row per target and
campaign goes into fuzz/campaigns.tsv (executions, coverage, corpus, outcome), which is in the
tree too: the executions of every campaign add up, whichever machine ran it.

  fuzz/campaign.py run [--seconds S] [TARGET ...]   run a campaign (all targets by default)
  fuzz/campaign.py summary                          the README's table, from campaigns.tsv

A crash stops that target's campaign: libFuzzer saves the input under fuzz/artifacts/<target>/
and the row's outcome names it; `cargo fuzz run --sanitizer none --features libfuzzer <target>
<file>` replays it. Exit status: 0 no crash, 1 a crash, 2 usage or setup error.
"""

import argparse
import csv
import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
REPO = FUZZ_DIR.parent
LOG = FUZZ_DIR / "campaigns.tsv"
TARGETS = ["cmdline", "console", "xenstore", "blkfront", "netfront", "netwire", "handshake"]
COLUMNS = ["date", "commit", "target", "seconds", "execs", "cov", "features", "corpus_files",
           "corpus_bytes", "outcome"]
CARGO = ["cargo", "+" + os.environ.get("TOOLCHAIN", "1.95.0"), "fuzz"]
FLAGS = ["--sanitizer", "none", "--features", "libfuzzer"]
# Targets that read their input as a script of a peer's moves, choosing among them by value,
# gain little from libFuzzer's tracing of compares (it finds magic values in parsed bytes)
# and ran at half the speed with it; the parsers keep it.
SCRIPTED = {"xenstore", "blkfront", "netfront", "handshake"}


def flags(target: str) -> list[str]:
    return FLAGS + (["--no-trace-compares"] if target in SCRIPTED else [])

# libFuzzer's status lines: '#123456	DONE   cov: 2434 ft: 6530 corp: 485/3760b ...'
STATUS = re.compile(r"^#(\d+)\s+\S+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
EXECS = re.compile(r"^stat::number_of_executed_units: (\d+)")
ARTIFACT = re.compile(r"Test unit written to (\S+)")


def parse(log: str) -> dict:
    """What a libFuzzer run's output says about it."""
    out = {"execs": 0, "cov": 0, "features": 0, "artifact": None}
    for line in log.splitlines():
        m = STATUS.match(line)
        if m:
            out["execs"] = max(out["execs"], int(m.group(1)))
            out["cov"], out["features"] = int(m.group(2)), int(m.group(3))
        m = EXECS.match(line)
        if m:
            out["execs"] = int(m.group(1))
        m = ARTIFACT.search(line)
        if m:
            out["artifact"] = m.group(1)
    return out


def corpus_size(target: str) -> tuple[int, int]:
    d = FUZZ_DIR / "corpus" / target
    files = [f for f in d.iterdir() if f.is_file()] if d.is_dir() else []
    return len(files), sum(f.stat().st_size for f in files)


def commit() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                       capture_output=True, text=True, check=False)
    return r.stdout.strip() or "unknown"


def run_target(target: str, seconds: int, logs: Path) -> dict:
    corpus = FUZZ_DIR / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    cmd = CARGO + ["run"] + flags(target) + [target, str(corpus), "--",
                                     f"-max_total_time={seconds}", "-timeout=10",
                                     "-rss_limit_mb=2048", "-print_final_stats=1"]
    log_path = logs / f"{target}.log"
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            check=False).returncode
    result = parse(log_path.read_text(errors="replace"))
    result["rc"] = rc
    result["log"] = log_path
    if rc == 0:
        # Keeps only inputs that add coverage, so the tree holds a small corpus.
        subprocess.run(CARGO + ["cmin"] + flags(target) + [target, str(corpus)], cwd=REPO,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return result


def append(row: dict) -> None:
    new = not LOG.exists()
    with open(LOG, "a", newline="") as f:
        w = csv.DictWriter(f, COLUMNS, delimiter="\t", lineterminator="\n")
        if new:
            w.writeheader()
        w.writerow(row)


def read_log() -> list[dict]:
    if not LOG.exists():
        return []
    with open(LOG, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def summary(rows: list[dict]) -> str:
    """One line per target: executions summed over campaigns, the latest coverage and
    corpus, crashes."""
    lines = ["| target | executions (all campaigns) | campaigns | hours | edges covered (latest) "
             "| corpus files (bytes) | crashes |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for t in TARGETS:
        mine = [r for r in rows if r["target"] == t]
        if not mine:
            lines.append(f"| `{t}` | 0 | 0 | 0 | - | - | - |")
            continue
        execs = sum(int(r["execs"]) for r in mine)
        hours = sum(int(r["seconds"]) for r in mine) / 3600
        last = mine[-1]
        crashes = sum(1 for r in mine if r["outcome"].startswith("crash"))
        lines.append(f"| `{t}` | {execs:,} | {len(mine)} | {hours:.1f} | {last['cov']} "
                     f"| {last['corpus_files']} ({int(last['corpus_bytes']):,}) | {crashes} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--seconds", type=int, default=60)
    r.add_argument("targets", nargs="*")
    sub.add_parser("summary")
    args = ap.parse_args()
    if args.cmd == "summary":
        print(summary(read_log()))
        return 0
    targets = args.targets or TARGETS
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        print(f"campaign: unknown target(s): {' '.join(unknown)}", file=sys.stderr)
        return 2
    logs = REPO / "target" / "fuzz-logs"
    logs.mkdir(parents=True, exist_ok=True)
    crashed = False
    for t in targets:
        res = run_target(t, args.seconds, logs)
        outcome = "ok"
        if res["rc"] != 0:
            crashed = True
            outcome = f"crash:{res['artifact']}" if res["artifact"] else f"error:rc={res['rc']}"
        files, size = corpus_size(t)
        append({"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
                "commit": commit(), "target": t, "seconds": args.seconds,
                "execs": res["execs"], "cov": res["cov"], "features": res["features"],
                "corpus_files": files, "corpus_bytes": size, "outcome": outcome})
        print(f"fuzz {t}: {res['execs']:,} execs in {args.seconds} s, cov {res['cov']}, "
              f"corpus {files} files, {outcome} (log: {res['log']})", flush=True)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
