#!/usr/bin/env python3
"""hf_to_gguf.py: writes an F32 GGUF of a synthetic HF Llama (bench/make_model.py's, F32 safetensors)
for llama.cpp's speed tools, so that spotq and llama.cpp time the same weights (bench/vs_llamacpp.sh).

The synthetic models carry no tokenizer of their vocabulary's size, so the GGUF names none
(tokenizer.ggml.model "none" with llama.vocab_size, which llama.cpp's llama-vocab.cpp answers with
that many dummy tokens; llama-bench feeds random token ids and needs nothing more). Q and K rows are
permuted from HF's rotary layout to GGML's, as llama.cpp's convert_hf_to_gguf.py (LlamaModel.permute)
does; tied embeddings write no output.weight (llama.cpp then uses token_embd, as spotq does). Uses
llama.cpp's own gguf-py writer from the fetched source tree (bench time only; nothing of it in the repo).

Usage: python3 bench/hf_to_gguf.py HFDIR OUT.gguf LLAMACPP_SRC
"""
import json
import os
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            sys.exit(f"hf_to_gguf.py: {path}: {name} is {meta['dtype']}, not F32")
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(mm[base + a:base + b], dtype=np.float32).reshape(meta["shape"])
    return out


def permute(w, n_head, n_head_kv):
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[-1])
    hf, out, src = sys.argv[1:]
    sys.path.insert(0, os.path.join(src, "gguf-py"))
    import gguf

    cfg = json.load(open(os.path.join(hf, "config.json")))
    t = read_safetensors(os.path.join(hf, "model.safetensors"))
    H, L, nh, nkv = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    V = cfg["vocab_size"]
    w = gguf.GGUFWriter(out, "llama")
    w.add_name("spotq-synthetic")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(H)
    w.add_block_count(L)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_dimension_count(H // nh)
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_vocab_size(V)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("none")
    w.add_tensor("token_embd.weight", np.ascontiguousarray(t["model.embed_tokens.weight"]))
    for l in range(L):
        p = f"model.layers.{l}."
        names = [("attn_norm", "input_layernorm"), ("ffn_norm", "post_attention_layernorm"), ("attn_q", "self_attn.q_proj"),
                 ("attn_k", "self_attn.k_proj"), ("attn_v", "self_attn.v_proj"), ("attn_output", "self_attn.o_proj"),
                 ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"), ("ffn_down", "mlp.down_proj")]
        for g, h in names:
            a = t[p + h + ".weight"]
            if g == "attn_q":
                a = permute(a, nh, nh)
            elif g == "attn_k":
                a = permute(a, nh, nkv)
            w.add_tensor(f"blk.{l}.{g}.weight", np.ascontiguousarray(a))
    w.add_tensor("output_norm.weight", np.ascontiguousarray(t["model.norm.weight"]))
    if "lm_head.weight" in t:
        w.add_tensor("output.weight", np.ascontiguousarray(t["lm_head.weight"]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
