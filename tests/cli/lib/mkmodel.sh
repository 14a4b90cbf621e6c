# mkmodel.sh: sourced by CLI tests: writes a Llama-shaped checkpoint of zeros (config.json and an F16
# model.safetensors) with plain sh, for tests that need shapes the bundled model lacks (hidden 128, 576)
# and no trained weights. Shapes, names and offsets follow the safetensors format; the data is all zero.
#   mkmodel DIR HIDDEN INTER HEADS KV_HEADS [QUANT]
# QUANT, when given, is "gptq BITS GROUP SYM" and writes GPTQ v1 tensors (qweight, qzeros, scales, g_idx)
# in place of every linear's weight, as another tool would, with a matching quantization_config.
mkmodel() {
    _d=$1 _h=$2 _i=$3 _nh=$4 _kv=$5 _q=$6
    mkdir -p "$_d"
    _hd=$((_h / _nh)) _v=16
    _hdr="" _off=0 _fills=""
    _t() { # name rows cols dtype bytes-per-element [fill byte, octal] ; 1-D when cols is 0
        _n=$(( $3 ? $2 * $3 : $2 )); _b=$((_n * $5))
        _shape=$([ "$3" -eq 0 ] && echo "[$2]" || echo "[$2,$3]")
        _hdr="$_hdr${_hdr:+,}\"$1\":{\"dtype\":\"$4\",\"shape\":$_shape,\"data_offsets\":[$_off,$((_off + _b))]}"
        _off=$((_off + _b))
        _fills="$_fills $_b:${6:-0}"
    }
    _lin() { # name out in
        if [ -z "$_q" ]; then _t "$1.weight" $2 $3 F16 2; return; fi
        set -- "$1" "$2" "$3" $_q
        _per=$((32 / $5)) _g=$6; [ "$_g" -eq -1 ] && _g=$3
        _G=$(( ($3 + _g - 1) / _g ))
        _t "$1.qweight" $(( $3 / _per )) $2 I32 4
        # zero points: stored as zero - 1, the symmetric zero 2^(bits-1) in every field (0x55..., 0x77..., 0x7f... at 2, 4, 8 bits)
        _t "$1.qzeros" $_G $(( $2 / _per )) I32 4 $(case $5 in 2) echo 125;; 4) echo 167;; *) echo 177;; esac)
        _t "$1.scales" $_G $2 F16 2
        _t "$1.g_idx" $3 0 I32 4 g$_g # k / group, little-endian int32
    }
    _t model.embed_tokens.weight $_v $_h F16 2
    _p=model.layers.0
    _t $_p.input_layernorm.weight $_h 0 F16 2
    _t $_p.post_attention_layernorm.weight $_h 0 F16 2
    _lin $_p.self_attn.q_proj $((_nh * _hd)) $_h
    _lin $_p.self_attn.k_proj $((_kv * _hd)) $_h
    _lin $_p.self_attn.v_proj $((_kv * _hd)) $_h
    _lin $_p.self_attn.o_proj $_h $((_nh * _hd))
    _lin $_p.mlp.gate_proj $_i $_h
    _lin $_p.mlp.up_proj $_i $_h
    _lin $_p.mlp.down_proj $_h $_i
    _t model.norm.weight $_h 0 F16 2
    _hdr="{$_hdr}"
    while [ $(( ${#_hdr} % 8 )) -ne 0 ]; do _hdr="$_hdr "; done
    _len=${#_hdr}
    { # the header length, 8 bytes little-endian, then the header and the zeros
        _x=$_len
        for _k in 1 2 3 4 5 6 7 8; do printf "\\$(printf '%03o' $((_x % 256)))"; _x=$((_x / 256)); done
        printf '%s' "$_hdr"
        for _f in $_fills; do
            case ${_f#*:} in
            g*) _g=${_f#*:g} _k=0
                while [ $_k -lt $(( ${_f%%:*} / 4 )) ]; do
                    _x=$((_k / _g)); printf "\\$(printf '%03o' $((_x % 256)))\\$(printf '%03o' $((_x / 256)))\\0\\0"; _k=$((_k + 1))
                done;;
            *) head -c ${_f%%:*} /dev/zero | tr '\0' "\\${_f#*:}";;
            esac
        done
    } >"$_d/model.safetensors"
    _qc=""
    if [ -n "$_q" ]; then
        set -- $_q
        _qc=", \"quantization_config\": {\"quant_method\": \"$1\", \"bits\": $2, \"group_size\": $3, \"sym\": $4, \"desc_act\": false, \"checkpoint_format\": \"gptq\"}"
    fi
    cat >"$_d/config.json" <<JSON
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": $_h, "intermediate_size": $_i,
 "num_hidden_layers": 1, "num_attention_heads": $_nh, "num_key_value_heads": $_kv, "vocab_size": $_v,
 "max_position_embeddings": 64, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": true,
 "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16"$_qc}
JSON
}
