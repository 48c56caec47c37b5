"""Focused CPU wall time of the HAR layer: min of --n calls per round, implementations interleaved.

    python benchmarks/cpu_walltime.py [--threads 1] [--shapes "128,64,64,9;16,64,64,9"] [--n 10] [--rounds 2]
    python benchmarks/cpu_walltime.py --chain 40 [--threads 1] [--shapes ...]

Prints, per shape, the best time of ``x.clone()`` (the memory floor), ``torch.dot(x, g)`` (the
backward's reads alone: two arrays, 2N·e bytes, which on one core can take longer than the
clone's read and write of N·e each when x fits the last-level cache and x and g do not),
``torch.add(x, g)`` (the backward's floor traffic, 3N·e bytes, as one torch streaming op),
``stream_fb``: ``x.clone()`` then ``torch.add(x, g)`` in one call (the 5N·e floor of
docs/design.md §3 in torch's own loops, over the four arrays forward+backward touches, so with
the same cache state as fused_fb: an op repeated alone keeps more of its arrays in the last-level
cache), the fused forward and
backward ops alone, the fused module forward and forward+backward through autograd, and the
eager reference's forward and forward+backward, each also as a multiple of the clone time.
Minimums over interleaved rounds, because single wall times on a shared machine drift by tens
of percent (``benchmarks/instructions.py`` counts instructions instead); run it twice with two
builds alternately to compare them.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import sam_fused  # noqa: E402
from sam_fused import reference  # noqa: E402

HAR_SHAPES = "128,64,64,9;128,128,32,9;128,256,16,9;128,512,8,9;16,64,64,9"
IMPLS = ("clone", "dot_xg", "add_xg", "stream_fb", "fwd_op", "bwd_op", "fused_fwd", "fused_fb", "eager_fwd", "eager_fb")


def calls(shape):
    """The timed callables of one shape, inputs and modules built once (seeded)."""
    torch.manual_seed(0)
    x, g = torch.randn(shape), torch.randn(shape)
    xr = x.clone().requires_grad_()
    ref = reference.SpatialAttentionModule()
    fused = sam_fused.SpatialAttentionModule()
    fused.load_state_dict(ref.state_dict())
    conv = fused.att_fc[0]
    w, b = conv.weight.detach(), conv.bias.detach()
    fwd, bwd = torch.ops.sam_fused.spatial_attention_fwd, torch.ops.sam_fused.spatial_attention_bwd
    _, pooled = fwd(x, w, b, "mean", False)
    return {
        "clone": lambda: x.clone(),
        "dot_xg": lambda: torch.dot(x.view(-1), g.view(-1)),
        "add_xg": lambda: torch.add(x, g),
        "stream_fb": lambda: (x.clone(), torch.add(x, g)),
        "fwd_op": lambda: fwd(x, w, b, "mean", False),
        "bwd_op": lambda: bwd(g, x, w, b, pooled, "mean", False),
        "fused_fwd": lambda: fused(x),
        "fused_fb": lambda: torch.autograd.grad(fused(xr), [xr, *fused.parameters()], g),
        "eager_fwd": lambda: ref(x),
        "eager_fb": lambda: torch.autograd.grad(ref(xr), [xr, *ref.parameters()], g),
    }


def chain(shape, steps: int) -> dict:
    """A training-like chain: per step the fused forward+backward through autograd, then the 5N e
    floor over the same four arrays in torch's own loops into preallocated outputs (`copy_` of x,
    then `add(x, g)`: no allocation, no page faults), each part timed on its own. Every array
    comes from memory as in a training step, where other layers run between a layer's forward
    and its backward; an op repeated alone finds part of its 19 MB arrays in the last-level cache
    (and so does the x.clone() the other rows divide by). Minimum and median ms of each part."""
    torch.manual_seed(0)
    x, g = torch.randn(shape), torch.randn(shape)
    xr = x.clone().requires_grad_()
    fused = sam_fused.SpatialAttentionModule()
    params = list(fused.parameters())
    out_buf, dx_buf = torch.empty_like(x), torch.empty_like(x)
    parts = {"fwd": [], "bwd": [], "copy": [], "add": []}
    for step in range(steps + 2):
        t0 = time.perf_counter()
        out = fused(xr)
        t1 = time.perf_counter()
        grads = torch.autograd.grad(out, [xr, *params], g)
        t2 = time.perf_counter()
        del out, grads
        t3 = time.perf_counter()
        out_buf.copy_(x)
        t4 = time.perf_counter()
        torch.add(x, g, out=dx_buf)
        t5 = time.perf_counter()
        if step >= 2:  # the first two warm up
            for name, t in zip(parts, (t1 - t0, t2 - t1, t4 - t3, t5 - t4)):
                parts[name].append(t)
    return {k: (min(v), sorted(v)[len(v) // 2]) for k, v in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shapes", default=HAR_SHAPES, help="B,C,H,W;...")
    parser.add_argument("--n", type=int, default=10, help="calls per implementation and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--which", default=",".join(IMPLS))
    parser.add_argument("--chain", type=int, metavar="STEPS",
                        help="instead: STEPS of the training-like chain (chain()), fused parts against the floor's")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.which.split(",")
    if args.chain:
        print(f"threads {torch.get_num_threads()}, ISA {torch.ops.sam_fused._cpu_isa()}, chain of {args.chain} steps: "
              "min / median ms; fused fwd vs copy_, bwd vs add, fwd+bwd vs copy_+add (the 5N e floor), min over min")
        for text in args.shapes.split(";"):
            t = chain(tuple(int(v) for v in text.split(",")), args.chain)
            parts = " ".join(f"{k}={lo * 1e3:.3f}/{mid * 1e3:.3f}" for k, (lo, mid) in t.items())
            ratios = (t["fwd"][0] / t["copy"][0], t["bwd"][0] / t["add"][0],
                      (t["fwd"][0] + t["bwd"][0]) / (t["copy"][0] + t["add"][0]))
            print(text, parts, "| fwd/copy {:.2f} bwd/add {:.2f} fwd+bwd/floor {:.2f}".format(*ratios), flush=True)
        return
    print(f"threads {torch.get_num_threads()}, ISA {torch.ops.sam_fused._cpu_isa()}, min of {args.n} x {args.rounds}")
    for text in args.shapes.split(";"):
        fns = calls(tuple(int(v) for v in text.split(",")))
        best = dict.fromkeys(names, float("inf"))
        for _ in range(args.rounds):
            for name in names:
                with torch.set_grad_enabled(name.endswith("fb")):
                    fns[name]()
                    for _ in range(args.n):
                        start = time.perf_counter()
                        fns[name]()
                        best[name] = min(best[name], time.perf_counter() - start)
        clone = best.get("clone", float("nan"))
        print(text, " ".join(f"{k}={v * 1e3:.3f}ms({v / clone:.2f}c)" for k, v in best.items()), flush=True)


if __name__ == "__main__":
    main()
