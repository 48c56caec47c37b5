"""Launches every CUDA kernel of sam_fused once, on small inputs, for compute-sanitizer:

    compute-sanitizer --tool memcheck|racecheck|synccheck|initcheck python tools/gpu_sanitize_driver.py

Spatial attention, forward and backward: one- and two-pass plans, contiguous and channels_last,
every pool, bias on/off, return_map on/off, partial last tiles, 128-bit and scalar accesses,
float64/float32/float16/bfloat16. Point-wise attention, forward and backward: vector and scalar
programs (aligned and misaligned storage, a tail after the last vector, one and several blocks),
same dtypes.

The plan of each call (one/two pass, rows per tile, vector width) is read from the CPU emulation
of the block programs, which plans as for an H100; the driver fails if a plan feature is not
covered, or if a CUDA result disagrees with the CPU op (a loose check: tests/test_cuda.py
checks precision). `--plans-only` prints the coverage without a GPU.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this tree's sam_fused
import sam_fused  # noqa: E402,F401  (registers the ops)
from sam_fused.emulation import emulate_bwd, emulate_fwd, emulate_pointwise_fwd  # noqa: E402

DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
POOLS = ("mean", "max", "mean+max", "max+mean")
# (shape, kernel, return_map values): plans as for an H100 (traits.h), checked at run time
CASES = (
    ((2, 16, 13, 9), (3, 1), (False, True)),   # one pass, odd W (scalar), partial last tile
    ((2, 8, 16, 8), (7, 7), (False, True)),    # one pass, 128-bit vectors
    ((2, 1024, 14, 9), (7, 7), (False,)),      # 1024 x 9 rows: two-pass backward (and fp64 forward)
    ((1, 64, 40, 9), (3, 1), (False,)),        # one-pass forward of several tiles: halo rows from global memory
    ((1, 3, 1, 1), (3, 3), (False, True)),     # H = W = 1
    ((0, 4, 5, 3), (3, 1), (False,)),          # empty batch: no launch
)
# 945 elements (a tail after the vectors), 2048 (one block), 4896 (several blocks, the last partial)
POINTWISE_SHAPES = ((3, 5, 7, 9), (2, 16, 8, 8), (2, 16, 17, 9))
POINTWISE_LAYOUTS = ("contiguous", "channels_last", "misaligned")
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
REQUIRED = {"fwd one pass", "fwd two pass", "bwd one pass", "bwd two pass", "fwd halo", "partial tile", "vec", "scalar",
            "channels_last", "contiguous", "pointwise vec", "pointwise scalar", "pointwise tail",
            "pointwise several blocks"}


def plan_features(x, weight, bias, pool, return_map, channels_last):
    """Plan features of the forward and backward calls, as the CPU emulation plans them."""
    if x.numel() == 0:
        return set()
    out, pooled, tf = emulate_fwd(x, weight, bias, pool, return_map, max_blocks=1)
    *_, tb = emulate_bwd(out, x, weight, bias, pooled, pool, return_map, max_blocks=1)
    features = set()
    for name, t in (("fwd", tf), ("bwd", tb)):
        features.add(f"{name} {'two' if t.two_pass else 'one'} pass")
        features.add("vec" if t.vec > 1 else "scalar")
        if t.rows * t.tiles > x.shape[2]:
            features.add("partial tile")
        if name == "fwd" and not t.two_pass and t.tiles > 1 and weight.shape[2] > 1:
            features.add("fwd halo")  # a staged tile's halo rows, pooled from global memory
    features.add("channels_last" if channels_last else "contiguous")
    return features


def worst_error(actual, expected):
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    return (actual.cpu().double() - expected.double()).abs().max().item() / scale if expected.numel() else 0.0


def spatial_cases():
    gen = torch.Generator().manual_seed(0)
    for dtype, channels_last in itertools.product(DTYPES, (False, True)):
        for (shape, kernel, maps), (k, pool) in itertools.product(CASES, enumerate(POOLS)):
            for return_map in maps:
                x = torch.randn(shape, generator=gen).to(dtype)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                weight = (torch.randn(1, len(pool.split("+")), *kernel, generator=gen) * 0.3).to(dtype)
                bias = torch.randn(1, generator=gen).to(dtype) if k % 2 == 0 else None
                yield x, weight, bias, pool, return_map, channels_last


def run_spatial(device, tolerance_failures, features):
    ops = torch.ops.sam_fused
    for x, weight, bias, pool, return_map, channels_last in spatial_cases():
        features |= plan_features(x, weight, bias, pool, return_map, channels_last)
        if device is None:
            continue
        what = f"{tuple(x.shape)} {x.dtype} {pool} bias={bias is not None} return_map={return_map}"
        on = [None if t is None else t.to(device) for t in (x, weight, bias)]
        out, pooled = ops.spatial_attention_fwd(*on, pool, return_map)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(x.dtype)
        grads = ops.spatial_attention_bwd(g.to(device), *on, pooled, pool, return_map)
        ref_out, ref_pooled = ops.spatial_attention_fwd(x, weight, bias, pool, return_map)
        ref_grads = ops.spatial_attention_bwd(g, x, weight, bias, ref_pooled, pool, return_map)
        for name, a, e in zip(("out", "dx", "dweight", "dbias"), (out, *grads), (ref_out, *ref_grads)):
            if worst_error(a, e) > TOLERANCE[x.dtype]:
                tolerance_failures.append(f"spatial {what}: {name} differs from the CPU op by {worst_error(a, e):.2e}")


def misaligned(t, device):
    """t's values one element into fresh storage on `device`: not 16-byte aligned (scalar accesses)."""
    return torch.empty(t.numel() + 1, dtype=t.dtype, device=device)[1:].view(t.shape).copy_(t)


