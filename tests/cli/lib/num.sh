# num.sh: sourced by the CLI tests: numbers read from spotq's output, checked before they are compared
# (awk takes "" < 1 as true, so an empty or garbled value would pass a bound).
#   num WHAT VALUE...       exits 1 naming WHAT unless every VALUE is a decimal number
#   jnum FILE KEY           prints the first number after "KEY": in FILE (JSON as spotq writes it);
#                           exits non-zero, printing nothing, when there is none
#   evalj OUT ARGS...       runs `spotq eval ARGS --json` into OUT; its exit code other than 0 fails
#                           the test (no pipe in between to hide it)
#   below_rtn FILE          true when every matrix of spotq.json FILE has an "error" that is a number
#                           below its "error_rtn" (and there is at least one)
#   bound WHAT EXPR VAR=VALUE...   checks the values with num, then fails naming WHAT unless the awk
#                           expression EXPR over them holds: bound "ratio" 'r < 1.03' r=$r
# Needs $SPOTQ. Call num, evalj and bound at the top level of the script (not inside $(...)), where
# their exit ends the test.
# Their own variables are prefixed _n_ (sh functions share the script's variables).
isnum() { printf '%s\n' "$1" | grep -Eqx '[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?'; }
num() { # num WHAT VALUE...
    _n_what=$1
    shift
    for _n_v in "$@"; do
        isnum "$_n_v" || { echo "$_n_what: not a number: '$_n_v'"; exit 1; }
    done
}
jnum() { # jnum FILE KEY
    _n_v=$(sed -n "s/.*\"$2\":[ \t]*\([0-9.eE+-][0-9.eE+-]*\).*/\1/p" "$1" | head -n 1)
    isnum "$_n_v" || return 1
    printf '%s\n' "$_n_v"
}
evalj() { # evalj OUT ARGS...
    _n_out=$1
    shift
    _n_rc=0
    $SPOTQ eval "$@" --json >"$_n_out" 2>"$_n_out.err" || _n_rc=$?
    [ $_n_rc -eq 0 ] || { echo "spotq eval $*: exit $_n_rc: $(cat "$_n_out.err")"; exit 1; }
}
bound() { # bound WHAT EXPR VAR=VALUE...
    _n_b=$1 _n_expr=$2
    shift 2
    _n_vars=""
    for _n_a in "$@"; do
        num "$_n_b: ${_n_a%%=*}" "${_n_a#*=}"
        _n_vars="$_n_vars -v $_n_a"
    done
    awk $_n_vars "BEGIN { exit !($_n_expr) }" || { echo "$_n_b: not $_n_expr with $*"; exit 1; }
}
below_rtn() { # below_rtn FILE: every matrix's "error" a number below its "error_rtn" (spotq.json, as written)
    awk '/"error_rtn":/ { r = $2; sub(/,$/, "", r); n++; if (r !~ /^[0-9.eE+-]+$/) bad++ }
         /"error":/ { e = $2; sub(/,$/, "", e); m++; if (e !~ /^[0-9.eE+-]+$/ || !(e + 0 < r + 0)) bad++ }
         END { exit !(n > 0 && n == m && !bad) }' "$1"
}
