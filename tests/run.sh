#!/bin/sh
# run.sh: runs every unit test binary, the fuzz corpus replays and the CLI scripts; prints the total.
BUILD=${BUILD:-build/release}
cd "$(dirname "$0")/.." || exit 1
pass=0; fail=0
for t in "$BUILD"/tests/test_* "$BUILD"/tests/replay_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    case $name in replay_*) args="tests/fuzz/corpus/${name#replay_}";; *) args="";; esac
    if out=$("$t" $args 2>&1); then
        pass=$((pass + 1)); echo "ok   $name  $(echo "$out" | tail -n 1)"
    else
        fail=$((fail + 1)); echo "FAIL $name"; echo "$out" | tail -n 30
    fi
done
for t in tests/cli/*.sh; do
    [ -f "$t" ] || continue
    name=$(basename "$t" .sh)
    if out=$(SPOTQ="$PWD/$BUILD/spotq" sh "$t" 2>&1); then
        pass=$((pass + 1)); echo "ok   cli/$name"
    else
        fail=$((fail + 1)); echo "FAIL cli/$name"; echo "$out" | tail -n 30
    fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
