# shellcheck shell=bash
# Shared by xen-rig.py and linux-domu.sh: host tool installation and the package cache.
#
# The cache lives in $RIG_WORK (target/rig by default):
#   debs/                 .debs from `apt-get download` (file names carry the versions)
#   base-<key>/           everything built from them; <key> hashes the .deb file names and this
#                         file, so a package update or a change to how the base is built makes a
#                         new directory (older ones are deleted)
#     domu/               busybox and the front-end modules, for linux-domu.sh
#     xen                 the gunzipped hypervisor (QEMU's multiboot loader wants an ELF)
#     vmlinux             dom0 kernel (and Linux domU kernel): an ELF boots ~3 s faster than the
#                         bzImage under TCG
#     dom0.cpio.gz        dom0's root file system, without /init (added per run)
#     qemu.cpio.gz        QEMU's Xen device model and the libraries dom0.cpio.gz lacks, appended
#                         only for runs with a qdisk disk (it triples the initramfs)
#     kver                the kernel version (module directory name)

RIG_XEN_VER=4.17

rig_log() { printf 'rig-host: %s\n' "$*" >&2; }
rig_die() { printf 'rig-host: error: %s\n' "$*" >&2; exit 2; }

# apt-cache/apt-get download need package lists; a fresh machine may not have them yet.
rig_apt_lists_ok=""
rig_apt_update_once() {
    [[ -n $rig_apt_lists_ok ]] && return 0
    rig_log "apt-get update"
    apt-get update -qq >&2 || rig_die "apt-get update failed"
    rig_apt_lists_ok=1
}

# Installs what the host side needs. Only commands that are missing trigger apt-get.
rig_ensure_host_tools() {
    local -a need=()
    command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
    command -v cpio >/dev/null || need+=(cpio)
    command -v python3 >/dev/null || need+=(python3)
    command -v timeout >/dev/null || need+=(coreutils)
    ((${#need[@]})) || return 0
    rig_log "installing ${need[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2; then
        rig_apt_update_once
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 ||
            rig_die "apt-get install ${need[*]} failed"
    fi
}

# The Debian kernel that linux-image-amd64 currently points at (not -cloud: it lacks XEN_DOM0).
rig_kernel_pkg() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9].*-amd64$/ && !found { print $2; found = 1 }'
}

# Everything dom0 and the Linux test domU are made of. The library list was checked against
# `ldd` of the binaries below; rig_build_base fails loudly if one goes missing.
rig_packages() {
    local kpkg=$1
    printf '%s\n' \
        "xen-hypervisor-$RIG_XEN_VER-amd64" "xen-utils-$RIG_XEN_VER" xen-utils-common xenstore-utils \
        libxencall1 libxendevicemodel1 libxenevtchn1 libxenforeignmemory1 libxengnttab1 \
        libxenhypfs1 "libxenmisc$RIG_XEN_VER" libxenstore4 libxentoolcore1 libxentoollog1 \
        libyajl2 busybox-static "$kpkg" "${RIG_QEMU_PKGS[@]}"
}

# QEMU as dom0's block backend (backendtype=qdisk): Debian's qemu-system-xen and the libraries
# its ldd lists beyond those of a minimal Debian (libc, zlib, ...), so that the base does not
# depend on what happens to be installed on the host; qemu-system-data for the keymaps (libxl
# passes `-vnc none`, and QEMU exits "could not read keymap file: 'en-us'" without them).
RIG_QEMU_PKGS=(qemu-system-xen qemu-system-data libfdt1 libglib2.0-0 libjpeg62-turbo libpixman-1-0 libspice-server1
    libusb-1.0-0 libffi8 libpcre2-8-0 libgstreamer1.0-0 libgstreamer-plugins-base1.0-0 liborc-0.4-0
    liblz4-1 libopus0 libsasl2-2 libunwind8 libdw1 libelf1 libudev1 libssl3 libstdc++6)

# Prints "<url> <file>" per package; apt-get lists nothing for files already in the current
# directory, so this runs in an empty one.
rig_print_uris() {
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download --print-uris "$@") | awk '{ gsub("\047", "", $1); print $1, $2 }'
    rmdir "$tmp"
}

