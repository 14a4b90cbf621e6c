#!/usr/bin/env python3
"""check_peers.py: holds spotq's packed tensors to the peers' own unpackers (run by `make check-peers`).

Reads tests/fixtures/peers/spotq_packed.safetensors (written by `test_qpack --write`, from the fixed
GPTQ fixture), dequantises every configuration with
  - AutoGPTQ 0.7.1's QuantLinear (qlinear_cuda.py, its pure-torch path), GPTQ v1 tensors,
  - compressed-tensors' PackedQuantizationCompressor.decompress, pack-quantized tensors,
and writes their fp16 weights to tests/fixtures/peers/peer_dequant.safetensors, the golden file that
`make test` (test_qpack) compares spotq's own unpacking with, bit for bit. It also fails here when the
peers' weights differ from spotq's (the `<config>.spotq_f16` tensors).
FP8: tests/fixtures/peers/spotq_fp8.safetensors (written by `test_fp8 --write`) against compressed-tensors'
calculate_qparams, FloatQuantizationCompressor.compress/decompress and torch's float8 cast under vLLM's
activation formula, into tests/fixtures/peers/peer_fp8.safetensors (the golden file of test_fp8); and the
bundled model quantised to float-quantized, read back through compressed-tensors; GPTQ, AWQ and vLLM-fp8
outputs read through the peers' own config classes and unpackers (config_loaders_check).
Needs: torch, safetensors, compressed-tensors, and the auto-gptq wheel (unpacked into build/peers)."""
import glob, importlib.util, os, subprocess, sys, zipfile
import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests/fixtures/peers")
PEERS = os.path.join(ROOT, "build/peers")

def autogptq_quantlinear():
    os.makedirs(PEERS, exist_ok=True)
    wheels = glob.glob(os.path.join(PEERS, "auto_gptq-0.7.1-*.whl"))
    if not wheels:
        subprocess.check_call([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "auto-gptq==0.7.1", "-d", PEERS])
        wheels = glob.glob(os.path.join(PEERS, "auto_gptq-0.7.1-*.whl"))
    src = os.path.join(PEERS, "auto_gptq")
    if not os.path.isdir(src):
        zipfile.ZipFile(wheels[0]).extractall(PEERS)
    path = os.path.join(src, "nn_modules/qlinear/qlinear_cuda.py")
    spec = importlib.util.spec_from_file_location("autogptq_qlinear_cuda", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)   # its CUDA extension is absent: the pure-torch path runs
    return mod.QuantLinear

def autoawq_dequantize_gemm():
    os.makedirs(PEERS, exist_ok=True)
    src = glob.glob(os.path.join(PEERS, "autoawq-0.2.9/awq/utils/packing_utils.py"))
    if not src:
        subprocess.check_call([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "autoawq==0.2.9", "-d", PEERS])
        import tarfile
        tarfile.open(glob.glob(os.path.join(PEERS, "autoawq-0.2.9.tar.gz"))[0]).extractall(PEERS)
        src = glob.glob(os.path.join(PEERS, "autoawq-0.2.9/awq/utils/packing_utils.py"))
    spec = importlib.util.spec_from_file_location("autoawq_packing_utils", src[0])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.dequantize_gemm

# ---------------------------------------------------------------- FP8 (compressed-tensors float-quantized, vLLM's activation quantisation)

def fp8_scheme(strategy):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    args = QuantizationArgs(num_bits=8, type="float", symmetric=True, strategy=strategy, dynamic=False)
    return args, QuantizationScheme(targets=["Linear"], weights=args)

def vllm_act(x, scale):
    """vLLM's scaled_fp8_quant as the GPU runs it: x * (1 / s), clamped to +-448, cast to E4M3 (RNE), times s."""
    inv = torch.ones((), dtype=torch.float32) / scale
    q = (x * inv).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    return q.to(torch.float32) * scale

