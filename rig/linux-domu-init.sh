#!/bin/busybox sh
# shellcheck shell=dash # busybox ash: of the shells shellcheck knows, dash is the nearest
# /init of the Linux PV domU built by linux-domu.sh: the reference peer, and a stand-in guest to
# test the rig with. It reports like the project's guest does (ok/FAIL lines, a console-bulk
# block, the closing "N passed, N failed, N skipped" line) and powers off.
# Kernel command line (xl's extra=) switches: rigtest=fail|crash|hang|noclose|reboot to make
# the rig see each kind of failure; rigtest=nobulk leaves out the console-bulk block;
# rigtest=blksum|blkfill-fake [blkdev=xvdb] [blkseed=N] print the project's blk app lines;
# rigtest=blkbench prints the project guest's block benchmark rows (bench: ...), measured on xvdb
# with fio; rigtest=bench (implies stay) prints them too (if there is an xvdb), then serves as the
# far end of dom0's network benchmarks (rig/netbench serve on 169.254.0.2); blkfront_indirect=N
# loads blkfront with max_indirect_segments=N (the rows' variant=indirectN); rigtest=hotplug
# (implies stay) reports devices added and removed while it waits (for @fault=blk-attach/
# vif-attach); rigtest=slowtests prints numbered ok lines slowly and stops at xl shutdown (for
# @fault=shutdown-mid-tests).
/bin/busybox mkdir -p /proc /sys /dev /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec >/dev/hvc0 2>&1 </dev/null
dmesg -n 1

mode=""
blkdev=xvdb
blkseed=0
blk_indirect=""
read -r cmdline </proc/cmdline
for w in $cmdline; do
    case $w in
    rigtest=*) mode=${w#rigtest=} ;; stay) [ -n "$mode" ] || mode=stay ;;
    blkdev=*) blkdev=${w#blkdev=} ;; blkseed=*) blkseed=${w#blkseed=} ;;
    blkfront_indirect=[1-9]*) blk_indirect=${w#blkfront_indirect=} ;;
    esac
done

pass=0 fail=0 skip=0
ok() { echo "ok $*"; pass=$((pass + 1)); }
notok() { echo "FAIL $*"; fail=$((fail + 1)); }
skipped() { echo "skip $*"; skip=$((skip + 1)); }

echo "linux-domu: $(uname -r), $(awk '/MemTotal/ { print $2 " kB" }' /proc/meminfo), $(nproc) vcpu(s), cmdline: $(cat /proc/cmdline)"
ok console

# Waits up to 10 s for a path to appear (front ends connect asynchronously).
wait_for() {
    i=0
    while [ ! -e "$1" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e "$1" ]
}

# True if a glob matched something.
exists() { [ -e "$1" ]; }

# shellcheck disable=SC2086 # no parameter at all without blkfront_indirect=
insmod /lib/modules/xen-blkfront.ko ${blk_indirect:+max_indirect_segments=$blk_indirect}
insmod /lib/modules/xen-netfront.ko

# xvda is vbd-51712 (major 202, minor 0); a run may give only other disks (e.g. just xvdb).
if exists /sys/bus/xen/devices/vbd-51712; then
    # Write a pattern through blkfront and read it back uncached.
    if wait_for /dev/xvda &&
        yes rig-disk-pattern | head -c 1048576 >/tmp/pat &&
        dd if=/tmp/pat of=/dev/xvda bs=65536 oflag=direct 2>/dev/null &&
        dd if=/dev/xvda of=/tmp/back bs=65536 count=16 iflag=direct 2>/dev/null &&
        cmp -s /tmp/pat /tmp/back; then
        ok "disk: xvda $(cat /sys/block/xvda/size) sectors, 1 MiB written and read back"
    else
        notok "disk: xvda write/read-back"
    fi
else
    skipped "disk: no xvda configured"
fi

if exists /sys/bus/xen/devices/vif-*; then
    if wait_for /sys/class/net/eth0 &&
        ip addr add 169.254.0.2/16 dev eth0 && ip link set eth0 up &&
        ping -c 1 -W 5 169.254.0.1 >/dev/null; then
        ok "net: eth0 pings dom0 (169.254.0.1)"
    else
        notok "net: eth0 ping dom0"
    fi
else
    skipped "net: no vif configured"
fi

# BEGIN blk rows: rig/test-linux-bench.sh runs the functions from here to "END blk rows" on the
# host (busybox sh, the same fio tree), so keep them free of anything only the domU has.
#
# The project guest's blk_* rows (guest/src/bench.rs), same names, units and order, each one fio
# process (Debian's, see linux-domu.sh) with libaio and O_DIRECT on DEV. fio's figures cover the
# job's I/O only, not its start (exec, ld.so, parsing, opening the disk), as the guest's cover
# only its requests. Fields of fio's terse output (--terse-version=3, 1-based) used here:
#   5 the job's error (an errno), 6-9 read KiB, KiB/s, IOPS, runtime in ms, 47-50 the same for
#   writes, 93-98 the share of I/Os submitted with 1, 2, 4, 8, 16, 32 in flight (the normal
#   output's "IO depths" histogram).

# blk_fio NAME DEV OPTION...: one fio job; sets blk_terse to its terse line, or prints NAME's
# failure row and returns 1.
blk_fio() {
    local name=$1 dev=$2 err=${TMPDIR:-/tmp}/fio.err status why
    shift 2
    # gtod_reduce: fio reads the clock at the start and end of the job, as the guest does, not
    # several times per I/O for latency figures no row reports.
    blk_terse=$(fio --name="$name" --ioengine=libaio --direct=1 --filename="$dev" --gtod_reduce=1 \
        --output-format=terse --terse-version=3 "$@" 2>"$err")
    status=$?
    if [ $status -ne 0 ]; then
        why=$(sed -n '/[^ ]/{p;q}' "$err")
        echo "bench: $name - - fio exit $status: ${why:-no message}"
        return 1
    fi
    blk_terse=$(echo "$blk_terse" | grep '^3;')
    if [ -z "$blk_terse" ] || [ "$(blk_field 5)" != 0 ]; then
        echo "bench: $name - - fio: no terse line, or error $(blk_field 5)"
        return 1
    fi
}

# blk_field N: field N of blk_terse.
blk_field() { echo "$blk_terse" | cut -d';' -f"$1"; }

# blk_seq NAME DEV read|write KIB OPTION...: 64 MiB from sector 0 in KIB KiB requests, one at a
# time (MiB/s).
blk_seq() {
    local name=$1 dev=$2 op=$3 kib=$4 f=6 extra=""
    shift 4
    blk_fio "$name" "$dev" --rw="$op" --bs="${kib}k" --size=64m --iodepth=1 "$@" || return 1
    if [ "$op" = write ]; then
        f=47 extra=", end_fsync=1 (the flush inside the time, as the guest's)"
    fi
    if [ "$(blk_field $f)" != 65536 ]; then
        echo "bench: $name - - fio moved $(blk_field $f) of 65536 KiB"
        return 1
    fi
    awk -v n="$name" -v bw="$(blk_field $((f + 1)))" -v ms="$(blk_field $((f + 3)))" -v kib="$kib" \
        -v v="$blk_fio_version" -v x="$extra" 'BEGIN {
            printf "bench: %s %.1f MiB/s %d x %d KiB, %s libaio iodepth=1, O_DIRECT%s, %d ms\n",
                n, bw / 1024, 65536 / kib, kib, v, x, ms }'
}

