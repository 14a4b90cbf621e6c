#!/usr/bin/env python3
"""check_peers.py: holds spotq's packed tensors to the peers' own unpackers (run by `make check-peers`).

Reads tests/fixtures/peers/spotq_packed.safetensors (written by `test_qpack --write`, from the fixed
GPTQ fixture), dequantises every configuration with
  - AutoGPTQ 0.7.1's QuantLinear (qlinear_cuda.py, its pure-torch path), GPTQ v1 tensors,
  - compressed-tensors' PackedQuantizationCompressor.decompress, pack-quantized tensors,
and writes their fp16 weights to tests/fixtures/peers/peer_dequant.safetensors, the golden file that
`make test` (test_qpack) compares spotq's own unpacking with, bit for bit. It also fails here when the
peers' weights differ from spotq's (the `<config>.spotq_f16` tensors).
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
    save_file(out, os.path.join(FIX, "peer_dequant.safetensors"))
    print(f"{bad} mismatches")
    return 1 if bad else 0

if __name__ == "__main__":
    sys.exit(main())
