# quant.sh: sourced by the CLI tests of one quantisation scheme (int8.sh, fp4.sh, smooth.sh, budget.sh):
# the setup they share. Set NAME (the test's name, first word of its messages) before sourcing it.
#   T                      a temporary folder, removed when the script exits
#   M, C                   the bundled model and a short calibration (8 windows of 128 tokens)
#   fail MSG...            prints "NAME: MSG" and exits 1
#   field FILE KEY         num.sh's jnum, or fails naming FILE and KEY
#   ev OUT [REF]           evalj into $T/OUT.json: $T/OUT on the TinyStories eval text, ctx 256, against
#                          REF (the bundled model when omitted)
# Also sources num.sh (jnum, evalj, bound, ...). Needs $SPOTQ.
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
M=models/stories260K
C="--calib data/tinystories/calib.txt --nsamples 8 --seqlen 128"
. tests/cli/lib/num.sh
fail() { echo "$NAME: $*"; exit 1; }
field() { jnum "$@" || { echo "$NAME: no number \"$2\" in $1" >&2; exit 1; }; }
ev() { evalj $T/$1.json $T/$1 --data data/tinystories/eval.txt --ctx 256 --ref ${2:-$M}; }