# Sets RIG_BASE to an up-to-date base directory, downloading and building what is missing.
rig_prepare_base() {
    local work=$RIG_WORK kpkg uris
    mkdir -p "$work/debs"

    # Fast path: asking apt for the versions costs ~1 s; they can only have changed if the package
    # lists did (apt-get update) or this file did.
    local current=$work/base.current stamp cached_stamp cached_base
    stamp="$(stat -c %Y /var/lib/apt/lists 2>/dev/null)-$(sha256sum <"${BASH_SOURCE[0]}" | cut -c1-16)"
    if [[ -f $current ]] && read -r cached_stamp cached_base <"$current" &&
        [[ $cached_stamp == "$stamp" && -f $cached_base/ok ]]; then
        RIG_BASE=$cached_base
        export RIG_BASE
        return 0
    fi

    kpkg=$(rig_kernel_pkg)
    if [[ -z $kpkg ]]; then
        rig_apt_update_once
        kpkg=$(rig_kernel_pkg)
        [[ -n $kpkg ]] || rig_die "cannot resolve linux-image-amd64 to a kernel package"
    fi
    local -a pkgs
    mapfile -t pkgs < <(rig_packages "$kpkg")
    uris=$(rig_print_uris "${pkgs[@]}" 2>/dev/null) || uris=""
    if [[ $(wc -l <<<"$uris") -ne ${#pkgs[@]} ]]; then
        rig_apt_update_once
        uris=$(rig_print_uris "${pkgs[@]}") || rig_die "apt-get download --print-uris failed"
    fi
    [[ $(wc -l <<<"$uris") -eq ${#pkgs[@]} ]] || rig_die "some rig packages are not available: ${pkgs[*]}"

    local key
    key=$({ awk '{ print $2 }' <<<"$uris"; sha256sum <"${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-12)
    RIG_BASE=$work/base-$key
    export RIG_BASE
    if [[ -f $RIG_BASE/ok ]]; then
        printf '%s %s\n' "$stamp" "$RIG_BASE" >"$current"
        return 0
    fi

    # Serialise concurrent first runs on one cache.
    exec {lockfd}>"$work/.lock"
    flock "$lockfd"
    if [[ -f $RIG_BASE/ok ]]; then
        printf '%s %s\n' "$stamp" "$RIG_BASE" >"$current"
        exec {lockfd}>&-
        return 0
    fi

    local -a files missing=()
    local name
    mapfile -t files < <(awk '{ print $2 }' <<<"$uris")
    for name in "${files[@]}"; do
        [[ -f $work/debs/$name ]] || missing+=("$name")
    done
    if ((${#missing[@]})); then
        rig_log "downloading ${#missing[@]} packages"
        # Root's apt sandboxes downloads as _apt, which may not write to the cache directory.
        (cd "$work/debs" && apt-get download -q -o APT::Sandbox::User=root "${pkgs[@]}" >&2) ||
            rig_die "apt-get download failed"
        for name in "${missing[@]}"; do
            [[ -f $work/debs/$name ]] || rig_die "download did not produce $name"
        done
    fi

    rig_log "building $RIG_BASE"
    local new=$RIG_BASE.new
    rm -rf "$new"
    mkdir -p "$new/tree"
    for name in "${files[@]}"; do
        dpkg-deb -x "$work/debs/$name" "$new/tree"
    done
    rig_build_base "$new" "${kpkg#linux-image-}"
    touch "$new/ok"

    # Only one base is kept: the others belong to older package versions.
    local old
    for old in "$work"/base-*; do
        [[ $old == "$new" ]] || rm -rf "$old"
    done
    mv "$new" "$RIG_BASE"
    printf '%s %s\n' "$stamp" "$RIG_BASE" >"$current"
    # Drop .debs no longer referenced.
    for old in "$work"/debs/*.deb; do
        printf '%s\n' "${files[@]}" | grep -qxF "${old##*/}" || rm -f "$old"
    done
    exec {lockfd}>&-
}

# Copies binary $1 (a path inside $tree or on the host) plus the libraries ldd resolves for it
# into root $2. Host libraries (libc & co.) are fine to copy: the host is Debian 12 too.
rig_copy_with_libs() {
    local bin=$1 root=$2 tree=$3 lib out
    local -a libs
    out=$(LD_LIBRARY_PATH=$tree/usr/lib/x86_64-linux-gnu:$tree/lib/x86_64-linux-gnu ldd "$bin") || rig_die "ldd $bin failed"
    if grep -q 'not found' <<<"$out"; then
        rig_die "missing libraries for $bin: $(grep 'not found' <<<"$out" | tr -s ' \t\n' ' ')"
    fi
    mapfile -t libs < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 }' <<<"$out")
    for lib in "${libs[@]}"; do
        [[ -e $root/lib/x86_64-linux-gnu/${lib##*/} ]] || cp -L "$lib" "$root/lib/x86_64-linux-gnu/"
    done
}

rig_build_base() {
    local base=$1 kver=$2 tree=$1/tree
    echo "$kver" >"$base/kver"
    gzip -dc "$tree/boot/xen-$RIG_XEN_VER-amd64.gz" >"$base/xen"
    rig_extract_vmlinux "$tree/boot/vmlinuz-$kver" "$base/vmlinux"

    local root=$base/dom0root
    local xbin=/usr/lib/xen-$RIG_XEN_VER/bin
    mkdir -p "$root"/{bin,sbin,dev,proc,sys,run,tmp,etc/xen,lib/x86_64-linux-gnu,lib64,lib/modules/rig} \
        "$root"/usr/{bin,sbin} "$root$xbin" "$root"/var/{lib/xen,lib/xenstored,log/xen/console,lock}
    ln -s ../run "$root/var/run"

    cp "$tree/bin/busybox" "$root/bin/busybox"
    local applet
    for applet in $("$tree/bin/busybox" --list); do
        [[ $applet == busybox ]] || ln -sf busybox "$root/bin/$applet"
    done

    # The hotplug scripts are bash and lock with flock (see NOTES.md); busybox's are not enough.
    rig_copy_with_libs /bin/bash "$root" "$tree"
    cp /bin/bash "$root/bin/bash"
    rig_copy_with_libs /usr/bin/flock "$root" "$tree"
    cp /usr/bin/flock "$root/bin/flock"

    local b
    for b in xl xenstored oxenstored xenconsoled xen-init-dom0 xenctx libxl-save-helper; do
        rig_copy_with_libs "$tree$xbin/$b" "$root" "$tree"
        cp "$tree$xbin/$b" "$root$xbin/$b"
        ln -s "$xbin/$b" "$root/usr/sbin/$b"
    done
    # xenstore-read/-write/... are one binary behind symlinks; the hotplug scripts call them.
    rig_copy_with_libs "$tree/usr/bin/xenstore" "$root" "$tree"
    cp "$tree/usr/bin/xenstore" "$root/usr/bin/xenstore"
    for b in chmod exists list ls read rm watch write; do
        ln -s xenstore "$root/usr/bin/xenstore-$b"
    done
    # xl aborts in pthread_cancel without it, and ldd does not list it (dlopen'ed).
    cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$root/lib/x86_64-linux-gnu/"
    cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"

    cp -a "$tree/etc/xen/scripts" "$root/etc/xen/"
    # oxenstored dies at start without it (Unix_error EPERM "setrlimit"); its quotas are the
    # ones a Debian dom0 runs with, on purpose.
    cp "$tree/etc/xen/oxenstored.conf" "$root/etc/xen/"
    # dom0_mem is fixed on Xen's command line: never balloon dom0.
    printf 'autoballoon="off"\n' >"$root/etc/xen/xl.conf"

    local m f
    for m in "${RIG_DOM0_MODULES[@]}"; do
        f=$(find "$tree/lib/modules/$kver" -name "$m.ko" -print -quit)
        [[ -n $f ]] || rig_die "module $m.ko not found in $kver"
        cp "$f" "$root/lib/modules/rig/"
    done
    printf '%s\n' "${RIG_DOM0_MODULES[@]}" >"$root/lib/modules/rig/load-order"

    (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -6) >"$base/dom0.cpio.gz"

    # The device model libxl starts for a qdisk disk: what it adds to dom0's tree goes into a
    # cpio of its own (new directories included), unpacked over dom0.cpio.gz when needed.
    (cd "$root" && find . | LC_ALL=C sort) >"$base/dom0.files"
    local qemu=/usr/libexec/xen-qemu-system-i386
    mkdir -p "$root/usr/libexec"
    rig_copy_with_libs "$tree$qemu" "$root" "$tree"
    cp "$tree$qemu" "$root$qemu"
    mkdir -p "$root/usr/share/qemu"
    cp -a "$tree/usr/share/qemu/keymaps" "$root/usr/share/qemu/"
    (cd "$root" && find . | LC_ALL=C sort | comm -13 "$base/dom0.files" - |
        cpio -o -H newc -R 0:0 --quiet | gzip -6) >"$base/qemu.cpio.gz"
    rm -rf "$root" "$base/dom0.files"

    mkdir -p "$base/domu"
    cp "$tree/bin/busybox" "$base/domu/"
    for m in xen-blkfront xen-netfront; do
        f=$(find "$tree/lib/modules/$kver" -name "$m.ko" -print -quit)
        [[ -n $f ]] || rig_die "module $m.ko not found in $kver"
        cp "$f" "$base/domu/"
    done
    # The extracted tree is ~0.5 GB, mostly kernel modules nobody needs.
    rm -rf "$tree"
}

# dom0 loads these with insmod in this order (dependencies first; no depmod needed).
RIG_DOM0_MODULES=(xen-privcmd xenfs xen-evtchn xen-gntdev xen-gntalloc xen-blkback xen-netback loop llc stp bridge)

# The bzImage holds an xz stream (Debian: CONFIG_KERNEL_XZ); decompress from its magic, like
# the kernel's scripts/extract-vmlinux, and ignore the trailing data.
rig_extract_vmlinux() {
    python3 - "$1" "$2" <<'EOF'
import lzma, sys
data = open(sys.argv[1], "rb").read()
pos = data.find(b"\xfd7zXZ\x00")
while pos >= 0:
    try:
        out = lzma.LZMADecompressor().decompress(data[pos:])
        if out[:4] == b"\x7fELF":
            open(sys.argv[2], "wb").write(out)
            sys.exit(0)
    except lzma.LZMAError:
        pass
    pos = data.find(b"\xfd7zXZ\x00", pos + 1)
sys.exit("no xz-compressed ELF found in " + sys.argv[1])
EOF
}
