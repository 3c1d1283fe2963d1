#!/usr/bin/env bash
# Loopback self-test of rig/netbench.c: builds it with the rig's exact command, runs its far end
# on ports 15001/15002 (and UDP echo on 15007) and checks both directions, the source's
# refusals, a refused connection, UDP echo and usage errors. Fast (no Xen, no QEMU); exit
# status 0 if every check passes.
set -euo pipefail

rig=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp=$(mktemp -d)
server=
cleanup() {
    if [[ -n $server ]]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    echo "--- server stdout:" >&2
    cat "$tmp/serve.out" >&2 || true
    echo "--- server stderr:" >&2
    cat "$tmp/serve.err" >&2 || true
    exit 1
}

# run ARGS...: runs netbench, leaving its stdout in $out, stderr in $err, exit status in $rc.
run() {
    rc=0
    timeout 20 "$tmp/netbench" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
    out=$(<"$tmp/out")
    err=$(<"$tmp/err")
}

# wait_for FILE TEXT: FILE gets a line containing TEXT within 5 s (the server logs a connection
# just after its last byte, so a client can finish first).
wait_for() {
    for _ in $(seq 50); do
        grep -qF -- "$2" "$1" && return 0
        sleep 0.1
    done
    fail "no '$2' in $(basename "$1")"
}

# by_hand REQUEST: writes REQUEST to the source port as is, prints how many bytes came back.
by_hand() {
    local n
    exec 3<>/dev/tcp/127.0.0.1/15002
    printf '%s' "$1" >&3
    # A reset (the server closes with our bytes unread) is as good as EOF here.
    n=$({ timeout 5 cat <&3 2>/dev/null || true; } | wc -c)
    exec 3<&-
    echo "$n"
}

(cd "$rig/.." && gcc -static -O2 -Wall -Wextra -Werror -o "$tmp/netbench" rig/netbench.c)
echo "ok: built"

"$tmp/netbench" serve 15001 15002 15007 >"$tmp/serve.out" 2>"$tmp/serve.err" &
server=$!
wait_for "$tmp/serve.err" "listening"

run send 127.0.0.1 15001 67108864
[[ $rc -eq 0 && $out == "sent=67108864 far_end_received=67108864 "* ]] ||
    fail "send 64 MiB: exit $rc: $out $err"
wait_for "$tmp/serve.out" "sink: received 67108864 bytes from 127.0.0.1"
echo "ok: send 64 MiB: $out"

run recv 127.0.0.1 15002 33554432
[[ $rc -eq 0 && $out == "requested=33554432 received=33554432 "* ]] ||
    fail "recv 32 MiB: exit $rc: $out $err"
wait_for "$tmp/serve.out" "source: sent 33554432 bytes to 127.0.0.1"
echo "ok: recv 32 MiB: $out"

n=$(by_hand $'2147483648\n')
[[ $n -eq 0 ]] || fail "a 2 GiB request got $n bytes"
wait_for "$tmp/serve.out" "refused request from 127.0.0.1: 2147483648 bytes is above the 1 GiB"
n=$(by_hand $'abc\n')
[[ $n -eq 0 ]] || fail "request 'abc' got $n bytes"
wait_for "$tmp/serve.out" "refused request from 127.0.0.1: not a decimal number"
n=$(by_hand "$(printf '%040d' 1)")
[[ $n -eq 0 ]] || fail "a request without a newline got $n bytes"
wait_for "$tmp/serve.out" "refused request from 127.0.0.1: no newline within 32 bytes"
run recv 127.0.0.1 15002 1048577
[[ $rc -eq 0 && $out == "requested=1048577 received=1048577 "* ]] ||
    fail "recv after refusals: exit $rc: $out $err"
echo "ok: source refuses 2 GiB, 'abc' and 40 digits without a newline, then serves a recv"

start=$SECONDS
run send 127.0.0.1 15009 1024
[[ $rc -ne 0 && -n $err && -z $out && $((SECONDS - start)) -le 2 ]] ||
    fail "send to a closed port: exit $rc after $((SECONDS - start)) s: $out $err"
echo "ok: send to a closed port fails at once: $err"

for args in "" "serve 1" "serve 0 15002" "send 127.0.0.1 15001" "send 127.0.0.1 15001 0" \
    "send 127.0.0.1 15001 1073741825" "send 127.0.0.1 15001 12x" "send 127.0.0.1 15001 -5" \
    "recv localhost 15002 10" "recv 127.0.0.1 65536 10" "recv 127.0.0.1 15002 10 extra" "frob"; do
    # shellcheck disable=SC2086 # split on purpose: one argument per word
    run $args
    [[ $rc -eq 2 && $err == usage:* ]] || fail "'netbench $args': exit $rc, wanted 2: $err"
done
echo "ok: bad arguments exit 2 with usage"

run send 127.0.0.1 15001 1
[[ $rc -eq 0 && $out == "sent=1 far_end_received=1 "* ]] || fail "send 1: exit $rc: $out $err"
wait_for "$tmp/serve.out" "sink: received 1 bytes from 127.0.0.1"
run recv 127.0.0.1 15002 1
[[ $rc -eq 0 && $out == "requested=1 received=1 "* ]] || fail "recv 1: exit $rc: $out $err"
wait_for "$tmp/serve.out" "source: sent 1 bytes to 127.0.0.1"
echo "ok: send and recv of 1 byte"

run udp 127.0.0.1 15007 20000
[[ $rc -eq 0 && $out =~ ^sent=20000\ echoed=20000\ lost=0\ seconds=[0-9.]+\ pps=[1-9][0-9]*$ ]] ||
    fail "udp 20000: exit $rc: $out $err"
echo "ok: udp echo of 20000 datagrams: $out"

# Nobody on that port: every datagram is lost, which is a line and exit status 1.
run udp 127.0.0.1 15008 5
[[ $rc -eq 1 && $out == "sent=5 echoed=0 lost=5 "* && $err == *"5 of 5 datagrams lost"* ]] ||
    fail "udp to a closed port: exit $rc: $out $err"
echo "ok: udp to a closed port: lost and said so"

run udp 127.0.0.1 15007 0
[[ $rc -eq 2 && $err == usage:* ]] || fail "udp of 0 datagrams: exit $rc: $err"

kill -0 "$server" 2>/dev/null || fail "the server died"
echo "test-netbench: all passed"
