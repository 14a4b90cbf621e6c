#!/usr/bin/env python3
"""Writes tests/fixtures/peers/peer_fp4.safetensors: small F32 weights and what compressed-tensors 0.20's
own code makes of them, for test_fp4 to equal bit for bit:
  NVFP4 (presets NVFP4A16): generate_gparam over the tensor, calculate_qparams per group of 16 with that
  global scale (scale_dtype float8_e4m3fn), NVFP4PackedCompressor.compress -> weight_packed, weight_scale,
  weight_global_scale; and its decompress (unpack_fp4_from_uint8 + dequantize, in float32);
  MXFP4 (preset MXFP4A16): calculate_qparams per group of 32 (generate_mx_scales), MXFP4PackedCompressor
  .compress -> weight_packed, weight_scale (E8M0), and its decompress.
Run: /work/venv/bin/python scripts/gen_fp4_peer.py (also from scripts/check_peers.py)."""
import os, torch
from safetensors.torch import save_file
from compressed_tensors.quantization import preset_name_to_scheme
from compressed_tensors.quantization.utils.helpers import calculate_qparams, generate_gparam
from compressed_tensors.compressors.nvfp4.base import NVFP4PackedCompressor
from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
from compressed_tensors.quantization.lifecycle.forward import dequantize
from compressed_tensors.compressors.mxfp4.base import MXFP4PackedCompressor

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "peers", "peer_fp4.safetensors")

def weights():
    g = torch.Generator().manual_seed(14)
    a = torch.randn(48, 64, generator=g) * 0.05
    a[3, :16] = 0          # an all-zero group: the eps scale
    a[5, 7] = 0.9          # an outlier
    b = torch.randn(32, 96, generator=g) * torch.logspace(-3, 0, 96)  # groups of very different ranges
    return {"a": a.float(), "b": b.float()}

def nvfp4(w):
    sch = preset_name_to_scheme("NVFP4A16", ["Linear"])
    gs = generate_gparam(w.min(), w.max())
    n, k = w.shape
    wg = w.reshape(n, k // 16, 16)
    scale, zp = calculate_qparams(wg.amin(-1), wg.amax(-1), sch.weights, global_scale=gs)
    sd = {"weight": w, "weight_scale": scale, "weight_global_scale": gs, "weight_zero_point": zp}
    c = NVFP4PackedCompressor.compress(sd, sch)
    # the decompressor unpacks to bfloat16 by default; the same steps in float32 (an F32 model's dtype)
    q = unpack_fp4_from_uint8(c["weight_packed"], n, k, dtype=torch.float32)
    dq = dequantize(x_q=q, scale=c["weight_scale"].to(torch.float32), args=sch.weights, global_scale=c["weight_global_scale"], dtype=torch.float32)
    return c, dq, sch

def mxfp4(w):
    sch = preset_name_to_scheme("MXFP4A16", ["Linear"])
    n, k = w.shape
    wg = w.reshape(n, k // 32, 32)
    scale, zp = calculate_qparams(wg.amin(-1), wg.amax(-1), sch.weights)
    sd = {"weight": w, "weight_scale": scale, "weight_zero_point": zp}
    c = MXFP4PackedCompressor.compress(sd, sch)
    d = MXFP4PackedCompressor.decompress(dict(c), sch)
    return c, d["weight"], sch

def main():
    t = {}
    for name, w in weights().items():
        t[name + ".weight"] = w.contiguous()
        c, dq, _ = nvfp4(w)
        t[name + ".nvfp4.weight_packed"] = c["weight_packed"].contiguous()
        t[name + ".nvfp4.weight_scale"] = c["weight_scale"].contiguous()
        t[name + ".nvfp4.weight_global_scale"] = c["weight_global_scale"].reshape(1).float().contiguous()
        t[name + ".nvfp4.dequant"] = dq.float().contiguous()
        c, dq, _ = mxfp4(w)
        t[name + ".mxfp4.weight_packed"] = c["weight_packed"].contiguous()
        t[name + ".mxfp4.weight_scale"] = c["weight_scale"].contiguous()
        t[name + ".mxfp4.dequant"] = dq.float().contiguous()
    save_file(t, OUT)
    print("wrote", OUT, {k: (tuple(v.shape), str(v.dtype)) for k, v in t.items() if k.startswith("a.")})

if __name__ == "__main__":
    main()
