"""Where the host's time per call goes, on a CUDA GPU: the issue time of the fused op's entry
points beside torch's own ops at the same shape, and torch.profiler's table of the host-side
operators and CUDA runtime calls of one forward and one backward.

    python tools/gpu_host_time.py [--shape 128,64,64,9] [--dtype float32] [--calls 2000]

At the UCI-HAR shapes the H100 runs the fused forward in ~11-20 µs, less than the host takes to
issue it (docs/gpu-results.md), so the host's share decides the time per call there. Issue time
is wall time per call over `calls` calls back to back with no synchronisation inside the loop
(the device keeps up, so the loop measures the host).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

# the repository's sam_fused (with the bundle's or the in-place build's _C), not an installed one
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def issue_us(sync, fn, calls: int) -> float:
    """Best of 3 loops: host µs per call, the device synchronised only around each loop."""
    for _ in range(20):
        fn()
    sync()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
        sync()
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="128,64,64,9")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu for a smoke run")
    args = parser.parse_args()
    import torch

    import sam_fused
    from sam_fused import ops

    shape = tuple(int(v) for v in args.shape.split(","))
    dtype = getattr(torch, args.dtype)
    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    x = torch.randn(shape, device=args.device, dtype=dtype)
    layer = sam_fused.SpatialAttentionModule().to(args.device, dtype)
    w, b = layer.att_fc[0].weight.detach(), layer.att_fc[0].bias.detach()
    fwd = torch.ops.sam_fused.spatial_attention_fwd
    out, pooled = fwd(x, w, b, "mean", False)
    g = torch.randn_like(out)
    xg = x.clone().requires_grad_()
    rows = [
        ("x.clone()", lambda: x.clone()),
        ("torch.empty_like(x)", lambda: torch.empty_like(x)),
        ("torch.sigmoid(x)", lambda: torch.sigmoid(x)),
        ("torch.ops.sam_fused.spatial_attention_fwd", lambda: fwd(x, w, b, "mean", False)),
        ("sam_fused.spatial_attention (no grad)", lambda: ops.spatial_attention(x, w, b, "mean")),
        ("SpatialAttentionModule under no_grad", lambda: layer(x)),
        ("torch.ops.sam_fused.spatial_attention_bwd",
         lambda: torch.ops.sam_fused.spatial_attention_bwd(g, x, w, b, pooled, "mean", False)),
        ("forward + backward through autograd", lambda: ops.spatial_attention(xg, w, b, "mean").backward(g)),
    ]
    print(f"{torch.cuda.get_device_name(0) if cuda else 'CPU'}, torch {torch.__version__}, shape {shape} {args.dtype}")
    print("| call | host µs per call |\n|---|---:|")
    with torch.no_grad():
        for name, fn in rows[:-1]:
            print(f"| {name} | {issue_us(sync, fn, args.calls):.2f} |")
    print(f"| {rows[-1][0]} | {issue_us(sync, rows[-1][1], args.calls // 4):.2f} |")

    from torch.profiler import ProfilerActivity, profile
    for name, fn in (rows[3], rows[6]):
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(200):
                fn()
            sync()
        print(f"\n{name}: 200 calls, host operators and CUDA runtime calls by self CPU time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
