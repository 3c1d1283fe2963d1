#!/bin/busybox sh
# /init of the Linux PV domU built by linux-domu.sh: the reference peer, and a stand-in guest to
# test the rig with. It reports like the project's guest does (ok/FAIL lines, a console-bulk
# block, the closing "N passed, N failed, N skipped" line) and powers off.
# Kernel command line (xl's extra=) switches: rigtest=fail|crash|hang|noclose|reboot to make
# the rig see each kind of failure; rigtest=nobulk leaves out the console-bulk block;
# rigtest=blksum|blkfill-fake [blkdev=xvdb] [blkseed=N] print the project's blk app lines;
# rigtest=blkbench [blkreads=N] prints the project guest's block benchmark rows (bench: ...)
# measured on xvdb; rigtest=hotplug (implies stay) reports devices added and removed while it
# waits (for @fault=blk-attach/vif-attach); rigtest=slowtests prints numbered ok lines slowly
# and stops at xl shutdown (for @fault=shutdown-mid-tests).
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
blkreads=2048
read -r cmdline </proc/cmdline
for w in $cmdline; do
    case $w in
    rigtest=*) mode=${w#rigtest=} ;; stay) [ -n "$mode" ] || mode=stay ;;
    blkdev=*) blkdev=${w#blkdev=} ;; blkseed=*) blkseed=${w#blkseed=} ;;
    blkreads=[1-9]*) blkreads=${w#blkreads=} ;;
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
    while [ ! -e "$1" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e "$1" ]
}

# True if a glob matched something.
exists() { [ -e "$1" ]; }

insmod /lib/modules/xen-blkfront.ko
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

