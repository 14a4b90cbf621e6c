#!/bin/sh
# bad_input.sh: every case in tests/bad gets exactly its expected one-line error, exit code 1, no stdout.
fail=0; n=0
for d in tests/bad/*/; do
    d=${d%/}
    n=$((n + 1))
    out=$($SPOTQ $(cat "$d/cmd") 2>/tmp/spotq-bad-err.$$ </dev/null)
    rc=$?
    if [ "$rc" -ne 1 ]; then echo "FAIL $d: exit code $rc, want 1"; fail=$((fail + 1)); continue; fi
    if [ -n "$out" ]; then echo "FAIL $d: printed to stdout: $out"; fail=$((fail + 1)); continue; fi
    if ! diff -u "$d/expect" /tmp/spotq-bad-err.$$ >/dev/null; then
        echo "FAIL $d:"; echo "  want: $(cat "$d/expect")"; echo "  got:  $(cat /tmp/spotq-bad-err.$$)"; fail=$((fail + 1))
    fi
done
rm -f /tmp/spotq-bad-err.$$
echo "bad input: $n cases, $fail failed"
[ "$fail" -eq 0 ] && [ "$n" -gt 20 ]
