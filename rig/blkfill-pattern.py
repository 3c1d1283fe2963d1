#!/usr/bin/env python3
"""The disk pattern of the guest's `app=blkfill seed=N` (project README), regenerated on the host.

For each 512-byte sector s = 0..n-1:
    state = seed XOR (s * 0x9E3779B97F4A7C15 mod 2^64); if state == 0: state = 1
    64 times: state ^= state << 13 (mod 2^64); state ^= state >> 7; state ^= state << 17 (mod 2^64)
              emit state as 8 little-endian bytes

    rig/blkfill-pattern.py --sha256 SECTORS SEED    prints the pattern's sha256 (hex)
    rig/blkfill-pattern.py --write FILE SECTORS SEED writes the pattern to FILE ('-': stdout)
    rig/blkfill-pattern.py --self-test               checks the generator against a plain one

SEED is a u64 (decimal or 0x hex). xen-rig.py uses --sha256 to check a `blkfill <dev> done
sectors=<n> seed=<u64>` line against dom0's sha256 of the disk after the run.
"""
import hashlib
import struct
import sys

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
PACK = struct.Struct("<64Q").pack


def sector(seed, s):
    """The 512 bytes of sector s."""
    x = (seed ^ (s * GOLDEN)) & MASK
    if x == 0:
        x = 1
    words = []
    append = words.append
    for _ in range(64):
        x ^= (x << 13) & MASK
        x ^= x >> 7
        x ^= (x << 17) & MASK
        append(x)
    return PACK(*words)


def chunks(sectors, seed, per_chunk=2048):
    """The pattern in chunks of up to per_chunk sectors (1 MiB)."""
    for start in range(0, sectors, per_chunk):
        yield b"".join(sector(seed, s) for s in range(start, min(sectors, start + per_chunk)))


def plain_sector(seed, s):
    """Straight transcription of the spec, one byte at a time: the reference for --self-test."""
    state = seed ^ ((s * GOLDEN) % 2**64)
    if state == 0:
        state = 1
    out = bytearray()
    for _ in range(64):
        state ^= (state << 13) % 2**64
        state ^= state >> 7
        state ^= (state << 17) % 2**64
        out += bytes((state >> (8 * i)) & 0xFF for i in range(8))
    return bytes(out)


def self_test():
    # The guest's unit test (guest/src/apps/pattern.rs): seed 0, sector 0 starts at state 1.
    assert struct.unpack_from("<Q", sector(0, 0))[0] == 0x40822041
    seeds = [0, 1, 42, MASK, GOLDEN, 0x0123456789ABCDEF]
    for seed in seeds:
        for s in [0, 1, 2, 7, 1000, 131071]:
            assert sector(seed, s) == plain_sector(seed, s), (seed, s)
    # seed == s * GOLDEN (mod 2^64) makes the state 0: it must become 1.
    assert sector(GOLDEN * 3 & MASK, 3) == plain_sector(1, 0) == sector(1, 0)
    data = b"".join(chunks(5000, 42))
    assert len(data) == 5000 * 512
    assert data == b"".join(plain_sector(42, s) for s in range(5000))
    assert hashlib.sha256(data).hexdigest() == digest(5000, 42)
    print("blkfill-pattern: self-test ok")


def digest(sectors, seed):
    h = hashlib.sha256()
    for c in chunks(sectors, seed):
        h.update(c)
    return h.hexdigest()


def num(text, what):
    try:
        v = int(text, 0)
    except ValueError:
        sys.exit(f"blkfill-pattern: {what} '{text}' is not a number")
    if not 0 <= v <= MASK:
        sys.exit(f"blkfill-pattern: {what} {v} out of range")
    return v


def main(argv):
    if argv[:1] == ["--self-test"] and len(argv) == 1:
        self_test()
    elif argv[:1] == ["--sha256"] and len(argv) == 3:
        print(digest(num(argv[1], "SECTORS"), num(argv[2], "SEED")))
    elif argv[:1] == ["--write"] and len(argv) == 4:
        sectors, seed = num(argv[2], "SECTORS"), num(argv[3], "SEED")
        out = sys.stdout.buffer if argv[1] == "-" else open(argv[1], "wb")
        with out:
            for c in chunks(sectors, seed):
                out.write(c)
    else:
        sys.exit(__doc__.split("\n\n")[2])


if __name__ == "__main__":
    main(sys.argv[1:])
