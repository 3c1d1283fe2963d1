#!/usr/bin/env bash
# Boots QEMU (TCG) -> Debian Xen 4.17 -> a Debian Linux dom0 from an initramfs, and runs a PV
# guest with `xl create` once per RUN, all in one boot. See rig/README.md and
# /work/shared/rig/NOTES.md (the facts this is built on).
#
#   rig/xen-rig.sh [--timeout SECONDS] [--run-timeout SECONDS] [--work DIR] [--disk-mb MIB]
#                  [--expect-bulk] [--expect-fatal TEXT] [--fast-hotplug] [--verbose]
#                  [--xl-verbose] [--control-timeout SECONDS] [--log FILE]
#                  [--xenstored oxenstored|cxenstored] [--peer IMAGE2 CFG2] [--bench-mib MIB]
#                  IMAGE CFG [RUN ...]
#
# RUN is a space-separated list of xl key=value overrides, e.g. 'memory=32' or
# 'extra="log=debug bogus=1"'. No RUN means one run without overrides. A RUN may start with a
# rig directive: @shutdown (after the guest prints "control: ready", dom0 runs `xl shutdown`;
# the guest must print "control: shutdown poweroff" and end with reason poweroff) or @reboot
# (`xl reboot` at the first "control: ready", `xl shutdown` at the second: two boots, reasons
# reboot then poweroff), e.g. '@reboot extra="log=info tests=none stay"', or @net (as @shutdown,
# but first dom0 checks the guest's network at the address of its "net: up <ip>/<len>" line:
# ping -c 20 without loss, 1 MiB of random bytes through TCP echo on port 7, and the HTTP page on
# port 80 showing the self-test result). Each wait (for
# "control: ready", for the domain to go down) is bounded by --control-timeout (default 20 s).
# @image=<vdev>:<host path> (may repeat) makes that disk a fresh copy of the host file instead
# of a --disk-mb scratch file (added as 'format=raw,vdev=<vdev>,access=rw' if no disk has that
# vdev). dom0 prints "rig: disk <vdev> before|after size=<bytes> sha256=<hex>" per disk, and a
# guest's "blksum <dev> ... sha256=<hex>" / "blkfill <dev> done sectors=<n> seed=<u64>" line
# must match the disk before the run / the pattern (rig/blkfill-pattern.py) after it.
# @fault=<name> (blk-detach, vif-detach, garbage-keys, evtchn-flood, grant-exhaust,
# destroy-blkfill, blk-attach, vif-attach, shutdown-mid-tests): dom0 injects that fault while
# the guest runs; the run passes if the guest printed the fault's lines and otherwise ended as a
# @shutdown run (destroy-blkfill: the writes the guest logged as acknowledged are on the disk).
# @nodhcp: dom0's DHCP server is stopped during the run (with `stay` and no other directive, the
# run is a @shutdown run). @intact: every disk of the run must hold after it exactly what it
# held before (a boot that was given no disk to write). A disk with backendtype=qdisk is served by QEMU in dom0 (added to
# the initramfs only then). See rig/README.md.
# --timeout bounds the whole QEMU boot (default 300 s); --run-timeout, if given, destroys a
# guest that runs longer so the remaining runs still happen. --expect-bulk fails a run without a
# verified console-bulk block. --expect-fatal TEXT: every run must instead crash (reason crash)
# after printing TEXT, as the guest's `fault=` option makes it; given again, the Nth TEXT is for
# run N (the last one for the runs after it). --verbose shows everything
# live (the Xen and dom0 boot logs, console-bulk lines); the log file always has everything.
# --xl-verbose runs `xl -vvv create`. --log FILE: a copy of this invocation's whole log (the
# cache's last-run.log may be another session's by the time this one ends). The cache is
# $RIG_WORK if set, else target/rig; --work overrides both.
# --fast-hotplug replaces Xen's bash block/vif-bridge scripts in dom0 by rig/hotplug/ (same
# result, ~4 s less per run with a disk and a vif). --xenstored picks dom0's xenstore daemon:
# cxenstored (default, the C xenstored, --entry-size 8192) or oxenstored (the OCaml one, with
# Debian's oxenstored.conf and its quotas).
# --peer IMAGE2 CFG2: a second guest (the Linux PV domU peer) for the runs marked @peer, in the
# same boot: e.g. ours, the peer, ours, the peer... @bench: as @net, but at "control: ready"
# dom0 measures the guest's network with its own tools, the same for either guest: busybox
# ping -c 21 -i 0.2, and rig/netbench (static C, CLOCK_MONOTONIC, byte counts at both ends)
# moving --bench-mib MiB (default 32) to the guest's sink on port 5001 and from its source on
# 5002; it prints "bench: net_<row> <value> <unit> <detail>" lines (control.log).
# Exit status: 0 all runs passed, 1 a run failed or is missing, 2 rig/setup error, 3 timeout.
set -euo pipefail

RIG_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$RIG_DIR")
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$RIG_DIR/common.sh"

usage() {
    sed -n '6,55s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

timeout_s=300
run_timeout=0
RIG_WORK=${RIG_WORK:-$REPO_DIR/target/rig}
disk_mb=64
verbose=""
xl_opts=""
expect_bulk=""
expect_fatal=()
fast_hotplug=""
control_timeout=20
# @fault=<name>: see rig/README.md, "Fault injection".
FAULTS="blk-detach vif-detach garbage-keys evtchn-flood grant-exhaust destroy-blkfill blk-attach
vif-attach shutdown-mid-tests hostile-backend"
FAULTS=${FAULTS//$'\n'/ }
xenstored=cxenstored
log_copy=""
peer_image=""
peer_cfg=""
bench_mib=32
while (($#)); do
    case $1 in
    --timeout) timeout_s=${2:?}; shift 2 ;;
    --run-timeout) run_timeout=${2:?}; shift 2 ;;
    --work) RIG_WORK=${2:?}; shift 2 ;;
    --disk-mb) disk_mb=${2:?}; shift 2 ;;
    --expect-bulk) expect_bulk=1; shift ;;
    --expect-fatal) expect_fatal+=("${2:?}"); shift 2 ;;
    --fast-hotplug) fast_hotplug=1; shift ;;
    --verbose | -v) verbose=1; shift ;;
    --xl-verbose) xl_opts=-vvv; shift ;;
    --control-timeout) control_timeout=${2:?}; shift 2 ;;
    --log) log_copy=${2:?}; shift 2 ;;
    --xenstored) xenstored=${2:?}; shift 2 ;;
    --peer) peer_image=${2:?} peer_cfg=${3:?}; shift 3 ;;
    --bench-mib) bench_mib=${2:?}; shift 2 ;;
    -h | --help) usage ;;
    --) shift; break ;;
    -*) rig_log "unknown option $1"; usage ;;
    *) break ;;
    esac