# Wall clock in microseconds: busybox date has no %N and /proc/uptime only 10 ms steps, but
# busybox adjtimex prints time.tv_sec and time.tv_usec (one fork+exec per reading).
now_us() {
    t=$(adjtimex)
    s=${t#*tv_sec:} u=${t#*tv_usec:}
    set -- ${s%%time.tv_usec*} ${u%%return*}
    u=${2#"${2%%[!0]*}"}
    echo $(($1 * 1000000 + ${u:-0}))
}
# Prints a bench row: name, amount (MiB or requests), start/end in us, unit, detail.
bench_row() {
    awk -v n="$1" -v a="$2" -v t0="$3" -v t1="$4" -v unit="$5" -v d="$6" \
        'BEGIN { s = (t1 - t0) / 1e6; if (s <= 0) s = 1e-6; printf "bench: %s %.1f %s %s\n", n, a / s, unit, d }'
}
# The project guest's blk_* benchmarks (guest/src/bench.rs) with busybox tools on /dev/xvdb, in
# The project guest's net_* benchmarks against the rig's dom0 (169.254.0.1): the median of 21
# pings, and 4 MiB of zeros over TCP to dom0's sink on port 5001 and from its source on 5002
# (see dom0-init.sh), one busybox nc each (its fork+exec is in the figure).
netbench() {
    dom0=169.254.0.1
    echo "bench: begin platform=linux-pv evtchn=linux"
    rtts=$(ping -c 21 -i 0.2 "$dom0" | sed -n 's/.* time=\([0-9.]*\) ms$/\1/p' | sort -n)
    if [ "$(echo "$rtts" | grep -c .)" = 21 ]; then
        median=$(echo "$rtts" | sed -n 11p)
        echo "bench: net_ping_rtt $(awk -v m="$median" 'BEGIN { printf "%.1f", m * 1000 }') us/rtt median of 21 pings to $dom0 (busybox ping)"
    else
        echo "bench: net_ping_rtt - - ping failed"
    fi
    t0=$(now_us)
    dd if=/dev/zero bs=65536 count=64 2>/dev/null | nc "$dom0" 5001 >/dev/null
    t1=$(now_us)
    bench_row net_tcp_send 4 "$t0" "$t1" MiB/s "4 MiB over TCP to $dom0:5001, busybox dd | nc"
    # nc half-closes at the end of its input, and dom0's source then stops: its input is a
    # FIFO held open here that never carries anything.
    mkfifo /tmp/hold && exec 3<>/tmp/hold
    t0=$(now_us)
    n=$(nc "$dom0" 5002 <&3 | wc -c)
    t1=$(now_us)
    if [ "$n" = 4194304 ]; then
        bench_row net_tcp_recv 4 "$t0" "$t1" MiB/s "4 MiB over TCP from $dom0:5002, busybox nc | wc"
    else
        echo "bench: net_tcp_recv - - got $n of 4194304 bytes"
    fi
    echo "bench: end"
}
# The project guest's blk_* benchmarks (guest/src/bench.rs) with busybox tools on /dev/xvdb, in
# the same order: sequential reads of the fresh scratch disk, sequential writes (+ flush), then
# 4 KiB reads at random places within the first 8 MiB, blkreads=N of them (default 2048, as the
# guest; rounded down to a multiple of 32).
blkbench() {
    dev=/dev/xvdb
    echo "bench: begin platform=linux-pv evtchn=linux"
    for op in read write; do
        for kib in 4 64 1024; do
            case $kib in 1024) tag=1m ;; *) tag=${kib}k ;; esac
            count=$((8192 / kib))
            t0=$(now_us)
            if [ $op = read ]; then
                dd if=$dev of=/dev/null bs=$((kib * 1024)) count=$count iflag=direct 2>/dev/null
            else
                dd if=/dev/zero of=$dev bs=$((kib * 1024)) count=$count oflag=direct conv=fsync 2>/dev/null
            fi
            r=$?
            t1=$(now_us)
            if [ $r -eq 0 ]; then
                d="$count x $kib KiB, one busybox dd, O_DIRECT"
                [ $op = write ] && d="$d, zeros, fsync (flush) at the end"
                bench_row "blk_seq_${op}_$tag" 8 "$t0" "$t1" MiB/s "$d"
            else
                echo "bench: blk_seq_${op}_$tag - - dd failed"
            fi
        done
    done
    # 4 KiB O_DIRECT reads within the first 8 MiB: 32 runs of N/32 consecutive blocks, each run
    # from a random start and read by one dd, so the figure is the disk path's, not a fork+exec
    # per read (under TCG ~60 forks/s: that, not the disk, would be measured). QD1 reads the
    # runs one after another, QD32 all at once.
    run=$((blkreads / 32))
    n=$((run * 32))
    awk -v run="$run" 'BEGIN { srand(1234); for (i = 0; i < 32; i++) print int(rand() * (2048 - run)) }' >/tmp/rq
    r=0
    t0=$(now_us)
    while read -r b; do
        dd if=$dev of=/dev/null bs=4096 count=$run skip="$b" iflag=direct 2>/dev/null || { r=1; break; }
    done </tmp/rq
    t1=$(now_us)
    if [ $r -eq 0 ]; then
        bench_row blk_rand_read_4k_qd1 "$n" "$t0" "$t1" IOPS "$n reads (guest 2048): 32 runs of $run consecutive 4 KiB reads from random starts, one dd each, O_DIRECT"
    else
        echo "bench: blk_rand_read_4k_qd1 - - dd failed"
    fi
    t0=$(now_us)
    pids=""
    while read -r b; do
        dd if=$dev of=/dev/null bs=4096 count=$run skip="$b" iflag=direct 2>/dev/null &
        pids="$pids $!"
    done </tmp/rq
    r=0
    for p in $pids; do wait "$p" || { echo "blkbench: dd pid $p: status $?"; r=1; }; done
    t1=$(now_us)
    if [ $r -eq 0 ]; then
        bench_row blk_rand_read_4k_qd32 "$n" "$t0" "$t1" IOPS "$n reads (guest 2048): the same 32 runs by 32 dd at once, O_DIRECT, $(nproc) vcpu(s)"
    else
        echo "bench: blk_rand_read_4k_qd32 - - dd failed"
    fi
    echo "bench: end"
    rm -f /tmp/rq
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
netbench)
    if wait_for /sys/class/net/eth0 && ip link show eth0 | grep -q ',UP'; then
        netbench
        ok "netbench eth0"
    else
        notok "netbench: no eth0 up"
    fi
    ;;
blkbench)
    if wait_for /dev/xvdb && [ "$(cat /sys/block/xvdb/size)" -ge 16384 ]; then
        blkbench
        ok "blkbench xvdb"
    else
        notok "blkbench: no /dev/xvdb of at least 8 MiB"
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
stay | deaf | hotplug)
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
