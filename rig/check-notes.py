#!/usr/bin/env python3
"""Checks the Xen ELF notes of the guest image against what the loaders need.

libxc's domain builder (PV) reads GUEST_OS, XEN_VERSION, VIRT_BASE, PADDR_OFFSET, ENTRY,
HYPERCALL_PAGE, FEATURES, LOADER and PAE_MODE; QEMU's -kernel (and Xen's PVH builder) reads
PHYS32_ENTRY from a PT_NOTE segment with 4-byte alignment. Addresses are checked against the
image's symbols (startup_xen, hypercall_page, pvh_start32).

    check-notes.py IMAGE
"""
import struct
import subprocess
import sys

KERNEL_BASE = 0xFFFFFFFF80000000
PT_NOTE = 4


def xen_notes(data):
    (e_phoff,) = struct.unpack_from("<Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    notes, aligns = {}, []
    for i in range(e_phnum):
        p_type, _, p_offset, _, _, p_filesz, _, p_align = struct.unpack_from(
            "<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        if p_type != PT_NOTE:
            continue
        aligns.append(p_align)
        off, end = p_offset, p_offset + p_filesz
        while off + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", data, off)
            name = data[off + 12: off + 12 + namesz].rstrip(b"\0")
            desc_off = off + 12 + ((namesz + 3) & ~3)
            if name == b"Xen":
                notes[ntype] = data[desc_off: desc_off + descsz]
            off = desc_off + ((descsz + 3) & ~3)
    return notes, aligns


def symbols(image):
    out = subprocess.run(["nm", image], check=True, capture_output=True, text=True).stdout
    return {f[2]: int(f[0], 16) for f in (l.split() for l in out.splitlines()) if len(f) == 3}


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    image = sys.argv[1]
    data = open(image, "rb").read()
    notes, aligns = xen_notes(data)
    sym = symbols(image)
    q = lambda v: struct.pack("<Q", v)
    expected = {
        6: ("GUEST_OS", b"rust-unikernel\0"),
        5: ("XEN_VERSION", b"xen-3.0\0"),
        3: ("VIRT_BASE", q(KERNEL_BASE)),
        4: ("PADDR_OFFSET", q(0)),
        1: ("ENTRY", q(sym["startup_xen"])),
        2: ("HYPERCALL_PAGE", q(sym["hypercall_page"])),
        10: ("FEATURES", b"!writable_page_tables\0"),
        8: ("LOADER", b"generic\0"),
        9: ("PAE_MODE", b"yes\0"),
        18: ("PHYS32_ENTRY", struct.pack("<I", sym["pvh_start32"] - KERNEL_BASE)),
    }
    problems = []
    if aligns != [4]:
        problems.append(f"want one PT_NOTE with p_align 4 (QEMU needs it), found {aligns}")
    if sym["hypercall_page"] % 4096:
        problems.append("hypercall_page is not page-aligned")
    for ntype, (name, want) in sorted(expected.items()):
        got = notes.get(ntype)
        if got != want:
            problems.append(f"{name} (type {ntype}): want {want!r}, found {got!r}")
    for p in problems:
        print(f"check-notes: {p}", file=sys.stderr)
    if not problems:
        print(f"check-notes: {len(expected)} Xen ELF notes present and correct")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
