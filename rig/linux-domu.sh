#!/usr/bin/env bash
# Builds a Debian Linux PV domU (the dom0 kernel's bzImage + a busybox initramfs running
# linux-domu-init.sh) into WORK/linux-domu/: the peer the project benchmarks against, and a
# stand-in guest for testing the rig.
#
#   rig/linux-domu.sh [--work DIR]      prints the kernel path; then e.g.
#   rig/xen-rig.py target/rig/linux-domu/vmlinux rig/linux-domu.cfg 'memory=128' 'memory=256'
#   rig/linux-domu.sh [--work DIR] --fio-tree ROOT
#                                       only puts the initramfs's fio into ROOT (for
#                                       rig/test-linux-bench.sh)
#
# rig/linux-domu.cfg names the ramdisk as ../target/rig/linux-domu/initrd.gz (the default WORK);
# WORK/linux-domu/linux-domu.cfg is the same file with absolute paths, for any WORK.
#
# The block benchmark rows run Debian's fio. Its binary links the libraries of every engine
# Debian built it with (librados, libgfapi, libibverbs, ...: ~80 MB), which the rows never use:
# rig/fio-stubs.py makes one small library that stands in for all of them. Its packages have a
# cache of their own, WORK/debs-peer/ (file names carry the versions).
set -euo pipefail

RIG_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$RIG_DIR/common.sh"

RIG_WORK=${RIG_WORK:-$(dirname "$RIG_DIR")/target/rig}
fio_tree=""
while (($#)); do
    case $1 in
    --work) RIG_WORK=${2:?}; shift 2 ;;
    --fio-tree) fio_tree=${2:?}; shift 2 ;;
    *) rig_die "usage: $0 [--work DIR] [--fio-tree ROOT]" ;;
    esac
done
mkdir -p "$RIG_WORK"
RIG_WORK=$(cd "$RIG_WORK" && pwd)
export RIG_WORK

PEER_PKGS=(fio libaio1 libnuma1)
# What fio really runs with: libaio and libnuma from PEER_PKGS, the others from the host, which
# is Debian 12 too (dom0's tools take libc & co. from it as well). fio-stubs.py stubs the rest.
PEER_FIO_LIBS=(libaio.so.1 libnuma.so.1 libz.so.1 libm.so.6 libc.so.6)
PEER_HOST_LIBDIR=/lib/x86_64-linux-gnu

