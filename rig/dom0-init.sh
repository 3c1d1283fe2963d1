#!/bin/sh
# dom0's /init (busybox sh). xen-rig.py appends it, the guest files and the runs to the cached
# dom0 initramfs. Layout it relies on:
#   /rig/run/<N>/disks     run N's disks, "<path> <vdev> scratch <MiB>" (recreated empty) or
#                          "<path> <vdev> image <file>" (a fresh copy of /rig/images/<k>)
#   /rig/zero-sha256-<MiB> sha256 of a scratch disk of that size (zeros), computed by the host
#   /rig/run/<N>/cfg       xl config for run N (kernel/ramdisk/disk paths already rewritten)
#   /rig/run/<N>/args      xl key=value overrides, one per line
#   /rig/run/<N>/name      the domain's name (for xenconsoled's guest-<name>.log)
#   /rig/run/<N>/label     the RUN string as given, for the markers
#   /rig/run/<N>/control   "shutdown", "reboot", "net" or "bench" if the run has that
#                          directive (else absent)
#   /rig/run/<N>/ours      present unless the run boots the peer (--peer): /rig/guest's symbols
#                          are for this run's kernel
#   /rig/netbench          rig/netbench.c, static, if a run is @net or @bench
#   /rig/bench-bytes       bytes netbench moves each way in a @bench run
#   /rig/run/<N>/fault     the @fault=<name> of the run, if any (see fault_* below)
#   /rig/run/<N>/nodhcp    present for a @nodhcp run: udhcpd is stopped while it runs
#   /rig/run/<N>/vcpu_set  the counts of a @vcpu-set run, in order (see vcpu_set_steps)
#   /rig/run/<N>/qdisk     present if the run has a backendtype=qdisk disk (see qdisk_watch)
#   /rig/xenstored         "oxenstored" or "xenstored" (the C one), from --xenstored
#   /rig/evtchn-flood      rig/evtchn-flood.c, built by the host (if a run floods)
#   /rig/fpu-check         rig/fpu-check.c, static, and /rig/fpu-check-seconds, with
#                          --fpu-check: run beside the runs, waited for at the end
#   /rig/xl-opts           options for xl itself (-vvv or empty)
#   /rig/run-timeout       seconds after which a guest is destroyed (0: never)
#   /rig/control-timeout   bound in seconds of each wait of a control run
#   /rig/hotplug/          replacements for /etc/xen/scripts (--fast-hotplug), if present
#   /rig/guest/System.map  the guest's symbols for xenctx, if the host had `nm` (may be empty)
# The host decides each run from its "rig: result" lines (see result below and rig/README.md,
# "Results"), the markers "rig: run N begin|end:" and "rig: disk ...", and the guest's own
# lines; the other "rig: " lines are for people.

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

# --entry-size: xenstored's default per-node limit for a domU (2048 bytes) is below the largest
# value the protocol can carry, which the guest's self-test writes. oxenstored runs with
# Debian's oxenstored.conf as it is (quota-maxsize 2048 among others): its limits are part of
# what a guest meets on such a dom0.
xs=$(cat /rig/xenstored 2>/dev/null) || xs=xenstored
case $xs in
oxenstored) oxenstored --pid-file /run/xenstored.pid || die "oxenstored" ;;
*) xenstored --pid-file=/run/xenstored.pid --entry-size 8192 || die "xenstored" ;;
esac
# oxenstored forks before it listens: xen-init-dom0 must not race it to the socket.
i=0
until [ -S /run/xenstored/socket ]; do
    i=$((i + 1))
    [ "$i" -lt 200 ] || die "$xs: no /run/xenstored/socket after 10 s"
    sleep 0.05
done
say "xenstored: $xs"
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
# DHCP for guests on the bridge (the project guest asks when its command line has no ip=).
cat >/etc/udhcpd.conf <<'EOF'
interface xenbr0
start 169.254.0.10
end 169.254.0.99
lease_file /run/udhcpd.leases
pidfile /run/udhcpd.pid
option subnet 255.255.0.0
option router 169.254.0.1
option lease 3600
EOF
: >/run/udhcpd.leases
udhcpd /etc/udhcpd.conf || die "udhcpd"

reason_name() {
    # libxl_shutdown_reason / SHUTDOWN_* codes as printed by xl.
    case $1 in
    0) echo poweroff ;; 1) echo reboot ;; 2) echo suspend ;; 3) echo crash ;;
    4) echo watchdog ;; 5) echo soft_reset ;; timeout) echo run-timeout ;;
    destroyed) echo destroyed ;; "") echo unknown ;;
    *) echo "code$1" ;;
    esac
}