# blk_rand NAME DEV IOLOG OFFSETS DEPTH: the guest's random 4 KiB reads, replayed from IOLOG
# (rig/blk-offsets.py; OFFSETS holds its fingerprint line) with DEPTH in flight (IOPS).
blk_rand() {
    local name=$1 dev=$2 iolog=$3 offsets=$4 qd=$5 n at
    n=$(grep -c ' read ' "$iolog")
    # At the end of a log fio stops without reaping the reads still in flight (it sets
    # td->done, and td_io_getevents then returns nothing): the last DEPTH - 1 would be neither
    # counted nor timed. The log has no trailing close, and number_ios makes fio stop on the
    # count instead, after the normal wait for what is in flight.
    blk_fio "$name" "$dev" --read_iolog="$iolog" --number_ios="$n" --iodepth="$qd" || return 1
    if [ "$(blk_field 6)" != $((n * 4)) ]; then
        echo "bench: $name - - fio read $(blk_field 6) of $((n * 4)) KiB"
        return 1
    fi
    case $qd in 1) at=93 ;; 2) at=94 ;; 4) at=95 ;; 8) at=96 ;; 16) at=97 ;; *) at=98 ;; esac
    awk -v n="$name" -v iops="$(blk_field 8)" -v ms="$(blk_field 9)" -v reads="$n" -v qd="$qd" \
        -v at="$(blk_field $at)" -v file="$iolog" -v v="$blk_fio_version" -v o="$(cat "$offsets")" '
        BEGIN {
            printf "bench: %s %.1f IOPS %d x 4 KiB replayed from %s, %s libaio iodepth=%d", n, iops,
                reads, file, v, qd
            printf " (%s submitted at depth %d), O_DIRECT, %d ms; %s\n", at, qd, ms, o
        }'
}

