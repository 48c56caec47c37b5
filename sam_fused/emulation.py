"""Runs the CUDA block programs through the CPU execution context (docs/design.md §8) via the
test-only ops ``sam_fused::_emulate_fwd`` / ``_emulate_bwd`` (spatial attention) and
``_emulate_pointwise_fwd`` / ``_bwd`` (point-wise attention) and decodes their traffic counters."""
from __future__ import annotations

from dataclasses import dataclass

import torch

import sam_fused  # noqa: F401  (registers the ops)

if not hasattr(torch.ops.sam_fused, "_emulate_fwd"):
    raise ImportError("sam_fused.emulation needs the test-only ops, which this build left out: rebuild from the "
                      "source tree with SAM_FUSED_TEST_OPS=1 (the default of `pip install -e .` and `make build`)")

SLOTS = ("x", "grad_out", "out", "pooled", "weight", "bias", "workspace", "shared")  # shared: bank wavefronts
POINTWISE_SLOTS = ("x", "y", "grad", "out", "grad_y")  # out: out (forward) or grad_x (backward)
FIELDS = ("read", "read_unique", "written", "written_unique", "sectors", "ideal_sectors")
ONE_PASS, TWO_PASS = 1, 2
# one pass with the backward's x tile staged beside grad_out's / not staged (traits.h Plan::staged_x);
# ONE_PASS leaves that choice to the planner
ONE_PASS_STAGED_X, ONE_PASS_UNSTAGED_X = 3, 4
# one pass, the staged tile copied in chunks (traits.h plan_chunks) where the planner copies it as one
ONE_PASS_CHUNKED = 5
# two passes, the forward's second pass staging its x tile first (traits.h Variant::kTwoPassStaged)
TWO_PASS_STAGED = 6
ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120")
DEFAULT_ARCH = "sm_90"


@dataclass
class Launch:
    grid: int
    threads: int
    smem: int        # dynamic shared-memory bytes per block
    rows: int = 0    # rows per tile (the backward's map kernel: map rows per block)
    tiles: int = 0   # tiles per sample
    spill: bool = False  # its buffers in global scratch


@dataclass
class Traffic:
    counts: dict  # slot -> {field: int}
    rows: int
    tiles: int
    blocks: int
    two_pass: bool
    vec: int
    threads: int
    spill: bool = False   # map buffers in global scratch, not shared memory
    launches: list = None  # [Launch] in launch order
    px: int = 0           # pixels per channel-reduction round (channel slots = threads / px)
    staged_x: bool = False  # one-pass backward: the x tile staged in shared memory too
    chunk_rows: int = 0   # rows per chunk of the staged tile (its groups of asynchronous copies); 0: none staged
    sum_slots: int = 0    # channel slots of the tile rows' sums by 16-byte vectors (traits.h Plan::sum_slots); 0: none

    @property
    def sum_vectors(self) -> bool:
        """The tile rows' channel sums read 16-byte vectors (traits.h Plan::sum_vectors)."""
        return self.sum_slots > 0

    def __getitem__(self, slot):
        return self.counts[slot]

    def coalescing(self, *slots):
        """Ideal / touched 32-byte sectors over the warp-wide accesses to `slots`."""
        touched = sum(self.counts[s]["sectors"] for s in slots)
        ideal = sum(self.counts[s]["ideal_sectors"] for s in slots)
        return ideal / touched if touched else 1.0


def decode_plan(rows: list, counts: dict | None = None) -> Traffic:
    """Traffic (counts may be empty) from the plan rows: one per launch, (rows per tile, tiles
    per sample, grid, flags: 1 two pass | 2 spilled maps | 4 x tile staged (backward), vector width,
    threads, smem bytes, pixels per channel-reduction round, rows per chunk of the staged tile, channel
    slots of the vector sums);
    the plan fields are those of the first launch (the main kernel's, or pass 1's: the same; the
    two-pass backward's map kernel, second, has its own rows, tiles and spill flag in its Launch).
    An empty input launches nothing: no rows."""
    r, tiles, blocks, flags, vec, threads, _, px, _, _ = rows[0] if rows else (0, 0, 0, 0, 1, 0, 0, 0, 0, 0)
    launches = [Launch(grid, th, smem, rw, tl, bool(fl & 2)) for rw, tl, grid, fl, _, th, smem, _, _, _ in rows]
    # the main kernel's row reports the staged tile's chunks (pass 1 of two comes first)
    chunk_rows = max((row[8] for row in rows), default=0)
    # likewise the channel slots of its vector sums
    sum_slots = max((row[9] for row in rows), default=0)
    return Traffic(counts or {}, r, tiles, blocks, bool(flags & 1), vec, threads, bool(flags & 2), launches, px,
                   bool(flags & 4), chunk_rows, sum_slots)


def decode(t: torch.Tensor, slots=SLOTS) -> Traffic:
    rows = t.tolist()
    counts = {slot: dict(zip(FIELDS, row[:len(FIELDS)])) for slot, row in zip(slots, rows)}
    return decode_plan(rows[len(slots):], counts)