# dom0 uptime in centiseconds (/proc/uptime has two decimals) in $CS; builtins only (see
# ctl_wait).
uptime_cs() {
    read -r up _ </proc/uptime
    CS=${up%.*}${up#*.}
    CS=${CS#0}
}
# Centiseconds -> seconds with two decimals.
secs() { printf '%d.%02d' $(($1 / 100)) $(($1 % 100)); }

# Waits until file $1 exists (0), xl create has exited (1) or $ctl_timeout seconds passed (2).
# Polls every 0.1 s without forking: the pause is a `read -t` on fd 8, a FIFO nobody writes
# (control_run opens it), not sleep(1): a fork+exec per poll costs dom0 CPU time under TCG that
# the guest (on the same two host cores) would miss.
ctl_wait() {
    uptime_cs
    deadline=$((CS + ctl_timeout * 100))
    while :; do
        [ ! -e "$1" ] || return 0
        # After a suspend xl create -F has ended though the guest runs on (see sus_wait).
        [ -n "${suspended:-}" ] || [ ! -e "$d/xl.rc" ] || return 1
        uptime_cs
        [ "$CS" -lt "$deadline" ] || return 2
        # shellcheck disable=SC3045 # busybox ash has read -t (fractional)
        read -r -t 0.1 _ <&8
    done
}
ctl_log() {
    read -r up _ </proc/uptime
    echo "[$up] $*" >>"$d/control.log"
}
# result CHECK ok|fail DETAIL: a verdict of dom0's for the host, printed with the run's log,
# before its end marker. The host passes a run on these and on the guest's own lines, never on
# the wording of the lines above them, so DETAIL is only ever quoted. Background actors call it
# too: each line is one short append.
result() { echo "rig: result run=$n check=$1 status=$2 detail=$3" >>"$d/results"; }

# ctl_fail WHY [destroy]: records the failure (a "control" result); with "destroy", destroys
# the domain (which ends xl create -F) and marks the run's reason as "destroyed".
ctl_fail() {
    if [ -n "${2:-}" ]; then
        : >"$d/destroyed"
        ctl_log "xl destroy $name"
        xl destroy "$name" >>"$d/control.log" 2>&1
    fi
    echo "FAILED: $1" >>"$d/control.log"
    result control fail "$1"
}

# A net run's checks from dom0, against the address the guest printed ("net: up <ip>/<len> ...",
# left in net-ip by the console reader): ping, 1 MiB of random bytes through TCP echo (port 7),
# and the HTTP status page (port 80), which must show the self-test result. Each step is bounded
# and logs one line; returns non-zero at the first failure (after logging it as FAILED).
net_checks() {
    # DHCP goes on in the guest's background: 'net: up' may come after 'control: ready'.
    ctl_wait "$d/net-ip"
    ip=$(cat "$d/net-ip" 2>/dev/null) || { ctl_fail "no 'net: up' line within $ctl_timeout s"; return 1; }
    out=$(ping -c 20 -i 0.2 -W 2 "$ip" 2>&1)
    loss=$(echo "$out" | sed -n 's/.* \([0-9]*\)% packet loss.*/\1/p')
    rtt=$(echo "$out" | sed -n 's/^round-trip.* = \(.*\)$/\1/p')
    ctl_log "net: ping $ip: ${loss:-?}% loss of 20, rtt min/avg/max $rtt"
    [ "$loss" = 0 ] || { ctl_fail "ping $ip: ${loss:-no}% loss"; return 1; }
    if ! timeout 30 wget -q -O /run/page "http://$ip/" 2>/run/wget.err; then
        ctl_fail "http://$ip/: $(cat /run/wget.err)"
        return 1
    fi
    line=$(grep -o -m1 -E '[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' /run/page)
    ctl_log "net: http://$ip/: $(wc -c </run/page) bytes, self-test: ${line:-missing}"
    sed 's/^/net: page: /' /run/page >>"$d/control.log"
    [ -n "$line" ] || { ctl_fail "http://$ip/ does not show the self-test result"; return 1; }
    head -c 1048576 /dev/urandom >/run/echo.in
    timeout 60 nc "$ip" 7 </run/echo.in >/run/echo.out 2>/run/echo.err
    got=$(stat -c %s /run/echo.out)
    if cmp -s /run/echo.in /run/echo.out; then
        ctl_log "net: tcp echo $ip:7: 1048576 random bytes came back identical"
    else
        ctl_fail "tcp echo $ip:7: $got of 1048576 bytes came back, not identical ($(cat /run/echo.err))"
        return 1
    fi
    rm -f /run/echo.*
    # The benchmark sink and source (what @bench measures through), briefly: the byte counts
    # must agree at both ends.
    for step in "send 5001" "recv 5002"; do
        # shellcheck disable=SC2086 # a word list on purpose
        set -- $step
        if out=$(timeout 60 /rig/netbench "$1" "$ip" "$2" 1048576 2>&1); then
            ctl_log "net: netbench $1 $ip:$2: $out"
        else
            ctl_fail "netbench $1 $ip:$2: $(echo "$out" | tr '\n' ' ')"
            return 1
        fi
    done
    result net ok "ping, http, tcp echo and netbench both ways from dom0"
}

# A bench run's measurements from dom0, the same for our guest and the Linux peer (which are
# only the far end): the round trip of 21 pings at 0.2 s, then --bench-mib MiB through
# rig/netbench each way: dom0 to the guest's sink (net_tcp_recv: the guest receives) and from
# its source (net_tcp_send: the guest sends); then 10000 datagrams of 64 bytes through its UDP
# echo, 8 in flight (net_udp_echo: packets the guest turns round per second; datagrams lost
# are said in the line, and are no failure: UDP may lose). Each gives one "bench: <row> ..."
# line (a failed one "bench: <row> - - <why>" and a FAILED line).
bench_net() {
    ctl_wait "$d/net-ip"
    ip=$(cat "$d/net-ip" 2>/dev/null) || { ctl_fail "no 'net: up' line within $ctl_timeout s"; return 1; }
    bytes=$(cat /rig/bench-bytes)
    bench_rc=0
    rtts=$(ping -c 21 -i 0.2 -W 2 "$ip" 2>&1 | sed -n 's/.* time=\([0-9.]*\) ms$/\1/p' | sort -n)
    got=$(echo "$rtts" | grep -c .)
    if [ "$got" = 21 ]; then
        ctl_log "bench: net_ping_rtt $(echo "$rtts" | awk 'NR == 11 { m = $1 } NR == 1 { lo = $1 } { hi = $1 }
            END { printf "%.1f us/rtt median of 21 pings from dom0 (busybox ping -c 21 -i 0.2), min %.1f max %.1f", m * 1000, lo * 1000, hi * 1000 }')"
    else
        ctl_log "bench: net_ping_rtt - - $got of 21 pings from dom0 answered"
        ctl_fail "bench: ping $ip: $got of 21 answered"
        bench_rc=1
    fi
    for step in "net_tcp_recv send 5001 dom0->guest" "net_tcp_send recv 5002 guest->dom0"; do
        # shellcheck disable=SC2086 # a word list on purpose
        set -- $step
        if out=$(timeout 600 /rig/netbench "$2" "$ip" "$3" "$bytes" 2>&1); then
            mib=$(echo "$out" | sed -n 's/.* mib_s=\([0-9.]*\).*/\1/p')
            ctl_log "bench: $1 $mib MiB/s $4 over TCP, timed in dom0 by rig/netbench: $out"
        else
            out=$(echo "$out" | tr '\n' ' ')
            ctl_log "bench: $1 - - netbench $2 $ip:$3: $out"
            ctl_fail "bench: netbench $2 $ip:$3: $out"
            bench_rc=1
        fi
    done
    # Exit status 1: some datagrams were lost, the rate of those echoed stands.
    rc=0
    out=$(timeout 120 /rig/netbench udp "$ip" 7 10000 2>&1) || rc=$?
    pps=$(echo "$out" | sed -n 's/.* pps=\([0-9]*\).*/\1/p' | head -n 1)
    if [ "$rc" -le 1 ] && [ -n "$pps" ]; then
        ctl_log "bench: net_udp_echo $pps pps 64-byte datagrams echoed by the guest, 8 in flight, timed in dom0 by rig/netbench: $(echo "$out" | tr '\n' ' ')"
    else
        out=$(echo "$out" | tr '\n' ' ')
        ctl_log "bench: net_udp_echo - - netbench udp $ip:7: $out"
        ctl_fail "bench: netbench udp $ip:7: $out"
        bench_rc=1
    fi
    # The rows were all measured (a failed one is a "-" row and a control failure).
    if [ "$bench_rc" = 0 ]; then
        result bench ok "ping, netbench both ways and UDP echo measured"
    else
        result bench fail "measured, some rows failed"
    fi
    return $bench_rc
}

# Fault injection (@fault=<name>): dom0 breaks something while the guest runs; the host checks
# the guest's error line and that it went on. Each step logs to control.log ("fault: ...");
# a step that could not be done is a FAILED line (ctl_fail).

# The faults dom0 injects on its own schedule, in the background: at the first "blkfill <dev>
# acked" line (acked.1, left by the console reader), blk-detach: `xl block-detach` of that
# disk while blkfill writes; at the same line, destroy-blkfill: `xl destroy` (some writes are
# acknowledged, more are in flight; the guest fills a 128 MiB disk in about a second, and
# xl takes a while to start: a later line lost the race now and then); once xl created the domain, paused (created, left by the
# xl log reader), garbage-keys and evtchn-flood: their keys and fake backends, then unpause;
# at the guest's "ok 5 ..." line (ok.5), shutdown-mid-tests: `xl shutdown` while the self-tests
# still run.
fault_background() {
    exec 8<>/run/rig-tick
    case $1 in
    blk-detach) mark=acked.1 ;;
    destroy-blkfill) mark=acked.1 ;;
    garbage-keys | evtchn-flood | hostile-backend) mark=created ;;
    shutdown-mid-tests) mark=ok.5 ;;
    *) return ;;
    esac
    ctl_wait "$d/$mark"
    case $? in
    1) ctl_fail "fault $1: the domain ended before $mark"; return ;;
    2) ctl_fail "fault $1: no $mark within $ctl_timeout s" destroy; return ;;
    esac
    case $1 in
    blk-detach)
        # The guest fills a 64 MiB disk faster than xl starts: paused at once, it still
        # has requests in flight when it runs again and finds the backend Closing.
        xl pause "$name"
        read -r dev sectors _ <"$d/acked"
        ctl_log "fault: paused at 'blkfill $dev acked sectors=$sectors': xl block-detach $name $dev"
        state=/local/domain/0/backend/vbd/$(xl domid "$name")/$(vdev_id "$dev")/state
        uptime_cs
        since=$CS
        (
            if timeout 60 xl block-detach "$name" "$dev" >>"$d/control.log" 2>&1; then
                uptime_cs
                ctl_log "fault: xl block-detach $dev done in $(secs $((CS - since))) s"
            else
                ctl_fail "fault: xl block-detach $name $dev failed"
            fi
        ) &
        detach=$!
        i=0
        until [ "$(xenstore-read "$state" 2>/dev/null)" = 5 ] || [ "$i" -ge 100 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        ctl_log "fault: $state is $(xenstore-read "$state" 2>/dev/null): xl unpause"
        xl unpause "$name"
        wait "$detach"
        ;;
    destroy-blkfill)
        read -r dev sectors _ <"$d/acked"
        ctl_log "fault: at 'blkfill $dev acked sectors=$sectors': xl destroy $name"
        : >"$d/destroyed"
        xl destroy "$name" >>"$d/control.log" 2>&1 || ctl_fail "fault: xl destroy $name failed"
        ;;
    garbage-keys)
        # The domain is paused (xl create -p) with its devices attached: blkback wrote
        # max-ring-page-order at probe and does not write it again; the frontend reads it at
        # each connect. The fake backends write theirs before they say Connected.
        be=/local/domain/0/backend/vbd/$(xl domid "$name")/51728
        ctl_log "fault: $be/max-ring-page-order = 99"
        xenstore-write "$be/max-ring-page-order" 99 >>"$d/control.log" 2>&1 ||
            ctl_fail "fault: cannot write $be/max-ring-page-order"
        fake_vbd xvdd sectors=abc sector-size=512 info=0
        fake_vbd xvde sectors=2048 sector-size=0 info=0
        fake_vbd xvdf sector-size=512 info=0
        unpause
        ;;
    evtchn-flood)
        fake_vbd xvdd flood sectors=2048 sector-size=512 info=0
        unpause
        ;;
    hostile-backend)
        # xvda: the guest's apps take disks in id order, so this one breaks before the real
        # disk (xvdb) is read, while its backend still floods.
        fake_vbd xvda hostile sectors=16384 sector-size=512 info=0
        unpause
        ;;
    shutdown-mid-tests)
        # Not a control run: the guest has no `stay`, no "control: ready" comes; it must see
        # the request between two tests, stop them and power off within the bound. xl shutdown
        # waits up to 60 s for the guest to acknowledge (empty control/shutdown): in the
        # background, so that the bound is the rig's.
        ctl_log "fault: at 'ok 5': xl shutdown $name"
        uptime_cs
        since=$CS
        (
            xl shutdown "$name" >>"$d/control.log" 2>&1
            echo $? >"$d/shutdown.rc"
        ) &
        xl_shutdown=$!
        ctl_wait "$d/down.1"
        case $? in
        1) ctl_fail "xl create ended without the domain shutting down after xl shutdown"; return ;;
        2)
            ctl_fail "the guest ignored xl shutdown in the middle of its tests: still running $ctl_timeout s later" destroy
            wait "$xl_shutdown"
            return
            ;;
        esac
        uptime_cs
        ctl_log "fault: domain down $(secs $((CS - since))) s after xl shutdown"
        down=$(secs $((CS - since)))
        # xl returns once the guest acknowledged; if it went down without doing so, xl would
        # wait out its 60 s: 3 s are plenty after the domain is gone.
        i=0
        while [ ! -e "$d/shutdown.rc" ] && [ "$i" -lt 30 ]; do
            # shellcheck disable=SC3045 # busybox ash has read -t (fractional)
            read -r -t 0.1 _ <&8
            i=$((i + 1))
        done
        if [ ! -e "$d/shutdown.rc" ]; then
            kill "$xl_shutdown" 2>/dev/null
            ctl_fail "fault: xl shutdown $name still waiting for the guest's acknowledgement 3 s after the domain went down"
            return
        fi
        rc=$(cat "$d/shutdown.rc")
        # Non-zero: the guest went down without acknowledging the request (or xl failed). A
        # SIGABRT or SIGSEGV is dom0's xl dying (see control_run), not the guest's doing: the
        # domain went down as asked.
        case $rc in
        134 | 139) ctl_log "fault: xl shutdown $name died (exit $rc) after the domain went down" && rc=0 ;;
        esac
        if [ "$rc" != 0 ]; then
            ctl_fail "fault: xl shutdown $name exited $rc (no acknowledgement from the guest?)"
            return
        fi
        echo "ok: xl shutdown at 'ok 5' -> down $down s" >>"$d/control.log"
        result control ok "xl shutdown at 'ok 5' -> down $down s"
        ;;
    esac
}

