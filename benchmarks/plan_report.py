"""Launch plans of the CUDA kernels per GPU architecture, from shapes alone (no data, no GPU).

For each shape and architecture (the limits table of csrc/block/limits.h): pass count, rows per
tile, blocks, whether the map buffers spill to global scratch, each launch's dynamic shared
memory against the arch's per-block opt-in limit, and whether offsets are 64-bit.

    python benchmarks/plan_report.py
"""

import torch

from sam_fused.emulation import ARCHS, plan

# (label, shape, kernel, pool, dtype, backward)
CASES = [
    ("wide row fwd", (8, 16, 1, 20000), (1, 3), "mean", torch.float32, False),
    ("wide row bwd", (8, 16, 1, 20000), (1, 3), "mean+max", torch.float32, True),
    ("W=2048 bwd", (4, 4, 64, 2048), (3, 3), "mean+max", torch.float32, True),
    ("CBAM bf16 bwd", (32, 64, 56, 56), (7, 7), "mean+max", torch.bfloat16, True),
    ("CBAM fp32 fwd", (32, 64, 56, 56), (7, 7), "mean+max", torch.float32, False),
    ("HAR fwd", (128, 64, 64, 9), (3, 1), "mean", torch.float32, False),
    ("HAR bwd", (128, 64, 64, 9), (3, 1), "mean", torch.float32, True),
    (">2^31 bwd", (1, 4097, 512, 1025), (3, 3), "mean+max", torch.float32, True),
]
LIMIT_KB = {"sm_80": 163, "sm_86": 99, "sm_89": 99, "sm_90": 227, "sm_100": 227, "sm_120": 99}


def main():
    print(f"{'case':14} {'arch':6} {'plan':7} {'rows':>5} {'blocks':>7} {'spill':5} {'smem per launch (KB)':24} "
          f"{'limit':>6} {'idx':3}")
    for label, shape, kernel, pool, dtype, backward in CASES:
        for arch in ARCHS:
            t, index64 = plan(shape, dtype, pool, kernel, backward, arch=arch)
            smem = " / ".join(f"{launch.smem / 1024:.1f}" for launch in t.launches)
            print(f"{label:14} {arch:6} {'2-pass' if t.two_pass else '1-pass':7} {t.rows:>5} {t.blocks:>7} "
                  f"{'yes' if t.spill else 'no':5} {smem:24} {LIMIT_KB[arch]:>6} {'64' if index64 else '32':3}")


if __name__ == "__main__":
    main()
