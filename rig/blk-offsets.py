#!/usr/bin/env python3
"""The offsets of the project guest's random-read benchmarks, for the Linux peer's fio.

    rig/blk-offsets.py --iolog DEV [--reads N] [--region-mib M]   a fio version 2 iolog
    rig/blk-offsets.py --fingerprint [--reads N] [--region-mib M] one line that names the list

guest/src/bench.rs draws each 4 KiB read of blk_rand_read_4k_qd* from a fresh
crate::selftest::XorShift(0x5eed_b10c): sector below(REGION / 4096) * 8. Replaying the same
list makes both sides read the same blocks in the same order (a disk's or a backend cache's
behaviour depends on which). The guest prints the same fingerprint line, so a reader of the two
logs can see they did.

The log has no closing "DEV close": fio would process it after the last read, find the log
empty and stop without reaping the reads still in flight. Without it, fio stops on
--number_ios=N (which the Linux peer passes) and waits for them; fio closes the file at the end
of the job anyway.
"""

import argparse
import sys

SEED = 0x5EED_B10C
MASK = (1 << 64) - 1
BLOCK = 4096


def offsets(reads, region):
    """Byte offsets, as the guest's XorShift::below(region / 4096) * 8 sectors of 512 bytes."""
    x = SEED
    for _ in range(reads):
        x ^= (x << 13) & MASK
        x ^= x >> 7
        x ^= (x << 17) & MASK
        yield x % (region // BLOCK) * BLOCK


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--iolog", metavar="DEV")
    what.add_argument("--fingerprint", action="store_true")
    p.add_argument("--reads", type=int, default=16384)
    p.add_argument("--region-mib", type=int, default=64)
    a = p.parse_args()
    if a.reads < 3 or a.region_mib < 1:
        p.error("needs at least 3 reads and 1 MiB")
    offs = list(offsets(a.reads, a.region_mib << 20))
    if a.fingerprint:
        print(
            f"offsets: xorshift64 seed {SEED:#x}, {a.reads} reads of 4 KiB in the first "
            f"{a.region_mib} MiB, first {offs[0]},{offs[1]},{offs[2]} bytes, sum {sum(offs)}"
        )
        return
    out = [f"fio version 2 iolog\n{a.iolog} add\n{a.iolog} open\n"]
    out += [f"{a.iolog} read {o} {BLOCK}\n" for o in offs]
    sys.stdout.write("".join(out))


if __name__ == "__main__":
    main()