# fault_wait <marker> <what>: waits for the console reader's marker of a guest line; logs how
# long it took since $since, or fails the run. Bounded by 20 s (or --control-timeout if less):
# a guest reacts to a device event in well under a second, and one that misses it should not
# cost a minute per step.
fault_wait() {
    saved=$ctl_timeout
    [ "$ctl_timeout" -le 20 ] || ctl_timeout=20
    ctl_wait "$d/$1"
    rc=$?
    bound=$ctl_timeout
    ctl_timeout=$saved
    case $rc in
    1) ctl_fail "fault: the domain ended before '$2'"; return 1 ;;
    2) ctl_fail "fault: no '$2' within $bound s"; return 1 ;;
    esac
    uptime_cs
    ctl_log "fault: guest: '$2' $(secs $((CS - since))) s later"
}

# fault_xl <xl args>: a bounded xl device command; logs its duration, or fails the run. Sets
# $since (for fault_wait) to the moment it was started.
fault_xl() {
    ctl_log "fault: xl $*"
    uptime_cs
    since=$CS
    if ! timeout 60 xl "$@" >>"$d/control.log" 2>&1; then
        ctl_fail "fault: xl $* failed"
        return 1
    fi
    uptime_cs
    ctl_log "fault: xl $1 done in $(secs $((CS - since))) s"
}

unpause() {
    ctl_log "fault: xl unpause $name"
    xl unpause "$name" >>"$d/control.log" 2>&1 || ctl_fail "fault: xl unpause $name failed"
}

# The xenbus device id of xvd<letter> (major 202, 16 minors a disk).
vdev_id() {
    i=0
    for l in a b c d e f g h i j k l m n o p; do
        [ "xvd$l" != "$1" ] || break
        i=$((i + 1))
    done
    echo $((202 * 256 + i * 16))
}

# tool_report FAULT FILE PATTERN TENTHS: the report a dom0 tool writes to FILE when it is
# done, a line matching PATTERN, waited for up to TENTHS tenths of a second: logged as the
# fault's line, or the run fails with whatever FILE holds.
tool_report() {
    i=0
    while ! grep -q "$3" "$2" 2>/dev/null && [ "$i" -lt "$4" ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if grep -q "$3" "$2" 2>/dev/null; then
        ctl_log "fault: $1: $(cat "$2")"
    else
        ctl_fail "fault: $1: $(cat "$2" 2>/dev/null || echo 'never ran')"
        return 1
    fi
}

# fake_vbd <vdev> [flood|hostile] <key>=<value>...: a disk for the guest whose backend is
# this shell, under backend/rig-fake (no driver of dom0's watches it): InitWait at once; at
# the guest's Initialised, the keys as given (the disk's description: garbage on purpose), and
# with "flood", evtchn-flood on the event channel the guest published, then Connected; Closed
# when the guest closes. It serves no ring: requests go unanswered. With "hostile",
# rig/hostile-blkback serves the ring for 30 s instead: right answers, but every data page
# kept mapped, the guest's port and the backend's state node flooded (it rewrites "4" even
# after this shell wrote Closed).
fake_vbd() {
    vdev=$1
    shift
    flood=""
    hostile=""
    [ "$1" != flood ] || { flood=1 && shift; }
    [ "$1" != hostile ] || { hostile=1 && shift; }
    dom=$(xl domid "$name")
    id=$(vdev_id "$vdev")
    fe=/local/domain/$dom/device/vbd/$id
    be=/local/domain/0/backend/rig-fake/$dom/$id
    ctl_log "fault: $vdev: a fake backend at $be: ${flood:+flood, }${hostile:+hostile, }$*"
    xenstore-write "$be" "" "$fe" ""
    xenstore-chmod "$be" n0 "r$dom"
    xenstore-chmod "$fe" "n$dom" r0
    xenstore-write "$be/frontend" "$fe" "$be/frontend-id" "$dom" "$be/state" 2 \
        "$fe/backend" "$be" "$fe/backend-id" 0 "$fe/state" 1
    mkfifo "$d/fake-$id"
    xenstore-watch "$fe/state" >"$d/fake-$id" 2>/dev/null &
    echo $! >>"$d/fake-watches"
    while read -r _; do
        case $(xenstore-read "$fe/state" 2>/dev/null) in
        3)
            for kv in "$@"; do xenstore-write "$be/${kv%%=*}" "${kv#*=}"; done
            if [ -n "$flood" ]; then
                port=$(xenstore-read "$fe/event-channel")
                ctl_log "fault: $vdev: flooding the guest's port $port for 5 s"
                (
                    /rig/evtchn-flood "$dom" 5 "$port" >"$d/flood.out" 2>&1
                    echo "evtchn-flood exit status $?" >>"$d/fake.err"
                ) &
            fi
            if [ -n "$hostile" ]; then
                ring=$(xenstore-read "$fe/ring-ref")
                port=$(xenstore-read "$fe/event-channel")
                ctl_log "fault: $vdev: hostile-blkback on ring-ref $ring, port $port, for 30 s"
                (
                    /rig/hostile-blkback "$dom" "$ring" "$port" "$be/state" 30 >"$d/hostile.out" 2>&1
                    echo "hostile-blkback exit status $?" >>"$d/fake.err"
                ) &
            fi
            xenstore-write "$be/state" 4
            ;;
        5 | 6) xenstore-write "$be/state" 6 ;;
        esac
    done <"$d/fake-$id" 2>>"$d/fake.err" &
}

