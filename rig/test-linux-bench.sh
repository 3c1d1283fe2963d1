#!/usr/bin/env bash
# Host test of the Linux peer's block benchmark rows, without QEMU: builds the initramfs's fio
# tree exactly as linux-domu.sh does (--fio-tree), then runs linux-domu-init.sh's own row
# functions (from "# BEGIN blk rows" to "# END blk rows") with the rig's busybox sh against a
# 64 MiB file, through the stubbed fio. Checks that every row has a number in its unit, that the
# QD32 replay really keeps 32 reads in flight (fio's "IO depths" histogram), that blk_verify
# passes, and that a failing fio gives a failure row. Exit status 0 if every check passes.
set -euo pipefail

rig=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(dirname "$rig")
# Not /tmp: O_DIRECT needs a file system that takes it (tmpfs did not before Linux 6.6).
mkdir -p "$top/target"
work=$(mktemp -d "$top/target/test-linux-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

fail() {
    echo "test-linux-bench: FAIL: $*" >&2
    exit 1
}

# The rig's busybox runs the rows, as in the domU: building the peer prepares the rig's base.
bash "$rig/linux-domu.sh" >/dev/null
busybox=$(find "${RIG_WORK:-$top/target/rig}"/base-*/domu -maxdepth 1 -name busybox -print -quit 2>/dev/null || true)
[[ -n $busybox ]] || fail "no rig base with busybox under ${RIG_WORK:-target/rig}"

bash "$rig/linux-domu.sh" --fio-tree "$work/fio"
libs=$work/fio/lib/x86_64-linux-gnu
echo "ok: fio tree built ($(du -sk "$work/fio" | cut -f1) KiB): $(LD_LIBRARY_PATH=$libs "$work/fio/usr/bin/fio" --version)"

# An engine whose library is stubbed says so and aborts, rather than failing somewhere odd.
stub_rc=0
stub_out=$(LD_LIBRARY_PATH=$libs "$work/fio/usr/bin/fio" --name=stub --ioengine=rbd --pool=p \
    --rbdname=r --size=1m 2>&1) || stub_rc=$?
grep -q "fio stub: rados_create called (this engine's library is not in the rig's initramfs)" <<<"$stub_out" ||
    fail "the rbd engine did not hit the stub (exit $stub_rc): $stub_out"
echo "ok: ioengine=rbd reaches the stub: $(grep 'fio stub:' <<<"$stub_out")"

# The domU's PATH: busybox's applets and fio, here a wrapper that runs the tree's fio with the
# tree's libraries, logs each command line and, for the QD32 replay, runs the same job once more
# with fio's normal output for its "IO depths" line.
mkdir -p "$work/bin"
for applet in $("$busybox" --list); do
    ln -s "$busybox" "$work/bin/$applet"
done
cat >"$work/bin/fio" <<EOF
#!/bin/sh
printf '%s\n' "fio \$*" >>"$work/fio-commands"
case " \$* " in
*" --read_iolog="*" --iodepth=32 "*)
    LD_LIBRARY_PATH=$libs "$work/fio/usr/bin/fio" "\$@" --output-format=normal >"$work/qd32-normal.txt" 2>&1
    ;;
esac
LD_LIBRARY_PATH=$libs exec "$work/fio/usr/bin/fio" "\$@"
EOF
chmod 755 "$work/bin/fio"

disk=$work/disk.img
dd if=/dev/zero of="$disk" bs=1M count=64 status=none
dd if="$disk" of=/dev/null bs=4096 count=1 iflag=direct status=none ||
    fail "$(stat -f -c %T "$work") at $work does not take O_DIRECT"
python3 "$rig/blk-offsets.py" --iolog "$disk" >"$work/rand.iolog"
python3 "$rig/blk-offsets.py" --fingerprint >"$work/rand.offsets"
sed -n '/^# BEGIN blk rows/,/^# END blk rows/p' "$rig/linux-domu-init.sh" >"$work/blk-rows.sh"
grep -q '^blk_bench()' "$work/blk-rows.sh" || fail "no blk_bench() between the markers in linux-domu-init.sh"

# rows ARGS...: runs `sh -c ARGS` on the extracted functions, as the domU's init would (busybox
# sh, busybox applets first on PATH); output in $out, exit status in $rc.
rows() {
    rc=0
    out=$(cd "$work" && PATH=$work/bin:$PATH TMPDIR=$work "$busybox" sh -c ". ./blk-rows.sh; $1" sh "${@:2}") || rc=$?
}