def pointwise_features(x, y):
    """Plan features of a point-wise call, as the CPU emulation plans it."""
    _, t = emulate_pointwise_fwd(x, y, max_blocks=1)
    features = {"pointwise vec" if t.vec > 1 else "pointwise scalar"}
    if x.numel() % t.vec:
        features.add("pointwise tail")
    if t.blocks > 1:
        features.add("pointwise several blocks")
    return features


def run_pointwise(device, tolerance_failures, features):
    gen = torch.Generator().manual_seed(2)
    for dtype, shape, layout in itertools.product(DTYPES, POINTWISE_SHAPES, POINTWISE_LAYOUTS):
        x, y, g = (torch.randn(shape, generator=gen).to(dtype) for _ in range(3))
        if layout == "channels_last":
            x, y, g = (t.contiguous(memory_format=torch.channels_last) for t in (x, y, g))
        ref = [torch.ops.sam_fused.pointwise_attention_fwd(x, y), *torch.ops.sam_fused.pointwise_attention_bwd(g, x, y)]
        features |= pointwise_features(*((misaligned(t, "cpu") for t in (x, y)) if layout == "misaligned" else (x, y)))
        if device is None:
            continue
        if layout == "misaligned":  # one element into its storage: not 16-byte aligned, the scalar path
            xd, yd, gd = (misaligned(t, device) for t in (x, y, g))
        else:
            xd, yd, gd = (t.to(device) for t in (x, y, g))
        ops = torch.ops.sam_fused
        got = [ops.pointwise_attention_fwd(xd, yd), *ops.pointwise_attention_bwd(gd, xd, yd)]
        for name, a, e in zip(("out", "dx", "dy"), got, ref):
            if worst_error(a, e) > TOLERANCE[dtype]:
                tolerance_failures.append(f"pointwise {shape} {dtype} {layout}: {name} differs from the CPU op by "
                                          f"{worst_error(a, e):.2e}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans-only", action="store_true", help="print the plan coverage; launch nothing on a GPU")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu to try the driver itself without a GPU")
    args = parser.parse_args(argv)
    device = None if args.plans_only else args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("driver: no CUDA GPU")
        return 2
    print("driver: start", flush=True)
    failures, features = [], set()
    run_spatial(device, failures, features)
    run_pointwise(device, failures, features)
    if device == "cuda":
        torch.cuda.synchronize()
    missing = REQUIRED - features
    print(f"driver: plans covered: {', '.join(sorted(features))}")
    for line in failures[:20]:
        print(f"driver: MISMATCH {line}")
    if missing:
        print(f"driver: NOT COVERED: {', '.join(sorted(missing))} (the planner changed: update CASES)")
    ok = not failures and not missing
    print(f"driver: {'ok' if ok else 'FAILED'}: {sum(1 for _ in spatial_cases())} spatial calls (fwd + bwd), "
          f"{len(DTYPES) * len(POINTWISE_SHAPES) * len(POINTWISE_LAYOUTS)} point-wise calls (fwd + bwd)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