# At "control: ready", before the controller's xl shutdown. vif-detach: `xl network-detach`
# while dom0 streams into the guest's TCP echo and pings it; evtchn-flood: the flood's result;
# blk-attach / vif-attach: a device added to the running guest, which must find it (by its
# watch on device/), use it, and let it go again when it is removed.
fault_at_ready() {
    case $1 in
    blk-attach)
        img=/rig/attach-xvdd.img
        rm -f "$img"
        truncate -s 8M "$img"
        fault_xl block-attach "$name" "format=raw,vdev=xvdd,access=ro,target=$img" ||
            return 1
        fault_wait dev.vbd.51760.added "device: vbd/51760 added" || return 1
        fault_wait attached.xvdd "blk: xvdd attached: ..." || return 1
        ctl_log "fault: guest: $(cat "$d/attached.xvdd")"
        fault_xl block-detach "$name" xvdd || return 1
        fault_wait dev.vbd.51760.removed "device: vbd/51760 removed" || return 1
        rm -f "$img"
        ;;
    vif-attach)
        fault_xl network-attach "$name" bridge=xenbr0 || return 1
        fault_wait vif-added "device: vif/<n> added" || return 1
        read -r vif <"$d/vif-added"
        fault_wait net-ip "net: up <ip>/<len>" || return 1
        ip=$(cat "$d/net-ip")
        out=$(ping -c 5 -i 0.2 -W 2 "$ip" 2>&1)
        loss=$(echo "$out" | sed -n 's/.* \([0-9]*\)% packet loss.*/\1/p')
        ctl_log "fault: ping $ip (vif $vif): ${loss:-?}% loss of 5"
        [ "$loss" = 0 ] || { ctl_fail "fault: ping $ip: ${loss:-no}% loss"; return 1; }
        fault_xl network-detach "$name" "$vif" || return 1
        fault_wait "dev.vif.$vif.removed" "device: vif/$vif removed" || return 1
        ;;
    vif-detach)
        ctl_wait "$d/net-ip"
        ip=$(cat "$d/net-ip" 2>/dev/null) || { ctl_fail "fault: no 'net: up' line"; return 1; }
        (dd if=/dev/zero bs=65536 count=4096 2>/dev/null | timeout 30 nc "$ip" 7 >/run/fault-echo 2>&1) &
        stream=$!
        ping -i 0.1 -c 100 -W 1 "$ip" >/run/fault-ping 2>&1 &
        pinger=$!
        sleep 1
        ctl_log "fault: echo stream at $(stat -c %s /run/fault-echo) bytes back: xl network-detach $name 0"
        uptime_cs
        since=$CS
        if timeout 60 xl network-detach "$name" 0 >>"$d/control.log" 2>&1; then
            uptime_cs
            ctl_log "fault: xl network-detach done in $(secs $((CS - since))) s"
        else
            ctl_fail "fault: xl network-detach $name 0 failed"
        fi
        kill "$stream" "$pinger" 2>/dev/null
        wait "$stream" "$pinger" 2>/dev/null
        ctl_log "fault: echo stream got $(stat -c %s /run/fault-echo) bytes back in all"
        ;;
    hostile-backend)
        # Started by the fake backend of xvda at the guest's Initialised; it reports when its
        # 30 s are up.
        tool_report hostile-backend "$d/hostile.out" '^requests=' 400 || return 1
        ;;
    evtchn-flood)
        # Started by the fake backend of xvdd; its line comes when it is done.
        tool_report evtchn-flood "$d/flood.out" '^port=' 100 || return 1
        ;;
    esac
}

# After the run (the domain gone): destroy-blkfill hashes the part of the disk the guest's last
# "blkfill <dev> acked sectors=<n> seed=<s>" line vouches for.
fault_after() {
    if [ -s "$d/fake-watches" ]; then
        # shellcheck disable=SC2046 # one pid a line
        kill $(cat "$d/fake-watches") 2>/dev/null
        xenstore-rm /local/domain/0/backend/rig-fake 2>/dev/null
    fi
    [ ! -s "$d/fake.err" ] || sed 's/^/rig: fault: fake backends: /' "$d/fake.err"
    [ "$1" = destroy-blkfill ] && [ -s "$d/acked" ] || return 0
    # (Runs in the main loop's shell: its names must not clash with the loop's, like n.)
    read -r acked_dev acked_n acked_seed <"$d/acked"
    path=$(awk -v v="$acked_dev" '$2 == v { print $1 }' "$d/disks")
    [ -n "$path" ] || { say "fault: the run has no disk $acked_dev"; return 0; }
    say "fault: blkfill $acked_dev acked sectors=$acked_n seed=$acked_seed sha256=$(head -c $((acked_n * 512)) "$path" | sha256sum | cut -d' ' -f1)"
}

# A control run's toolstack side (in the background while xl create -F runs): at each boot's
# "control: ready" (a file the console reader leaves, see below) send `xl reboot` (all boots but
# the last) or `xl shutdown` (the last), and wait for xl to report the domain's shutdown; a net
# run first runs net_checks. Each wait is bounded; a guest that misses one is destroyed, which
# also ends xl create -F. Writes control.log: timed events, then "ok: <timings>" or
# "FAILED: <why>".
control_run() {
    exec 8<>/run/rig-tick
    boots=1
    [ "$1" != reboot ] || boots=2
    b=1
    since=$t0cs
    from="xl create"
    timings=""
    first_step=1
    if [ -e "$d/suspend_at" ]; then
        suspend_mid_blkfill || return
        first_step=2
        from="step 1"
    fi
    while [ "$b" -le "$boots" ]; do
        ctl_wait "$d/ready.$b"
        case $? in
        1) ctl_fail "the domain ended before 'control: ready' (boot $b)"; return ;;
        2) ctl_fail "no 'control: ready' (boot $b) within $ctl_timeout s" destroy; return ;;
        esac
        uptime_cs
        ctl_log "control: ready (boot $b) $(secs $((CS - since))) s after $from"
        timings="$timings${timings:+, }ready $(secs $((CS - since))) s"
        # The guest publishes its self-test result for the toolstack: read it as a user would.
        # (The Linux stand-in has no way to publish it: a missing key is reported, not fatal.)
        # (After a @suspend-at step the domain is another than xl create's.)
        dom=$(xl domid "$name" 2>/dev/null) || read -r dom <"$d/created"
        selftest=$(xenstore-read "/local/domain/$dom/data/selftest" 2>&1) ||
            selftest="unreadable: $selftest"
        ctl_log "data/selftest (boot $b): $selftest"
        failed=""
        if [ "$1" = net ] && ! net_checks; then failed=1; fi
        if [ "$1" = bench ] && ! bench_net; then failed=1; fi
        if [ -n "$fault" ] && ! fault_at_ready "$fault"; then failed=1; fi
        if [ -e "$d/vcpu_set" ] && ! vcpu_set_steps; then return; fi
        if [ -e "$d/mem_set" ] && ! mem_set_steps "$1"; then return; fi
        if [ -e "$d/suspend" ]; then
            suspend_run "$1" "$timings" "$first_step"
            return
        fi
        cmd=shutdown
        [ "$b" -eq "$boots" ] || cmd=reboot
        ctl_log "xl $cmd $name"
        uptime_cs
        since=$CS
        # dom0's own xl has died now and then in this rig (`malloc(): corrupted top size`,
        # `Aborted`) after writing the request: whether the guest acts on it decides, as it
        # would for a toolstack that wrote control/shutdown itself.
        xl_said=""
        xl "$cmd" "$name" >>"$d/control.log" 2>&1
        xl_rc=$?
        if [ "$xl_rc" -ne 0 ]; then
            ctl_log "xl $cmd $name exited $xl_rc: waiting for the domain to go down all the same"
            xl_said=" (xl $cmd exited $xl_rc)"
        fi
        # down.<b>: xl's b-th "has shut down" line (written by the xl log reader below).
        ctl_wait "$d/down.$b"
        case $? in
        1) ctl_fail "xl create ended without the domain shutting down after xl $cmd$xl_said"; return ;;
        2)
            ctl_fail "the guest ignored xl $cmd$xl_said: still running $ctl_timeout s later" destroy
            return
            ;;
        esac
        uptime_cs
        ctl_log "domain down (boot $b) $(secs $((CS - since))) s after xl $cmd"
        timings="$timings, xl $cmd -> down $(secs $((CS - since))) s"
        since=$CS
        from="boot $b went down"
        b=$((b + 1))
    done
    [ -n "$failed" ] || {
        echo "ok: $timings" >>"$d/control.log"
        result control ok "$timings"
    }
}