# shellcheck disable=SC2016 # expanded by the inner sh
rows 'blk_bench "$@"' "$disk" "$work/rand.iolog" "$work/rand.offsets" default
printf '%s\n' "$out" | sed 's/^/    /'
[[ $rc -eq 0 ]] || fail "blk_bench returned $rc"
[[ $(head -n 1 <<<"$out") == "bench: begin platform=linux-pv evtchn=linux variant=default" ]] ||
    fail "first line: $(head -n 1 <<<"$out")"
[[ $(tail -n 1 <<<"$out") == "bench: end" ]] || fail "last line: $(tail -n 1 <<<"$out")"
left=$(cd "$work" && find . -maxdepth 1 -newer blk-rows.sh -type f ! -name fio-commands ! -name qd32-normal.txt ! -name disk.img)
[[ -z $left ]] || fail "the rows left files in their working directory: $left"

# name unit: every row, in the guest's order.
want="blk_seq_read_4k MiB/s
blk_seq_read_64k MiB/s
blk_seq_read_1m MiB/s
blk_seq_write_4k MiB/s
blk_seq_write_64k MiB/s
blk_seq_write_1m MiB/s
blk_rand_read_4k_qd1 IOPS
blk_rand_read_4k_qd32 IOPS
blk_verify MiB"
got=$(sed -n 's/^bench: \([a-z0-9_]*\) [0-9]*\.[0-9] \([^ ]*\) .*/\1 \2/p' <<<"$out")
[[ $got == "$want" ]] || fail "rows with a value, wanted:
$want
got:
$got"
awk '$2 != "begin" && $2 != "end" && $3 + 0 <= 0 { bad = 1; print "zero value: " $0 } END { exit bad }' <<<"$out" ||
    fail "a row measured nothing"
echo "ok: all 9 rows have a value in the guest's units"

fingerprint=$(cat "$work/rand.offsets")
for qd in 1 32; do
    row=$(grep "^bench: blk_rand_read_4k_qd$qd " <<<"$out")
    [[ $row == *"; $fingerprint" ]] || fail "qd$qd row lacks the offsets' fingerprint: $row"
    share=$(sed -n "s/.* (\([0-9.]*\)% submitted at depth $qd).*/\1/p" <<<"$row")
    awk -v s="$share" 'BEGIN { exit !(s >= 99) }' || fail "qd$qd: only '$share'% submitted at depth $qd: $row"
done
echo "ok: both random rows name the offsets; each submitted >= 99% of its reads at its depth"
depths=$(grep 'IO depths' "$work/qd32-normal.txt") || fail "no 'IO depths' in fio's normal output of the QD32 job"
awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^32=/) { sub(/^32=/, "", $i); exit !($i + 0 >= 99) } exit 1 }' <<<"$depths" ||
    fail "QD32 replay: fio's histogram: $depths"
grep -q 'issued rwts: total=16384,0,0,0' "$work/qd32-normal.txt" ||
    fail "QD32 replay did not issue 16384 reads: $(grep 'issued' "$work/qd32-normal.txt")"
echo "ok: QD32 replay, fio's normal output: $(awk '{ $1 = $1; print }' <<<"$depths")"

jobs=$(grep -c -- '--name=' "$work/fio-commands")
[[ $jobs -eq 9 ]] || fail "$jobs fio jobs, wanted 9"
common="--ioengine=libaio --direct=1 --filename=$disk --gtod_reduce=1 --output-format=terse --terse-version=3"
[[ $(grep -c -F -- "$common" "$work/fio-commands") -eq 9 ]] ||
    fail "a job without '$common': $(grep -v -F -- "$common" "$work/fio-commands" | grep -- --name=)"
echo "ok: 9 fio processes, each with $common"

# A fio that fails gives the row's failure line (and a non-zero status), not a number.
# shellcheck disable=SC2016 # expanded by the inner sh
rows 'blk_verify "$1"' "$disk/not-a-dir"
[[ $rc -ne 0 && $out == "bench: blk_verify - - fio exit "[1-9]*": "?* ]] ||
    fail "blk_verify on a path under a file: status $rc, $out"
echo "ok: a failing fio: $out"
# shellcheck disable=SC2016 # expanded by the inner sh
rows 'blk_seq blk_seq_read_4k "$1" read 4' "$disk/not-a-dir"
[[ $rc -ne 0 && $out == "bench: blk_seq_read_4k - - fio exit "[1-9]*": "?* ]] ||
    fail "blk_seq on a path under a file: status $rc, $out"

echo "test-linux-bench: all passed"
