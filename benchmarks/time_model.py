"""Predicted time of a CUDA call from the bytes it must move (docs/design.md §3).

A memory-bound kernel cannot beat   launches * launch_overhead + DRAM bytes / copy bandwidth,
where the DRAM bytes are the traffic model that tests/test_traffic.py proves the block programs
meet (unique bytes per launch; halo re-reads hit L2; weights and biases are negligible):

  forward   one pass: x read once, out written once, pooled maps written   2N e + B P H W a
            two pass: x read twice, maps written then read                  3N e + 2 B P H W a
  backward  one pass: grad_out and x read once, grad_x written once,
            pooled maps read, per-block weight-gradient partials            3N e + B P H W a + partials
            two pass: grad_out read twice, rho (and argmax) maps,
            s and gamma per pooled map written then read            4N e + ... + 2 B H W (a + 4 + (1 + P) a)
  return_map: out / grad_out are the [B,1,H,W] map; the backward reads x only for max pooling.

N = B C H W elements of e bytes, a = accumulator bytes (8 for float64, else 4). Kernel launches:
forward 1 (+1 two pass), backward 2 (main + weight-gradient reduction), two pass 3 (the channel
reduction, the per-pixel map kernel, the main kernel, whose first blocks sum the weight gradient).
The copy bandwidth is the one a device-to-device copy reaches (read + write bytes / time): what
`x.clone()` measures, not the datasheet peak. `measure_copy_bandwidth` measures it on the card.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Card:
    name: str
    copy_bandwidth: float          # bytes/s that a large device-to-device copy moves (read + write)
    launch_overhead: float = 5e-6  # s per kernel launch, host side included


# Default when nothing was measured: H100 SXM, ~3.0 TB/s by a large copy.
H100 = Card("H100 (assumed 3.0 TB/s copy)", 3.0e12)


@dataclass(frozen=True)
class Traffic:
    bytes: int      # DRAM bytes read + written
    launches: int   # kernel launches

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(self.bytes + other.bytes, self.launches + other.launches)


def forward_traffic(shape, elem_bytes: int, pool_maps: int, two_pass: bool, return_map: bool = False) -> Traffic:
    B, C, H, W = shape
    N, HW, a = B * C * H * W, B * H * W, acc_bytes(elem_bytes)
    two_pass = two_pass and not return_map  # return_map never re-reads x
    x = (2 if two_pass else 1) * N * elem_bytes
    out = (HW if return_map else N) * elem_bytes
    maps = (2 if two_pass else 1) * pool_maps * HW * a
    return Traffic(x + out + maps, 2 if two_pass else 1)


def backward_traffic(shape, elem_bytes: int, pool_maps: int, two_pass: bool, return_map: bool = False,
                     has_max: bool = False, blocks: int = 0, taps: int = 0) -> Traffic:
    """`blocks` (the blocks that write weight-gradient partials: the two-pass map kernel's, else
    the main kernel's) and `taps` (P * kh * kw) add those partials (written then read), a few
    KB: leave them 0 for an estimate."""
    B, C, H, W = shape
    N, HW, a = B * C * H * W, B * H * W, acc_bytes(elem_bytes)
    two_pass = two_pass and not return_map
    if return_map:
        g, x = HW * elem_bytes, (N * elem_bytes if has_max else 0)
    else:
        g, x = (2 if two_pass else 1) * N * elem_bytes, N * elem_bytes
    workspace_maps = 2 * HW * (a + (4 if has_max else 0) + (1 + pool_maps) * a) if two_pass else 0
    partials = 2 * (taps + 1) * blocks * a if blocks else 0
    total = g + x + N * elem_bytes + pool_maps * HW * a + workspace_maps + partials
    return Traffic(total, 3 if two_pass else 2)


def case_traffic(case: str, shape, elem_bytes: int, pool_maps: int, two_pass_fwd: bool, two_pass_bwd: bool,
                 has_max: bool = False) -> Traffic:
    """Traffic of a benchmark case: "fwd", "bwd", "fwdbwd" of the fused op, or "clone" (2N e)."""
    if case == "clone":
        return Traffic(2 * math.prod(shape) * elem_bytes, 1)
    fwd = forward_traffic(shape, elem_bytes, pool_maps, two_pass_fwd)
    bwd = backward_traffic(shape, elem_bytes, pool_maps, two_pass_bwd, has_max=has_max)
    try:
        return {"fwd": fwd, "bwd": bwd, "fwdbwd": fwd + bwd}[case]
    except KeyError:
        raise ValueError(f"case must be fwd, bwd, fwdbwd or clone, got {case!r}") from None


def predicted_seconds(traffic: Traffic, card: Card = H100) -> float:
    return traffic.launches * card.launch_overhead + traffic.bytes / card.copy_bandwidth


def acc_bytes(elem_bytes: int) -> int:
    return 8 if elem_bytes == 8 else 4


def launch_plans(shape, dtype, pool: str, kernel) -> tuple[bool, bool]:
    """(forward two pass, backward two pass) as the CUDA op plans them for an H100, asked from the
    CPU emulation of the block programs (one block run; needs the built extension)."""
    import torch

    import sam_fused  # noqa: F401  (registers the ops)

    P = len(pool.split("+"))
    x = torch.zeros(shape, dtype=dtype)
    weight = torch.zeros(1, P, *kernel, dtype=dtype)
    out, pooled, tf = torch.ops.sam_fused._emulate_fwd(x, weight, None, pool, False, max_blocks=1)
    *_, tb = torch.ops.sam_fused._emulate_bwd(out, x, weight, None, pooled, pool, False, max_blocks=1)
    # plan row: rows, tiles, blocks, flags (1: two pass), vec, threads
    return bool(int(tf[-1, 3]) & 1), bool(int(tb[-1, 3]) & 1)


def measure_copy_bandwidth(device: str = "cuda", megabytes: int = 1024, repeats: int = 20) -> float:
    """Bytes/s (read + write) of a large device-to-device copy, the best of `repeats`."""
    import torch

    src = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = math.inf
    for _ in range(repeats):
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return 2 * src.numel() / best