# @vcpu-set=<n>,...: at control: ready, `xl vcpu-set <name> <n>` for each n in turn; the guest
# must then say that n vCPUs are in service and that each answered a call (in-service.<n>, left
# by the console reader) within $ctl_timeout s, and `xl vcpu-list` must show n of them online.
# Returns 1 after a FAILED line.
vcpu_set_steps() {
    read -r counts <"$d/vcpu_set"
    for want in $counts; do
        rm -f "$d/in-service.$want"
        ctl_log "xl vcpu-set $name $want"
        uptime_cs
        since=$CS
        # --ignore-host: the rig's 2 physical CPUs are fewer than the guest's vCPUs.
        if ! xl vcpu-set --ignore-host "$name" "$want" >>"$d/control.log" 2>&1; then
            ctl_fail "xl vcpu-set $name $want failed" destroy
            return 1
        fi
        ctl_wait "$d/in-service.$want"
        case $? in
        1) ctl_fail "the domain ended before it had $want vCPUs in service"; return 1 ;;
        2)
            ctl_fail "no 'smp: $want of ... vCPUs in service' within $ctl_timeout s of xl vcpu-set $want" destroy
            return 1
            ;;
        esac
        uptime_cs
        # What Xen says: the vCPUs in service are online (running or blocked), the others
        # down (no physical CPU).
        online=$(xl vcpu-list "$name" 2>>"$d/control.log" | awk 'NR > 1 && $4 != "-" { n++ } END { print n + 0 }')
        if [ "$online" != "$want" ]; then
            xl vcpu-list "$name" >>"$d/control.log" 2>&1
            ctl_fail "xl vcpu-list shows $online vCPUs online after xl vcpu-set $want" destroy
            return 1
        fi
        ctl_log "vcpu-set: $want vCPUs in service $(secs $((CS - since))) s after xl vcpu-set, $online online in xl vcpu-list"
        result vcpu-set ok "$want vCPUs in service, each answered a call, $(secs $((CS - since))) s after xl vcpu-set $want; xl vcpu-list: $online online"
    done
}

# @mem-set: xl mem-set to each target (MiB) in turn while dom0 streams 8 MiB into the guest's
# TCP sink (when it has a network); after each the guest must say it reached the target
# (balloon.<KiB>, left by the console reader), xl list must show the target (to 1 MiB), the
# stream must have gone through, and in a @net run dom0's network checks must pass again.
mem_set_steps() {
    read -r sizes <"$d/mem_set"
    ip=$(cat "$d/net-ip" 2>/dev/null || true)
    for want in $sizes; do
        kib=$((want * 1024))
        rm -f "$d/balloon.$kib"
        load=""
        if [ -n "$ip" ]; then
            timeout 300 /rig/netbench send "$ip" 5001 8388608 >"$d/mem-set-load" 2>&1 &
            load=$!
        fi
        ctl_log "xl mem-set $name ${want}m"
        uptime_cs
        since=$CS
        if ! xl mem-set "$name" "${want}m" >>"$d/control.log" 2>&1; then
            ctl_fail "xl mem-set $name ${want}m failed" destroy
            return 1
        fi
        ctl_wait "$d/balloon.$kib"
        case $? in
        1) ctl_fail "the domain ended before it reached $want MiB"; return 1 ;;
        2)
            ctl_fail "no 'balloon: at target $kib KiB' within $ctl_timeout s of xl mem-set ${want}m ($(cat "$d/balloon-short" 2>/dev/null || echo 'no shortfall said'))" destroy
            return 1
            ;;
        esac
        uptime_cs
        took=$(secs $((CS - since)))
        # Xen's count, as xl list shows it: the guest's last batch may still be in flight.
        listed=""
        near=""
        for _ in $(seq 50); do
            listed=$(xl list "$name" 2>>"$d/control.log" | awk 'NR == 2 { print $3 }')
            if [ -n "$listed" ] && [ $((listed - want)) -le 1 ] && [ $((want - listed)) -le 1 ]; then
                near=1
                break
            fi
            sleep 0.2
        done
        if [ -z "$near" ]; then
            ctl_fail "xl list shows ${listed:-no} MiB after xl mem-set ${want}m" destroy
            return 1
        fi
        stream=""
        if [ -n "$load" ]; then
            if ! wait "$load"; then
                ctl_fail "mem-set ${want}m: the TCP stream into the guest failed: $(tr '\n' ' ' <"$d/mem-set-load")" destroy
                return 1
            fi
            stream=", 8 MiB streamed into the guest meanwhile"
        fi
        ctl_log "mem-set: at $want MiB $took s after xl mem-set, xl list: $listed MiB$stream"
        if [ "$1" = net ] && ! net_checks; then return 1; fi
        result mem-set ok "at $want MiB $took s after xl mem-set ${want}m, xl list: $listed MiB$stream"
    done
}

# Waits until file $1 exists (0) or $ctl_timeout seconds passed (2), as ctl_wait does, but
# whether or not xl create still runs: in a @suspend run it ends at the first suspend. Every
# ctl_wait after it does the same.
sus_wait() {
    suspended=1
    ctl_wait "$1"
}

# One step of a @suspend run: step $1 ($2: save, checkpoint or migrate), then the guest's
# "control: resumed" line (resumed.$1, left by the console reader). With $3 = paused (the
# guest was paused mid-blkfill), xl runs in the background and the guest is unpaused once
# xl's request is in control/shutdown, so that the suspend comes between two of blkfill's
# writes. Returns 1 after a FAILED line.
suspend_step() {
    k=$1
    step=$2
    paused=${3:-}
    img=/run/rig-save.img
    uptime_cs
    since=$CS
    rm -f "$img"
    case $step in
    save) set -- "xl save $name $img" xl save "$name" "$img" ;;
    checkpoint) set -- "xl save -c $name $img" xl save -c "$name" "$img" ;;
    migrate) set -- "xl migrate -s '' $name 'xl migrate-receive'" xl migrate -s "" "$name" "xl migrate-receive" ;;
    esac
    suspended=1
    ctl_log "$1"
    shift
    if [ -n "$paused" ]; then
        "$@" >>"$d/control.log" 2>&1 &
        xlpid=$!
        node=/local/domain/$(xl domid "$name")/control/shutdown
        i=0
        until [ "$(xenstore-read "$node" 2>/dev/null)" = suspend ] || [ "$i" -ge 100 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        ctl_log "$node is '$(xenstore-read "$node" 2>/dev/null)': xl unpause $name"
        xl unpause "$name"
        wait "$xlpid"
    else
        "$@" >>"$d/control.log" 2>&1
    fi
    rc=$?
    if [ "$rc" -eq 0 ] && [ "$step" = save ]; then
        ctl_log "xl restore $img"
        xl restore "$img" >>"$d/control.log" 2>&1
        rc=$?
    fi
    rm -f "$img"
    if [ "$rc" -ne 0 ]; then
        ctl_fail "step $k ($step) failed: exit $rc" destroy
        return 1
    fi
    uptime_cs
    took=$(secs $((CS - since)))
    if ! sus_wait "$d/resumed.$k"; then
        ctl_fail "no 'control: resumed' within $ctl_timeout s of step $k ($step)" destroy
        return 1
    fi
    uptime_cs
    ctl_log "step $k ($step): xl done in $took s, resumed $(secs $((CS - since))) s after the step began"
    timings="$timings${timings:+, }$step $took s"
    if dom=$(xl domid "$name" 2>/dev/null); then
        ctl_log "data/resumes (step $k): $(xenstore-read "/local/domain/$dom/data/resumes" 2>&1)"
    fi
}