# Sets PEER_DEBS to the .deb file names of PEER_PKGS that apt would download now.
peer_deb_names() {
    local uris
    uris=$(rig_print_uris "${PEER_PKGS[@]}" 2>/dev/null) || uris=""
    if [[ $(wc -l <<<"$uris") -ne ${#PEER_PKGS[@]} ]]; then
        rig_apt_update_once
        uris=$(rig_print_uris "${PEER_PKGS[@]}") || rig_die "apt-get download --print-uris ${PEER_PKGS[*]} failed"
    fi
    [[ $(wc -l <<<"$uris") -eq ${#PEER_PKGS[@]} ]] || rig_die "some peer packages are not available: ${PEER_PKGS[*]}"
    mapfile -t PEER_DEBS < <(awk '{ print $2 }' <<<"$uris")
}

# Downloads the PEER_DEBS the cache lacks and drops the files of other versions.
peer_fetch_debs() {
    local cache=$RIG_WORK/debs-peer name old
    local -a missing=()
    mkdir -p "$cache"
    for name in "${PEER_DEBS[@]}"; do
        [[ -f $cache/$name ]] || missing+=("$name")
    done
    if ((${#missing[@]})); then
        rig_log "downloading ${missing[*]}"
        # Root's apt sandboxes downloads as _apt, which may not write to the cache directory.
        if ! (cd "$cache" && apt-get download -q -o APT::Sandbox::User=root "${PEER_PKGS[@]}" >&2); then
            rig_apt_update_once
            (cd "$cache" && apt-get download -q -o APT::Sandbox::User=root "${PEER_PKGS[@]}" >&2) ||
                rig_die "apt-get download ${PEER_PKGS[*]} failed"
        fi
        for name in "${missing[@]}"; do
            [[ -f $cache/$name ]] || rig_die "download did not produce $name"
        done
    fi
    for old in "$cache"/*.deb; do
        printf '%s\n' "${PEER_DEBS[@]}" | grep -qxF "${old##*/}" || rm -f "$old"
    done
}

# peer_fio_tree ROOT: fio as the initramfs has it: ROOT/usr/bin/fio, the libraries it runs with
# and the stub library in ROOT/lib/x86_64-linux-gnu, the loader in ROOT/lib64. Fails unless
# fio, with exactly these libraries, starts.
peer_fio_tree() {
    local root tmp name lib dir found out libdir
    root=$(mkdir -p "$1" && cd "$1" && pwd)
    libdir=$root/lib/x86_64-linux-gnu
    peer_deb_names
    peer_fetch_debs
    tmp=$(mktemp -d)
    for name in "${PEER_DEBS[@]}"; do
        dpkg-deb -x "$RIG_WORK/debs-peer/$name" "$tmp" || rig_die "cannot unpack $name"
    done
    mkdir -p "$root/usr/bin" "$libdir" "$root/lib64"
    [[ -x $tmp/usr/bin/fio ]] || rig_die "no usr/bin/fio in ${PEER_DEBS[*]}"
    cp "$tmp/usr/bin/fio" "$root/usr/bin/fio"
    for lib in "${PEER_FIO_LIBS[@]}"; do
        found=""
        for dir in "$tmp/usr/lib/x86_64-linux-gnu" "$tmp/lib/x86_64-linux-gnu" "$PEER_HOST_LIBDIR"; do
            if [[ -e $dir/$lib ]]; then found=$dir/$lib; break; fi
        done
        [[ -n $found ]] || rig_die "$lib is neither in ${PEER_DEBS[*]} nor in $PEER_HOST_LIBDIR"
        cp -L "$found" "$libdir/$lib"
    done
    cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/" || rig_die "no /lib64/ld-linux-x86-64.so.2 on the host"
    rm -rf "$tmp"
    python3 "$RIG_DIR/fio-stubs.py" "$root/usr/bin/fio" "$libdir" "${PEER_FIO_LIBS[@]/#/$libdir/}" ||
        rig_die "fio-stubs.py failed"

    # The tree's own loader, searching the tree first: a library it resolves anywhere else (the
    # host's) would be missing in the domU.
    local -a ldso=("$root/lib64/ld-linux-x86-64.so.2" --library-path "$libdir")
    out=$("${ldso[@]}" --list "$root/usr/bin/fio") || rig_die "ld.so --list $root/usr/bin/fio failed: $out"
    if grep -q 'not found' <<<"$out"; then
        rig_die "fio's libraries missing from the tree: $(grep 'not found' <<<"$out" | tr -s ' \t\n' ' ')"
    fi
    if awk -v d="$root/" '$2 == "=>" && index($3, d) != 1 { bad = 1 } END { exit !bad }' <<<"$out"; then
        rig_die "fio resolves libraries outside the tree: $(tr -s ' \t\n' ' ' <<<"$out")"
    fi
    out=$("${ldso[@]}" "$root/usr/bin/fio" --version 2>&1) || rig_die "the tree's fio does not start: $out"
    [[ $out == fio-* ]] || rig_die "the tree's fio --version printed: $out"
}

if [[ -n $fio_tree ]]; then
    peer_fio_tree "$fio_tree"
    exit 0
fi

rig_ensure_host_tools
rig_prepare_base
[[ -f $RIG_DIR/netbench.c ]] ||
    rig_die "rig/netbench.c is missing: the initramfs's far end of dom0's network benchmarks (rigtest=bench) is built from it"
peer_deb_names

out=$RIG_WORK/linux-domu
# Rebuilt when the base (packages), the peer's packages or one of the files it is made from
# changed, the host's libraries and compiler included.
stamp="$RIG_BASE ${PEER_DEBS[*]} $(
    {
        cat "$RIG_DIR"/{linux-domu.sh,linux-domu-init.sh,linux-domu.cfg,check-console.py,fio-stubs.py,blk-offsets.py,netbench.c}
        cat /lib64/ld-linux-x86-64.so.2 "${PEER_FIO_LIBS[@]/#/$PEER_HOST_LIBDIR/}" 2>/dev/null
        gcc --version
    } | sha256sum | cut -c1-16
)"
if [[ -f $out/stamp && $(cat "$out/stamp") == "$stamp" ]]; then
    printf '%s\n' "$out/vmlinux"
    exit 0
fi

rm -rf "$out"
root=$out/root
mkdir -p "$root/bin" "$root/lib/modules" "$root/tmp" "$root/bench"
cp "$RIG_BASE/domu/busybox" "$root/bin/busybox"
cp "$RIG_DIR/linux-domu-init.sh" "$root/init"
chmod 755 "$root/init"
cp "$RIG_BASE"/domu/*.ko "$root/lib/modules/"
# The console integrity block the project's guest also prints, precomputed here: Linux's
# busybox has no 64-bit arithmetic to hash it at run time.
python3 "$RIG_DIR/check-console.py" --generate >"$root/bulk.txt"
peer_fio_tree "$root"
# The guest's random-read offsets (no 64-bit arithmetic at run time either).
python3 "$RIG_DIR/blk-offsets.py" --iolog /dev/xvdb >"$root/bench/rand.iolog"
python3 "$RIG_DIR/blk-offsets.py" --fingerprint >"$root/bench/rand.offsets"
gcc -static -O2 -Wall -Wextra -Werror -o "$root/bin/netbench" "$RIG_DIR/netbench.c" ||
    rig_die "cannot build rig/netbench.c (needs gcc and libc6-dev)"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -6) >"$out/initrd.gz"
rig_log "linux-domu: initramfs $(du -sk "$root" | cut -f1) KiB unpacked, $(($(stat -c %s "$out/initrd.gz") / 1024)) KiB gzipped"
rm -rf "$root"
# The ELF, not the bzImage: libxc would spend ~6 s of TCG time unpacking the bzImage's xz
# payload in every run (a gzipped ELF ~4 s); the 63 MB it adds to dom0's initramfs cost ~0.3 s.
cp "$RIG_BASE/vmlinux" "$out/vmlinux"
sed -e "s|^kernel = .*|kernel = \"$out/vmlinux\"|" -e "s|^ramdisk = .*|ramdisk = \"$out/initrd.gz\"|" \
    "$RIG_DIR/linux-domu.cfg" >"$out/linux-domu.cfg"
printf '%s\n' "$stamp" >"$out/stamp"
printf '%s\n' "$out/vmlinux"
