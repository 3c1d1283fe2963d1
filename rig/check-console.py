#!/usr/bin/env python3
"""Verify the guest's console integrity blocks in a console log.

The guest prints

    console-bulk: begin lines=1024
    <1024 lines of exactly 63 printable ASCII characters>
    console-bulk: end bytes=65536 fnv1a=<16 hex digits>

where fnv1a is FNV-1a 64-bit over the lines, each with its trailing '\\n' (64 bytes a line).
Every block found is recomputed from the received lines ('\\r' stripped: serial lines end in
"\\r\\r\\n"). Prints "console-bulk: verified N bytes" per good block and the reasons per broken
one. Exit status: 0 if every block is good (also when there is none: the caller decides whether
a block was required), 1 if any is broken, 2 on usage errors.

    check-console.py [LOG]            (stdin without LOG)
    check-console.py --generate [N]   print a valid block of N lines (default 1024), for tests
"""
import re
import sys

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
LINE_LEN = 63

# Markers are searched, not anchored: a marker with junk in front is still recognised, so the
# damage is reported as a broken block rather than as a missing one.
BEGIN = re.compile(rb"console-bulk: begin lines=(\d+)\s*$")
END = re.compile(rb"console-bulk: end bytes=(\d+) fnv1a=([0-9a-fA-F]{16})\s*$")
PRINTABLE = re.compile(rb"^[\x20-\x7e]*$")


def fnv1a64(data, h=FNV_OFFSET):
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def check_block(lines, declared_lines, declared_bytes, declared_hash):
    """Returns a list of problems (empty if the block is intact)."""
    problems = []
    if len(lines) != declared_lines:
        problems.append(f"line count {len(lines)}, header says {declared_lines}")
    if declared_bytes != declared_lines * (LINE_LEN + 1):
        problems.append(
            f"end marker says {declared_bytes} bytes, {declared_lines} lines make "
            f"{declared_lines * (LINE_LEN + 1)}"
        )
    bad = [
        (i, line)
        for i, line in enumerate(lines)
        if len(line) != LINE_LEN or not PRINTABLE.match(line)
    ]
    for i, line in bad[:5]:
        problems.append(f"block line {i + 1}: length {len(line)}, {line[:80]!r}")
    if len(bad) > 5:
        problems.append(f"... {len(bad) - 5} more malformed lines")
    received = b"".join(line + b"\n" for line in lines)
    if len(received) != declared_bytes:
        problems.append(f"received {len(received)} bytes, end marker says {declared_bytes}")
    got = fnv1a64(received)
    if got != declared_hash:
        problems.append(f"fnv1a {got:016x}, end marker says {declared_hash:016x}")
    return problems


def scan(stream):
    """Yields (block number, begin line number, problems, byte count) per block."""
    block = None  # (begin line number, declared lines, collected lines)
    count = 0
    for lineno, raw in enumerate(stream, 1):
        line = raw.replace(b"\r", b"").rstrip(b"\n")
        m = BEGIN.search(line)
        if m:
            if block is not None:
                count += 1
                yield count, block[0], ["a new begin marker came before the end marker"], 0
            block = (lineno, int(m.group(1)), [])
            continue
        if block is None:
            continue
        m = END.search(line)
        if m:
            count += 1
            nbytes = int(m.group(1))
            problems = check_block(block[2], block[1], nbytes, int(m.group(2), 16))
            yield count, block[0], problems, nbytes
            block = None
            continue
        block[2].append(line)
    if block is not None:
        count += 1
        yield count, block[0], [f"no end marker ({len(block[2])} lines after the begin)"], 0


def generate(nlines):
    """A valid block; line i carries its number so a lost or doubled line is easy to spot."""
    alphabet = "".join(chr(c) for c in range(0x21, 0x7F))
    lines = []
    for i in range(nlines):
        head = f"{i:05d} "
        body = "".join(alphabet[(i * 7 + j) % len(alphabet)] for j in range(LINE_LEN - len(head)))
        lines.append(head + body)
    data = "".join(line + "\n" for line in lines).encode()
    out = [f"console-bulk: begin lines={nlines}", *lines,
           f"console-bulk: end bytes={len(data)} fnv1a={fnv1a64(data):016x}"]
    return "\n".join(out) + "\n"


def main(argv):
    if argv[:1] == ["--generate"]:
        n = int(argv[1]) if len(argv) > 1 else 1024
        sys.stdout.write(generate(n))
        return 0
    if len(argv) > 1 or (argv and argv[0].startswith("-") and argv[0] != "-"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    if argv and argv[0] != "-":
        stream = open(argv[0], "rb")
    else:
        stream = sys.stdin.buffer
    broken = 0
    with stream:
        for n, begin, problems, nbytes in scan(stream):
            if problems:
                broken += 1
                print(f"console-bulk: block {n} (line {begin}) BROKEN: " + "; ".join(problems))
            else:
                print(f"console-bulk: verified {nbytes} bytes")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
