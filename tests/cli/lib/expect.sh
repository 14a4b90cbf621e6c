# expect.sh: sourced by the CLI tests: `expect RC PATTERN -- ARGS` runs spotq ARGS and requires exit code RC
# and exactly one line on stderr matching PATTERN. Needs $SPOTQ, $tmp and a fail function.
expect() { # expect RC PATTERN -- ARGS
    want=$1 pat=$2
    shift 3
    set +e
    $SPOTQ "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    set -e
    [ $rc -eq "$want" ] || fail "'$*' exits $rc, not $want: $(cat "$tmp/err")"
    [ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "'$*': not one line: $(cat "$tmp/err")"
    grep -qiE -e "$pat" "$tmp/err" || fail "'$*': $(cat "$tmp/err")"
}