done
(($# >= 2)) || usage
image=$1 cfg=$2
shift 2
runs=("$@")
((${#runs[@]})) || runs=("")
[[ -f $image ]] || rig_die "no guest image $image"
[[ -f $cfg ]] || rig_die "no xl config $cfg"
if [[ -n $peer_image ]]; then
    [[ -f $peer_image ]] || rig_die "no peer image $peer_image"
    [[ -f $peer_cfg ]] || rig_die "no peer xl config $peer_cfg"
fi
[[ $timeout_s =~ ^[0-9]+$ && $run_timeout =~ ^[0-9]+$ && $disk_mb =~ ^[0-9]+$ &&
    $control_timeout =~ ^[1-9][0-9]*$ && $bench_mib =~ ^[1-9][0-9]*$ ]] ||
    rig_die "--timeout, --run-timeout, --disk-mb, --control-timeout and --bench-mib take whole numbers"
((bench_mib <= 1024)) || rig_die "--bench-mib: at most 1024"
[[ $xenstored == oxenstored || $xenstored == cxenstored ]] ||
    rig_die "--xenstored takes oxenstored or cxenstored, not '$xenstored'"

# Resolves a path from the cfg the way a person reading it would: relative to the cfg's
# directory first, then to the current directory.
resolve_cfg_path() {
    local p=$1
    if [[ $p == /* ]]; then
        printf '%s\n' "$p"
    elif [[ -e $(dirname "$cfg")/$p ]]; then
        printf '%s\n' "$(dirname "$cfg")/$p"
    else
        printf '%s\n' "$p"
    fi
}

# The vdev of a disk element: its vdev= key, else the third positional field (target, format,
# vdev, access); target= comes last and may hold commas.
disk_vdev() {
    local el=${1%%target=*} f pos=0
    local -a fields
    IFS=, read -ra fields <<<"$el"
    for f in "${fields[@]}"; do
        f=${f//[[:space:]]/}
        [[ -n $f ]] || continue
        if [[ $f == vdev=* ]]; then
            REPLY=${f#vdev=}
            return
        fi
        [[ $f == *=* ]] && continue
        pos=$((pos + 1))
        if ((pos == 3)); then
            REPLY=$f
            return
        fi
    done
    REPLY=""
}

# Points every element of a one-line disk list (`disk = [...]` in the cfg or a RUN) at a file
# /rig/diskK.img in dom0, handling the positional ('path,raw,xvda,w') and the keyword
# ('...,target=path') syntax. Sets REPLY (the rewritten text), DISK_ELEMS (the rewritten
# elements, quotes included) and DISK_MAP ("<path> <vdev>" per element). Before each run dom0
# creates the disks of that run's effective list: a fresh sparse scratch file of --disk-mb MiB,
# or a copy of an @image file.
ndisks=0
rewrite_disk_list() {
    local rest=$1 result="" pre q el path
    local re="^([^\"']*)([\"'])([^\"']*)[\"'](.*)$"
    DISK_ELEMS=()
    DISK_MAP=()
    while [[ $rest =~ $re ]]; do
        pre=${BASH_REMATCH[1]} q=${BASH_REMATCH[2]} el=${BASH_REMATCH[3]} rest=${BASH_REMATCH[4]}
        ndisks=$((ndisks + 1))
        path=/rig/disk$ndisks.img
        disk_vdev "$el"
        [[ -n $REPLY ]] || rig_die "cannot tell the vdev of disk '$el'"
        DISK_MAP+=("$path $REPLY")
        if [[ $el == *target=* ]]; then
            el="${el%%target=*}target=$path"
        else
            el="$path${el#"${el%%,*}"}"
        fi
        result+="$pre$q$el$q"
        DISK_ELEMS+=("$q$el$q")
    done
    REPLY=$result$rest
}

# A cfg's disk lines, rewritten up front: a RUN's @image may have to extend the cfg's list.
# parse_cfg CFG PREFIX sets <PREFIX>_disk_lines[<line number>] (the rewritten line, an
# associative array declared by the caller), <PREFIX>_elems/<PREFIX>_map (the last list: the
# one xl uses) and <PREFIX>_extra (its extra=). Called for the cfg (cfg_*), then the peer's
# (peer_*).
# shellcheck disable=SC2034 # the namerefs set the caller's variables
parse_cfg() {
    local -n lines=${2}_disk_lines elems_out=${2}_elems map_out=${2}_map extra_out=${2}_extra
    local lineno=0 line
    while IFS= read -r line || [[ -n $line ]]; do
        lineno=$((lineno + 1))
        if [[ $line =~ ^[[:space:]]*extra[[:space:]]*=[[:space:]]*[\"\']([^\"\']*) ]]; then
            extra_out=${BASH_REMATCH[1]}
        fi
        if [[ $line =~ ^[[:space:]]*disk[[:space:]]*= ]]; then
            [[ $line == *']'* ]] || rig_die "$1: the disk = [...] list must be on one line"
            rewrite_disk_list "$line"
            # shellcheck disable=SC2004 # an associative array: the key is the number's text
            lines[$lineno]=$REPLY
            elems_out=("${DISK_ELEMS[@]}")
            map_out=("${DISK_MAP[@]}")
        fi
    done <"$1"
}
# shellcheck disable=SC2034 # set and read through parse_cfg's and stage_cfg's namerefs
declare -A cfg_disk_lines=() peer_disk_lines=()
cfg_elems=() cfg_map=() cfg_extra=""
peer_elems=() peer_map=() peer_extra=""
parse_cfg "$cfg" cfg
[[ -z $peer_image ]] || parse_cfg "$peer_cfg" peer

# Splits a RUN string into xl key=value arguments on blanks outside quotes and brackets, keeping
# the quotes: xl appends each argument to the config text as a line of its own.
split_overrides() {
    local s=$1 tok="" q="" depth=0 c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        if [[ -n $q ]]; then
            tok+=$c
            [[ $c != "$q" ]] || q=""
            continue
        fi
        case $c in
        \" | \') q=$c; tok+=$c ;;
        \[) depth=$((depth + 1)); tok+=$c ;;
        \]) depth=$((depth - 1)); tok+=$c ;;
        ' ' | $'\t')
            if ((depth > 0)); then
                tok+=$c
            elif [[ -n $tok ]]; then
                printf '%s\n' "$tok"
                tok=""
            fi
            ;;
        *) tok+=$c ;;
        esac
    done
    [[ -z $q && $depth -eq 0 ]] || rig_die "unbalanced quotes or brackets in run '$s'"
    [[ -z $tok ]] || printf '%s\n' "$tok"
}

# RUN strings -> xl arguments, checked before anything is built. run_args[i] holds the
# arguments one per line, run_names[i] the domain name (for the console log's file name),
# run_controls[i] the control directive (shutdown, reboot or empty), run_labels[i] the overrides
# without the directives, run_directives[i] the directives as given, run_disks[i] the run's disks
# for dom0 ("<path> <vdev> scratch <MiB>" or "<path> <vdev> image <file in dom0>", one a line).
# @image files go into dom0 once each (images[<host path>] = their number).
run_args=()
run_names=()
run_controls=()
run_labels=()
run_directives=()
run_disks=()
run_faults=()
run_nodhcp=()
run_intact=()
run_qdisk=()
run_peer=()
declare -A images=()
image_files=()
for i in "${!runs[@]}"; do
    n=$((i + 1))
    args=$(split_overrides "${runs[$i]}") || exit 2
    name=""
    control=""
    fault=""
    nodhcp=""
    intact=""
    peer=""
    extra=$cfg_extra
    label=""
    directives=""
    declare -A run_images=()
    image_order=()
    arglist=()
    disk_arg=-1 # index in arglist of the last disk= override (the one xl uses)
    elems=("${cfg_elems[@]}")
    map=("${cfg_map[@]}")
    while IFS= read -r a; do
        [[ -n $a ]] || continue
        if [[ $a == @* ]]; then
            [[ -z $label ]] || rig_die "run $n: the directive '$a' must come before the overrides"
            directives+="${directives:+ }$a"
            case $a in
            @shutdown | @reboot | @net | @bench)
                [[ -z $control ]] || rig_die "run $n: more than one of @shutdown/@reboot/@net/@bench"
                control=${a#@}
                ;;
            @peer)
                [[ -n $peer_image ]] || rig_die "run $n: @peer without --peer IMAGE CFG"
                [[ -z $peer ]] || rig_die "run $n: @peer twice"
                [[ ${#image_order[@]} -eq 0 ]] || rig_die "run $n: @peer must come before @image"
                peer=1
                extra=$peer_extra
                elems=("${peer_elems[@]}")
                map=("${peer_map[@]}")
                ;;
            @nodhcp) nodhcp=1 ;;
            @intact) intact=1 ;;
            @image=*)
                spec=${a#@image=}
                [[ $spec =~ ^([a-z][a-z0-9]*):(.+)$ ]] ||
                    rig_die "run $n: '$a' is not @image=<vdev>:<host path>"
                vdev=${BASH_REMATCH[1]} src=${BASH_REMATCH[2]}
                [[ -f $src && -r $src ]] || rig_die "run $n: image '$src' is not a readable file"
                size=$(stat -L -c %s "$src")
                ((size > 0 && size % 512 == 0)) ||
                    rig_die "run $n: image '$src' is $size bytes, not a (non-zero) multiple of 512"
                [[ -z ${run_images[$vdev]:-} ]] || rig_die "run $n: two @image for $vdev"
                src=$(realpath "$src")
                if [[ -z ${images[$src]:-} ]]; then
                    image_files+=("$src")
                    images[$src]=${#image_files[@]}
                fi
                run_images[$vdev]=${images[$src]}
                image_order+=("$vdev")
                ;;
            @fault=*)
                fault=${a#@fault=}
                [[ " $FAULTS " == *" $fault "* ]] || rig_die "run $n: unknown fault '$fault' ($FAULTS)"
                ;;
            *) rig_die "run $n: unknown directive '$a' (@shutdown, @reboot, @net, @bench, @peer, @nodhcp, @intact, @image=<vdev>:<path>, @fault=<name>)" ;;
            esac
            continue
        fi
        label+="${label:+ }$a"
        [[ $a =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || rig_die "run $n: '$a' is not key=value"
        if [[ $a =~ ^name=[\"\']?([^\"\']*) ]]; then name=${BASH_REMATCH[1]}; fi
        if [[ $a =~ ^extra=[\"\']?([^\"\']*) ]]; then extra=${BASH_REMATCH[1]}; fi
        if [[ $a == disk=* ]]; then
            rewrite_disk_list "$a"
            a=$REPLY
            disk_arg=${#arglist[@]}
            elems=("${DISK_ELEMS[@]}")
            map=("${DISK_MAP[@]}")
        fi
        arglist+=("$a")
    done <<<"$args"
    # An @image vdev the effective disk list lacks gets an element of its own: the list is
    # rewritten as an override (replacing the run's disk= or, if none, after the others).
    added=""
    for vdev in "${image_order[@]}"; do
        found=""
        for m in "${map[@]}"; do [[ ${m#* } != "$vdev" ]] || found=1; done
        [[ -z $found ]] || continue
        ndisks=$((ndisks + 1))
        path=/rig/disk$ndisks.img
        elems+=("'format=raw,vdev=$vdev,access=rw,target=$path'")
        map+=("$path $vdev")
        added=1
    done
    if [[ -n $added ]]; then
        joined=""
        for e in "${elems[@]}"; do joined+="${joined:+, }$e"; done
        if ((disk_arg >= 0)); then
            arglist[disk_arg]="disk=[$joined]"
        else
            arglist+=("disk=[$joined]")
        fi
    fi
    disklist=""
    for m in "${map[@]}"; do
        vdev=${m#* }
        if [[ -n ${run_images[$vdev]:-} ]]; then
            disklist+="$m image /rig/images/${run_images[$vdev]}"$'\n'
        else
            disklist+="$m scratch $disk_mb"$'\n'
        fi
    done
    # vif-attach adds the guest's only vif while it runs: it boots without one (the last
    # assignment wins).
    [[ $fault != vif-attach ]] || arglist+=("vif=[]")
    out_args=""
    for a in "${arglist[@]}"; do out_args+=$a$'\n'; done
    unset run_images
    qdisk=""
    for e in "${elems[@]}"; do [[ $e != *backendtype=qdisk* ]] || qdisk=1; done
    # A fault run but destroy-blkfill and shutdown-mid-tests (the toolstack acts before the
    # guest's tests end) ends as a @shutdown run does (or as its @net run).
    if [[ -n $fault && -z $control && " destroy-blkfill shutdown-mid-tests " != *" $fault "* ]]; then
        control=shutdown
    fi
    # Without DHCP the guest has no address dom0 could check; one that stays up (and so waits
    # for the toolstack) is shut down at "control: ready".
    if [[ -n $nodhcp ]]; then
        [[ $control != net && $control != bench ]] ||
            rig_die "run $n: @nodhcp and @$control do not go together (no address to reach)"
        [[ -n $control || " $extra " != *" stay "* ]] || control=shutdown
    fi
    if [[ $fault == shutdown-mid-tests && " $extra " == *" stay "* ]]; then
        rig_die "run $n: @fault=shutdown-mid-tests is for a guest without 'stay' (it powers off by itself)"
    fi
    run_faults+=("$fault")
    run_nodhcp+=("$nodhcp")
    run_intact+=("$intact")
    run_qdisk+=("$qdisk")
    run_peer+=("$peer")
    run_args+=("$out_args")
    run_names+=("$name")
    run_controls+=("$control")
    run_labels+=("$label")
    run_directives+=("$directives")
    run_disks+=("$disklist")
done
controls="${run_controls[*]}"
any_qdisk=""
[[ -z ${run_qdisk[*]// /} ]] || any_qdisk=1
((${#expect_fatal[@]} == 0)) || [[ -z ${controls// /} ]] ||
    rig_die "--expect-fatal and @shutdown/@reboot runs do not go together"

mkdir -p "$RIG_WORK"
RIG_WORK=$(cd "$RIG_WORK" && pwd)
export RIG_WORK
# QEMU's -initrd splits multiboot modules on commas and their command lines on spaces.
[[ $RIG_WORK != *[,[:space:]]* ]] || rig_die "work directory path must not contain commas or spaces"

t_start=$(date +%s.%N)
rig_ensure_host_tools
rig_prepare_base

# ---------------------------------------------------------------------------------------------
# Per-invocation files (dom0's /init, the guest, one directory per run) go into a small cpio
# appended to the cached dom0 initramfs. Each invocation has a directory of its own (several
# sessions may share one machine and cache); last-run and last-run.log point at the newest.
# Only the logs are kept, of the last 20 invocations.
out=$RIG_WORK/runs/$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$out/stage/rig/guest" "$out/stage/rig/run"
stage=$out/stage
log=$out/console.log
: >"$log"
rm -rf "$RIG_WORK/last-run" "$RIG_WORK/last-run.log"
ln -sfn "runs/${out##*/}" "$RIG_WORK/last-run"
ln -sfn "runs/${out##*/}/console.log" "$RIG_WORK/last-run.log"
find "$RIG_WORK/runs" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' | sort -rn |
    awk 'NR > 20 { print $2 }' | while read -r old; do rm -rf "$old"; done
# Initramfs copies left by killed invocations (old enough not to belong to a running one).
find "$RIG_WORK/runs" -mindepth 2 -maxdepth 2 -name initrd -mmin +30 -delete
cp "$RIG_DIR/dom0-init.sh" "$stage/init"
chmod 755 "$stage/init"
cp "$image" "$stage/rig/guest/kernel"
printf '%s\n' "$xl_opts" >"$stage/rig/xl-opts"
printf '%s\n' "$run_timeout" >"$stage/rig/run-timeout"
printf '%s\n' "$control_timeout" >"$stage/rig/control-timeout"
if [[ $xenstored == oxenstored ]]; then echo oxenstored; else echo xenstored; fi >"$stage/rig/xenstored"
[[ -z $fast_hotplug ]] || cp -r "$RIG_DIR/hotplug" "$stage/rig/hotplug"
# dom0's tool for @fault=evtchn-flood, against the Xen libraries of the host's libxen-dev
# (the same 4.17 as dom0's).
if [[ " ${run_faults[*]} " == *" evtchn-flood "* ]]; then
    gcc -O2 -Wall -o "$stage/rig/evtchn-flood" "$RIG_DIR/evtchn-flood.c" -lxenctrl -lxenevtchn ||
        rig_die "cannot build rig/evtchn-flood.c (needs gcc and libxen-dev)"
fi
# dom0's hostile blkback for @fault=hostile-backend, likewise.
if [[ " ${run_faults[*]} " == *" hostile-backend "* ]]; then
    gcc -O2 -Wall -o "$stage/rig/hostile-blkback" "$RIG_DIR/hostile-blkback.c" -lxengnttab \
        -lxenevtchn -lxenstore || rig_die "cannot build rig/hostile-blkback.c (needs gcc and libxen-dev)"
fi
# dom0's side of the network checks (@net: a short transfer each way, through the guest's
# benchmark sink and source) and of the network benchmarks (@bench): rig/netbench.c, static
# (dom0's busybox root has no compiler and only the libraries xl needs).
if [[ " ${run_controls[*]} " == *" net "* || " ${run_controls[*]} " == *" bench "* ]]; then
    gcc -static -O2 -Wall -Wextra -Werror -o "$stage/rig/netbench" "$RIG_DIR/netbench.c" ||
        rig_die "cannot build rig/netbench.c (needs gcc and libc6-dev)"
fi
printf '%s\n' "$((bench_mib << 20))" >"$stage/rig/bench-bytes"
# Symbols for the crash dump (xenctx -s); optional: binutils is not part of a base system.
if command -v nm >/dev/null; then
    nm -n "$image" >"$stage/rig/guest/System.map" 2>/dev/null || : >"$stage/rig/guest/System.map"
fi

# The cfg as dom0 sees it: kernel/ramdisk/disk paths replaced, plus lifecycle defaults: a guest
# that reboots must not be restarted forever, and a crashed one is kept (xl -F still returns) so
# dom0 can dump its vCPU state before destroying it. stage_cfg CFG DIR PREFIX: DIR is guest or
# peer (its kernel and ramdisk go to /rig/DIR/, the cfg to /rig/DIR.cfg); the disk lines are
# parse_cfg's <PREFIX>_disk_lines; sets BASE_NAME to the cfg's name.
stage_cfg() {
    local c=$1 dir=$2 lineno=0 line src have_kernel=""
    local -n disk_lines=${3}_disk_lines
    BASE_NAME=""
    {
        while IFS= read -r line || [[ -n $line ]]; do
            lineno=$((lineno + 1))
            if [[ $line =~ ^[[:space:]]*kernel[[:space:]]*= ]]; then
                line="kernel = \"/rig/$dir/kernel\""
                have_kernel=1
            elif [[ $line =~ ^[[:space:]]*ramdisk[[:space:]]*=[[:space:]]*[\"\']([^\"\']*)[\"\'] ]]; then
                src=$(cfg=$c resolve_cfg_path "${BASH_REMATCH[1]}")
                [[ -f $src ]] || rig_die "ramdisk $src (from $c) not found"
                cp "$src" "$stage/rig/$dir/ramdisk"
                line="ramdisk = \"/rig/$dir/ramdisk\""
            elif [[ -n ${disk_lines[$lineno]:-} ]]; then
                line=${disk_lines[$lineno]}
            elif [[ $line =~ ^[[:space:]]*name[[:space:]]*=[[:space:]]*[\"\']([^\"\']*)[\"\'] ]]; then
                BASE_NAME=${BASH_REMATCH[1]}
            fi
            printf '%s\n' "$line"
        done <"$c"
        [[ -n $have_kernel ]] || echo "kernel = \"/rig/$dir/kernel\""
        cat <<'EOF2'
# added by xen-rig.sh
on_poweroff = "destroy"
on_reboot = "preserve"
on_watchdog = "destroy"
on_crash = "preserve"
EOF2
    } >"$stage/rig/$dir.cfg"
}
stage_cfg "$cfg" guest cfg
base_name=$BASE_NAME
peer_name=""
if [[ -n $peer_image ]]; then
    mkdir -p "$stage/rig/peer"
    cp "$peer_image" "$stage/rig/peer/kernel"
    stage_cfg "$peer_cfg" peer peer
    peer_name=$BASE_NAME
fi

# The @image files (dom0 copies one afresh before each run that uses it) and the sha256 of a
# scratch disk (zeros; dom0 would need seconds of TCG time for what the host does in 0.1 s).
mkdir -p "$stage/rig/images"
image_bytes=0
for k in "${!image_files[@]}"; do
    cp "${image_files[$k]}" "$stage/rig/images/$((k + 1))"
    image_bytes=$((image_bytes + $(stat -c %s "$stage/rig/images/$((k + 1))")))
done
python3 -c 'import hashlib, sys
h = hashlib.sha256()
z = bytes(1 << 20)
for _ in range(int(sys.argv[1])): h.update(z)
print(h.hexdigest())' "$disk_mb" >"$stage/rig/zero-sha256"
for i in "${!runs[@]}"; do
    n=$((i + 1))
    d=$stage/rig/run/$n
    mkdir -p "$d"
    # Other runs preserve a domain that reboots, as one that crashes, for dom0 to dump its
    # vCPUs: nothing asked for the reboot, so it is a triple fault (PVH) or a bug.
    which=guest
    [[ -z ${run_peer[$i]} ]] || which=peer
    if [[ ${run_controls[$i]} == reboot ]]; then
        # The one reboot this run is about must restart the domain (xl create -F then waits on
        # the new domain); the controller in dom0 bounds it to one.
        sed 's/^on_reboot = "preserve"$/on_reboot = "restart"/' "$stage/rig/$which.cfg" >"$d/cfg"
    else
        cp "$stage/rig/$which.cfg" "$d/cfg"
    fi
    # The symbols for a crash dump of this run's kernel (the peer's are not at hand).
    [[ -n ${run_peer[$i]} ]] || : >"$d/ours"
    [[ -z ${run_controls[$i]} ]] || printf '%s\n' "${run_controls[$i]}" >"$d/control"
    [[ -z ${run_faults[$i]} ]] || printf '%s\n' "${run_faults[$i]}" >"$d/fault"
    [[ -z ${run_nodhcp[$i]} ]] || : >"$d/nodhcp"
    [[ -z ${run_qdisk[$i]} ]] || : >"$d/qdisk"
    printf '%s' "${run_args[$i]}" >"$d/args"
    printf '%s' "${run_disks[$i]}" >"$d/disks"
    if [[ -n ${run_peer[$i]} ]]; then
        name=${run_names[$i]:-$peer_name}
        [[ -n $name ]] || rig_die "$peer_cfg has no name = \"...\""
    else
        name=${run_names[$i]:-$base_name}
        [[ -n $name ]] || rig_die "$cfg has no name = \"...\""
    fi
    printf '%s\n' "$name" >"$d/name"
    printf '%s\n' "${runs[$i]}" >"$d/label"
done

# The run cpio goes after the gzip member, 4-byte aligned (the kernel's unpacker skips zero
# padding between archives but wants each header aligned).
initrd=$out/initrd
cp "$RIG_BASE/dom0.cpio.gz" "$initrd"
pad=$((($(stat -c %s "$initrd") + 3) / 4 * 4 - $(stat -c %s "$initrd")))
head -c "$pad" /dev/zero >>"$initrd"
# QEMU (10 MB gzipped, 33 MB unpacked: twice the rest of the initramfs) only for an invocation with a
# qdisk run: it would slow every boot.
if [[ -n $any_qdisk ]]; then
    cat "$RIG_BASE/qemu.cpio.gz" >>"$initrd"
    pad=$((($(stat -c %s "$initrd") + 3) / 4 * 4 - $(stat -c %s "$initrd")))
    head -c "$pad" /dev/zero >>"$initrd"
fi
(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >>"$initrd"

# ---------------------------------------------------------------------------------------------
# RIG_XEN_ARGS / RIG_DOM0_ARGS (environment) append to the hypervisor's / dom0's command line.
# @image files cost dom0 memory: the initramfs buffer and the unpacked file while booting, the
# file and a run's working copy afterwards, in a tmpfs root that gets half of dom0's RAM
# (NOTES.md: too small a root panics "Initramfs unpacking failed"). So 4x their size more for
# dom0, and for QEMU.
extra_mb=$((4 * ((image_bytes + 1048575) / 1048576)))
# QEMU as a device model: its 33 MB in the initramfs buffer and again in the tmpfs root, and
# ~23 MB RSS per domain it serves (measured).
[[ -z $any_qdisk ]] || extra_mb=$((extra_mb + 128))
dom0_mb=$((512 + extra_mb))
xen_cmdline="console=com1 com1=115200,8n1 dom0_mem=${dom0_mb}M,max:${dom0_mb}M loglvl=all guest_loglvl=all console_timestamps=boot bootscrub=0 ${RIG_XEN_ARGS:-}"
dom0_cmdline="console=hvc0 earlyprintk=xen rdinit=/init quiet ${RIG_DOM0_ARGS:-}"
# shellcheck disable=SC2054 # the commas belong to -cpu and -initrd
# -avx,-avx2: dom0's xl and QEMU died now and then with heap corruption (`malloc(): corrupted
# top size`) with them on; QEMU 7.2 is the first TCG to emulate them, and glibc uses them for
# memcpy and friends (a suspicion, not a proof: dom0 prints what it got as `rig: dom0 cpu:`).
qemu=(qemu-system-x86_64 -accel tcg -cpu max,-smap,-smep,-avx,-avx2 -m $((2048 + extra_mb)) -smp 2
    -display none -monitor none -nic none -no-reboot -serial stdio
    -kernel "$RIG_BASE/xen" -append "$xen_cmdline"
    -initrd "$RIG_BASE/vmlinux $dom0_cmdline,$initrd")

# Live view: the boot chatter of Xen and dom0 (everything before dom0's first "rig:" line; shown
# on failure) and the body of console-bulk blocks only go to the log file. (No `$` addresses:
# sed would hold each line back to see whether it is the last.)
live_filter='0,/^rig: /{/^rig: /!d;}
/console-bulk: begin/,/console-bulk: end/{/console-bulk:/!d;}'
[[ -z $verbose ]] || live_filter=''
rig_log "booting (${#runs[@]} run(s), timeout ${timeout_s} s, log $log)"
t_qemu=$(date +%s.%N)
# QEMU and the console reader run in the background so that `wait` can be interrupted: a ^C or
# TERM of this script stops QEMU through the trap (timeout(1) puts QEMU in a process group of
# its own, out of reach of the terminal's ^C), the reader drains what is left, and the summary
# still covers the runs that finished. No reader stage exits early (no SIGPIPE).
fifo=$out/console.fifo
mkfifo "$fifo"
timeout -k 10 "$timeout_s" "${qemu[@]}" </dev/null >"$fifo" 2>&1 &
qemu_pid=$!
sed -u 's/\r//g' <"$fifo" | tee "$log" | sed -u "$live_filter" &
reader_pid=$!
interrupted=""
trap 'interrupted=1; kill -TERM "$qemu_pid" 2>/dev/null || true' INT TERM HUP
while ! wait "$reader_pid" && [[ $interrupted == 1 ]]; do
    interrupted=seen # the trap fired: wait again, for the reader to reach EOF
done
qemu_rc=0
wait "$qemu_pid" || qemu_rc=$?
trap - INT TERM HUP
t_end=$(date +%s.%N)
rm -rf "$initrd" "$stage" "$fifo"

# ---------------------------------------------------------------------------------------------
# Split the log into run-N.log (everything between the markers, markers included).
awk -v dir="$out" '
    match($0, /rig: run [0-9]+ end: /) {
        pre = substr($0, 1, RSTART - 1)
        if (file != "" && pre != "") print pre > file
        if (file != "") { print substr($0, RSTART) > file; close(file) }
        file = ""; next
    }
    /^rig: run [0-9]+ begin: / { file = dir "/run-" $3 ".log" }
    file != "" { print > file }
' "$log"

failed_runs=()
echo "rig: ---- summary ----"
for i in "${!runs[@]}"; do
    n=$((i + 1))
    f=$out/run-$n.log
    why=()
    closing=""
    if [[ ! -f $f ]]; then
        why+=("run missing (never began)")
    else
        end=$(grep -E "^rig: run $n end: " "$f" || true)
        guest=$(grep -vE '^(\(XEN\)|rig: )' "$f" || true)
        # One closing line per boot (a @reboot run has two); each must have 0 failed.
        closings=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' <<<"$guest" || true)
        closing=$(tail -n 1 <<<"$closings")
        [[ -n $end ]] || why+=("run did not end")
        [[ -n $closing ]] || why+=("no closing line")
        nclosing=$(grep -c . <<<"$closings" || true)
        boot=0
        while IFS= read -r c; do
            boot=$((boot + 1))
            if [[ $c =~ ^[0-9]+\ passed,\ ([0-9]+)\ failed ]] && ((BASH_REMATCH[1] > 0)); then
                prefix=""
                ((nclosing == 1)) || prefix="boot $boot: "
                why+=("$prefix${BASH_REMATCH[1]} failed")
            fi
        done <<<"$closings"
        nfail=$(grep -c '^FAIL ' <<<"$guest" || true)
        ((nfail == 0)) || why+=("$nfail FAIL line(s)")
        want_reason=poweroff
        fault=${run_faults[$i]}
        [[ $fault != destroy-blkfill ]] || want_reason=destroyed
        if ((${#expect_fatal[@]})); then
            fatal=${expect_fatal[i < ${#expect_fatal[@]} ? i : ${#expect_fatal[@]} - 1]}
            want_reason=crash
            grep -qF -- "$fatal" <<<"$guest" || why+=("no '$fatal' (--expect-fatal)")
        fi
        control=${run_controls[$i]}
        if [[ -n $end ]]; then
            [[ $end == *" xl exit=0 "* ]] || why+=("xl create failed (${end#*end: })")
            # (A control run checks the reason of every boot, below.)
            [[ -n $control || $end != *" xl exit=0 "* || $end == *" reason=$want_reason "* ]] ||
                why+=("guest did not end with $want_reason (${end#*end: })")
        fi
        if [[ -n $control ]]; then
            # dom0's controller reports whether each step came within --control-timeout; then
            # what the guest must have printed and how each boot must have ended.
            ctl_result=$(sed -n 's/^rig: control: \(ok\|FAILED\): //p' "$f")
            if grep -q '^rig: control: FAILED: ' "$f"; then
                why+=("control: $ctl_result")
            elif [[ -z $ctl_result ]]; then
                why+=("control: no result from dom0's controller")
            else
                echo "rig: run $n: control: $ctl_result"
            fi
            sed -n "s/^rig: control: \[[0-9.]*\] \(net: [a-z].*\)/rig: run $n: \1/p" "$f"
            [[ $control != net ]] || grep -q '^rig: control: \[[0-9.]*\] net: netbench recv' "$f" ||
                why+=("net: the checks from dom0 did not all run")
            sed -n "s/^rig: control: \[[0-9.]*\] \(bench: net_.*\)/rig: run $n: dom0 \1/p" "$f"
            [[ $control != bench ]] || grep -q '^rig: control: \[[0-9.]*\] bench: net_tcp_recv ' "$f" ||
                why+=("bench: dom0's network measurements did not all run")
            if [[ $control == reboot ]]; then
                boots=2 want_reasons=reboot,poweroff want_shut="reboot poweroff"
            else
                boots=1 want_reasons=poweroff want_shut=poweroff
            fi
            nready=$(grep -c '^control: ready$' <<<"$guest" || true)
            ((nready == boots)) || why+=("$nready 'control: ready' line(s), want $boots")
            [[ -z $closing ]] || ((nclosing == boots)) ||
                why+=("$nclosing closing lines, want $boots")
            shut=$(sed -n 's/^control: shutdown //p' <<<"$guest" | tr '\n' ' ')
            [[ ${shut% } == "$want_shut" ]] ||
                why+=("'control: shutdown' lines: '${shut% }', want '$want_shut'")
            if [[ -n $end && $end != *" reasons=$want_reasons" ]]; then
                why+=("shutdown reasons ${end##* reasons=}, want $want_reasons")
            fi
        fi
        # Disk content checks, against dom0's "rig: disk <vdev> before|after size=<bytes>
        # sha256=<hex>" lines: what the guest read (blksum) must be the disk before the run,
        # what it wrote (blkfill) the pattern regenerated here.
        while read -r _ dev sectors ssize sum; do
            [[ -n ${dev:-} ]] || continue
            sectors=${sectors#sectors=} ssize=${ssize#sector_size=} sum=${sum#sha256=}
            size="" dsum=""
            read -r size dsum < <(sed -n "s/^rig: disk $dev before size=\([0-9]*\) sha256=\([0-9a-f]*\)$/\1 \2/p" "$f" | tail -n 1) || true
            if [[ -z ${size:-} ]]; then
                why+=("blksum $dev: the run has no disk $dev (no 'rig: disk $dev before' line)")
            elif [[ $sum != "$dsum" ]]; then
                why+=("blksum $dev: guest read sha256 $sum, dom0 had $dsum ($size bytes) before the run")
            elif ((sectors * ssize != size)); then
                why+=("blksum $dev: sha256 matches but sectors=$sectors x sector_size=$ssize != $size bytes")
            else
                echo "rig: run $n: blksum $dev matches ($sectors sectors, sha256 ${sum:0:16}...)"
            fi
        done < <(grep -oE 'blksum [a-z0-9]+ sectors=[0-9]+ sector_size=[0-9]+ sha256=[0-9a-f]{64}' <<<"$guest" || true)
        while read -r _ dev _ sectors seed; do
            [[ -n ${dev:-} ]] || continue
            sectors=${sectors#sectors=} seed=${seed#seed=}
            size="" dsum=""
            read -r size dsum < <(sed -n "s/^rig: disk $dev after size=\([0-9]*\) sha256=\([0-9a-f]*\)$/\1 \2/p" "$f" | tail -n 1) || true
            if [[ -z ${size:-} ]]; then
                why+=("blkfill $dev: the run has no disk $dev (no 'rig: disk $dev after' line)")
            elif ((sectors * 512 != size)); then
                why+=("blkfill $dev: guest filled $sectors sectors ($((sectors * 512)) bytes) of a $size-byte disk")
            elif ! want=$(python3 "$RIG_DIR/blkfill-pattern.py" --sha256 "$sectors" "$seed" 2>&1); then
                why+=("blkfill $dev: blkfill-pattern.py: $want")
            elif [[ $want != "$dsum" ]]; then
                why+=("blkfill $dev: disk after the run has sha256 $dsum, the pattern for seed=$seed over $sectors sectors $want")
            else
                echo "rig: run $n: blkfill $dev verified $sectors sectors (seed $seed)"
            fi
        done < <(grep -oE 'blkfill [a-z0-9]+ done sectors=[0-9]+ seed=[0-9]+' <<<"$guest" || true)
        # A fault run: dom0's steps (each must have been done), then the guest's error line for
        # the fault; that it went on is the closing line and the shutdown checked above.
        if [[ -n $fault ]]; then
            sed -n "s/^rig: control: \[[0-9.]*\] \(fault: .*\)/rig: run $n: \1/p" "$f"
            [[ -n $control ]] || ! grep -q '^rig: control: FAILED: ' "$f" ||
                why+=("$(sed -n 's/^rig: control: FAILED: //p' "$f" | head -n 1)")
            case $fault in
            blk-detach) want='blkfill [a-z0-9]+: .*backend closed the device' ;;
            vif-detach) want='net: device/vif/[0-9]+: the backend is closing' ;;
            garbage-keys)
                want='xvdb: .*max-ring-page-order|blksum xvdd: .*sectors: not a number|blksum xvde: .*sector-size: not a power of two|blksum xvdf: .*sectors: missing'
                ;;
            evtchn-flood) want='blksum xvdd: .*timed out' ;;
            hostile-backend)
                want='device/vbd/51712: the backend holds [0-9]+ pages past their requests .*device marked broken|blksum xvda: blkfront: the backend.[sb]'
                ;;
            grant-exhaust) want='device/vbd/[0-9]+: .*no free grant reference .*using requests of 11 pages' ;;
            destroy-blkfill) want="" ;;
            blk-attach)
                want='device: vbd/51760 added|blk: xvdd attached: sectors=16384 sector_size=512 mode=ro|device: vbd/51760 removed'
                ;;
            vif-attach) want='device: vif/[0-9]+ added|net: up [0-9.]+/|device: vif/[0-9]+ removed' ;;
            shutdown-mid-tests)
                want='^selftest: stopped by the toolstack \(poweroff\)|^control: shutdown poweroff'
                # Not a control run: dom0's fault actor reports the timing (or why not).
                if ok=$(grep -m 1 '^rig: control: ok: ' "$f"); then
                    echo "rig: run $n: control: ${ok#rig: control: ok: }"
                else
                    grep -q '^rig: control: FAILED: ' "$f" || why+=("fault $fault: no result from dom0")
                fi
                ;;
            esac
            # Each |-separated pattern must match a line of its own.
            IFS='|' read -ra wants <<<"$want"
            for w in "${wants[@]}"; do
                if line=$(grep -m 1 -E -- "$w" <<<"$guest"); then
                    echo "rig: run $n: fault $fault: guest: $line"
                else
                    why+=("fault $fault: no guest line matching '$w'")
                fi
            done
            if [[ $fault == destroy-blkfill ]]; then
                last=$(grep -oE 'blkfill [a-z0-9]+ acked sectors=[0-9]+ seed=[0-9]+' <<<"$guest" | tail -n 1)
                read -r dev sectors seed sum < <(sed -n 's/^rig: fault: blkfill \([a-z0-9]*\) acked sectors=\([0-9]*\) seed=\([0-9]*\) sha256=\([0-9a-f]*\)$/\1 \2 \3 \4/p' "$f") || true
                if grep -qE 'blkfill [a-z0-9]+ done ' <<<"$guest"; then
                    why+=("fault $fault: blkfill finished before xl destroy")
                elif [[ -z ${sum:-} ]]; then
                    why+=("fault $fault: no 'rig: fault: blkfill ... sha256=' line from dom0")
                elif [[ $last != "blkfill $dev acked sectors=$sectors seed=$seed" ]]; then
                    why+=("fault $fault: dom0 hashed '$dev $sectors $seed', the guest's last line was '$last'")
                elif ! want=$(python3 "$RIG_DIR/blkfill-pattern.py" --sha256 "$sectors" "$seed" 2>&1); then
                    why+=("fault $fault: blkfill-pattern.py: $want")
                elif [[ $want != "$sum" ]]; then
                    why+=("fault $fault: the first $sectors sectors of $dev hash to $sum, the pattern to $want")
                else
                    echo "rig: run $n: fault $fault: the $sectors sectors acked before xl destroy hold the pattern (seed $seed)"
                fi
            fi
        fi
        # QEMU served the run's qdisk disks: dom0 saw its backend nodes (qdisk_watch).
        if [[ -n ${run_qdisk[$i]} ]]; then
            sed -n -e "s/^rig: qdisk: \(backend .*\|all connected .*\|states .*\)$/rig: run $n: qdisk: \1/p" \
                -e "s/^rig: qdisk: \(qemu pid [0-9]* VmRSS: [0-9]* kB\).*/rig: run $n: qdisk: \1/p" "$f"
            grep -q '^rig: qdisk: backend .* up ' "$f" ||
                why+=("qdisk: dom0 saw no backend nodes under /local/domain/0/backend/qdisk ($(sed -n 's/^rig: qdisk: //p' "$f" | tail -n 1))")
            grep -q '^rig: qdisk: qemu pid ' "$f" || why+=("qdisk: no xen-qemu-system-i386 process in dom0")
            # QEMU's own complaints (its log, after the run): a device it could not create, or
            # its death, is dom0's failure, whatever the guest did next.
            sed -n "s/^rig: qemu-dm: /rig: run $n: qemu-dm: /p" "$f" | head -n 5
            qemu_err=$(grep -m 1 -E '^rig: qemu-dm: .*(failed|malloc\(\)|corrupted|Segmentation|Aborted|assert)' "$f" || true)
            [[ -z $qemu_err ]] || why+=("qdisk: QEMU: ${qemu_err#rig: qemu-dm: }")
        fi
        # @intact: the guest was named no disk to write, so none may have changed.
        if [[ -n ${run_intact[$i]} ]]; then
            ndisk=0 changed=0
            while read -r dev size sum; do
                ndisk=$((ndisk + 1))
                after=$(sed -n "s/^rig: disk $dev after size=\([0-9]*\) sha256=\([0-9a-f]*\)$/\1 \2/p" "$f" | tail -n 1)
                if [[ $after != "$size $sum" ]]; then
                    changed=$((changed + 1))
                    why+=("@intact: disk $dev was size=$size sha256=$sum before the run, ${after:-unknown} after")
                fi
            done < <(sed -n 's/^rig: disk \([a-z0-9]*\) before size=\([0-9]*\) sha256=\([0-9a-f]*\)$/\1 \2 \3/p' "$f")
            if ((ndisk == 0)); then
                why+=("@intact: the run has no disk")
            elif ((changed == 0)); then
                echo "rig: run $n: @intact: $ndisk disk(s) unchanged"
            fi
        fi
        if [[ -n ${run_nodhcp[$i]} ]]; then
            grep -q '^rig: dhcp: udhcpd stopped for this run' "$f" ||
                why+=("@nodhcp: $(grep -m 1 '^rig: dhcp: ' "$f" || echo "dom0 did not stop udhcpd")")
        fi
        # The console integrity block is optional; a broken one fails the run.
        if ! bulk=$(python3 "$RIG_DIR/check-console.py" <<<"$guest" 2>&1); then
            why+=("console check: $(tr '\n' ' ' <<<"$bulk")")
        elif [[ -n $bulk ]]; then
            while IFS= read -r l; do echo "rig: run $n: $l"; done <<<"$bulk"
        elif [[ -n $expect_bulk ]]; then
            why+=("no console-bulk block (--expect-bulk)")
        fi
    fi
    label=${run_labels[$i]:-no overrides}
    [[ -z ${run_directives[$i]} ]] || label="${run_labels[$i]:+${run_labels[$i]}, }${run_directives[$i]}"
    if ((${#why[@]})); then
        echo "rig: run $n (${label}): ${closing:-no closing line} -> FAIL"
        printf 'rig:   why: %s\n' "${why[@]}"
        failed_runs+=("$n")
    else
        echo "rig: run $n (${label}): $closing -> PASS"
    fi
done

sed -n 's/^rig: \(xenstored: .*\)$/rig: \1/p' "$log" | head -n 1
timing() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
dom0_ready=$(sed -n 's/^rig: dom0 ready: \([0-9.]*\) s$/\1/p' "$log")
echo "rig: time: total $(timing "$t_start" "$t_end") s (host prepare $(timing "$t_start" "$t_qemu") s, qemu $(timing "$t_qemu" "$t_end") s, dom0 uptime at ready ${dom0_ready:-?} s)"
echo "rig: log: $log (per run: $out/run-N.log; newest: $RIG_WORK/last-run.log)"
[[ -z $log_copy ]] || cp "$log" "$log_copy"

# Last in the output, where a CI excerpt (its tail) shows it: what the guest and Xen said
# last in each failed run, so that a failure seen only there can still be read.
for n in "${failed_runs[@]}"; do
    f=$out/run-$n.log
    [[ -f $f ]] || continue
    echo "rig: run $n FAILED; its last guest lines, dom0's dump of a preserved domain, Xen's last lines on domUs:"
    grep -vE '^(\(XEN\)|rig: )' "$f" | grep . | tail -n 12 | sed 's/^/rig: | /'
    grep -E '^rig: xenctx: (domain|vcpu|rip|flags|rsp|rax|rbx|rbp|r10|r13|cr[023]|Code|[0-9a-f]{2} )' "$f" |
        head -n 20 | sed 's/^rig: xenctx: /rig: C /'
    grep -E '^\(XEN\).*(\<d[1-9][0-9]*|\(d[1-9][0-9]*\)|[Dd]omain [1-9]|domain_crash|Pagetable walk)' "$f" | grep -vE 'HVM d[0-9]+(v[0-9]+)? (save|restore):' | tail -n 8 | sed 's/^/rig: X /'
done

if [[ -n $interrupted ]]; then
    echo "rig: interrupted"
    exit 130
fi
if ((qemu_rc == 124 || qemu_rc == 137)); then
    echo "rig: TIMEOUT after $timeout_s s; last lines of the log:"
    tail -n 30 "$log" | sed 's/^/rig: | /'
    exit 3
fi
if ((qemu_rc != 0)); then
    echo "rig: qemu exited with status $qemu_rc; last lines of the log:"
    tail -n 30 "$log" | sed 's/^/rig: | /'
    exit 1
fi
if ! grep -q '^rig: dom0 ready' "$log"; then
    echo "rig: dom0 never came up; last lines of the log:"
    tail -n 40 "$log" | sed 's/^/rig: | /'
    exit 1
fi
((${#failed_runs[@]} == 0)) || exit 1
