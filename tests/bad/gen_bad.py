#!/usr/bin/env python3
"""gen_bad.py: writes the bad-input corpus: one tiny model directory per defect, each with `cmd` (the
spotq arguments, MODEL being the case's directory) and `expect` (the one stderr line spotq must print,
with exit code 1). Run from anywhere: python3 tests/bad/gen_bad.py. Needs numpy only."""
import json, os, shutil, struct
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REL = 'tests/bad'   # how the test script names the cases (it runs from the repo root)

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8, "intermediate_size": 16,
          "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 16,
          "max_position_embeddings": 32, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
          "bos_token_id": 1, "eos_token_id": 2}

def tensors(cfg=CONFIG):
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = h // cfg["num_attention_heads"]; kv = cfg["num_key_value_heads"] * hd
    rng = np.random.default_rng(0)
    t = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    p = "model.layers.0."
    t.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
              p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
              p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
              p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h), p + "mlp.down_proj.weight": (h, f)})
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in sorted(t.items())}

def encode(ts, dtypes=None):
    """(header dict, data bytes) for a dict of arrays, offsets tiling the data in order."""
    hdr, data = {}, b""
    for k, a in ts.items():
        b = a.tobytes()
        hdr[k] = {"dtype": (dtypes or {}).get(k, "F32"), "shape": list(a.shape), "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    return hdr, data

def pack(hdr, data, header_bytes=None):
    h = header_bytes if header_bytes is not None else json.dumps(hdr).encode()
    if header_bytes is None:
        h += b" " * (-len(h) % 8)   # writers pad the header so the data stays aligned
    return struct.pack("<Q", len(h)) + h + data

cases = {}

def case(name, cmd, expect, files):
    cases[name] = (cmd, expect, files)

def model_files(st_bytes, config=CONFIG):
    return {"config.json": json.dumps(config, indent=1).encode(), "model.safetensors": st_bytes}

good_hdr, good_data = encode(tensors())
good = pack(good_hdr, good_data)
P = lambda n: f"{REL}/{n}/model.safetensors"

first_past = next(k for k, v in good_hdr.items() if v["data_offsets"][1] > len(good_data) - 100)  # header order
case("truncated-data", "inspect", f"{P('truncated-data')}: tensor '{first_past}': data_offsets end {good_hdr[first_past]['data_offsets'][1]} is past the data ({len(good_data) - 100} bytes)",
     model_files(good[:-100]))
case("header-past-end", "inspect", f"{P('header-past-end')}: header length 1000000 is past the end of the file ({len(good)} bytes)",
     model_files(struct.pack("<Q", 1000000) + good[8:]))
case("too-short", "inspect", f"{P('too-short')}: 5 bytes, too short for a safetensors header", model_files(b"\x01\x02\x03\x04\x05"))

h = json.loads(json.dumps(good_hdr)); h["model.norm.weight"]["data_offsets"][0] = -4
case("negative-offset", "inspect", f"{P('negative-offset')}: tensor 'model.norm.weight': data_offsets must be two non-negative integers",
     model_files(pack(h, good_data)))

h = json.loads(json.dumps(good_hdr)); a, b = h["model.layers.0.self_attn.v_proj.weight"]["data_offsets"]
h["model.layers.0.self_attn.v_proj.weight"]["data_offsets"] = [a - 4, b - 4]
first_after = min((v["data_offsets"][0], k) for k, v in good_hdr.items() if v["data_offsets"][0] >= b)
case("overlapping-offsets", "inspect", f"{P('overlapping-offsets')}: tensor 'model.layers.0.self_attn.v_proj.weight' overlaps the tensor before it (starts at {a - 4}, previous ends at {a})",
     model_files(pack(h, good_data)))

h = json.loads(json.dumps(good_hdr)); h["model.norm.weight"]["shape"] = [9]
case("shape-size-mismatch", "inspect", f"{P('shape-size-mismatch')}: tensor 'model.norm.weight': 32 bytes in data_offsets but F32 x 9 elements needs 36",
     model_files(pack(h, good_data)))

h = json.loads(json.dumps(good_hdr)); h["model.norm.weight"]["shape"] = [4294967296, 4294967296, 4]
case("huge-shape", "inspect", f"{P('huge-shape')}: tensor 'model.norm.weight': shape product overflows", model_files(pack(h, good_data)))

hb = json.dumps(good_hdr).encode()[:-7]
case("invalid-json-header", "inspect", f"{P('invalid-json-header')}: header is not valid JSON", model_files(pack(None, good_data, hb)))

hb = json.dumps(good_hdr).replace('"model.norm.weight"', '"model.norm.\xff"').encode('latin-1')
case("non-utf8-name", "inspect", f"{P('non-utf8-name')}: header is not valid UTF-8", model_files(pack(None, good_data, hb)))

hb = json.dumps(good_hdr)
dup = '"model.norm.weight": ' + json.dumps(good_hdr["model.norm.weight"])
hb = hb[:-1] + ", " + dup + "}"
case("duplicate-name", "inspect", f"{P('duplicate-name')}: duplicate tensor name 'model.norm.weight'", model_files(pack(None, good_data, hb.encode())))

case("missing-config", "inspect", f"{REL}/missing-config/config.json: missing config.json (needed beside the weights)", {"model.safetensors": good})
case("missing-weights", "inspect", f"{REL}/missing-weights: no model.safetensors or model.safetensors.index.json in this directory",
     {"config.json": json.dumps(CONFIG).encode()})
case("missing-tokenizer", "tokenize", f"{REL}/missing-tokenizer/tokenizer.json: cannot open: No such file or directory", model_files(good))

case("invalid-json-config", "inspect", f"{REL}/invalid-json-config/config.json: not valid JSON",
     {"config.json": b'{"model_type": "llama", "hidden_size": 8,', "model.safetensors": good})
cfg = dict(CONFIG); cfg["model_type"] = "gpt_neox"
case("unknown-architecture", "inspect",
     f"{REL}/unknown-architecture/config.json: unknown architecture 'gpt_neox' (spotq supports llama, mistral, qwen2, mixtral, qwen2_moe, qwen3_moe)",
     model_files(good, cfg))
cfg = dict(CONFIG); del cfg["num_attention_heads"]
case("config-missing-field", "inspect", f"{REL}/config-missing-field/config.json: missing field 'num_attention_heads'", model_files(good, cfg))

ts = tensors(); ts["model.layers.0.mlp.up_proj.weight"] = ts["model.layers.0.mlp.up_proj.weight"].view(np.int32)
hh, dd = encode(ts, {"model.layers.0.mlp.up_proj.weight": "I32"})
case("wrong-dtype", "inspect", f"{P('wrong-dtype')}: tensor 'model.layers.0.mlp.up_proj.weight' has dtype I32 (expected F32, F16 or BF16)",
     model_files(pack(hh, dd)))
ts = tensors(); ts["model.layers.0.mlp.up_proj.weight"] = ts["model.layers.0.mlp.up_proj.weight"].T.copy()
hh, dd = encode(ts)
case("wrong-shape", "inspect", f"{P('wrong-shape')}: tensor 'model.layers.0.mlp.up_proj.weight' has shape [8, 16], config.json implies [16, 8]",
     model_files(pack(hh, dd)))
ts = tensors(); del ts["model.layers.0.self_attn.k_proj.weight"]
hh, dd = encode(ts)
case("missing-tensor", "inspect", f"{P('missing-tensor')}: missing tensor 'model.layers.0.self_attn.k_proj.weight' (needed by llama)",
     model_files(pack(hh, dd)))
case("unknown-dtype", "inspect", f"{P('unknown-dtype')}: tensor 'model.norm.weight': unknown dtype 'F12'",
     model_files(pack(dict(good_hdr, **{"model.norm.weight": dict(good_hdr["model.norm.weight"], dtype="F12")}), good_data)))
case("gap-in-data", "inspect", f"{P('gap-in-data')}: tensors cover {len(good_data)} bytes but the data section has {len(good_data) + 16}",
     model_files(pack(good_hdr, good_data + bytes(16))))
case("missing-model", "inspect", f"{REL}/missing-model/nothing-here: no such file or directory", {})
case("index-bad-shard", "inspect", f"{REL}/index-bad-shard/model.safetensors.index.json: weight_map entry 'x' is not a file name in the index's directory",
     {"config.json": json.dumps(CONFIG).encode(), "model.safetensors.index.json": b'{"weight_map": {"x": "../../../etc/passwd"}}'})

# NaN weights: quantize must name the tensor (a tiny model with the bundled tokenizer's vocabulary)
cfg = dict(CONFIG); cfg["vocab_size"] = 512
ts = tensors(cfg); ts["model.layers.0.mlp.up_proj.weight"][3, 5] = np.nan
hh, dd = encode(ts)
tok = open(os.path.join(HERE, "../../models/stories260K/tokenizer.json"), "rb").read()
files = model_files(pack(hh, dd), cfg); files["tokenizer.json"] = tok
case("nan-weights", "quantize", f"{REL}/nan-weights: tensor 'model.layers.0.mlp.up_proj.weight' has a NaN or Inf at element {3 * 8 + 5}", files)
ARGS = {"nan-weights": " -o /tmp/spotq-bad-nan-out --method rtn --group-size -1 --calib data/tinystories/calib.txt --nsamples 2 --seqlen 16 --force"}
case("fp8-nan-weights", "quantize", f"{REL}/fp8-nan-weights: tensor 'model.layers.0.mlp.up_proj.weight' has a NaN or Inf at element {3 * 8 + 5} (row 3, column 5)", files)
ARGS["fp8-nan-weights"] = " -o /tmp/spotq-bad-nan-out --method fp8 --act static --calib data/tinystories/calib.txt --nsamples 2 --seqlen 16 --force"

# FP8 checkpoints (vLLM's fp8 format) the runtime must refuse: a NaN code, a missing input_scale, a zero scale
def fp8_model(activation_scheme, edit):
    cfg = dict(CONFIG, vocab_size=512, quantization_config={"quant_method": "fp8", "activation_scheme": activation_scheme,
                                                            "ignored_layers": ["lm_head"]})
    ts, dts = tensors(cfg), {}
    for k in [k for k in ts if k.endswith("_proj.weight")]:
        ts[k] = (np.arange(ts[k].size) % 0x7E).astype(np.uint8).reshape(ts[k].shape)
        dts[k] = "F8_E4M3"
        ts[k[:-len("weight")] + "weight_scale"] = np.array(0.01, dtype=np.float32)
        if activation_scheme == "static":
            ts[k[:-len("weight")] + "input_scale"] = np.array(0.02, dtype=np.float32)
    edit(ts)
    files = model_files(pack(*encode(dict(sorted(ts.items())), dts)), cfg)
    files["tokenizer.json"] = tok
    return files
def nan_code(ts): ts["model.layers.0.mlp.up_proj.weight"][3, 5] = 0xFF
def no_input_scale(ts): del ts["model.layers.0.self_attn.q_proj.input_scale"]
def zero_scale(ts): ts["model.layers.0.self_attn.o_proj.weight_scale"] = np.array(0.0, dtype=np.float32)
case("fp8-nan-code", "eval", f"{P('fp8-nan-code')}: tensor 'model.layers.0.mlp.up_proj.weight' holds an E4M3 NaN at element {3 * 8 + 5}",
     fp8_model("dynamic", nan_code))
case("fp8-no-input-scale", "eval", f"{P('fp8-no-input-scale')}: missing tensor 'model.layers.0.self_attn.q_proj.input_scale' (config.json asks for static activation scales)",
     fp8_model("static", no_input_scale))
case("fp8-zero-scale", "eval", f"{P('fp8-zero-scale')}: tensor 'model.layers.0.self_attn.o_proj.weight_scale' holds 0 at 0 (scales must be finite and positive)",
     fp8_model("dynamic", zero_scale))
for n in ("fp8-nan-code", "fp8-no-input-scale", "fp8-zero-scale"):
    ARGS[n] = " --data data/tinystories/eval.txt"


# Quantised checkpoints whose quantization_config says otherwise than their tensors (formats/qconfig.c):
# a model of hidden 32, FFN 64, every linear packed 4-bit g32 symmetric (codes seeded; only shapes,
# zero points and g_idx matter to the check), under a config that lies about one field.
QCFG = dict(CONFIG, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, vocab_size=512)
def linears(cfg):
    h, f = cfg["hidden_size"], cfg["intermediate_size"]; kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
    p = "model.layers.0."
    return {p + "self_attn.q_proj": (h, h), p + "self_attn.k_proj": (kv, h), p + "self_attn.v_proj": (kv, h),
            p + "self_attn.o_proj": (h, h), p + "mlp.gate_proj": (f, h), p + "mlp.up_proj": (f, h), p + "mlp.down_proj": (h, f)}
def qmodel(kind, qc, sym=True, dense=(), edit=None):
    rng = np.random.default_rng(7)
    ts, dts = tensors(QCFG), {}
    for m, (n, k) in linears(QCFG).items():
        if m in dense:
            continue
        del ts[m + ".weight"]
        g = k // 32
        if kind == "gptq":   # GPTQ v1: qweight [K/8, N], qzeros [G, N/8] (zero - 1), scales [G, N], g_idx [K]
            ts[m + ".qweight"] = rng.integers(-2**31, 2**31, (k // 8, n), dtype=np.int64).astype(np.int32)
            ts[m + ".qzeros"] = (np.full((g, n // 8), 0x77777777, np.int64) if sym else rng.integers(0, 2**31, (g, n // 8))).astype(np.int32)
            ts[m + ".scales"] = np.full((g, n), 0.01, np.float16)
            ts[m + ".g_idx"] = (np.arange(k) // 32).astype(np.int32)
            dts.update({m + ".qweight": "I32", m + ".qzeros": "I32", m + ".scales": "F16", m + ".g_idx": "I32"})
        elif kind == "awq":  # AWQ GEMM: qweight [K, N/8], qzeros [G, N/8], scales [G, N]
            ts[m + ".qweight"] = rng.integers(0, 2**31, (k, n // 8)).astype(np.int32)
            ts[m + ".qzeros"] = rng.integers(0, 2**31, (g, n // 8)).astype(np.int32)
            ts[m + ".scales"] = np.full((g, n), 0.01, np.float16)
            dts.update({m + ".qweight": "I32", m + ".qzeros": "I32", m + ".scales": "F16"})
        elif kind == "ct":   # pack-quantized: weight_packed [N, K/8], weight_scale [N, G], weight_shape
            ts[m + ".weight_packed"] = rng.integers(0, 2**31, (n, k // 8)).astype(np.int32)
            ts[m + ".weight_scale"] = np.full((n, g), 0.01, np.float16)
            ts[m + ".weight_shape"] = np.array([n, k], np.int64)
            dts.update({m + ".weight_packed": "I32", m + ".weight_scale": "F16", m + ".weight_shape": "I64"})
        else:                # FP8: weight [N, K] E4M3, a per-tensor weight_scale, an input_scale
            ts[m + ".weight"] = (np.arange(n * k) % 0x7E).astype(np.uint8).reshape(n, k)
            ts[m + ".weight_scale"] = np.array(0.01, np.float32)
            ts[m + ".input_scale"] = np.array(0.02, np.float32)
            dts[m + ".weight"] = "F8_E4M3"
    if edit:
        edit(ts)
    files = model_files(pack(*encode(dict(sorted(ts.items())), dts)), dict(QCFG, quantization_config=qc))
    files["tokenizer.json"] = tok
    return files
C = lambda n: f"{REL}/{n}/config.json: quantization_config"
Q0 = "model.layers.0.self_attn.q_proj"
D0 = "model.layers.0.mlp.down_proj"
gptq = {"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": False, "sym": True, "checkpoint_format": "gptq"}
# the example: 4-bit g32 sym tensors under a config claiming 8-bit g128 asym gptq_v2
case("qcfg-gptq-lie", "eval", f"{C('qcfg-gptq-lie')}.bits is 8, but {Q0} holds 4-bit codes (qweight [4, 32])",
     qmodel("gptq", dict(gptq, bits=8, group_size=128, sym=False, checkpoint_format="gptq_v2")))
ARGS["qcfg-gptq-lie"] = " --data data/tinystories/eval.txt"
case("qcfg-gptq-group-size", "inspect", f"{C('qcfg-gptq-group-size')}.group_size is 128, but {D0} holds 2 groups of its 64 inputs (group size 32)",  # 1 group of 32 is g128 too
     qmodel("gptq", dict(gptq, group_size=128)))
case("qcfg-gptq-v2", "inspect", f"{C('qcfg-gptq-v2')}.checkpoint_format is 'gptq_v2', but {Q0} holds GPTQ v1 zero points (stored minus one), the only form the runtime reads",
     qmodel("gptq", dict(gptq, checkpoint_format="gptq_v2")))
case("qcfg-gptq-sym", "inspect", f"{C('qcfg-gptq-sym')}.sym is true, but {Q0}'s qzeros hold zero points other than 8",
     qmodel("gptq", gptq, sym=False))
def act_order(ts): ts[D0 + ".g_idx"] = (np.arange(64) % 2).astype(np.int32)   # 2 groups of 32, interleaved
case("qcfg-gptq-desc-act", "inspect", f"{C('qcfg-gptq-desc-act')}.desc_act is false, but {D0}'s g_idx puts its inputs out of order (act-order)",
     qmodel("gptq", gptq, edit=act_order))
case("qcfg-gptq-ignore", "eval", f"{C('qcfg-gptq-ignore')}.dynamic does not list model.layers.0.mlp.down_proj, but it holds full-precision weights",
     qmodel("gptq", gptq, dense=("model.layers.0.mlp.down_proj",)))
ARGS["qcfg-gptq-ignore"] = " --data data/tinystories/eval.txt"
awq = {"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": True, "version": "gemm", "modules_to_not_convert": []}
case("qcfg-awq-version", "inspect", f"{C('qcfg-awq-version')}.version is 'gemv', but {Q0}'s tensors are laid out for GEMM (qweight [32, 4]), the only layout the runtime reads",
     qmodel("awq", dict(awq, version="gemv")))
case("qcfg-awq-bits", "inspect", f"{C('qcfg-awq-bits')}.bits is 8, but {Q0} holds 4-bit AWQ GEMM codes (qweight [32, 4], 8 to a word)",
     qmodel("awq", dict(awq, bits=8)))
ct = {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed", "ignore": ["lm_head"],
      "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None, "format": "pack-quantized",
                                    "weights": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 32,
                                                "actorder": None, "dynamic": False}}}}
def ct_weights(**kw):
    c = json.loads(json.dumps(ct)); c["config_groups"]["group_0"]["weights"].update(kw); return c
case("qcfg-ct-bits", "eval", f"{C('qcfg-ct-bits')}.config_groups.group_0.weights.num_bits is 8, but {Q0} holds 4-bit codes (weight_packed [32, 4])",
     qmodel("ct", ct_weights(num_bits=8)))
ARGS["qcfg-ct-bits"] = " --data data/tinystories/eval.txt"
case("qcfg-ct-asym", "inspect", f"{C('qcfg-ct-asym')}.config_groups.group_0.weights.symmetric is false, but {Q0} has no weight_zero_point",
     qmodel("ct", ct_weights(symmetric=False)))
fp8ct = {"quant_method": "compressed-tensors", "format": "float-quantized", "quantization_status": "compressed", "ignore": ["lm_head"],
         "config_groups": {"group_0": {"targets": ["Linear"], "format": "float-quantized",
                                       "weights": {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel", "dynamic": False},
                                       "input_activations": {"num_bits": 8, "type": "float", "strategy": "tensor", "symmetric": True, "dynamic": False}}}}
case("qcfg-fp8-strategy", "inspect", f"{C('qcfg-fp8-strategy')}.config_groups.group_0.weights.strategy is 'channel', but {Q0} holds 1 weight scale",
     qmodel("fp8", fp8ct))
case("qcfg-fp8-dynamic", "eval", f"{C('qcfg-fp8-dynamic')}.activation_scheme is 'dynamic', but {Q0} holds an input_scale",
     qmodel("fp8", {"quant_method": "fp8", "activation_scheme": "dynamic", "ignored_layers": ["lm_head"]}))
ARGS["qcfg-fp8-dynamic"] = " --data data/tinystories/eval.txt"

for d in os.listdir(HERE):
    if os.path.isdir(os.path.join(HERE, d)):
        shutil.rmtree(os.path.join(HERE, d))
for name, (cmd, expect, files) in sorted(cases.items()):
    d = os.path.join(HERE, name)
    os.makedirs(d)
    for fn, data in files.items():
        open(os.path.join(d, fn), "wb").write(data)
    model = f"{REL}/{name}" + ("/nothing-here" if name == "missing-model" else "")
    open(os.path.join(d, "cmd"), "w").write(f"{cmd} {model}{ARGS.get(name, '')}\n")
    open(os.path.join(d, "expect"), "w").write(f"spotq: error: {expect}\n")
print(f"wrote {len(cases)} cases")
