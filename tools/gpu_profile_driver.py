"""The main forward and backward CUDA kernels at the UCI-HAR and CBAM shapes, for Nsight Compute:

    ncu --profile-from-start off --kernel-name regex:block_program_kernel ... python tools/gpu_profile_driver.py

Each case runs once untimed (warm-up), then once between cudaProfilerStart/Stop, forward then
backward, in the order of CASES; tools/gpu_check.py maps the profiled kernels back to the cases
by that order (a forward is FwdPool? + FwdMain, a backward BwdRho? + BwdMain + DwReduce).
"""
from __future__ import annotations

import argparse
import math
import os
import sys

# name: (shape, pool, kernel, bias) -- the layers of benchmarks/conftest.py
CASES = {
    "UCI-HAR b1": ((128, 64, 64, 9), "mean", (3, 1), True),
    "CBAM 56x56": ((32, 64, 56, 56), "mean+max", (7, 7), False),
}


def floor_bytes(name: str, direction: str, elem_bytes: int) -> int:
    """docs/design.md §3: forward reads x and writes out (2N e), backward reads g and x, writes dx (3N e)."""
    return (2 if direction == "fwd" else 3) * math.prod(CASES[name][0]) * elem_bytes


def main(argv=None) -> int:
    import torch

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this tree's sam_fused
    import sam_fused  # noqa: F401  (registers the ops)
    from gpu_kernel_times import case_inputs  # tools/ is on sys.path: this script's folder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"])
    dtype = getattr(torch, parser.parse_args(argv).dtype)
    gen = torch.Generator(device="cuda").manual_seed(0)
    ops = torch.ops.sam_fused
    inputs = {}
    for name, (shape, pool, kernel, bias) in CASES.items():
        x, w, b, g = case_inputs(torch, shape, pool, kernel, bias, dtype, gen)
        inputs[name] = (x, w, b, pool, g)

    def run(name):
        x, w, b, pool, g = inputs[name]
        out, pooled = ops.spatial_attention_fwd(x, w, b, pool, False)
        torch.cuda.synchronize()
        ops.spatial_attention_bwd(g, x, w, b, pooled, pool, False)
        torch.cuda.synchronize()

    for name in CASES:
        run(name)  # warm-up, not profiled
    torch.cuda.profiler.start()
    for name in CASES:
        run(name)
    torch.cuda.profiler.stop()
    print(f"profile driver: ran {', '.join(CASES)} ({dtype}), forward then backward each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