def emulate_fwd(x, weight, bias, pool, return_map, variant=0, rows=0, threads=0, index64=False, max_blocks=0,
                arch=DEFAULT_ARCH, sanitize=False):
    """(out, pooled, Traffic) of the forward block programs run on the CPU, planned for and held
    to the limits of `arch` (max_blocks > 0: only the first blocks of each launch, for
    access-pattern reports; outputs are then incomplete). sanitize: race, bounds, init and
    barrier checks of every block (csrc/block/sanitizer_cpu.h); the first violation raises
    RuntimeError "block sanitizer: <kind>: ..."."""
    out, pooled, t = torch.ops.sam_fused._emulate_fwd(x, weight.detach(), None if bias is None else bias.detach(),
                                                      pool, return_map, variant, rows, threads, index64, max_blocks,
                                                      arch, sanitize)
    return out, pooled, decode(t)


def emulate_bwd(grad_out, x, weight, bias, pooled, pool, return_map, variant=0, rows=0, threads=0, index64=False,
                max_blocks=0, arch=DEFAULT_ARCH, sanitize=False):
    """(grad_x, grad_weight, grad_bias, Traffic) of the backward block programs run on the CPU
    (sanitize: as for emulate_fwd). A two-pass plan launches BwdRho, BwdMaps, BwdMain and DwReduce;
    `rows` then sets BwdMaps' map rows per block too (Traffic.launches[1])."""
    dx, dw, db, t = torch.ops.sam_fused._emulate_bwd(grad_out, x, weight.detach(),
                                                     None if bias is None else bias.detach(), pooled, pool,
                                                     return_map, variant, rows, threads, index64, max_blocks, arch,
                                                     sanitize)
    return dx, dw, db, decode(t)


def emulate_pointwise_fwd(x, y, max_blocks=0, sanitize=False):
    """(out, Traffic) of the point-wise forward block program (csrc/block/pointwise.h) run on
    the CPU: out = x * sigmoid(y). Traffic slots are POINTWISE_SLOTS; its plan fields: rows =
    elements per block, blocks = grid, vec, threads. max_blocks, sanitize: as for emulate_fwd."""
    out, t = torch.ops.sam_fused._emulate_pointwise_fwd(x, y, max_blocks, sanitize)
    return out, decode(t, POINTWISE_SLOTS)


def emulate_pointwise_bwd(grad, x, y, max_blocks=0, sanitize=False):
    """(grad_x, grad_y, Traffic) of the point-wise backward block program run on the CPU (as
    emulate_pointwise_fwd)."""
    dx, dy, t = torch.ops.sam_fused._emulate_pointwise_bwd(grad, x, y, max_blocks, sanitize)
    return dx, dy, decode(t, POINTWISE_SLOTS)


PLANTED_BUGS = ("missing_barrier", "shared_write_write", "global_blocks", "global_threads", "shared_bounds",
                "global_bounds", "uninit", "divergent_barrier", "barrier_in_phase", "copy_not_waited",
                "chunk_not_waited", "global_uninit", "global_cross_block", "misaligned_vector")


def run_planted_bug(bug):
    """Output of a tiny block program with one planted bug (PLANTED_BUGS, or "clean") run with
    the sanitizer on: raises the sanitizer's RuntimeError unless clean."""
    return torch.ops.sam_fused._emulate_planted_bug(bug)


@dataclass(frozen=True)
class BankSite:
    """Shared-memory wavefronts of one element access of a phase's block buffers, summed over the
    warps and blocks an audit ran: passes taken, the ideal (its bytes / 128 per lane group), and
    warp-wide instructions."""
    passes: int
    ideal: int
    instructions: int

    @property
    def excess(self) -> float:
        return self.passes / self.ideal if self.ideal else 1.0


def bank_audit(fn) -> dict[str, BankSite]:
    """Runs fn (emulated launches) under a bank audit (csrc/block/ctx_cpu.h BankAudit): the bank
    conflicts of the element accesses of the block buffers, which the traffic counts leave out,
    keyed "file:line#k" (the phase's each_thread, its k-th element access). Lanes that diverge can
    pair accesses of different instructions: read a site's excess against the code."""
    torch.ops.sam_fused._bank_audit(True)
    try:
        fn()
    finally:
        text = torch.ops.sam_fused._bank_audit(False)
    sites = {}
    for line in text.splitlines():
        site, passes, ideal, instructions = line.split()
        sites[site] = BankSite(int(passes), int(ideal), int(instructions))
    return sites


def plan(shape, dtype, pool, kernel, backward, channels_last=False, return_map=False, arch=DEFAULT_ARCH, variant=0,
         rows=0, threads=0):
    """(Traffic with no counts, index64) of the launches the op would make for a call of this
    shape, planned without allocating anything."""
    t, index64 = torch.ops.sam_fused._emulate_plan(list(shape), dtype, pool, kernel[0], kernel[1], channels_last,
                                                   return_map, backward, variant, rows, threads, arch)
    return decode_plan(t.tolist()), index64


def emulated_results(x, weight, bias, pool, return_map, grad_out, **kw):
    """Output and gradients in the dict form of `helpers.forward_backward`, plus the pooled
    maps and the forward and backward Traffic."""
    out, pooled, tf = emulate_fwd(x, weight, bias, pool, return_map, **kw)
    dx, dw, db, tb = emulate_bwd(grad_out, x, weight, bias, pooled, pool, return_map, **kw)
    res = {"out": out, "x": dx, "weight": dw}
    if bias is not None:
        res["bias"] = db
    return res, pooled, tf, tb
