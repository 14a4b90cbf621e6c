#!/bin/sh
# eval.sh: `spotq eval` on the bundled model and text prints the golden perplexities (both protocols,
# ctx 128 and 256); --json; --ref against itself and against a perturbed copy (its KLD mean, median,
# p99, max, top-1 and ratio pinned to an independent float64 computation); the gates exit 3 with
# one line naming the gate; bad input exits 1 or 2 with one line.
set -e
M=models/stories260K
D=data/tinystories/eval.txt
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "eval: $*"; exit 1; }

. tests/cli/lib/num.sh
# within 1e-4 relative of the golden value (tests/golden/stories260K.json); a non-number fails
close() { isnum "$1" && isnum "$2" && awk -v a="$1" -v b="$2" 'BEGIN { d = a / b - 1; if (d < 0) d = -d; exit !(d < 1e-4) }'; }
ppl_of() { echo "$1" | awk '/^ppl:/ { print $2 }'; }

out=$($SPOTQ eval $M --data $D --ctx 256)
close "$(ppl_of "$out")" 5.922008295244502 || fail "gptq ctx 256: $(ppl_of "$out")"
echo "$out" | grep -qF "protocol:       gptq, ctx 256: 34 windows, 8670 tokens scored" || fail "gptq 256 counts: $out"
echo "$out" | grep -qF "(8891 tokens)" || fail "token count: $out"
out=$($SPOTQ eval $M --data $D --ctx 128)
close "$(ppl_of "$out")" 6.159947741612692 || fail "gptq ctx 128: $(ppl_of "$out")"
out=$($SPOTQ eval $M --data $D --ctx 256 --protocol llamacpp)
close "$(ppl_of "$out")" 5.636122766188166 || fail "llamacpp ctx 256: $(ppl_of "$out")"
echo "$out" | grep -qF "34 windows, 4318 tokens scored" || fail "llamacpp 256 counts: $out"
out=$($SPOTQ eval $M --data $D --ctx 128 --protocol llamacpp --json)
v=$(echo "$out" | awk -F'[:,]' '/"ppl"/ { gsub(/[ \t]/, "", $2); print $2 }')
close "$v" 5.809937062418754 || fail "llamacpp ctx 128 --json: $v"
echo "$out" | grep -qF '"tokens_scored":	4347' || fail "--json counts: $out"

# default ctx: the model's 512 positions (< 2048)
$SPOTQ eval $M --data $D | grep -qF "ctx 512: 17 windows" || fail "default ctx"

# against itself: ratio 1, KLD 0, full agreement; a gate below 1 fails with exit 3 and one line
out=$($SPOTQ eval $M --data $D --ctx 256 --ref $M)
echo "$out" | grep -qF "ppl ratio:      1.000000" || fail "self ratio: $out"
echo "$out" | grep -qF "kld:            mean 0, median 0, p99 0, max 0" || fail "self kld: $out"
echo "$out" | grep -qF "top-1 agree:    100.0000%" || fail "self top-1: $out"
set +e
$SPOTQ eval $M --data $D --ctx 256 --ref $M --max-ppl-ratio 0.99 >"$tmp/out" 2>"$tmp/err"
rc=$?
set -e
[ $rc -eq 3 ] || fail "a failed ppl gate exits $rc, not 3"
[ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "gate: not one line: $(cat "$tmp/err")"
grep -qE "ppl ratio 1 exceeds --max-ppl-ratio 0.99 by 0.01" "$tmp/err" || fail "gate message: $(cat "$tmp/err")"

# a perturbed copy (rope_theta 10000 -> 20000): KLD > 0, ratio > 1; gates pass or fail by their limits
mkdir "$tmp/pert"
ln -s "$PWD/$M/model.safetensors" "$tmp/pert/model.safetensors"
cp $M/tokenizer.json "$tmp/pert/"
sed 's/"rope_theta": 10000.0/"rope_theta": 20000.0/' $M/config.json >"$tmp/pert/config.json"
grep -q '"rope_theta": 20000.0' "$tmp/pert/config.json" || fail "could not perturb the config"
out=$($SPOTQ eval "$tmp/pert" --data $D --ctx 256 --ref $M --max-kld 10 --max-ppl-ratio 10 --json)
echo "$out" | grep -qF '"passed":	true' || fail "generous gates: $out"
# the divergence, pinned to 1e-4 relative against a float64 numpy forward of both models
# (tests/golden/gen_stories260K.py wrote tests/golden/stories260K_kld.json)
echo "$out" >"$tmp/pert.json"
G=tests/golden/stories260K_kld.json
for k in mean median p99 max top1_agreement ppl_ratio; do
    got=$(jnum "$tmp/pert.json" $k) || fail "perturbed: no $k in eval's JSON: $out"
    want=$(jnum $G $k) || fail "no $k in $G"
    close "$got" "$want" || fail "perturbed: $k $got, golden $want"
done
set +e
$SPOTQ eval "$tmp/pert" --data $D --ctx 256 --ref $M --max-kld 0.001 >"$tmp/out" 2>"$tmp/err"
rc=$?
set -e
[ $rc -eq 3 ] || fail "a failed KLD gate exits $rc, not 3"
grep -qE "^spotq eval: quality gate failed: mean KLD [0-9.e-]+ exceeds --max-kld 0.001 by [0-9.e-]+$" "$tmp/err" || fail "kld gate: $(cat "$tmp/err")"
grep -q "^kld:" "$tmp/out" || fail "the report is printed before the gate fails"

# .jsonl: one document per line, each with its BOS
printf '{"text": "Once upon a time, there was a little dog."}\n\n{"text": "The sun was warm and the sky was blue. Tom ran to the park to play."}\n' >"$tmp/d.jsonl"
$SPOTQ eval $M --data "$tmp/d.jsonl" --ctx 16 | grep -qE "ctx 16: [1-9][0-9]* windows" || fail ".jsonl data"

# bad input: one line, exit 1 (data, model) or 2 (usage)
. tests/cli/lib/expect.sh
printf 'Once upon a time.' >"$tmp/short.txt"
expect 1 "too few for one window of --ctx 256" -- eval $M --data "$tmp/short.txt" --ctx 256
expect 1 "no tokenizer.json" -- eval tests/fixtures/runtime/llama_gqa --data $D
expect 1 "no such file" -- eval $M --data "$tmp/missing.txt"
expect 1 "no such file" -- eval "$tmp/nomodel" --data $D
expect 2 "--data FILE is required" -- eval $M
expect 2 "need --ref" -- eval $M --data $D --max-kld 0.1
expect 2 "gptq or llamacpp" -- eval $M --data $D --protocol wiki
echo '{"txt": 1}' >"$tmp/bad.jsonl"
expect 1 "bad.jsonl:1" -- eval $M --data "$tmp/bad.jsonl"
exit 0