# The first step of a @suspend-at=acked run, before "control: ready": at the guest's first
# "blkfill <dev> acked" line (acked.1) it is paused (the guest fills a disk faster than xl
# starts), and the step suspends it between two writes (suspend_step ... paused).
suspend_mid_blkfill() {
    read -r step _ <"$d/suspend"
    ctl_wait "$d/acked.1"
    case $? in
    1) ctl_fail "the domain ended before blkfill's first 'acked' line"; return 1 ;;
    2) ctl_fail "no 'blkfill ... acked' line within $ctl_timeout s" destroy; return 1 ;;
    esac
    xl pause "$name"
    read -r dev sectors _ <"$d/acked"
    ctl_log "paused at 'blkfill $dev acked sectors=$sectors'"
    suspend_step 1 "$step" paused
}

# A TCP connection open across a step (a net run): 1 MiB of random bytes to the guest's echo
# port, the second half sent 3 s after the first, so that the step comes in the middle of the
# stream; echo_across_check then wants it all back, identical.
echo_across_start() {
    head -c 1048576 /dev/urandom >/run/across.in
    (
        { head -c 524288 /run/across.in; sleep 3; tail -c 524288 /run/across.in; } |
            timeout 120 nc "$ip" 7 >/run/across.out 2>/run/across.err
    ) &
    echo_pid=$!
    sleep 1
}

echo_across_check() {
    wait "$echo_pid"
    got=$(stat -c %s /run/across.out)
    if cmp -s /run/across.in /run/across.out; then
        ctl_log "net: tcp echo $ip:7 open across step $k: 1048576 random bytes came back identical"
        rm -f /run/across.*
        return 0
    fi
    ctl_fail "tcp echo $ip:7 open across step $k: $got of 1048576 bytes came back, not identical ($(cat /run/across.err))"
    rm -f /run/across.*
    return 1
}

# The steps of a @suspend run (d/suspend: save, checkpoint or migrate, in order) once the
# guest is ready, from step $3 on (a @suspend-at=acked run did the first before): each one
# (suspend_step), in a net run with a TCP echo open across it and then the net checks again.
# Then xl shutdown, and the end of the last domain, as the xl watching it reports it (xl create
# -F ended at the first suspend; the daemonised xl of a restore or a migration logs to
# /var/log/xen/xl-*.log). $1: the control kind (shutdown or net), $2: the timings so far.
suspend_run() {
    timings=$2
    from=${3:-1}
    k=0
    read -r steps <"$d/suspend"
    for step in $steps; do
        k=$((k + 1))
        [ "$k" -ge "$from" ] || continue
        [ "$1" != net ] || echo_across_start
        kk=$k
        suspend_step "$k" "$step" || return
        k=$kk
        if [ "$1" = net ] && ! echo_across_check; then
            return
        fi
        if [ "$1" = net ] && ! net_checks; then
            ctl_fail "net checks after step $k ($step)" destroy
            return
        fi
    done
    dom=$(xl domid "$name" 2>/dev/null)
    ctl_log "xl shutdown $name (domain $dom)"
    uptime_cs
    since=$CS
    xl shutdown "$name" >>"$d/control.log" 2>&1
    deadline=$((CS + ctl_timeout * 100))
    while xl domid "$name" >/dev/null 2>&1; do
        uptime_cs
        if [ "$CS" -ge "$deadline" ]; then
            ctl_fail "the guest ignored xl shutdown: still there $ctl_timeout s later" destroy
            return
        fi
        # shellcheck disable=SC3045 # busybox ash has read -t (fractional)
        read -r -t 0.2 _ <&8
    done
    uptime_cs
    timings="$timings, xl shutdown -> gone $(secs $((CS - since))) s"
    # The last domain's end, from the xl that watched it, into xl.log for the run's reasons.
    grep -h "Domain $dom has shut down, reason code" /var/log/xen/xl-*.log 2>/dev/null |
        tail -n 1 | sed "s/^/[$CS] /" >>"$d/xl.log"
    echo "ok: $timings" >>"$d/control.log"
    result control ok "$timings"
}

# The run's disks, made afresh (the previous runs' are deleted: they hold dom0 memory):
# "rig: disk <vdev> before size=<bytes> sha256=<hex>" each. An image's sum is dom0's sha256sum
# of the file, once per image (it is the same file every run); a scratch disk's is the host's.
disks_before() {
    rm -f /rig/disk*.img
    while read -r path vdev kind src; do
        [ -n "$path" ] || continue
        if [ "$kind" = image ]; then
            cp "$src" "$path"
            [ -s "$src.sha256" ] || sha256sum <"$src" | cut -d' ' -f1 >"$src.sha256"
            sum=$(cat "$src.sha256")
        else
            truncate -s "${src}M" "$path"
            sum=$(cat "/rig/zero-sha256-$src")
        fi
        say "disk $vdev before size=$(stat -c %s "$path") sha256=$sum"
    done <"$d/disks"
}
# After the run: "rig: disk <vdev> after size=<bytes> sha256=<hex>". A scratch file still
# without a block (tmpfs allocates none for holes or reads) is still all zeros.
disks_after() {
    while read -r path vdev kind src; do
        [ -n "$path" ] || continue
        if [ "$kind" = scratch ] && [ "$(stat -c %b "$path")" = 0 ]; then
            sum=$(cat "/rig/zero-sha256-$src")
        else
            sum=$(sha256sum <"$path" | cut -d' ' -f1)
        fi
        say "disk $vdev after size=$(stat -c %s "$path") sha256=$sum"
    done <"$d/disks"
}