# blk_verify DEV: 16 MiB written in 64 KiB blocks, each with a header holding its offset and a
# crc32c of the block, then read back and checked by fio (MiB verified).
blk_verify() {
    local dev=$1 kib
    # verify_state_save=0: no local-blk_verify-0-verify.state left in the working directory.
    blk_fio blk_verify "$dev" --rw=write --bs=64k --size=16m --iodepth=1 --verify=crc32c \
        --do_verify=1 --verify_state_save=0 || return 1
    kib=$(blk_field 6)
    if [ "$kib" != 16384 ]; then
        echo "bench: blk_verify - - fio verified $kib of 16384 KiB"
        return 1
    fi
    echo "bench: blk_verify 16.0 MiB 256 x 64 KiB written with a crc32c header each, read back" \
        "and checked, $blk_fio_version libaio iodepth=1, O_DIRECT"
}

# blk_bench DEV IOLOG OFFSETS VARIANT: the rows, in a bench block; returns 1 if one failed.
blk_bench() {
    local dev=$1 iolog=$2 offsets=$3 failed=0 op kib tag
    blk_fio_version=$(fio --version)
    echo "bench: begin platform=linux-pv evtchn=linux variant=$4"
    # Sequential reads first, of the fresh scratch disk (zeros), as the guest does.
    for op in read write; do
        for kib in 4 64 1024; do
            case $kib in 1024) tag=1m ;; *) tag=${kib}k ;; esac
            if [ $op = write ]; then set -- --end_fsync=1; else set --; fi
            blk_seq "blk_seq_${op}_$tag" "$dev" $op $kib "$@" || failed=1
        done
    done
    blk_rand blk_rand_read_4k_qd1 "$dev" "$iolog" "$offsets" 1 || failed=1
    blk_rand blk_rand_read_4k_qd32 "$dev" "$iolog" "$offsets" 32 || failed=1
    blk_verify "$dev" || failed=1
    echo "bench: end"
    rm -f "${TMPDIR:-/tmp}/fio.err"
    return $failed
}
# END blk rows

# What blkfront negotiated for disk $1 (its request limits, and the features it logged at
# connect), so that a log says what the Linux rows ran with.
blk_report() {
    local q=/sys/block/$1/queue line k features
    echo "blkfront: max_indirect_segments=$(cat /sys/module/xen_blkfront/parameters/max_indirect_segments)"
    line="blk: $1"
    for k in max_segments max_segment_size max_hw_sectors_kb max_sectors_kb nr_requests; do
        [ ! -r "$q/$k" ] || line="$line $k=$(cat "$q/$k")"
    done
    features=$(dmesg | sed -n "s/.*blkfront: $1: //p" | tail -n 1)
    echo "$line${features:+ ($features)}"
}

# rigtest=bench: the far end of dom0's network benchmarks (rig/netbench serve) at the fixed
# address dom0 reads from the "net: up" line (the net: test above may have set it already).
bench_far_end() {
    local i=0
    wait_for /sys/class/net/eth0 || return 1
    ip addr show dev eth0 | grep -q 'inet 169\.254\.0\.2/16' ||
        ip addr add 169.254.0.2/16 dev eth0 || return 1
    ip link set eth0 up || return 1
    /bin/netbench serve >/dev/hvc0 2>&1 &
    # dom0 connects once it reads "net: up", so both ports must listen by then (/proc/net/tcp:
    # 1389 and 138A are 5001 and 5002, 0A is LISTEN).
    until grep -q ':1389 00000000:0000 0A' /proc/net/tcp &&
        grep -q ':138A 00000000:0000 0A' /proc/net/tcp; do
        [ $i -lt 100 ] || return 1
        sleep 0.1
        i=$((i + 1))
    done
    echo "net: up 169.254.0.2/16 (fixed, rigtest=bench)"
}

# Stand-ins for the project guest's app=blksum / app=blkfill lines, to test the rig's checks:
# blksum really reads the disk (busybox sha256sum); blkfill-fake writes nothing and only claims
# to have filled it (give it a disk made with rig/blkfill-pattern.py through @image).
case $mode in
blksum | blkfill-fake)
    if wait_for "/dev/$blkdev" && sectors=$(cat "/sys/block/$blkdev/size"); then
        if [ "$mode" = blksum ]; then
            sum=$(sha256sum <"/dev/$blkdev" | cut -d' ' -f1)
            echo "blksum $blkdev sectors=$sectors sector_size=512 sha256=$sum"
        else
            echo "blkfill $blkdev done sectors=$sectors seed=$blkseed"
        fi
        ok "$mode $blkdev"
    else
        notok "$mode: no /dev/$blkdev"
    fi
    ;;
