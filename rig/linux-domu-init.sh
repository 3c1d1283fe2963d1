#!/bin/busybox sh
# /init of the Linux PV domU built by linux-domu.sh: the reference peer, and a stand-in guest to
# test the rig with. It reports like the project's guest does (ok/FAIL lines, a console-bulk
# block, the closing "N passed, N failed, N skipped" line) and powers off.
# Kernel command line (xl's extra=) switches: rigtest=fail|crash|hang|noclose|reboot to make
# the rig see each kind of failure; rigtest=nobulk leaves out the console-bulk block;
# rigtest=blksum|blkfill-fake [blkdev=xvdb] [blkseed=N] print the project's blk app lines.
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
read -r cmdline </proc/cmdline
for w in $cmdline; do
    case $w in
    rigtest=*) mode=${w#rigtest=} ;; stay) mode=stay ;;
    blkdev=*) blkdev=${w#blkdev=} ;; blkseed=*) blkseed=${w#blkseed=} ;;
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

if exists /sys/bus/xen/devices/vbd-*; then
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
    skipped "disk: no vbd configured"
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
esac

[ "$mode" = nobulk ] || cat /bulk.txt

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
stay | deaf)
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