# Sets qemu=1 and reports the QEMU serving qdisk/$dom if one runs: the process libxl
# recorded, else any whose command line names the binary (one grep, no fork per process).
find_qemu() {
    pid=$(xenstore-read "/local/domain/$dom/image/device-model-pid" 2>/dev/null)
    files=""
    if grep -q 'xen-qemu-system-i38[6]' "/proc/$pid/cmdline" 2>/dev/null; then
        files=/proc/$pid/cmdline
    else
        files=$(grep -l 'xen-qemu-system-i38[6]' /proc/[0-9]*/cmdline 2>/dev/null)
    fi
    for f in $files; do
        p=${f#/proc/}
        p=${p%/cmdline}
        [ -n "$qemu" ] || result qdisk-qemu ok "pid $p"
        qemu=1
        echo "qemu pid $p $(grep VmRSS /proc/"$p"/status | tr -s ' \t' ' '):" \
            "$(tr '\0' ' ' <"$f")" >>"$d/qdisk.log"
    done
}

qemu_missing() {
    why="no xen-qemu-system-i386 process (libxl's image/device-model-pid: '$pid'"
    if [ -r "/proc/$pid/cmdline" ]; then
        why="$why, running: $(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-80))"
    else
        why="$why, not running)"
    fi
    echo "$why" >>"$d/qdisk.log"
    result qdisk-qemu fail "$why"
}

# A run with a qdisk disk: libxl starts QEMU as the domain's device model and QEMU serves the
# disk, its nodes under backend/qdisk/<domid>. Shows that it really did, in qdisk.log: QEMU's
# pid, size and command line, the backend's nodes once QEMU has taken them up (no state 1,
# Initialising, left), and the states once all are Connected (4) or the bound passes. Polls
# once a second (an exec each, ~80 ms under TCG), for the first --control-timeout seconds.
qdisk_watch() {
    exec 8<>/run/rig-tick
    ctl_wait "$d/created" || {
        echo "the domain was never created" >>"$d/qdisk.log"
        result qdisk-backend fail "the domain was never created"
        result qdisk-qemu fail "the domain was never created"
        return
    }
    uptime_cs
    since=$CS
    deadline=$((CS + ctl_timeout * 100))
    read -r dom <"$d/created"
    be=/local/domain/0/backend/qdisk/$dom
    taken=""
    qemu=""
    pid=""
    connected=""
    last=""
    while :; do
        nodes=$(xenstore-ls -f "$be" 2>/dev/null)
        states=$(echo "$nodes" | sed -n 's|^'"$be"'/\([0-9]*\)/state = "\([0-9]*\)"$|\1=\2|p' | tr '\n' ' ')
        uptime_cs
        [ -z "$states" ] || last="${states% } at $(secs $((CS - since))) s"
        if [ -z "$taken" ] && [ -n "$states" ] && [ "${states#*=1 }" = "$states" ]; then
            taken=1
            result qdisk-backend ok "$be up $(secs $((CS - since))) s after creation: ${states% }"
            {
                echo "backend $be up $(secs $((CS - since))) s after creation: ${states% }"
                echo "$nodes" | sed 's/^/node: /'
            } >>"$d/qdisk.log"
        fi
        # Looked for at every sample until found, not once: the scan found no QEMU now and
        # then right after QEMU had written its backend's state.
        [ -z "$taken" ] || [ -n "$qemu" ] || find_qemu
        case " $states" in *=[0-35-9]\ *) ;; " "?*)
            [ -n "$connected" ] ||
                echo "all connected $(secs $((CS - since))) s after creation: ${states% }" >>"$d/qdisk.log"
            connected=1
            [ -z "$qemu" ] || return
            ;;
        esac
        if [ "$CS" -ge "$deadline" ] || [ -e "$d/xl.rc" ] || [ -e "$d/down.1" ]; then
            # (Polled once a second: a guest that closes and reopens its disks may be Connected
            # between two samples only.)
            echo "states $(secs $((CS - since))) s after creation: ${states:-none} (last seen: ${last:-none})" >>"$d/qdisk.log"
            if [ -z "$taken" ]; then
                result qdisk-backend fail "states $(secs $((CS - since))) s after creation: ${states:-none} (last seen: ${last:-none})"
                result qdisk-qemu fail "not looked for: the backend never came up"
            elif [ -z "$qemu" ]; then
                qemu_missing
            fi
            return
        fi
        # shellcheck disable=SC3045 # busybox ash has read -t
        read -r -t 1 _ <&8
    done
}

run_timeout=$(cat /rig/run-timeout)
ctl_timeout=$(cat /rig/control-timeout)
mkfifo /run/rig-tick
say "dom0 ready: $(cut -d' ' -f1 /proc/uptime) s"
# What glibc picks its string functions by (xen-rig.py turns AVX off).
say "dom0 cpu: $(grep -m 1 '^flags' /proc/cpuinfo | grep -o -w -E 'avx|avx2|avx512f|erms|fsrm' | tr '\n' ' ')"
dump_dmesg >/dev/null
fpu_check=
if [ -x /rig/fpu-check ]; then
    /rig/fpu-check "$(cat /rig/fpu-check-seconds)" 2>&1 | sed 's/^/rig: /' &
    fpu_check=$!
fi

# The console reader of FIFO $1 (see the run loop): passes the guest's lines through and
# leaves the controller's marker files in $d.
console_reader() {
    awk -v fifo="$1" -v stop="$d/console-done" -v dir="$d" 'BEGIN {
        while (1) {
            while ((getline line <fifo) > 0) {
                print line
                fflush()
                if (line ~ /^control: ready/) { f = dir "/ready." ++k; printf "" >f; close(f) }
                # resumed.<n>: the n-th resume ("control: resumed ...: resumes=N cancelled=M",
                # n = N + M), whichever of the console FIFOs it came through.
                if (match(line, /^control: resumed .*resumes=[0-9]+ cancelled=[0-9]+$/)) {
                    split(substr(line, index(line, "resumes=")), w, "[ =]")
                    f = dir "/resumed." (w[2] + w[4]); printf "" >f; close(f)
                }
                if (match(line, /blkfill [a-z0-9]+ acked sectors=[0-9]+ seed=[0-9]+/)) {
                    split(substr(line, RSTART, RLENGTH), w, "[ =]")
                    f = dir "/acked"; print w[2], w[5], w[7] >f; close(f)
                    f = dir "/acked." ++acked; printf "" >f; close(f)
                }
                # in-service.<n>: the guest has n vCPUs in service, each of which answered a call
                # (@vcpu-set).
                if (line ~ /^smp: [0-9]+ of [0-9]+ vCPUs in service .*, each answered a call$/) {
                    split(line, w, " "); f = dir "/in-service." w[2]; printf "" >f; close(f)
                }
                # balloon.<KiB>: the guest reached that memory target (@mem-set); balloon-short:
                # the last shortfall it said.
                if (match(line, /balloon: at target [0-9]+ KiB/)) {
                    split(substr(line, RSTART, RLENGTH), w, " ")
                    f = dir "/balloon." w[4]; printf "" >f; close(f)
                }
                if (line ~ /balloon: .* short of target /) { f = dir "/balloon-short"; print line >f; close(f) }
                # ok.<k>: the k-th self-test passed (@fault=shutdown-mid-tests acts at one).
                if (line ~ /^ok [0-9]+ /) { split(line, w, " "); f = dir "/ok." w[2]; printf "" >f; close(f) }
                # dev.<vbd|vif>.<id>.<added|removed>, and vif-added (the id) for the hot-attach
                # faults; attached.<vdev>: the line describing a disk the guest attached.
                if (match(line, /device: (vbd|vif)\/[0-9]+ (added|removed)/)) {
                    split(substr(line, RSTART, RLENGTH), w, "[ /]")
                    f = dir "/dev." w[2] "." w[3] "." w[4]; printf "" >f; close(f)
                    if (w[2] == "vif" && w[4] == "added") { f = dir "/vif-added"; print w[3] >f; close(f) }
                }
                if (match(line, /blk: [a-z0-9]+ attached: /)) {
                    split(substr(line, RSTART), w, " ")
                    f = dir "/attached." w[2]; print line >f; close(f)
                }
                if (line ~ /^net: up /) {
                    split(line, w, " "); split(w[3], a, "/")
                    f = dir "/net-ip"; print a[1] >f; close(f)
                }
            }
            close(fifo)
            if ((getline x <stop) >= 0) exit
        }
    }'
}

