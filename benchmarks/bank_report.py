"""Bank conflicts of the block buffers' element accesses, per phase, without a GPU.

    python benchmarks/bank_report.py [--all] [--blocks 4]

The CPU context counts the shared-memory wavefronts of the tile accesses (the traffic counts,
tests/test_traffic.py); the element accesses of the block buffers (pooled maps, s, gamma, the
reduction partials) it leaves out. Here the emulated forward and backward of the benchmark
shapes (UCI-HAR, CBAM 64 channels; fp32 and bf16; the first --blocks blocks of each launch) run
under sam_fused.emulation.bank_audit, and every phase whose accesses take more wavefronts than
their ideal is listed by its source line (each_thread's), worst first, with its worst access
(#k: the phase's k-th element access); --all lists every phase. Divergent lanes (border
pixels, idle lanes) can pair accesses of different instructions, so read an excess against the
code.
"""
from __future__ import annotations

import argparse
import sys

import torch

from sam_fused import emulation

CASES = [("UCI-HAR", (4, 64, 64, 9), "mean", (3, 1)), ("UCI-HAR", (4, 512, 8, 9), "mean", (3, 1)),
         ("CBAM 64ch", (2, 64, 56, 56), "mean+max", (7, 7))]


def audit_case(shape, pool, kernel, dtype, blocks: int) -> dict[str, dict]:
    """{"fwd": sites, "bwd": sites} of one case."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    w = torch.randn(1, len(pool.split("+")), *kernel, generator=gen, dtype=dtype)
    g = torch.randn(shape, generator=gen, dtype=dtype)
    _, pooled, _ = emulation.emulate_fwd(x, w, None, pool, False)
    return {"fwd": emulation.bank_audit(lambda: emulation.emulate_fwd(x, w, None, pool, False, max_blocks=blocks)),
            "bwd": emulation.bank_audit(lambda: emulation.emulate_bwd(g, x, w, None, pooled, pool, False,
                                                                      max_blocks=blocks))}


def by_phase(sites: dict) -> dict[str, tuple]:
    """{phase line: (passes, ideal, worst access, its excess)} from an audit's accesses."""
    phases: dict[str, list] = {}
    for site, c in sites.items():
        phase = site.split("#")[0]
        p = phases.setdefault(phase, [0, 0, "", 0.0])
        p[0] += c.passes
        p[1] += c.ideal
        if c.excess > p[3]:
            p[2], p[3] = site, c.excess
    return {k: tuple(v) for k, v in phases.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every phase, not only those above the ideal")
    parser.add_argument("--blocks", type=int, default=4, help="blocks of each launch to run (default 4)")
    args = parser.parse_args(argv)
    print("| case | shape | dtype | dir | phase (each_thread line) | wavefronts | ideal | excess | worst access (#k) |")
    print("|---|---|---|---|---|---:|---:|---:|---|")
    for label, shape, pool, kernel in CASES:
        for dtype in (torch.float32, torch.bfloat16):
            for direction, sites in audit_case(shape, pool, kernel, dtype, args.blocks).items():
                phases = by_phase(sites)
                for phase, (passes, ideal, worst, worst_excess) in sorted(phases.items(),
                                                                          key=lambda kv: -kv[1][0] / kv[1][1]):
                    if args.all or passes > ideal:
                        print(f"| {label} | {'x'.join(map(str, shape))} | {str(dtype)[6:]} | {direction} | {phase} | "
                              f"{passes} | {ideal} | {passes / ideal:.2f} | {worst} {worst_excess:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
