#!/usr/bin/env python3
"""make_model.py: writes the synthetic Llama that `make bench` times (random weights, never committed).

Shape: hidden 1024, 8 layers, FFN 2816, 16 heads, 4 KV heads (head_dim 64), vocab 512, untied
embeddings; weights N(0, 0.02) like a freshly initialised HF Llama, norms 1. The vocabulary matches
the bundled stories260K tokenizer, which is copied beside it so that `spotq eval` can run on it.
--shape 135m: the shape of a 135M Llama-family model (hidden 576, 30 layers, 9 heads over 3 KV
heads, FFN 1536, vocab 49152, tied embeddings), for `spotq bench` only (no tokenizer of that size
is written; bench needs none).

Usage: python3 bench/make_model.py OUTDIR [--dtype F32|F16|BF16] [--shape default|135m]
Writes OUTDIR/config.json, OUTDIR/model.safetensors, OUTDIR/tokenizer.json. Skips the work when
OUTDIR already holds a model made with the same settings.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np

SHAPES = {"default": (1024, 8, 2816, 16, 4, 512, False), "135m": (576, 30, 1536, 9, 3, 49152, True)}


def to_dtype(a, dtype):
    a = a.astype(np.float32)
    if dtype == "F32":
        return a.tobytes()
    if dtype == "F16":
        return a.astype(np.float16).tobytes()
    u = a.view(np.uint32)  # BF16: round to nearest even on the upper 16 bits
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return r.tobytes()


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out, opts = sys.argv[1], dict(zip(sys.argv[2::2], sys.argv[3::2]))
    dtype, shape = opts.get("--dtype", "F32"), opts.get("--shape", "default")
    if dtype not in ("F32", "F16", "BF16") or shape not in SHAPES or set(opts) - {"--dtype", "--shape"}:
        sys.exit(__doc__)
    HIDDEN, LAYERS, FFN, HEADS, KV_HEADS, VOCAB, TIED = SHAPES[shape]
    HEAD_DIM = HIDDEN // HEADS
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "intermediate_size": FFN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "vocab_size": VOCAB,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": TIED,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dtype],
        "spotq_bench": "synthetic, seed 0",
    }
    cfg_text = json.dumps(cfg, indent=2) + "\n"
    cfg_path = os.path.join(out, "config.json")
    st_path = os.path.join(out, "model.safetensors")
    if os.path.exists(st_path) and os.path.exists(cfg_path) and open(cfg_path).read() == cfg_text:
        return
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    shapes = [("model.embed_tokens.weight", (VOCAB, HIDDEN))] + ([] if TIED else [("lm_head.weight", (VOCAB, HIDDEN))])
    shapes += [("model.norm.weight", (HIDDEN,))]
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        shapes += [
            (p + "input_layernorm.weight", (HIDDEN,)), (p + "post_attention_layernorm.weight", (HIDDEN,)),
            (p + "self_attn.q_proj.weight", (HEADS * HEAD_DIM, HIDDEN)),
            (p + "self_attn.k_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN)),
            (p + "self_attn.v_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN)),
            (p + "self_attn.o_proj.weight", (HIDDEN, HEADS * HEAD_DIM)),
            (p + "mlp.gate_proj.weight", (FFN, HIDDEN)), (p + "mlp.up_proj.weight", (FFN, HIDDEN)),
            (p + "mlp.down_proj.weight", (HIDDEN, FFN)),
        ]
    size = {"F32": 4, "F16": 2, "BF16": 2}[dtype]
    header, off = {}, 0
    for name, dims in shapes:
        n = int(np.prod(dims)) * size
        header[name] = {"dtype": dtype, "shape": list(dims), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = st_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, dims in shapes:
            if name.endswith("norm.weight"):
                a = np.ones(dims, dtype=np.float32)
            else:
                a = rng.standard_normal(dims, dtype=np.float32) * np.float32(0.02)
            f.write(to_dtype(a, dtype))
    os.replace(tmp, st_path)
    here = os.path.dirname(os.path.abspath(__file__))
    if shape == "default":
        shutil.copy(os.path.join(here, "..", "models", "stories260K", "tokenizer.json"), os.path.join(out, "tokenizer.json"))
    with open(cfg_path, "w") as f:
        f.write(cfg_text)


if __name__ == "__main__":
    main()
