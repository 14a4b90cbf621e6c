#!/usr/bin/env python3
"""Writes tests/fixtures/fp4/golden.txt: E2M1 and E8M0 conversions by ml_dtypes (float4_e2m1fn,
float8_e8m0fnu), an implementation independent of spotq's, for test_fp4.
Lines (all numbers hex): "e2m1enc <f32 bits> <code>" (round to nearest even, saturating at 6), "e2m1dec <code> <f32 bits hex>",
"e8m0dec <byte> <f32 bits hex>". Run: /work/venv/bin/python scripts/gen_fp4_golden.py"""
import numpy as np, ml_dtypes, os
out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "fp4", "golden.txt")
rng = np.random.default_rng(14)
grid = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], np.float32)
mids = (grid[1:] + grid[:-1]) / 2
vals = np.concatenate([grid, mids, np.nextafter(mids, 0, dtype=np.float32), np.nextafter(mids, 10, dtype=np.float32),
                       [6.5, 7, 100, 1e30, 1e-30, 0.1, 0.24, 0.26], rng.uniform(0, 7, 200).astype(np.float32)]).astype(np.float32)
vals = np.concatenate([vals, -vals]).astype(np.float32)
lines = []
for v in vals:
    c = np.array([min(max(v, -6), 6)], np.float32).astype(ml_dtypes.float4_e2m1fn).view(np.uint8)[0] & 0xF
    lines.append("e2m1enc %08x %x" % (np.array([v], np.float32).view(np.uint32)[0], c))
for c in range(16):
    f = np.array([c], np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float32)
    lines.append("e2m1dec %x %08x" % (c, f.view(np.uint32)[0]))
for e in range(255):  # 255 is NaN
    f = np.array([e], np.uint8).view(ml_dtypes.float8_e8m0fnu).astype(np.float32)
    lines.append("e8m0dec %x %08x" % (e, f.view(np.uint32)[0]))
open(out, "w").write("\n".join(lines) + "\n")
print("wrote", out, len(lines))