def fp8_main():
    """Holds tests/fixtures/peers/spotq_fp8.safetensors (written by `test_fp8 --write`) to compressed-tensors and
    torch; writes tests/fixtures/peers/peer_fp8.safetensors, the golden file test_fp8 compares with."""
    from compressed_tensors.compressors.naive_quantized.base import FloatQuantizationCompressor
    from compressed_tensors.quantization.utils import calculate_qparams
    src = load_file(os.path.join(FIX, "spotq_fp8.safetensors"))
    out, bad = {}, 0
    for m in sorted({k.split(".")[0] for k in src if k.endswith(".source")}):
        w = src[f"{m}.source"]
        for strategy in ("tensor", "channel"):
            pre = f"{m}.{strategy}."
            args, scheme = fp8_scheme(strategy)
            if strategy == "tensor":
                lo, hi = w.min().reshape(1), w.max().reshape(1)
            else:
                lo, hi = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
            scale, _ = calculate_qparams(lo, hi, args)
            scale = scale.to(torch.float32).contiguous()
            codes = FloatQuantizationCompressor.compress({"weight": w, "weight_scale": scale}, scheme)["weight"].contiguous()
            deq = FloatQuantizationCompressor.decompress({"weight": src[pre + "weight"], "weight_scale": src[pre + "weight_scale"]},
                                                         scheme)["weight"].to(torch.float32).contiguous()
            out[pre + "ct_weight"], out[pre + "ct_weight_scale"], out[pre + "ct_f32"] = codes, scale.reshape(src[pre + "weight_scale"].shape), deq
            same_s = torch.equal(scale.reshape(-1), src[pre + "weight_scale"].reshape(-1))
            same_q = torch.equal(codes.view(torch.uint8), src[pre + "weight"].view(torch.uint8))
            print(f"fp8 {pre[:-1]}: compressed-tensors scales {'==' if same_s else '!='} spotq, codes {'==' if same_q else '!='} spotq")
            bad += (not same_s) + (not same_q)
    x, s = src["act.x"], src["act.static_scale"].reshape(())
    floor = torch.ones((), dtype=torch.float32) / (torch.tensor(448.0) * 512)
    token = torch.maximum(x.abs().amax(dim=1, keepdim=True) / 448.0, floor)
    tensor = torch.maximum(x.abs().amax() / 448.0, floor)
    for name, ref in (("static", vllm_act(x, s)), ("token", vllm_act(x, token)), ("tensor", vllm_act(x, tensor))):
        out[f"act.torch_{name}"] = ref.contiguous()
        same = torch.equal(ref.view(torch.int32), src[f"act.spotq_{name}"].view(torch.int32))
        print(f"fp8 activations {name}: torch (vLLM's formula) {'==' if same else '!='} spotq")
        bad += not same
    save_file(out, os.path.join(FIX, "peer_fp8.safetensors"), metadata=provenance())
    return bad

