"""Two or more builds of the CPU kernels timed side by side: which is faster, beyond the noise.

    cp sam_fused/_C.abi3.so /tmp/C_old.so   # (then change, rebuild)
    python benchmarks/cpu_ab.py old=/tmp/C_old.so new=sam_fused/_C.abi3.so [--threads 1]
        [--shapes "128,64,64,9;16,64,64,9"] [--rounds 4] [--calls 40] [--cached]
        [--op spatial|pointwise] [--dtype float32|float64|bfloat16|float16]

Each round runs every build once, in its own process (a library cannot be swapped in a
running one), in turn: the machine's slow and fast phases then fall on every build alike. A
process times the fused forward and backward ops alone, ``--calls`` calls each, with x and
the gradient rotated through four copies so that they come from memory as in training
(``--cached``: one copy, the cache-resident case), and reports its best call; ``x.clone()`` and
``torch.add(x, g)`` the same way, the forward's and the backward's memory floors (2N and 3N
bytes) in torch's own loops, which do not depend on the build. ``--op pointwise`` times the
point-wise op (``pointwise_attention_fwd``/``_bwd``, y the shape of x) instead; its floors are
3N and 5N bytes, so ``add`` is the forward's floor (the row ``fwd/add``) and 3/5 of the
backward's. The table gives each build's
min and median over the rounds, in ms, and each build's min against the first's; then the
forward over the clone and the backward over the add of the same process, whose min and median
over the rounds cancel most of a shared machine's slow and fast phases.
``SAM_FUSED_CPU_ISA`` passes through to the children (forces an instruction set); a build
given as ``name=path@1M`` runs with ``SAM_FUSED_CPU_L2=1M`` (plans its bands for that L2), so
one library can be timed against itself under another CPU's band plan.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ("fwd", "bwd", "clone", "add")  # the last two: torch's floors (2N and 3N bytes) beside the ops


def child(lib: str, shapes: list, threads: int, calls: int, copies: int, op: str, dtype: str) -> dict:
    """Loads sam_fused with its _C from lib; the best time of each case, in ms."""
    import importlib.util

    import torch  # the library links against torch's

    spec = importlib.util.spec_from_file_location("sam_fused._C", lib)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sam_fused._C"] = module
    spec.loader.exec_module(module)

    sys.path.insert(0, ROOT)
    import sam_fused  # noqa: F401  (the Python side of this checkout, with lib's ops)

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    dt = getattr(torch, dtype)
    weight, bias = (t.to(dt) for t in (torch.randn(1, 1, 3, 1, generator=gen) * 0.3, torch.randn(1, generator=gen)))
    ops = torch.ops.sam_fused
    fwd, bwd = ((ops.pointwise_attention_fwd, ops.pointwise_attention_bwd) if op == "pointwise"
                else (ops.spatial_attention_fwd, ops.spatial_attention_bwd))
    best, over_floor = {}, {}  # ms per case; each op over its floor in this process (listed after)
    for shape in shapes:
        key = ",".join(map(str, shape))
        xs = [torch.randn(shape, generator=gen).to(dt) for _ in range(copies)]
        gs = [torch.randn(shape, generator=gen).to(dt) for _ in range(copies)]
        run = {"clone": lambda j, xs=xs: xs[j].clone(), "add": lambda j, xs=xs, gs=gs: torch.add(xs[j], gs[j])}
        if op == "pointwise":
            ys = [torch.randn(shape, generator=gen).to(dt) for _ in range(copies)]
            run["fwd"] = lambda j, xs=xs, ys=ys: fwd(xs[j], ys[j])
            run["bwd"] = lambda j, xs=xs, ys=ys, gs=gs: bwd(gs[j], xs[j], ys[j])
        else:
            pooled = [fwd(x, weight, bias, "mean", False)[1] for x in xs]
            run["fwd"] = lambda j, xs=xs: fwd(xs[j], weight, bias, "mean", False)
            run["bwd"] = lambda j, xs=xs, gs=gs, p=pooled: bwd(gs[j], xs[j], weight, bias, p[j], "mean", False)
        for case in CASES:
            times = []
            for j in range(calls + copies):  # the first pass over the copies warms up
                t = time.perf_counter()
                run[case](j % copies)
                times.append(time.perf_counter() - t)
            best[f"{key} {case}"] = 1e3 * min(times[copies:])
        fwd_floor = "add" if op == "pointwise" else "clone"  # 3N bytes, or 2N
        over_floor[f"{key} fwd/{fwd_floor}"] = best[f"{key} fwd"] / best[f"{key} {fwd_floor}"]
        over_floor[f"{key} bwd/add"] = best[f"{key} bwd"] / best[f"{key} add"]
    return {"times": {**best, **over_floor}, "l2_kib": torch.ops.sam_fused._cpu_cache_sizes()[1] >> 10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("builds", nargs="*", help="name=path[@L2] of a built sam_fused/_C library")
    parser.add_argument("--shapes", default="128,64,64,9;128,512,8,9;16,64,64,9")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--cached", action="store_true", help="one copy of the inputs (cache-resident)")
    parser.add_argument("--op", choices=("spatial", "pointwise"), default="spatial")
    parser.add_argument("--dtype", choices=("float32", "float64", "bfloat16", "float16"), default="float32")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")]
    copies = 1 if args.cached else 4
    if args.child:
        print(json.dumps(child(args.child, shapes, args.threads, args.calls, copies, args.op, args.dtype)))
        return
    if len(args.builds) < 2:
        parser.error("give two builds or more, as name=path")
    builds = []
    for item in args.builds:
        name, sep, spec = item.partition("=")
        path, _, l2 = spec.partition("@")
        if not sep or not os.path.isfile(path):
            parser.error(f"expected name=path[@L2] of a built library, got {item!r}")
        builds.append((name, os.path.abspath(path), l2))
    results, l2_kib = {name: [] for name, _, _ in builds}, {}
    for r in range(args.rounds):
        for name, path, l2 in builds if r % 2 == 0 else builds[::-1]:  # alternate who goes first
            cmd = [sys.executable, __file__, "--child", path, "--shapes", args.shapes, "--threads",
                   str(args.threads), "--calls", str(args.calls), "--op", args.op, "--dtype", args.dtype] + (
                ["--cached"] if args.cached else [])
            env = {**os.environ, "SAM_FUSED_CPU_L2": l2} if l2 else None
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
            reply = json.loads(out.strip().splitlines()[-1])
            results[name].append(reply["times"])
            l2_kib[name] = reply["l2_kib"]
    isa = os.environ.get("SAM_FUSED_CPU_ISA", "(auto)")
    print(f"{args.op} op, {args.dtype}, {args.threads} thread(s), SAM_FUSED_CPU_ISA={isa}, "
          f"{'cached' if args.cached else 'from memory'}, "
          f"{args.rounds} rounds of the best of {args.calls} calls: min / median ms, min x {builds[0][0]}")
    print("bands planned for an L2 of: " + ", ".join(f"{name} {kib} KiB" for name, kib in l2_kib.items()))
    base = builds[0][0]
    for key in results[base][0]:
        cells = []
        for name, _, _ in builds:
            values = [round_[key] for round_ in results[name]]
            ratio = min(values) / min(v[key] for v in results[base])
            cells.append(f"{name} {min(values):7.3f} / {statistics.median(values):7.3f} (x{ratio:.2f})")
        print(f"{key:>22} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
