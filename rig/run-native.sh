#!/usr/bin/env bash
# Boots the guest natively under QEMU (PVH entry via -kernel) and judges the run.
#
# usage: rig/run-native.sh [--timeout S] [--memory MIB] [--smp N] [--log FILE]
#                           [--expect-fatal TEXT] IMAGE [CMDLINE]
#
# Exit status 0 only if QEMU exited through isa-debug-exit with the pass code (33), the guest
# printed its closing line with 0 failed and no FAIL line, and every console-bulk block
# arrived intact. With --expect-fatal (for a `fault=` command line) the run must instead end
# with the failure code (35) after printing TEXT.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
timeout_s=60
memory=128
smp=1
log=""
expect_fatal=""
while (($#)); do
    case $1 in
    --timeout) timeout_s=${2:?}; shift 2 ;;
    --memory) memory=${2:?}; shift 2 ;;
    --smp) smp=${2:?}; shift 2 ;;
    --log) log=${2:?}; shift 2 ;;
    --expect-fatal) expect_fatal=${2:?}; shift 2 ;;
    -*) echo "run-native: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
image=${1:?usage: run-native.sh [--timeout S] [--memory MIB] [--log FILE] IMAGE [CMDLINE]}
cmdline=${2:-}
[[ -f $image ]] || { echo "run-native: no image $image" >&2; exit 2; }
command -v qemu-system-x86_64 >/dev/null || {
    echo "run-native: installing qemu-system-x86" >&2
    apt-get install -y -qq qemu-system-x86 >/dev/null
}
[[ -n $log ]] || log=$(mktemp)

# isa-debug-exit turns the guest's shutdown status into QEMU's: (code << 1) | 1.
set +e
timeout --foreground -s KILL "$timeout_s" qemu-system-x86_64 \
    -machine q35 -accel tcg -cpu max -m "$memory" -smp "$smp" \
    -display none -monitor none -nic none -no-reboot \
    -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    -kernel "$image" -append "$cmdline" </dev/null | tr -d '\r' | tee "$log"
status=${PIPESTATUS[0]}
set -e

verdict=PASS
why=()
closing=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$log" | tail -n 1 || true)
if [[ -z $closing ]]; then
    verdict=FAIL why+=("no closing line")
elif [[ ! $closing =~ ^[0-9]+\ passed,\ 0\ failed ]]; then
    verdict=FAIL why+=("failures")
fi
if grep -q '^FAIL ' "$log"; then verdict=FAIL why+=("FAIL lines"); fi
want_status=33
if [[ -n $expect_fatal ]]; then
    want_status=35
    grep -qF -- "$expect_fatal" "$log" || { verdict=FAIL why+=("no '$expect_fatal'"); }
fi
case $status in
"$want_status") ;;
137) verdict=FAIL why+=("timeout after ${timeout_s}s") ;;
*) verdict=FAIL why+=("QEMU exit status $status (want $want_status)") ;;
esac
if ! python3 "$here/check-console.py" "$log"; then verdict=FAIL why+=("console integrity"); fi
# shellcheck disable=SC2016 # quotes inside "..." are text: $expect_fatal does expand
echo "native: ${closing:-no closing line}${expect_fatal:+, then '$expect_fatal'} -> $verdict${why:+ (${why[*]})}"
[[ $verdict == PASS ]]
