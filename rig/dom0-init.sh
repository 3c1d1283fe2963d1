#!/bin/sh
# dom0's /init (busybox sh). xen-rig.sh appends it, the guest files and the runs to the cached
# dom0 initramfs. Layout it relies on:
#   /rig/disks             "<path> <MiB>" per scratch disk, recreated empty before every run
#   /rig/run/<N>/cfg       xl config for run N (kernel/ramdisk/disk paths already rewritten)
#   /rig/run/<N>/args      xl key=value overrides, one per line
#   /rig/run/<N>/name      the domain's name (for xenconsoled's guest-<name>.log)
#   /rig/run/<N>/label     the RUN string as given, for the markers
#   /rig/xl-opts           options for xl itself (-vvv or empty)
#   /rig/run-timeout       seconds after which a guest is destroyed (0: never)
#   /rig/hotplug/          replacements for /etc/xen/scripts (--fast-hotplug), if present
#   /rig/guest/System.map  the guest's symbols for xenctx, if the host had `nm` (may be empty)
# The host parses the "rig: " lines; keep their format in step with xen-rig.sh.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/xen-4.17/bin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
# devtmpfs lacks these; the hotplug scripts' locking.sh spins on /dev/stdin without them.
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr

# Keep dom0's kernel messages off the console from here on: they would interleave with guest
# lines. They are printed after each run instead, prefixed (see dump_dmesg).
dmesg -n 1

say() { echo "rig: $*"; }
die() {
    say "dom0 setup failed: $*"
    dmesg | sed 's/^/rig: dom0: /'
    poweroff -f
}
dump_dmesg() { dmesg -c | sed 's/^/rig: dom0: /'; }

# In dependency order (written by common.sh; no depmod/modprobe needed).
while read -r m; do
    insmod "/lib/modules/rig/$m.ko" || die "insmod $m"
done </lib/modules/rig/load-order
mount -t xenfs xenfs /proc/xen || die "mount xenfs"
mkdir -p /run/xen /run/xenstored /var/log/xen/console /var/lib/xen /var/lib/xenstored /var/lock

xenstored --pid-file=/run/xenstored.pid || die "xenstored"
xen-init-dom0 >/dev/null || die "xen-init-dom0"
xenconsoled --log=guest --log-dir=/var/log/xen/console || die "xenconsoled"

[ ! -d /rig/hotplug ] || cp /rig/hotplug/* /etc/xen/scripts/

# A bridge for vif = ['bridge=xenbr0']; link-local only: QEMU gives the machine no NIC. No STP
# and no forwarding delay, as Xen's own scripts would set it up.
ip link set lo up
brctl addbr xenbr0 || die "brctl addbr"
brctl stp xenbr0 off
brctl setfd xenbr0 0
ip addr add 169.254.0.1/16 dev xenbr0
ip link set xenbr0 up

reason_name() {
    # libxl_shutdown_reason / SHUTDOWN_* codes as printed by xl.
    case $1 in
    0) echo poweroff ;; 1) echo reboot ;; 2) echo suspend ;; 3) echo crash ;;
    4) echo watchdog ;; 5) echo soft_reset ;; timeout) echo run-timeout ;; "") echo unknown ;;
    *) echo "code$1" ;;
    esac
}

run_timeout=$(cat /rig/run-timeout)
say "dom0 ready: $(cut -d' ' -f1 /proc/uptime) s"
dump_dmesg >/dev/null

n=1
while [ -d "/rig/run/$n" ]; do
    d=/rig/run/$n
    name=$(cat "$d/name")
    while read -r path mib; do
        [ -n "$path" ] || continue
        rm -f "$path"
        truncate -s "${mib}M" "$path"
    done </rig/disks

    # xenconsoled appends the guest's console to guest-<name>.log; as a FIFO it streams it to us
    # without polling, and its close (domain gone) ends the reader.
    log=/var/log/xen/console/guest-$name.log
    rm -f "$log"
    mkfifo "$log"
    cat "$log" &
    reader=$!

    set --
    while IFS= read -r a; do set -- "$@" "$a"; done <"$d/args"
    say "run $n begin: $(cat "$d/label")"
    read -r t0 _ </proc/uptime
    echo "[$t0] xl create" >"$d/xl.log"
    # A hung guest must not cost the remaining runs: destroy it after --run-timeout.
    watchdog=""
    if [ "$run_timeout" -gt 0 ]; then
        (sleep "$run_timeout" && touch "$d/timed-out" && xl destroy "$name") >/dev/null 2>&1 &
        watchdog=$!
    fi
    # -F keeps xl in the foreground until the domain is gone (or preserved). Its lines get dom0's
    # uptime in front (to time the toolstack's phases) and go to a file, printed after the run,
    # so they can't interleave with the guest's.
    {
        # shellcheck disable=SC2046 # xl-opts is a word list on purpose
        xl $(cat /rig/xl-opts) create -F "$d/cfg" "$@"
        echo $? >"$d/xl.rc"
    } 2>&1 | while IFS= read -r l; do
        read -r up _ </proc/uptime
        echo "[$up] $l"
    done >>"$d/xl.log"
    rc=$(cat "$d/xl.rc")
    [ -z "$watchdog" ] || kill "$watchdog" 2>/dev/null
    read -r t1 _ </proc/uptime

    # A preserved domain (xen-rig.sh sets on_crash="preserve"): dump its vCPUs for debugging
    # (symbolised if the host could make a System.map), then destroy it: xenconsoled holds the
    # console FIFO open while the domain exists, and the next run wants a clean slate. The dump
    # is printed after the console drained.
    : >"$d/xenctx.log"
    if id=$(xl domid "$name" 2>/dev/null); then
        echo "domain $name ($id) was preserved; its vCPU state:" >"$d/xenctx.log"
        syms=""
        [ ! -s /rig/guest/System.map ] || syms="-s /rig/guest/System.map"
        # shellcheck disable=SC2086 # $syms is empty or two words
        xenctx -a -C $syms "$id" >>"$d/xenctx.log" 2>&1
        xl destroy "$id" >>"$d/xl.log" 2>&1
    fi

    # If the domain never started, xenconsoled never opened the FIFO: open it once as a writer so
    # the reader's open returns and it sees EOF. Read-write because a write-only open would block
    # for good if the reader is already gone. If xenconsoled still has it open, the reader drains
    # it to EOF.
    : <>"$log"
    # Bounded, should a domain linger and keep xenconsoled's end of the FIFO open.
    (sleep 30 && kill "$reader") 2>/dev/null &
    reader_guard=$!
    wait "$reader"
    kill "$reader_guard" 2>/dev/null

    sed 's/^/rig: xenctx: /' "$d/xenctx.log"
    code=$(sed -n 's/.*has shut down, reason code \([0-9]*\).*/\1/p' "$d/xl.log" | tail -n 1)
    [ ! -e "$d/timed-out" ] || code=timeout
    sed 's/^/rig: xl: /' "$d/xl.log"
    dump_dmesg
    say "run $n end: xl exit=$rc reason=$(reason_name "$code") seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
    n=$((n + 1))
done

say "all runs done: $(cut -d' ' -f1 /proc/uptime) s"
poweroff -f
