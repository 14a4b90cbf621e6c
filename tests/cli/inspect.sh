#!/bin/sh
# inspect.sh: `spotq inspect` on the bundled model prints its shape, parameters and sizes; --json too.
set -e
out=$($SPOTQ inspect models/stories260K)
for want in "architecture:     llama" "layers:           5" "hidden:           64" "intermediate:     172" \
            "heads:            8" "kv heads:         4" "vocab:            512" "head dim:         8" \
            "tied embeddings:  yes" "parameters:       260032" "tensors:          47" \
            "size on disk:     1044992 bytes" "quantization:     none"; do
    echo "$out" | grep -qF "$want" || { echo "inspect: missing '$want'"; echo "$out"; exit 1; }
done
# every tensor listed with its dtype and shape
echo "$out" | grep -qE "model.layers.4.mlp.down_proj.weight +F32 +\[64, 172\]" || { echo "inspect: tensor line"; exit 1; }
# BF16 = 2 bytes x params; INT4 g128 keeps every matrix here (K=64 or 172 is not a multiple of 128) in BF16
echo "$out" | grep -qF "size at BF16:     520064 bytes" || { echo "inspect: bf16 size"; exit 1; }
echo "$out" | grep -qF "size at INT4 g128: 520064 bytes" || { echo "inspect: int4 size"; exit 1; }
# the same via a .safetensors path with config.json beside it, and as JSON
json=$($SPOTQ inspect models/stories260K/model.safetensors --json)
echo "$json" | grep -qF '"hidden":	64' || { echo "inspect --json: hidden"; echo "$json" | head; exit 1; }
echo "$json" | grep -qF '"parameters":	260032' || { echo "inspect --json: parameters"; exit 1; }
echo "$json" | grep -qF '"kv_heads":	4' || { echo "inspect --json: kv_heads"; exit 1; }
n=$(echo "$json" | grep -c '"dtype":	"F32"')
[ "$n" -eq 47 ] || { echo "inspect --json: $n tensors"; exit 1; }
