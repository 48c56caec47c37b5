"""Coalescing of the CUDA kernels' global accesses, measured without a GPU (docs/design.md §8).

Runs the forward and backward block programs through the CPU emulation context, which records
for every warp-wide access instruction the 32-byte sectors it touches; prints, per tensor,
ideal sectors (bytes requested / 32, rounded up per instruction) / sectors touched, and the
DRAM-level bytes (unique per launch) of x, grad_out and out in units of the out/grad_x bytes
written (floor: 2 forward, 3 backward). The plan (rows per tile) depends on the batch, so the
HAR shapes use their training batch (128) but emulate only the first MAX_BLOCKS blocks of each
launch (the access pattern of a block does not depend on which block it is, except the last
tile of a sample); CBAM shapes pick the same plan at batch 2 as at 32. Target: >= 90% on x,
grad_out and out. Then the point-wise op (csrc/block/pointwise.h) on the same shapes: every
operand and result (floor: 3N forward, 5N backward).

    PYTHONPATH=. python benchmarks/coalescing_report.py [--dtype float32|bfloat16|...]
"""
import argparse

import torch

from sam_fused.emulation import POINTWISE_SLOTS, emulate_bwd, emulate_fwd, emulate_pointwise_bwd, emulate_pointwise_fwd

SHAPES = {  # name: (shape, pool, kernel)
    "UCI-HAR 1": ((128, 64, 64, 9), "mean", (3, 1)),
    "UCI-HAR 2": ((128, 128, 32, 9), "mean", (3, 1)),
    "UCI-HAR 3": ((128, 256, 16, 9), "mean", (3, 1)),
    "UCI-HAR 4": ((128, 512, 8, 9), "mean", (3, 1)),
    "CBAM 56x56": ((2, 256, 56, 56), "mean+max", (7, 7)),
    "CBAM 7x7": ((2, 2048, 7, 7), "mean+max", (7, 7)),
}
MAX_BLOCKS = 32
BIG = ("x", "grad_out", "out")


def pct(t, slots):
    return 100.0 * t.coalescing(*[s for s in slots if t[s]["sectors"]])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"])
    dtype = getattr(torch, ap.parse_args().dtype)
    gen = torch.Generator().manual_seed(0)
    print(f"{'shape':<30}{'layout':<15}{'pass':<5}{'plan':<22}{'x':>8}{'grad':>8}{'out':>8}{'all big':>9}"
          f"{'DRAM/floor':>13}")
    worst = 100.0
    for name, (shape, pool, kernel) in SHAPES.items():
        for layout in ("contiguous", "channels_last"):
            x = torch.randn(shape, generator=gen).to(dtype)
            if layout == "channels_last":
                x = x.contiguous(memory_format=torch.channels_last)
            w = torch.randn(1, len(pool.split("+")), *kernel, generator=gen).to(dtype) * 0.2
            out, pooled, tf = emulate_fwd(x, w, None, pool, False, max_blocks=MAX_BLOCKS)
            g = torch.randn(out.shape, generator=gen).to(dtype)
            *_, tb = emulate_bwd(g, x, w, None, pooled, pool, False, max_blocks=MAX_BLOCKS)
            for label, t, floor in (("fwd", tf, 2), ("bwd", tb, 3)):
                plan = f"{'2-pass' if t.two_pass else '1-pass'} rows={t.rows} vec={t.vec}"
                cols = [f"{pct(t, [s]):7.1f}%" if t[s]["sectors"] else f"{'-':>8}" for s in BIG]
                dram = sum(t[s]["read_unique"] + t[s]["written_unique"] for s in BIG) / t["out"]["written_unique"]
                total = pct(t, BIG)
                worst = min(worst, total)
                print(f"{name + ' ' + str(shape):<30}{layout:<15}{label:<5}{plan:<22}{''.join(cols)}{total:8.1f}%"
                      f"{dram:>7.2f}N / {floor}N")
    worst = min(worst, pointwise_table(dtype, gen))
    print(f"worst coalescing over x/grad_out/out and the point-wise operands: {worst:.1f}% (target >= 90%)")


def pointwise_table(dtype, gen):
    """Coalescing of every point-wise operand and result, and DRAM bytes over the floor; the worst %."""
    print(f"\npoint-wise attention (x, y, grad -> out, grad_y; first {MAX_BLOCKS} blocks)")
    print(f"{'shape':<30}{'pass':<5}{'plan':<22}" + "".join(f"{s:>8}" for s in POINTWISE_SLOTS) + f"{'all':>9}"
          f"{'DRAM/floor':>13}")
    worst = 100.0
    for name, (shape, *_) in SHAPES.items():
        x, y, g = (torch.randn(shape, generator=gen).to(dtype) for _ in range(3))
        _, tf = emulate_pointwise_fwd(x, y, max_blocks=MAX_BLOCKS)
        *_, tb = emulate_pointwise_bwd(g, x, y, max_blocks=MAX_BLOCKS)
        for label, t, floor in (("fwd", tf, 3), ("bwd", tb, 5)):
            used = [s for s in POINTWISE_SLOTS if t[s]["sectors"]]
            cols = [f"{pct(t, [s]):7.1f}%" if s in used else f"{'-':>8}" for s in POINTWISE_SLOTS]
            dram = sum(t[s]["read_unique"] + t[s]["written_unique"] for s in used) / t["out"]["written_unique"]
            total = pct(t, used)
            worst = min(worst, total)
            print(f"{name + ' ' + str(shape):<30}{label:<5}{f'vec={t.vec} elems/block={t.rows}':<22}{''.join(cols)}"
                  f"{total:8.1f}%{dram:>7.2f}N / {floor}N")
    return worst


if __name__ == "__main__":
    main()
