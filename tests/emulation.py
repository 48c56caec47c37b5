"""Runs the CUDA block programs through the CPU execution context (docs/design.md §8) via the
test-only ops ``sam_fused::_emulate_fwd`` / ``_emulate_bwd`` and decodes their traffic counters."""
from __future__ import annotations

from dataclasses import dataclass

import torch

import sam_fused  # noqa: F401  (registers the ops)

SLOTS = ("x", "grad_out", "out", "pooled", "weight", "bias", "workspace")
FIELDS = ("read", "read_unique", "written", "written_unique", "sectors", "ideal_sectors")
ONE_PASS, TWO_PASS = 1, 2


@dataclass
class Traffic:
    counts: dict  # slot -> {field: int}
    rows: int
    tiles: int
    blocks: int
    two_pass: bool
    vec: int
    threads: int

    def __getitem__(self, slot):
        return self.counts[slot]

    def coalescing(self, *slots):
        """Ideal / touched 32-byte sectors over the warp-wide accesses to `slots`."""
        touched = sum(self.counts[s]["sectors"] for s in slots)
        ideal = sum(self.counts[s]["ideal_sectors"] for s in slots)
        return ideal / touched if touched else 1.0


def decode(t: torch.Tensor) -> Traffic:
    rows = t.tolist()
    counts = {slot: dict(zip(FIELDS, row)) for slot, row in zip(SLOTS, rows)}
    r, tiles, blocks, two_pass, vec, threads = rows[len(SLOTS)]
    return Traffic(counts, r, tiles, blocks, bool(two_pass), vec, threads)


def emulate_fwd(x, weight, bias, pool, return_map, variant=0, rows=0, threads=0, index64=False, max_blocks=0):
    """(out, pooled, Traffic) of the forward block programs run on the CPU (max_blocks > 0: only
    the first blocks of each launch, for access-pattern reports; outputs are then incomplete)."""
    out, pooled, t = torch.ops.sam_fused._emulate_fwd(x, weight.detach(), None if bias is None else bias.detach(),
                                                      pool, return_map, variant, rows, threads, index64, max_blocks)
    return out, pooled, decode(t)


def emulate_bwd(grad_out, x, weight, bias, pooled, pool, return_map, variant=0, rows=0, threads=0, index64=False,
                max_blocks=0):
    """(grad_x, grad_weight, grad_bias, Traffic) of the backward block programs run on the CPU."""
    dx, dw, db, t = torch.ops.sam_fused._emulate_bwd(grad_out, x, weight.detach(),
                                                     None if bias is None else bias.detach(), pooled, pool,
                                                     return_map, variant, rows, threads, index64, max_blocks)
    return dx, dw, db, decode(t)


def emulated_results(x, weight, bias, pool, return_map, grad_out, **kw):
    """Output and gradients in the dict form of `helpers.forward_backward`, plus the pooled
    maps and the forward and backward Traffic."""
    out, pooled, tf = emulate_fwd(x, weight, bias, pool, return_map, **kw)
    dx, dw, db, tb = emulate_bwd(grad_out, x, weight, bias, pooled, pool, return_map, **kw)
    res = {"out": out, "x": dx, "weight": dw}
    if bias is not None:
        res["bias"] = db
    return res, pooled, tf, tb
