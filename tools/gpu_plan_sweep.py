"""Every launch plan of the CUDA kernels at the benchmark shapes, timed and checked on a GPU.

    python3 tools/gpu_plan_sweep.py [--out plan_sweep.json] [--reps 10] [--time-limit 120] [--graph]
                                    [--cases CBAM] [--direction fwd]

The planner (csrc/block/traits.h) picks one plan per call from its cost model; the phase model
(benchmarks/phase_model.py) predicted that plan's time. On the first GPU run the kernels took
1.8-5x the predicted time (docs/gpu-results.md), so which plan is fastest is an open question.
This runs the test-only ops _cuda_fwd_planned / _cuda_bwd_planned (built with the test ops) over
variants x rows x threads for each case of tools/gpu_kernel_times.py, checks each plan's result
against the planner's own (allclose), times it by CUDA events, and prints per case the planner's
time, the best plan's and the best three; the JSON keeps every timing with its plan (passes,
rows, blocks, threads from the emulation's planner) to recalibrate the model (benchmarks/calibrate_model.py),
the host's time to issue a call (host_us: near `us`, the host set the pace) and the device time of
one call with L2 flushed before it (cold_us: back-to-back calls find UCI-HAR-sized data in L2).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_kernel_times import CASES, case_inputs, cold_call_us, per_call_us  # noqa: E402

VARIANTS = {0: "auto", 1: "1-pass", 2: "2-pass", 3: "1-pass x staged", 4: "1-pass x unstaged", 5: "1-pass chunked",
            6: "2-pass x staged"}
ROWS = (0, 1, 2, 4, 8, 16, 32)
THREADS = (0, 128, 256, 512)


def sweep_case(torch, case, dtype, backward: bool, reps: int, graph: bool = False) -> tuple[str, list[dict]]:
    """One case: every distinct plan timed and checked against the planner's result."""
    from sam_fused.emulation import plan

    ops = torch.ops.sam_fused
    label, shape, pool, kernel, bias = case
    dtype_name = str(dtype).removeprefix("torch.")
    tol = {"float32": 1e-4, "bfloat16": 2e-2}.get(dtype_name, 1e-3)
    gen = torch.Generator(device="cuda").manual_seed(0)
    x, w, b, g = case_inputs(torch, shape, pool, kernel, bias, dtype, gen)
    _, pooled = ops.spatial_attention_fwd(x, w, b, pool, False)

    def call(v, r, t):
        if backward:
            return ops._cuda_bwd_planned(g, x, w, b, pooled, pool, False, v, r, t)
        return ops._cuda_fwd_planned(x, w, b, pool, False, v, r, t)

    reference = call(0, 0, 0)
    timings, records = [], []
    for v, r, t in itertools.product(VARIANTS, ROWS, THREADS):
        if (v == 3 and not backward) or (v == 6 and backward):
            continue  # variants of the other direction only
        try:
            p, _ = plan(shape, dtype, pool, kernel, backward, variant=v, rows=r, threads=t)
            result = call(v, r, t)
        except (RuntimeError, ValueError):
            continue  # a plan the planner refuses for this shape (or the device)
        key = (p.two_pass, p.rows, p.blocks, p.threads, p.staged_x, p.chunk_rows)
        if any(k == key for k, *_ in timings):
            continue  # the same plan under another name
        ok = all(torch.allclose(u.float(), e.float(), rtol=tol, atol=tol) for u, e in zip(result, reference))
        stats = {}
        us = per_call_us(torch, lambda v=v, r=r, t=t: call(v, r, t), reps, graph, stats)
        cold = cold_call_us(torch, lambda v=v, r=r, t=t: call(v, r, t), reps)
        timings.append((key, us, (v, r, t), ok))
        records.append(dict(case=label, shape=list(shape), dtype=dtype_name, direction="bwd" if backward else "fwd",
                            variant=v, rows_arg=r, threads_arg=t, two_pass=p.two_pass, rows=p.rows, blocks=p.blocks,
                            threads=p.threads, staged_x=p.staged_x, chunk_rows=p.chunk_rows, us=round(us, 2),
                            matches_planner=ok, host_us=round(stats["host_us"], 2), graph=stats["graph"],
                            cold_us=round(cold, 2)))
    timings.sort(key=lambda e: e[1])
    auto = next(us for _, us, cfg, _ in timings if cfg == (0, 0, 0))
    best = ", ".join(f"{VARIANTS[c[0]]} rows {k[1]} thr {k[3]} blocks {k[2]}: {us:.1f}" + ("" if ok else " MISMATCH")
                     for k, us, c, ok in timings[:3])
    line = (f"{label:11} {dtype_name:8} {'bwd' if backward else 'fwd'}  planner {auto:7.1f} µs  best "
            f"{timings[0][1]:7.1f} ({auto / timings[0][1]:.2f}x)  of {len(timings)} plans  [{best}]")
    return line, records


def main(argv=None) -> int:
    import torch

    import sam_fused  # noqa: F401  (registers the ops)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--time-limit", type=float, default=150, help="seconds; the cases left are skipped")
    parser.add_argument("--out", help="JSON of every timing")
    parser.add_argument("--graph", action="store_true",
                        help="time each plan's calls replayed from a CUDA graph (no host dispatch between them)")
    parser.add_argument("--cases", default="", help="only the cases whose label contains this text (e.g. CBAM)")
    parser.add_argument("--direction", choices=("fwd", "bwd", "both"), default="both")
    args = parser.parse_args(argv)
    if not hasattr(torch.ops.sam_fused, "_cuda_fwd_planned"):
        print("plan sweep: this build has no CUDA test ops (SAM_FUSED_TEST_OPS=0 or no CUDA)")
        return 2
    start, records = time.time(), []
    cases = [c for c in CASES if args.cases in c[0]]
    directions = {"fwd": (False,), "bwd": (True,), "both": (False, True)}[args.direction]
    for dtype_name, case, backward in itertools.product(args.dtypes.split(","), cases, directions):
        if time.time() - start > args.time_limit:
            print(f"plan sweep: time limit reached; {case[0]} {dtype_name} and the cases after it skipped")
            break
        line, recs = sweep_case(torch, case, getattr(torch, dtype_name), backward, args.reps, args.graph)
        print(line, flush=True)
        records += recs
    if args.out:
        with open(args.out, "w") as f:
            json.dump(records, f, indent=1)
    bad = [r for r in records if not r["matches_planner"]]
    for r in bad:
        print(f"MISMATCH {r['case']} {r['dtype']} {r['direction']} variant {r['variant']} rows {r['rows_arg']} "
              f"threads {r['threads_arg']}")
    print(f"plan sweep: {len(records)} plans timed, {len(bad)} differ from the planner's result beyond tolerance")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
