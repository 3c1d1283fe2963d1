#!/usr/bin/env bash
# Self-test of check-console.py on generated blocks: intact ones must pass, every kind of damage
# the serial path can do (lost, doubled, altered, split lines, truncation) must be caught.
# Fast (no QEMU); exit status 0 if every case behaves.
set -euo pipefail

check=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/check-console.py
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 "$check" --generate >"$tmp/good"

failures=0
# expect <exit status> <description> <input file>
expect() {
    local want=$1 what=$2 input=$3 got=0 output
    output=$(python3 "$check" "$input" 2>&1) || got=$?
    if [[ $got -eq $want ]]; then
        printf 'ok   %-38s %s\n' "$what" "$(head -c 100 <<<"$output" | head -n 1)"
    else
        printf 'FAIL %-38s exit %s, wanted %s: %s\n' "$what" "$got" "$want" "$output"
        failures=$((failures + 1))
    fi
}

expect 0 "intact block" "$tmp/good"
{ echo boot; sed 's/$/\r\r/' "$tmp/good"; echo after; } >"$tmp/crlf"
expect 0 "serial CR CR LF endings, text around" "$tmp/crlf"
cat "$tmp/good" "$tmp/good" >"$tmp/two"
expect 0 "two blocks" "$tmp/two"
echo "no block here" >"$tmp/none"
expect 0 "no block at all" "$tmp/none"
sed '100d' "$tmp/good" >"$tmp/lost"
expect 1 "a lost line" "$tmp/lost"
sed '100p' "$tmp/good" >"$tmp/dup"
expect 1 "a doubled line" "$tmp/dup"
sed '200s/^\(.\{10\}\)./\1#/' "$tmp/good" >"$tmp/flip"
expect 1 "one altered character" "$tmp/flip"
sed '300s/^\(.\{20\}\)/\1(XEN) message\n/' "$tmp/good" >"$tmp/split"
expect 1 "a line split by other output" "$tmp/split"
head -n 500 "$tmp/good" >"$tmp/trunc"
expect 1 "truncated (no end marker)" "$tmp/trunc"
sed '$s/fnv1a=.*/fnv1a=0123456789abcdef/' "$tmp/good" >"$tmp/hash"
expect 1 "wrong hash in the end marker" "$tmp/hash"
python3 "$check" --generate 16 >"$tmp/small"
expect 0 "a 16-line block" "$tmp/small"
# The generator and the checker share code: pin one known value of FNV-1a 64 too.
if [[ $(python3 -c "import importlib.util as u; s=u.spec_from_file_location('c', '$check'); m=u.module_from_spec(s); s.loader.exec_module(m); print('%016x' % m.fnv1a64(b'a'))") == af63dc4c8601ec8c ]]; then
    echo "ok   FNV-1a 64 of \"a\" is af63dc4c8601ec8c"
else
    echo "FAIL FNV-1a 64 of \"a\""
    failures=$((failures + 1))
fi

((failures == 0)) || { echo "test-check-console: $failures failure(s)"; exit 1; }
echo "test-check-console: all passed"
