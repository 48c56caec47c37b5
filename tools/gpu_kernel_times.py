"""Device time per call of the fused ops beside x.clone() and the eager module, by CUDA events.

    python3 tools/gpu_kernel_times.py [--reps 50] [--out kernel_times.md]

The pytest benchmarks time one call with a host sync each, so at HAR sizes (10-30 µs of GPU
work) they measure the host's dispatch as much as the kernels. Here each implementation runs
`reps` times back to back between two CUDA events, after warm-up: the host queues ahead and the
time per call is the GPU's (launch gaps included), unless the host's dispatch is slower than the
kernels: the fused op's rows also give the host's time to issue a call, and the same calls
replayed from a CUDA graph. Reported: µs per call, the docs/design.md §3
floor (forward 2N e, backward 3N e bytes) over that time, and that as a share of the copy
bandwidth x.clone() reaches at the same size in the same run. --compile LABELS adds
torch.compile of the eager layer (default mode, static shapes) for those cases: its compile
takes tens of seconds a case, so only where asked.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (label, shape, pool, kernel, bias): UCI-HAR's four SANN blocks, CBAM 56x56 with 64 and 256 channels
CASES = [
    ("UCI-HAR b1", (128, 64, 64, 9), "mean", (3, 1), True),
    ("UCI-HAR b2", (128, 128, 32, 9), "mean", (3, 1), True),
    ("UCI-HAR b3", (128, 256, 16, 9), "mean", (3, 1), True),
    ("UCI-HAR b4", (128, 512, 8, 9), "mean", (3, 1), True),
    ("CBAM 64ch", (32, 64, 56, 56), "mean+max", (7, 7), False),
    ("CBAM s1", (32, 256, 56, 56), "mean+max", (7, 7), False),
]


def per_call_us(torch, fn, reps: int, graph: bool = False, stats: dict | None = None) -> float:
    """Device µs per call: `reps` calls back to back between two CUDA events, the best of three
    batches. The host's time to issue a batch goes to stats["host_us"] (per call): near the device
    time, the host's dispatch set the pace, not the kernels. graph: the calls are captured once in
    a CUDA graph and the batches replay it (no host dispatch between kernels; stats["graph"] says
    whether capture worked, else the calls run as they are)."""
    import time

    for _ in range(3):
        fn()
    run = None
    if graph:
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                fn()
            torch.cuda.current_stream().wait_stream(side)
            captured = torch.cuda.CUDAGraph()
            with torch.cuda.graph(captured):
                for _ in range(reps):
                    fn()
            run = captured.replay
        except RuntimeError:
            torch.cuda.synchronize()
    if stats is not None:
        stats["graph"] = run is not None

    def batch():
        for _ in range(reps):
            fn()

    run = run or batch
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best, host = math.inf, math.inf
    for _ in range(3):  # the best of three batches
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        start.record()
        run()
        end.record()
        host = min(host, (time.perf_counter() - t0) * 1e6 / reps)
        end.synchronize()
        best = min(best, start.elapsed_time(end) * 1e3 / reps)
    if stats is not None:
        stats["host_us"] = host
    return best


def cold_call_us(torch, fn, reps: int) -> float:
    """Device µs of one call with L2 holding none of its data (the median of `reps`): before each
    call a buffer of twice the L2 is zeroed, outside the events. Back-to-back calls
    (per_call_us) find their inputs, and the UCI-HAR shapes' outputs (x: 9-19 MB), in the H100's
    50 MB L2; here every byte comes from DRAM, as in a network where other layers run between."""
    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or 64 << 20
    flush = torch.empty(2 * l2, dtype=torch.uint8, device="cuda")
    fn()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for start, end in events:
        flush.zero_()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    times = sorted(start.elapsed_time(end) * 1e3 for start, end in events)
    return times[len(times) // 2]


def case_inputs(torch, shape, pool: str, kernel, bias: bool, dtype, gen):
    """x, weight, bias (None without) and an upstream gradient of one case, on the GPU, drawn from
    `gen` in that order (every GPU tool makes its inputs here)."""
    x = torch.randn(shape, generator=gen, device="cuda", dtype=dtype)
    w = torch.randn(1, len(pool.split("+")), *kernel, generator=gen, device="cuda", dtype=dtype) * 0.3
    b = torch.randn(1, generator=gen, device="cuda", dtype=dtype) if bias else None
    return x, w, b, torch.randn(shape, generator=gen, device="cuda", dtype=dtype)


def time_case(torch, case, dtype, gen, reps: int, compile_it: bool = False) -> list[str]:
    """Table rows (forward, backward) of one case: fused, eager, clone (and torch.compile of
    the eager layer), each `reps` calls."""
    label, shape, pool, kernel, bias = case
    ops = torch.ops.sam_fused
    x, w, b, g = case_inputs(torch, shape, pool, kernel, bias, dtype, gen)
    _, pooled = ops.spatial_attention_fwd(x, w, b, pool, False)
    nbytes = x.numel() * x.element_size()
    clone_us = per_call_us(torch, x.clone, reps)
    clone_bw = 2 * nbytes / clone_us / 1e3
    clone_cold_us = cold_call_us(torch, x.clone, reps)
    padding = (kernel[0] // 2, kernel[1] // 2)
    xg, wg = x.detach().requires_grad_(True), w.detach().requires_grad_(True)

    def eager(inp, weight):
        maps = [inp.mean(1, keepdim=True) if p == "mean" else inp.amax(1, keepdim=True) for p in pool.split("+")]
        return inp * torch.sigmoid(torch.nn.functional.conv2d(torch.cat(maps, 1), weight, b, padding=padding))

    compiled = None
    if compile_it:
        torch._dynamo.reset()  # a fresh cache per case: static shapes, no recompile limit
        compiled = torch.compile(eager, dynamic=False)

    def backward_of(fn):
        return lambda: torch.autograd.grad(fn(xg, wg), [xg, wg], g)

    timed = {
        "fwd": (lambda: ops.spatial_attention_fwd(x, w, b, pool, False), {"eager": lambda: eager(x, w)}, 2),
        "bwd": (lambda: ops.spatial_attention_bwd(g, x, w, b, pooled, pool, False), {"eager": backward_of(eager)}, 3),
    }
    if compiled is not None:
        timed["fwd"][1]["compile"] = lambda: compiled(x, w)
        timed["bwd"][1]["compile"] = backward_of(compiled)
    rows = []
    forwards = {"eager": lambda: eager(x, w), "compile": (lambda: compiled(x, w)) if compiled else None}
    for direction, (fused_fn, others, passes) in timed.items():
        head = f"| {label} | {'x'.join(map(str, shape))} | {str(dtype).removeprefix('torch.')} | {direction} |"
        try:
            stats, graph_stats = {}, {}
            fused_us = per_call_us(torch, fused_fn, reps, stats=stats)
            graph_us = per_call_us(torch, fused_fn, reps, graph=True, stats=graph_stats)
            graph = f"{graph_us:.1f}" if graph_stats["graph"] else "no capture"
            cold_us = cold_call_us(torch, fused_fn, reps)
            us = {}
            for name, fn in others.items():
                us[name] = per_call_us(torch, fn, reps)
                if direction == "bwd":  # the backward ran its forward too: take that off
                    us[name] -= per_call_us(torch, forwards[name], reps)
        except RuntimeError as err:  # one failing case does not stop the table
            rows.append(f"{head} error: {str(err).splitlines()[0][:80]} | | | | | | | | | | | | | |")
            continue
        floor_bw = passes * nbytes / fused_us / 1e3
        comp = f"{us['compile']:.1f} | {us['compile'] / fused_us:.2f}x" if "compile" in us else "- | -"
        cold_share = (passes * nbytes / cold_us) / (2 * nbytes / clone_cold_us)
        rows.append(f"{head} {fused_us:.1f} | {stats['host_us']:.1f} | {graph} | {us['eager']:.1f} | {comp} |"
                    f" {clone_us:.1f} | {floor_bw:.0f} | "
                    f"{clone_bw:.0f} | {floor_bw / clone_bw:.0%} | {us['eager'] / fused_us:.2f}x | {cold_us:.1f} | "
                    f"{clone_cold_us:.1f} | {cold_share:.0%} |")
    return rows


def main(argv=None) -> int:
    import torch

    import sam_fused  # noqa: F401  (registers the ops)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--out", help="also write the Markdown table here")
    parser.add_argument("--compile", default="", metavar="LABELS",
                        help="comma-separated case labels to time torch.compile for too, e.g. 'UCI-HAR b1,CBAM 64ch'")
    args = parser.parse_args(argv)
    gen = torch.Generator(device="cuda").manual_seed(0)
    lines = [f"GPU: {torch.cuda.get_device_name(0)}; {args.reps} calls back to back, best of 3 batches", "",
             "fused host µs: the host's time to issue one call in those batches (near fused µs: the host "
             "set the pace); fused graph µs: the same calls replayed from a CUDA graph (no host dispatch); cold: one "
             "call at a time with L2 flushed before it (median), every byte from DRAM", "",
             "| case | shape | dtype | dir | fused µs | fused host µs | fused graph µs | eager µs | compile µs | "
             "compile / fused | clone µs | fused floor GB/s | clone GB/s | fused / copy BW | eager / fused | "
             "fused cold µs | clone cold µs | cold fused / copy BW |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    compile_labels = {label.strip() for label in args.compile.split(",") if label.strip()}
    for dtype_name in args.dtypes.split(","):
        for case in CASES:
            lines += time_case(torch, case, getattr(torch, dtype_name), gen, args.reps, case[0] in compile_labels)
            print(*lines[-2:], sep="\n", flush=True)
            if args.out:  # after every case: a run stopped by its time limit keeps what it timed
                with open(args.out, "w") as f:
                    f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
