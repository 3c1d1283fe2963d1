#!/usr/bin/env bash
# Builds a Debian Linux PV domU (the dom0 kernel's bzImage + a busybox initramfs running
# linux-domu-init.sh) into WORK/linux-domu/: the peer the project benchmarks against, and a
# stand-in guest for testing the rig.
#
#   rig/linux-domu.sh [--work DIR]      prints the kernel path; then e.g.
#   rig/xen-rig.sh target/rig/linux-domu/vmlinux rig/linux-domu.cfg 'memory=128' 'memory=256'
#
# rig/linux-domu.cfg names the ramdisk as ../target/rig/linux-domu/initrd.gz (the default WORK);
# WORK/linux-domu/linux-domu.cfg is the same file with absolute paths, for any WORK.
set -euo pipefail

RIG_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$RIG_DIR/common.sh"

RIG_WORK=${RIG_WORK:-$(dirname "$RIG_DIR")/target/rig}
while (($#)); do
    case $1 in
    --work) RIG_WORK=${2:?}; shift 2 ;;
    *) rig_die "usage: $0 [--work DIR]" ;;
    esac
done
mkdir -p "$RIG_WORK"
RIG_WORK=$(cd "$RIG_WORK" && pwd)
export RIG_WORK

rig_ensure_host_tools
rig_prepare_base

out=$RIG_WORK/linux-domu
# Rebuilt when the base (packages) or one of the files it is made from changed.
stamp="$RIG_BASE $(cat "$RIG_DIR/linux-domu.sh" "$RIG_DIR/linux-domu-init.sh" "$RIG_DIR/check-console.py" | sha256sum | cut -c1-16)"
if [[ -f $out/stamp && $(cat "$out/stamp") == "$stamp" ]]; then
    printf '%s\n' "$out/vmlinux"
    exit 0
fi

rm -rf "$out"
root=$out/root
mkdir -p "$root/bin" "$root/lib/modules" "$root/tmp"
cp "$RIG_BASE/domu/busybox" "$root/bin/busybox"
cp "$RIG_DIR/linux-domu-init.sh" "$root/init"
chmod 755 "$root/init"
cp "$RIG_BASE"/domu/*.ko "$root/lib/modules/"
# The console integrity block the project's guest also prints, precomputed here: Linux's
# busybox has no 64-bit arithmetic to hash it at run time.
python3 "$RIG_DIR/check-console.py" --generate >"$root/bulk.txt"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -6) >"$out/initrd.gz"
rm -rf "$root"
# The ELF, not the bzImage: libxc would spend ~6 s of TCG time unpacking the bzImage's xz
# payload in every run (a gzipped ELF ~4 s); the 63 MB it adds to dom0's initramfs cost ~0.3 s.
cp "$RIG_BASE/vmlinux" "$out/vmlinux"
sed -e "s|^kernel = .*|kernel = \"$out/vmlinux\"|" -e "s|^ramdisk = .*|ramdisk = \"$out/initrd.gz\"|" \
    "$RIG_DIR/linux-domu.cfg" >"$out/linux-domu.cfg"
printf '%s\n' "$stamp" >"$out/stamp"
printf '%s\n' "$out/vmlinux"