# The staged runs in order; their numbers need not start at 1 nor follow each other (a boot that
# runs again what a host fault broke has only those).
# shellcheck disable=SC2012 # the names are the run numbers xen-rig.py staged
for n in $(ls /rig/run | sort -n); do
    d=/rig/run/$n
    name=$(cat "$d/name")
    : >"$d/results"

    # xenconsoled appends the guest's console to guest-<name>.log; as a FIFO it streams it to us
    # without polling. xenconsoled closes it when the domain is gone and opens it again for a
    # restarted domain of the same name (a reboot), blocking until there is a reader: so the
    # reader reopens it after each EOF until console-done says the run is over. It passes the
    # console through line by line and leaves ready.<k> at the k-th "control: ready" line for
    # the controller. (getline from a file that will not open returns -1: no fork per check.)
    log=/var/log/xen/console/guest-$name.log
    rm -f "$log"
    mkfifo "$log"
    console_reader "$log" &
    reader=$!
    # A migration's receiving domain is "<name>--incoming" when xenconsoled first sees it,
    # and xenconsoled blocks opening a FIFO nobody reads: read that one too.
    log2=""
    reader2=""
    if grep -q migrate "$d/suspend" 2>/dev/null; then
        log2=/var/log/xen/console/guest-$name--incoming.log
        rm -f "$log2"
        mkfifo "$log2"
        console_reader "$log2" &
        reader2=$!
    fi
    rm -f /var/log/xen/xl-*.log

    set --
    while IFS= read -r a; do set -- "$@" "$a"; done <"$d/args"
    say "run $n begin: $(cat "$d/label")"
    # @nodhcp: the guest finds the bridge without a DHCP server (its lease file stays: the
    # server answers the next run as before).
    nodhcp=""
    if [ -e "$d/nodhcp" ] && pid=$(cat /run/udhcpd.pid 2>/dev/null) && kill "$pid" 2>/dev/null; then
        i=0
        while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 40 ]; do
            sleep 0.05
            i=$((i + 1))
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "dhcp: udhcpd (pid $pid) still running after 2 s"
            result nodhcp fail "udhcpd (pid $pid) still running after 2 s"
        else
            nodhcp=1
            say "dhcp: udhcpd stopped for this run (@nodhcp)"
            result nodhcp ok "udhcpd stopped for this run"
        fi
    elif [ -e "$d/nodhcp" ]; then
        say "dhcp: no udhcpd to stop"
        result nodhcp fail "no udhcpd to stop"
    fi
    disks_before
    read -r t0 _ </proc/uptime
    uptime_cs
    t0cs=$CS
    echo "[$t0] xl create" >"$d/xl.log"
    : >"$d/control.log"
    fault=$(cat "$d/fault" 2>/dev/null)
    # The faults that set up devices before the guest looks at them create it paused.
    pause=""
    case $fault in garbage-keys | evtchn-flood) pause=-p ;; esac
    faulter=""
    if [ -n "$fault" ]; then
        fault_background "$fault" &
        faulter=$!
    fi
    qdisk=""
    if [ -e "$d/qdisk" ]; then
        # (Its stderr off the console, which carries the guest's lines.)
        qdisk_watch 2>>"$d/qdisk.log" &
        qdisk=$!
    fi
    controller=""
    if [ -e "$d/control" ]; then
        control_run "$(cat "$d/control")" &
        controller=$!
    fi
    # A hung guest must not cost the remaining runs: destroy it after --run-timeout.
    watchdog=""
    if [ "$run_timeout" -gt 0 ]; then
        (sleep "$run_timeout" && touch "$d/timed-out" && xl destroy "$name") >/dev/null 2>&1 &
        watchdog=$!
    fi
    # -F keeps xl in the foreground until the domain is gone (or preserved); on a reboot with
    # on_reboot="restart" it creates the domain again (new domid) and keeps waiting. Its lines
    # get dom0's uptime in front (to time the toolstack's phases) and go to a file, printed after
    # the run, so they can't interleave with the guest's. down.<k> marks the k-th shutdown.
    {
        # shellcheck disable=SC2046 # xl-opts is a word list on purpose
        xl $(cat /rig/xl-opts) create -F $pause "$d/cfg" "$@"
        echo $? >"$d/xl.rc"
    } 2>&1 | {
        k=0
        while IFS= read -r l; do
            read -r up _ </proc/uptime
            echo "[$up] $l" >>"$d/xl.log"
            case $l in
            *"has shut down, reason code"*) k=$((k + 1)) && : >"$d/down.$k" ;;
            *"Waiting for domain"*)
                # "Waiting for domain <name> (domid <n>) to die": the domid, for whoever waits
                # on it, without another xl (each one more exec, and under oxenstored xl
                # itself aborted now and then: "malloc(): corrupted top size").
                id=${l##*(domid }
                echo "${id%%)*}" >"$d/created"
                ;;
            esac
        done
    }
    rc=$(cat "$d/xl.rc")
    [ -z "$watchdog" ] || kill "$watchdog" 2>/dev/null
    [ -z "$controller" ] || wait "$controller"
    [ -z "$faulter" ] || wait "$faulter"
    [ -z "$qdisk" ] || wait "$qdisk"
    read -r t1 _ </proc/uptime

    # A preserved domain (xen-rig.py sets on_crash="preserve"): dump its vCPUs for debugging
    # (symbolised if the host could make a System.map), then destroy it: xenconsoled holds the
    # console FIFO open while the domain exists, and the next run wants a clean slate. The dump
    # is printed after the console drained.
    : >"$d/xenctx.log"
    if id=$(xl domid "$name" 2>/dev/null); then
        echo "domain $name ($id) was preserved; its vCPU state:" >"$d/xenctx.log"
        syms=""
        [ ! -e "$d/ours" ] || [ ! -s /rig/guest/System.map ] || syms="-s /rig/guest/System.map"
        # shellcheck disable=SC2086 # $syms is empty or two words
        xenctx -a -C $syms "$id" >>"$d/xenctx.log" 2>&1
        xl destroy "$id" >>"$d/xl.log" 2>&1
    fi

    # End the reader: once console-done exists it stops after the next EOF. While xenconsoled
    # still has the FIFO open the reader drains it; once it is closed (domain gone, or never
    # started) the reader sits in open() waiting for a writer: a read-write open of ours lets
    # that open return and see EOF (a write-only open would block if the reader were gone).
    # Repeated, because the reader may be between EOF and its next open. Bounded (30 s), should
    # a domain linger and keep xenconsoled's end open.
    : >"$d/console-done"
    for r in "$reader:$log" ${reader2:+"$reader2:$log2"}; do
        i=0
        while kill -0 "${r%%:*}" 2>/dev/null; do
            : <>"${r#*:}"
            i=$((i + 1))
            [ "$i" -lt 600 ] || kill "${r%%:*}"
            sleep 0.05
        done
        wait "${r%%:*}"
    done

    sed 's/^/rig: xenctx: /' "$d/xenctx.log"
    sed 's/^/rig: control: /' "$d/control.log"
    codes=$(sed -n 's/.*has shut down, reason code \([0-9]*\).*/\1/p' "$d/xl.log")
    code=$(echo "$codes" | tail -n 1)
    reasons=""
    for c in $codes; do reasons="$reasons${reasons:+,}$(reason_name "$c")"; done
    [ ! -e "$d/destroyed" ] || code=destroyed reasons="$reasons${reasons:+,}destroyed"
    [ ! -e "$d/timed-out" ] || code=timeout reasons="$reasons${reasons:+,}run-timeout"
    sed 's/^/rig: xl: /' "$d/xl.log"
    # QEMU's own log, when libxl started it (xl rotates the file: each run has its own).
    [ ! -e "$d/qdisk.log" ] || sed 's/^/rig: qdisk: /' "$d/qdisk.log"
    # A device model that could not create a device, or died, is dom0's failure whatever the
    # guest did next.
    qemu_err=""
    for f in /var/log/xen/qemu-dm-*.log; do
        [ -e "$f" ] || continue
        sed "s/^/rig: qemu-dm: /" "$f"
        [ -n "$qemu_err" ] ||
            qemu_err=$(grep -m 1 -E 'failed|malloc\(\)|corrupted|Segmentation|Aborted|assert' "$f")
        rm -f "$f"*
    done
    if [ -e "$d/qdisk" ]; then
        if [ -n "$qemu_err" ]; then result qemu-dm fail "$qemu_err"; else result qemu-dm ok "no complaint in QEMU's log"; fi
    fi
    disks_after
    fault_after "$fault"
    dump_dmesg
    cat "$d/results"
    if [ -n "$nodhcp" ]; then
        if udhcpd /etc/udhcpd.conf; then say "dhcp: udhcpd restarted"; else say "dhcp: udhcpd failed to restart"; fi
    fi
    say "run $n end: xl exit=$rc reason=$(reason_name "$code") seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') reasons=${reasons:-none}"
done

say "all runs done: $(cut -d' ' -f1 /proc/uptime) s"
[ -n "$fpu_check" ] && wait "$fpu_check"
poweroff -f