blkbench | bench)
    # xvdb is vbd-51728; rigtest=bench runs without one too (a network-only round).
    if [ "$mode" = bench ] && ! exists /sys/bus/xen/devices/vbd-51728; then
        skipped "blkbench: no xvdb configured"
    elif wait_for /dev/xvdb && [ "$(cat /sys/block/xvdb/size)" -ge 131072 ]; then
        variant=default
        [ -z "$blk_indirect" ] || variant=indirect$blk_indirect
        blk_report xvdb
        if blk_bench /dev/xvdb /bench/rand.iolog /bench/rand.offsets "$variant"; then
            ok "blkbench xvdb"
        else
            notok "blkbench xvdb: a row failed"
        fi
    else
        notok "blkbench: no /dev/xvdb of at least 64 MiB"
    fi
    if [ "$mode" = bench ]; then
        if exists /sys/bus/xen/devices/vif-* && bench_far_end; then
            ok "netbench: serving on 169.254.0.2, ports 5001 (sink) and 5002 (source)"
        else
            notok "netbench: no far end for dom0's network benchmarks"
        fi
    fi
    ;;
esac

[ "$mode" = nobulk ] || cat /bulk.txt

# The project guest's lines for a device the toolstack adds or removes while it runs: a poll of
# xenbus's devices (the kernel's frontends do the work), each added disk described once its
# block device exists, an added vif given a fixed link-local address.
hotplug_monitor() {
    old=$(cd /sys/bus/xen/devices && echo vbd-* vif-*)
    while :; do
        new=$(cd /sys/bus/xen/devices && echo vbd-* vif-*)
        for dev in $new; do
            case " $old " in *" $dev "*) continue ;; esac
            [ -e "/sys/bus/xen/devices/$dev" ] || continue
            echo "device: ${dev%-*}/${dev#*-} added"
            case $dev in
            vbd-*)
                letters=abcdefghijklmnop
                i=$(((${dev#vbd-} - 51712) / 16))
                blk=xvd$(echo "$letters" | cut -c$((i + 1)))
                if wait_for "/sys/block/$blk/size"; then
                    m=rw
                    [ "$(cat "/sys/block/$blk/ro")" = 0 ] || m=ro
                    echo "blk: $blk attached: sectors=$(cat "/sys/block/$blk/size") sector_size=512 mode=$m"
                fi
                ;;
            vif-*)
                if wait_for /sys/class/net/eth0 && ip addr add 169.254.0.3/16 dev eth0 &&
                    ip link set eth0 up; then
                    echo "net: up 169.254.0.3/16 (fixed, rigtest=hotplug)"
                fi
                ;;
            esac
        done
        for dev in $old; do
            case " $new " in *" $dev "*) ;; *) echo "device: ${dev%-*}/${dev#*-} removed" ;; esac
        done
        old=$new
        sleep 0.2
    done
}

# Numbered tests at 0.3 s each; xl shutdown (USR2, see below) stops them between two.
if [ "$mode" = slowtests ]; then
    stopped=""
    trap 'stopped=1' USR2
    i=1
    while [ "$i" -le 30 ] && [ -z "$stopped" ]; do
        ok "$i slow::t$i"
        sleep 0.3 &
        wait $!
        i=$((i + 1))
    done
    if [ -n "$stopped" ]; then
        echo "selftest: stopped by the toolstack (poweroff) after $((i - 1)) tests"
        echo "$pass passed, $fail failed, $skip skipped"
        echo "control: shutdown poweroff"
        poweroff -f
    fi
fi

case $mode in
fail) notok "injected failure (rigtest=fail)" ;;
crash) echo "crashing on purpose"; echo c >/proc/sysrq-trigger ;;
hang) echo "hanging on purpose"; while :; do sleep 60; done ;;
noclose) poweroff -f ;;
reboot) echo "$pass passed, $fail failed, $skip skipped"; reboot -f ;;
esac
echo "linux-domu: uptime $(cut -d' ' -f1 /proc/uptime) s"
echo "$pass passed, $fail failed, $skip skipped"

case $mode in
stay | deaf | hotplug | bench)
    [ "$mode" != hotplug ] || hotplug_monitor &
    # xl shutdown/reboot writes control/shutdown; the kernel's xenbus handler runs
    # /sbin/poweroff or /sbin/reboot (orderly_poweroff/orderly_reboot), and busybox's, finding
    # no -f, signals PID 1 (this script): USR2 poweroff, USR1 halt, TERM reboot. So the request
    # really goes through the kernel's control/shutdown watch, as it must for the project's guest.
    if [ "$mode" = deaf ]; then
        trap '' USR1 USR2 TERM
    else
        trap 'echo "control: shutdown poweroff"; poweroff -f' USR2
        trap 'echo "control: shutdown halt"; poweroff -f' USR1
        trap 'echo "control: shutdown reboot"; reboot -f' TERM
    fi
    echo "control: ready"
    # `wait` returns when a trapped signal arrives (a foreground sleep would delay the trap).
    while :; do
        sleep 3600 &
        wait $!
    done
    ;;
esac
poweroff -f