def vllm_group_act(x, group=128):
    """vLLM's per_token_group_quant_fp8 (fp8_utils.py, the Triton kernel): per token and group of 128 along K,
    s = max(amax, 1e-10) / 448, q = e4m3(clamp(x / s, +-448)) (a division, not a reciprocal); the GEMM sees q * s."""
    t, k = x.shape
    g = x.reshape(t, k // group, group)
    s = torch.clamp(g.abs().amax(dim=-1, keepdim=True), min=1e-10) / 448.0
    q = (g / s).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    return (q.to(torch.float32) * s).reshape(t, k)

def fp8_block_main():
    """Holds tests/fixtures/peers/spotq_fp8_block.safetensors (written by `test_fp8 --write-block`) to compressed-tensors'
    block strategy (block_structure [128, 128]: calculate_qparams over each zero-padded block, as llm-compressor's observer
    flattens it, then FloatQuantizationCompressor.compress, which pads and truncates; decompress of spotq's tensors) and to
    vLLM's activation group quantisation; writes tests/fixtures/peers/peer_fp8_block.safetensors, test_fp8's golden file.
    vLLM's native form stores the same scale as weight_scale_inv and multiplies by it, so the same golden holds it."""
    import torch.nn.functional as F
    from compressed_tensors.compressors.naive_quantized.base import FloatQuantizationCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from compressed_tensors.quantization.utils import calculate_qparams
    src = load_file(os.path.join(FIX, "spotq_fp8_block.safetensors"))
    args = QuantizationArgs(num_bits=8, type="float", symmetric=True, strategy="block", block_structure=[128, 128], dynamic=False)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    out, bad = {}, 0
    for m in sorted({k.split(".")[0] for k in src if k.endswith(".source")}):
        w, pre = src[f"{m}.source"], f"{m}.block."
        n, k = w.shape
        nb, kb = -(-n // 128), -(-k // 128)
        blocks = F.pad(w, (0, kb * 128 - k, 0, nb * 128 - n)).reshape(nb, 128, kb, 128).transpose(1, 2).reshape(nb, kb, -1)
        scale, _ = calculate_qparams(blocks.amin(dim=-1), blocks.amax(dim=-1), args)
        scale = scale.to(torch.float32).contiguous()
        codes = FloatQuantizationCompressor.compress({"weight": w, "weight_scale": scale}, scheme)["weight"].contiguous()
        deq = FloatQuantizationCompressor.decompress({"weight": src[pre + "weight"], "weight_scale": src[pre + "weight_scale"]},
                                                     scheme)["weight"].to(torch.float32).contiguous()
        out[pre + "ct_weight"], out[pre + "ct_weight_scale"], out[pre + "ct_f32"] = codes, scale, deq
        same_s = torch.equal(scale, src[pre + "weight_scale"])
        same_q = torch.equal(codes.view(torch.uint8), src[pre + "weight"].view(torch.uint8))
        print(f"fp8 block {m} [{n}, {k}]: compressed-tensors scales {'==' if same_s else '!='} spotq, codes {'==' if same_q else '!='} spotq")
        bad += (not same_s) + (not same_q)
    ref = vllm_group_act(src["act.x_group"]).contiguous()
    out["act.torch_group"] = ref
    same = torch.equal(ref.view(torch.int32), src["act.spotq_group"].view(torch.int32))
    print(f"fp8 activations per token group of 128: torch (vLLM's formula) {'==' if same else '!='} spotq")
    bad += not same
    save_file(out, os.path.join(FIX, "peer_fp8_block.safetensors"), metadata=provenance())
    return bad

def fp8_model_check(spotq):
    """Quantises the bundled model to float-quantized and reads it back through compressed-tensors: the config
    parses as a QuantizationConfig and every linear decompresses to the weights spotq's runtime uses."""
    import json, tempfile
    from compressed_tensors.compressors.naive_quantized.base import FloatQuantizationCompressor
    from compressed_tensors.quantization import QuantizationConfig
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for scheme, act in (("tensor", "none"), ("channel", "static"), ("channel", "dynamic"), ("block", "dynamic")):
            out = os.path.join(tmp, f"{scheme}-{act}")
            subprocess.check_call([spotq, "quantize", os.path.join(ROOT, "models/stories260K"), "-o", out, "--method", "fp8",
                                   "--format", "compressed-tensors", "--fp8-scheme", scheme, "--act", act, "--calib",
                                   os.path.join(ROOT, "data/tinystories/calib.txt"), "--nsamples", "8", "--seqlen", "128"],
                                  stderr=subprocess.DEVNULL)
            qc = QuantizationConfig.model_validate(json.load(open(os.path.join(out, "config.json")))["quantization_config"])
            group = qc.config_groups["group_0"]
            sd = load_file(os.path.join(out, "model.safetensors"))
            mods = sorted(k[: -len(".weight_scale")] for k in sd if k.endswith(".weight_scale"))
            n = 0
            for m in mods:
                w = FloatQuantizationCompressor.decompress({"weight": sd[m + ".weight"], "weight_scale": sd[m + ".weight_scale"]}, group)["weight"]
                if scheme == "block":  # each [128, 128] block's scale over its (possibly short) block
                    n_, k_ = sd[m + ".weight"].shape
                    scale = sd[m + ".weight_scale"].repeat_interleave(128, 0).repeat_interleave(128, 1)[:n_, :k_]
                else:
                    scale = sd[m + ".weight_scale"].reshape(-1, 1) if scheme == "channel" else sd[m + ".weight_scale"].reshape(())
                n += torch.equal(w.float(), sd[m + ".weight"].float() * scale)
                if act == "static":
                    n -= sd[m + ".input_scale"].shape != (1,)
            ok = n == len(mods) == 35 and qc.format == "float-quantized" and (group.input_activations is None) == (act == "none")
            print(f"fp8 stories260K {scheme}/{act}: config parses, {n}/{len(mods)} linears decompress as spotq reads them")
            bad += not ok
    return bad

def hf_ppl(path, ids, ctx=128):
    """transformers' perplexity of the checkpoint at path (loaded in float32) over ids in windows of ctx
    tokens, as spotq eval --ctx ctx counts it, and the keys it found missing or unexpected."""
    import math
    from transformers import AutoModelForCausalLM
    m, info = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
    nll, n = 0.0, 0
    with torch.no_grad():
        for w in range(len(ids) // ctx):
            x = torch.tensor([ids[w * ctx:(w + 1) * ctx]])
            lp = torch.log_softmax(m(x).logits[0].double(), -1)
            nll -= lp[torch.arange(ctx - 1), x[0, 1:]].sum().item()
            n += ctx - 1
    return math.exp(nll / n), sorted(set(info.get("missing_keys", [])) | set(info.get("unexpected_keys", [])))

def transformers_check(spotq):
    """Checkpoints spotq writes, loaded by transformers itself (compressed-tensors decompressing them): the
    MoE fixtures in pack-quantized INT4 and float-quantized FP8, and the bundled model sharded. transformers'
    perplexity under the GPTQ protocol (ctx 128 over data/tinystories/eval.txt, every window from position 0)
    must equal `spotq eval`'s to 1e-5 relative (a budgeted checkpoint of several config groups too), with no parameter missing or left unused; 1e-3 for INT experts,
    which transformers 5 decompresses into float16 fused expert tensors (rounding w = s (q - z), exact in spotq,
    to 11 bits: measured 1e-4 to 2e-4)."""
    import json, math, tempfile
    ids = [int(x) for x in subprocess.check_output([spotq, "tokenize", os.path.join(ROOT, "models/stories260K"),
                                                    os.path.join(ROOT, "data/tinystories/eval.txt")]).split()]
    calib = ["--calib", os.path.join(ROOT, "data/tinystories/calib.txt"), "--nsamples", "8", "--seqlen", "128"]
    cases = [("moe/mixtral", ["--method", "gptq", "--group-size", "32", "--format", "compressed-tensors"] + calib, 1e-3),
             ("moe/qwen2_moe", ["--method", "fp8", "--format", "compressed-tensors"] + calib, 1e-5),
             ("moe/qwen2_moe", ["--method", "rtn", "--bits", "8", "--group-size", "32", "--format", "compressed-tensors"], 1e-3),
             (None, ["--method", "gptq", "--group-size", "32", "--format", "compressed-tensors", "--max-shard-size", "200k"] + calib, 1e-5),
             # INT8 W8A8: transformers runs compressed-tensors' own fake quantisation of the activations (per-token
             # scale max|x| / 127.5 where vLLM and spotq use / 127), so the perplexities agree to 2e-3, not exactly (measured 8.4e-4 and 9.1e-4)
             (None, ["--method", "int8", "--format", "compressed-tensors"], 2e-3),
             (None, ["--method", "int8+gptq", "--format", "compressed-tensors"] + calib, 2e-3),
             # SmoothQuant (issue 14): the smoothed norms as written, the smoothed weights' INT8 codes; within 1e-3
             # (measured 1.4e-4 and 6.1e-4: the flatter activations round closer under / 127.5 and / 127); transformers
             # 5.24 does not convert INT8 W8A8 experts, so no MoE case
             (None, ["--method", "int8", "--format", "compressed-tensors", "--smoothquant", "0.5"] + calib, 1e-3),
             (None, ["--method", "int8+gptq", "--format", "compressed-tensors", "--smoothquant", "0.8"] + calib, 1e-3),
             # issue 18's budget: a config group per scheme (int4 g32/g64, int8 per channel), each module its own; the
             # symmetric candidates (transformers 5.24 sizes an asymmetric group's weight_zero_point [n, groups], where
             # compressed-tensors packs it along n: a size mismatch on load); the tied embedding in BF16 (the budget's
             # --keep-dtype), and GPTQ with --act-order (actorder "static" in each group)
             (None, ["--max-kld", "0.005", "--schemes", "int4-g32-sym,int4-g64-sym,int8-ch-sym,keep", "--format", "compressed-tensors", "--calib", os.path.join(ROOT, "data/tinystories/calib.txt"),
                     "--nsamples", "16", "--seqlen", "512"], 1e-5),
             (None, ["--target-bits", "9", "--schemes", "int4-g32-sym,int4-g64-sym,int8-ch-sym,keep", "--act-order", "--format", "compressed-tensors",
                     "--calib", os.path.join(ROOT, "data/tinystories/calib.txt"), "--nsamples", "16", "--seqlen", "512"], 1e-5)]
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (fixture, args, tol) in enumerate(cases):
            src = os.path.join(ROOT, "tests/fixtures", fixture) if fixture else os.path.join(ROOT, "models/stories260K")
            out = os.path.join(tmp, str(i))
            subprocess.check_call([spotq, "quantize", src, "-o", out] + args, stderr=subprocess.DEVNULL)
            ev = json.loads(subprocess.check_output([spotq, "eval", out, "--data", os.path.join(ROOT, "data/tinystories/eval.txt"),
                                                     "--ctx", "128", "--json"]))
            ppl, missing = hf_ppl(out, ids)
            ok = abs(ppl / ev["ppl"] - 1) < tol and not missing
            sq = f" --smoothquant {args[args.index('--smoothquant') + 1]}" if "--smoothquant" in args else ""
            print(f"transformers loads {fixture or 'stories260K'} {' '.join(args[:2])}{sq} {args[args.index('--format') + 1]}: "
                  f"ppl {ppl:.6f}, spotq {ev['ppl']:.6f}{', missing/unexpected ' + str(missing) if missing else ''}")
            bad += not ok
    return bad

def fp4_transformers_check(spotq):
    """NVFP4 and MXFP4 W4A16 checkpoints spotq writes (issue 14), on the bundled model and the MoE fixtures, held
    to transformers: perplexity under the GPTQ protocol (ctx 128 over data/tinystories/eval.txt, every window
    from position 0) equal to `spotq eval`'s to 1e-5 relative (measured 1e-7 and below), no parameter missing or
    unused. Two things of transformers 5.24 + compressed-tensors 0.20 are worked around, not hidden:
      - compressed-tensors' NVFP4PackedCompressor.decompress (MXFP4's inherits it) unpacks the E2M1 codes with
        unpack_fp4_from_uint8's default dtype, bfloat16 (compressors/nvfp4/helpers.py), and dequantises in that
        dtype: an F32 model then fails in F.linear ("float != BFloat16"), and the weights are rounded to 8 bits.
        The check runs the decompressor's own steps in float32 (unpack_fp4_from_uint8(..., dtype=float32), as
        scripts/gen_fp4_peer.py does): e2m1 * scale / global_scale, exact in F32 where bfloat16 would round it.
      - transformers' fused-expert loader (integrations/compressed_tensors.py, CompressedTensorsDequantize) hands
        the compressor a module of weight_packed, weight_scale and weight_shape only: an NVFP4 expert's
        weight_global_scale is dropped, so its weights come out global_scale times too large (ppl in the
        thousands on the MoE fixtures). For NVFP4 MoE checkpoints the check therefore decompresses every module
        with compressed-tensors' own compressor (the format's registered one, float32 as above) into a dense F32
        checkpoint and lets transformers load that (its own MoE conversion fuses the experts); MXFP4 experts,
        which have no global scale, load through transformers' compressed-tensors path directly.
    The gate is for W4A16: a W4A4 checkpoint's FP4 activations are a property of the serving kernel (vLLM's
    CUTLASS FP4 GEMM quantises them at run time, as spotq's runtime does), and transformers runs compressed-tensors'
    fake quantisation of them instead (forward_quantize with the checkpoint's input_global_scale, per group of 16);
    one W4A4 case is still run, held to 1e-3 (measured 1.2e-4 on the bundled model)."""
    import json, math, tempfile
    import compressed_tensors.compressors.nvfp4.base as nvb
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig
    data = os.path.join(ROOT, "data/tinystories/eval.txt")
    ids = [int(x) for x in subprocess.check_output([spotq, "tokenize", os.path.join(ROOT, "models/stories260K"), data]).split()]
    calib = ["--calib", os.path.join(ROOT, "data/tinystories/calib.txt"), "--nsamples", "8", "--seqlen", "128"]
    cases = [(None, ["--method", "nvfp4"], 1e-5), (None, ["--method", "nvfp4+gptq"] + calib, 1e-5),
             (None, ["--method", "mxfp4"], 1e-5), (None, ["--method", "mxfp4+gptq"] + calib, 1e-5),
             ("moe/mixtral", ["--method", "mxfp4"], 1e-5), ("moe/qwen3_moe", ["--method", "mxfp4+gptq"] + calib, 1e-5),
             ("moe/qwen2_moe", ["--method", "nvfp4"], 1e-5), ("moe/mixtral", ["--method", "nvfp4+gptq"] + calib, 1e-5),
             ("moe/qwen3_moe", ["--method", "nvfp4"], 1e-5),
             # W4A4, informative: compressed-tensors' fake quantisation of the activations, not vLLM's kernel (measured 1.2e-4)
             (None, ["--method", "nvfp4", "--act", "dynamic"] + calib, 1e-3)]
    unpack = nvb.unpack_fp4_from_uint8
    nvb.unpack_fp4_from_uint8 = lambda a, m, n, dtype=None: unpack(a, m, n, dtype=torch.float32)

    def dense_copy(out, dense):
        """The checkpoint decompressed module by module by compressed-tensors' own compressor, as F32 weights."""
        cfg = json.load(open(os.path.join(out, "config.json")))
        qc = QuantizationConfig.model_validate(cfg.pop("quantization_config"))
        (scheme,) = qc.config_groups.values()
        comp = BaseCompressor.get_value_from_registry(scheme.format or qc.format)
        sd = load_file(os.path.join(out, "model.safetensors"))
        mods = {k[: -len(".weight_packed")] for k in sd if k.endswith(".weight_packed")}
        names = ("weight_packed", "weight_scale", "weight_global_scale")
        res = {k: v for k, v in sd.items() if not (k.rsplit(".", 1)[0] in mods and k.rsplit(".", 1)[1] in names)}
        for m in mods:
            part = {n: sd[f"{m}.{n}"] for n in names if f"{m}.{n}" in sd}
            res[m + ".weight"] = comp.decompress(part, scheme)["weight"].float().contiguous()
        os.makedirs(dense)
        save_file(res, os.path.join(dense, "model.safetensors"))
        json.dump(cfg, open(os.path.join(dense, "config.json"), "w"))

    bad = 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i, (fixture, args, tol) in enumerate(cases):
                src = os.path.join(ROOT, "tests/fixtures", fixture) if fixture else os.path.join(ROOT, "models/stories260K")
                out = os.path.join(tmp, str(i))
                subprocess.check_call([spotq, "quantize", src, "-o", out] + args, stderr=subprocess.DEVNULL)
                ev = json.loads(subprocess.check_output([spotq, "eval", out, "--data", data, "--ctx", "128", "--json"]))
                route = "transformers loads it"
                if fixture and args[1].startswith("nvfp4"):
                    dense_copy(out, out + "-dense")
                    out, route = out + "-dense", "compressed-tensors decompresses it, transformers loads that"
                ppl, missing = hf_ppl(out, ids)
                ok = abs(ppl / ev["ppl"] - 1) < tol and not missing
                print(f"fp4 {fixture or 'stories260K'} {' '.join(args[1:4] if '--act' in args else args[1:2])} ({route}): ppl {ppl:.6f}, spotq {ev['ppl']:.6f}, "
                      f"relative {ppl / ev['ppl'] - 1:.1e}{', missing/unexpected ' + str(missing) if missing else ''}")
                bad += not ok
    finally:
        nvb.unpack_fp4_from_uint8 = unpack
    return bad

def groups_check(spotq):
    """A two-group checkpoint (issue 14): tests/fixtures/groups/llama576 (hidden 576, which 128 does not divide)
    quantised at spotq's defaults, so q/k/v/o/gate/up go at g64 and down_proj at g128, two config groups each
    naming its modules. transformers (compressed-tensors decompressing each module by its own group) must load
    it with no parameter missing or unused, and its logits must be spotq's runtime's: perplexity under the
    GPTQ protocol (ctx 128, every window from position 0) equal to `spotq eval`'s to 1e-5 relative."""
    import json, math, tempfile
    src = os.path.join(ROOT, "tests/fixtures/groups/llama576")
    data = os.path.join(ROOT, "data/tinystories/eval.txt")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "q")
        subprocess.check_call([spotq, "quantize", src, "-o", out, "--method", "rtn"], stderr=subprocess.DEVNULL)
        groups = json.load(open(os.path.join(out, "config.json")))["quantization_config"]["config_groups"]
        sizes = sorted(g["weights"]["group_size"] for g in groups.values())
        ev = json.loads(subprocess.check_output([spotq, "eval", out, "--data", data, "--ctx", "128", "--json"]))
        ppl, missing = hf_ppl(out, [int(x) for x in subprocess.check_output([spotq, "tokenize", src, data]).split()])
        ok = sizes == [64, 128] and abs(ppl / ev["ppl"] - 1) < 1e-5 and not missing
        print(f"transformers loads groups/llama576 rtn (config groups at g{sizes}): ppl {ppl:.6f}, spotq {ev['ppl']:.6f}"
              f"{', missing/unexpected ' + str(missing) if missing else ''}")
        return not ok

def provenance():
    """The __metadata__ of the golden files written here: this script and the version of every tool it ran."""
    from importlib.metadata import version
    tools = ", ".join(f"{p} {version(p)}" for p in ("torch", "compressed-tensors", "safetensors", "numpy"))
    # one key: safetensors writes __metadata__ in no fixed order, and the goldens must regenerate byte for byte
    return {"generated_by": "scripts/check_peers.py (make check-peers) with "
                            f"{tools}, auto-gptq 0.7.1 (qlinear_cuda.py, pure-torch path), autoawq 0.2.9 (packing_utils.py)"}

def autoawq_config_class():
    """AutoAWQ 0.2.9's own AwqConfig (awq/models/_config.py: it reads config.json's quantization_config)."""
    autoawq_dequantize_gemm()   # unpacks the sdist into build/peers
    spec = importlib.util.spec_from_file_location("autoawq_config", os.path.join(PEERS, "autoawq-0.2.9/awq/models/_config.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.AwqConfig

def config_loaders_check(spotq):
    """GPTQ-, AWQ- and vLLM-fp8-format outputs of tests/fixtures/matrix/llama (every linear quantised) read
    through the peers' own config classes, and the INT ones through their own unpackers driven by what
    those classes parsed: transformers' GPTQConfig (bits, group_size, desc_act, sym, checkpoint_format)
    with AutoGPTQ 0.7.1's QuantLinear; transformers' AwqConfig and AutoAWQ 0.2.9's own AwqConfig (read
    from the output directory) with AutoAWQ's dequantize_gemm. The dequantised weights (and the modules
    the config's dynamic / modules_to_not_convert leave alone, as GPTQModel / transformers match them)
    go into a plain transformers Llama whose perplexity must match `spotq eval`'s to 1e-3 (AutoGPTQ and
    AutoAWQ dequantise in float16).
    vLLM's own Fp8Config cannot be loaded here: vLLM's PyPI wheels are CUDA builds whose import loads
    its compiled CUDA ops (no CPU wheel is published; a CPU vLLM is built from source), and this check
    runs on machines without a GPU. transformers' quant_method "fp8" is its FineGrainedFP8Config, a
    block-wise format (weight_scale_inv per 128x128 block), not vLLM's per-tensor one, so it cannot load
    these checkpoints either. For fp8 this check parses the config as vLLM's Fp8Config.from_config reads
    it (quant_method, activation_scheme, ignored_layers) and holds the tensors to it."""
    import json, math, re, shutil, tempfile
    from transformers import AwqConfig, GPTQConfig
    QuantLinear = autogptq_quantlinear()
    dequantize_gemm = autoawq_dequantize_gemm()
    AutoAwqConfig = autoawq_config_class()
    src = os.path.join(ROOT, "tests/fixtures/matrix/llama")
    ids = [int(x) for x in subprocess.check_output([spotq, "tokenize", src, os.path.join(ROOT, "data/tinystories/eval.txt")]).split()]
    calib = ["--calib", os.path.join(ROOT, "data/tinystories/calib.txt"), "--nsamples", "8", "--seqlen", "128"]
    # GPTQ v1 by name: the matrix fixture is 64 wide, which vLLM's Marlin cannot take, so the default is compressed-tensors
    cases = [["--method", "gptq", "--group-size", "32", "--act-order", "--asym", "--format", "gptq"] + calib,
             ["--method", "rtn", "--bits", "8", "--group-size", "-1", "--ignore", "model.layers.*.mlp.down_proj", "--format", "gptq"],
             ["--method", "awq", "--group-size", "32"] + calib,
             ["--method", "rtn", "--format", "awq", "--group-size", "32", "--ignore", "*.self_attn.o_proj"],
             ["--method", "fp8", "--act", "static"] + calib,
             ["--method", "fp8", "--act", "dynamic"]]
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, args in enumerate(cases):
            out = os.path.join(tmp, str(i))
            subprocess.check_call([spotq, "quantize", src, "-o", out] + args, stderr=subprocess.DEVNULL)
            cfg = json.load(open(os.path.join(out, "config.json")))
            qc = cfg.pop("quantization_config")
            sd = load_file(os.path.join(out, "model.safetensors"))
            mods = sorted({k.rsplit(".", 1)[0] for k in sd if ".layers." in k and k.rsplit(".", 1)[1] in ("qweight", "weight_scale")} |
                          {k[:-len(".weight")] for k in sd if k.endswith("_proj.weight")})
            what = " ".join(args[:-len(calib)] if args[-len(calib):] == calib else args)
            if qc["quant_method"] == "fp8":
                # vLLM's Fp8Config.from_config: activation_scheme in ("static", "dynamic"), ignored_layers a list
                static = qc["activation_scheme"] == "static"
                n = sum(sd[m + ".weight"].dtype == torch.float8_e4m3fn and sd[m + ".weight_scale"].numel() == 1 and
                        ((m + ".input_scale") in sd) == static for m in mods)
                ok = qc.get("ignored_layers") == ["lm_head"] and qc["activation_scheme"] in ("static", "dynamic") and n == len(mods) == 35
                print(f"vLLM fp8 config {what}: activation_scheme {qc['activation_scheme']}, {n}/{len(mods)} linears hold what it implies")
                bad += not ok
                continue
            dense = {k: v for k, v in sd.items() if not k.rsplit(".", 1)[0] in mods or k.endswith(".weight")}
            kept = []
            if qc["quant_method"] == "gptq":
                gc = GPTQConfig.from_dict(dict(qc))
                skip = [k[2:] for k in (qc.get("dynamic") or {}) if k.startswith("-:")]
                fmt = getattr(gc, "format", getattr(gc, "checkpoint_format", None))   # transformers 5 reads checkpoint_format as format
                assert fmt == "gptq", fmt   # v1, what QuantLinear reads
                for m in mods:
                    if any(re.match(p, m) for p in skip):
                        kept.append(m)
                        continue
                    N = sd[m + ".scales"].shape[1]
                    K = sd[m + ".g_idx"].shape[0]
                    ql = QuantLinear(gc.bits, gc.group_size, K, N, bias=False)
                    for t in ("qweight", "qzeros", "scales", "g_idx"):
                        getattr(ql, t).copy_(sd[f"{m}.{t}"])
                    if not gc.desc_act:
                        assert torch.equal(sd[m + ".g_idx"], torch.arange(K, dtype=torch.int32) // (K if gc.group_size == -1 else gc.group_size))
                    with torch.no_grad():
                        dense[m + ".weight"] = ql(torch.eye(K, dtype=torch.float16)).t().float().contiguous()
                    for t in ("qweight", "qzeros", "scales", "g_idx"):
                        dense.pop(f"{m}.{t}", None)
                desc = f"GPTQConfig bits {gc.bits} group_size {gc.group_size} desc_act {gc.desc_act} sym {gc.sym} format {fmt}"
            else:
                AwqConfig.from_dict(dict(qc))   # transformers' own validation (version, bits)
                json.dump(dict(cfg, quantization_config=qc), open(os.path.join(out, "config.json"), "w"))
                ac = AutoAwqConfig.from_pretrained(out)
                for m in mods:
                    if any(k in m for k in ac.modules_to_not_convert or []):
                        kept.append(m)
                        continue
                    w = dequantize_gemm(sd[m + ".qweight"], sd[m + ".qzeros"], sd[m + ".scales"], ac.w_bit, ac.q_group_size)
                    dense[m + ".weight"] = w.float().t().contiguous()
                    for t in ("qweight", "qzeros", "scales"):
                        dense.pop(f"{m}.{t}", None)
                desc = f"AutoAWQ AwqConfig w_bit {ac.w_bit} q_group_size {ac.q_group_size} zero_point {ac.zero_point} version {ac.version}"
            d = os.path.join(tmp, f"{i}-dense")
            os.makedirs(d)
            json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
            shutil.copy(os.path.join(out, "tokenizer.json"), d)
            save_file({k: v.contiguous() for k, v in dense.items()}, os.path.join(d, "model.safetensors"))
            ev = json.loads(subprocess.check_output([spotq, "eval", out, "--data", os.path.join(ROOT, "data/tinystories/eval.txt"),
                                                     "--ctx", "128", "--json"]))
            ppl, missing = hf_ppl(d, ids)
            want_kept = json.load(open(os.path.join(out, "spotq.json")))["kept_in_full_precision"]
            ok = abs(ppl / ev["ppl"] - 1) < 1e-3 and not missing and sorted(kept) == sorted(want_kept)
            print(f"{desc} ({what}): ppl {ppl:.6f}, spotq {ev['ppl']:.6f}, {len(kept)} modules left alone"
                  f"{', missing/unexpected ' + str(missing) if missing else ''}")
            bad += not ok
    return bad

def int8_main():
    """INT8 W8A8 goldens (tests/fixtures/peers/peer_int8.safetensors, test_int8's): fixed matrices (seeded torch
    normals, a zero row, an outlier column) quantised by compressed-tensors 0.20 itself (calculate_qparams over each
    row's min/max under the W8A8 preset's weights, IntQuantizationCompressor.compress: weight I8, weight_scale),
    and activations under vLLM's dynamic per-token INT8 formula written out in torch (scaled_quant.cu: s = max|x| / 127,
    q = round_half_even(x * (127 / max|x|)) saturated, 0 for a zero token) with the int32 GEMM and CUTLASS's
    epilogue s_x * (s_w * acc)."""
    from compressed_tensors.compressors.naive_quantized.base import IntQuantizationCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from compressed_tensors.quantization.utils import calculate_qparams
    wargs = QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="channel")
    aargs = QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="token", dynamic=True)
    scheme = QuantizationScheme(targets=["Linear"], weights=wargs, input_activations=aargs)
    g = torch.Generator().manual_seed(14)
    out = {}
    for name, (n, k) in (("m0", (48, 64)), ("m1", (33, 172))):
        w = torch.randn(n, k, generator=g, dtype=torch.float32) * 0.05
        w[3] = 0.0
        w[:, 5] *= 20.0
        zero = torch.zeros(n, 1)
        scale, zp = calculate_qparams(torch.minimum(w.amin(1, keepdim=True), zero), torch.maximum(w.amax(1, keepdim=True), zero), wargs)
        sd = IntQuantizationCompressor.compress({"weight": w, "weight_scale": scale, "weight_zero_point": zp}, scheme)
        out[f"{name}.source"] = w
        out[f"{name}.ct_weight"] = sd["weight"].contiguous()
        out[f"{name}.ct_weight_scale"] = sd["weight_scale"].contiguous()
        x = torch.randn(5, k, generator=g, dtype=torch.float32)
        x[1] = 0.0
        x[2, 7] = 40.0
        amax = x.abs().amax(1, keepdim=True)
        sx = amax / 127.0
        inv = torch.where(amax == 0, torch.zeros_like(amax), torch.full_like(amax, 127.0) / amax)
        q = torch.round(x * inv).clamp(-128, 127).to(torch.int8)
        acc = (q.to(torch.int64) @ sd["weight"].to(torch.int64).t()).to(torch.int32)
        y = sx * (sd["weight_scale"].reshape(1, n) * acc.to(torch.float32))
        out[f"{name}.x"], out[f"{name}.x_q"], out[f"{name}.x_scale"], out[f"{name}.y"] = x, q, sx.reshape(-1).contiguous(), y
    save_file(out, os.path.join(FIX, "peer_int8.safetensors"), metadata=provenance())
    print("int8: compressed-tensors IntQuantizationCompressor and vLLM's per-token INT8 formula written to peer_int8.safetensors")
    return 0

def main():
    packed = load_file(os.path.join(FIX, "spotq_packed.safetensors"))
    QuantLinear = autogptq_quantlinear()
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    configs = sorted({k.split(".")[0] for k in packed if not k.startswith("awq_")})
    out, bad = {}, 0
    for name in configs:
        mine = packed[f"{name}.spotq_f16"]
        N, K = mine.shape
        bits = 8 if "_b8_" in name else 4
        gs = -1 if "_pc_" in name else int(name.split("_g")[1].split("_")[0])
        sym = name.endswith("_sym")
        ql = QuantLinear(bits, gs, K, N, bias=False)
        ql.qweight.copy_(packed[f"{name}.gptq.qweight"])
        ql.qzeros.copy_(packed[f"{name}.gptq.qzeros"])
        ql.scales.copy_(packed[f"{name}.gptq.scales"])
        ql.g_idx.copy_(packed[f"{name}.gptq.g_idx"])
        with torch.no_grad():
            w = ql(torch.eye(K, dtype=torch.float16)).t().contiguous()   # the layer applied to the identity
        out[f"{name}.autogptq_f16"] = w
        same = torch.equal(w.view(torch.int16), mine.view(torch.int16))
        print(f"{name}: AutoGPTQ QuantLinear {'==' if same else '!='} spotq")
        bad += not same
        if f"{name}.ct.weight_packed" in packed:
            args = QuantizationArgs(num_bits=bits, type="int", symmetric=sym,
                                    strategy="channel" if gs == -1 else "group", group_size=None if gs == -1 else gs)
            scheme = QuantizationScheme(targets=["Linear"], weights=args)
            sd = {"weight_packed": packed[f"{name}.ct.weight_packed"], "weight_scale": packed[f"{name}.ct.weight_scale"],
                  "weight_shape": torch.tensor([N, K])}
            if not sym:
                sd["weight_zero_point"] = packed[f"{name}.ct.weight_zero_point"]
            w = PackedQuantizationCompressor.decompress(sd, scheme)["weight"].to(torch.float16).contiguous()
            out[f"{name}.ct_f16"] = w
            same = torch.equal(w.view(torch.int16), mine.view(torch.int16))
            print(f"{name}: compressed-tensors decompress {'==' if same else '!='} spotq")
            bad += not same
    # AWQ GEMM: AutoAWQ's own dequantize_gemm (interleaved nibbles, zeros as they are)
    dequantize_gemm = autoawq_dequantize_gemm()
    name = "awq_b4_g32"
    w = dequantize_gemm(packed[f"{name}.awq.qweight"], packed[f"{name}.awq.qzeros"], packed[f"{name}.awq.scales"], 4, 32)
    w = w.to(torch.float16).t().contiguous()
    out[f"{name}.autoawq_f16"] = w
    same = torch.equal(w.view(torch.int16), packed[f"{name}.spotq_f16"].view(torch.int16))
    print(f"{name}: AutoAWQ dequantize_gemm {'==' if same else '!='} spotq")
    bad += not same
    save_file(out, os.path.join(FIX, "peer_dequant.safetensors"), metadata=provenance())
    bad += fp8_main()
    bad += fp8_block_main()
    # FP4: compressed-tensors' own NVFP4 / MXFP4 compressors and ml_dtypes' E2M1 / E8M0 on test_fp4's fixtures
    # (regenerated here; check-peers.sh fails when they differ from the committed ones)
    for g in ("gen_fp4_peer.py", "gen_fp4_golden.py"):
        subprocess.check_call([sys.executable, os.path.join(ROOT, "scripts", g)])
    bad += int8_main()
    spotq = os.path.join(ROOT, os.environ.get("BUILD", "build/release"), "spotq")
    if os.path.exists(spotq):
        bad += fp8_model_check(spotq)
        bad += transformers_check(spotq)
        bad += fp4_transformers_check(spotq)
        bad += groups_check(spotq)
        bad += config_loaders_check(spotq)
    print(f"{bad} mismatches")
    return 1 if bad else 0

if __name__ == "__main__":
    sys.exit(main())
