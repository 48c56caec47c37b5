"""The loops of the CUDA block programs as the time model sees them (benchmarks/phase_model.py,
docs/design.md §3): for every loop, the loads a thread keeps in flight and the instructions per
item, read off the sm_90 SASS of the built library. Edit an entry when its loop changes (more
unrolling, cp.async, a new phase); tests/test_phase_model.py fails when a phase of FwdMain::run or
BwdMain::run has no entry.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Loop:
    """A loop of a block program. flight: independent global (or shared) loads a thread keeps in
    flight, counted in items; instr: SASS instructions per item. Each is (fp32 / fp64, 16-bit)
    since nvcc unrolls the 16-bit loops differently."""
    flight: tuple[int, int]
    instr: tuple[float, float]
    where: str  # file:function of the loop in csrc/block
    why: str    # one line: what the SASS shows


# Key: (kernel, "phase" or "phase.loop"). Items: "vector" = one V-element access of an x-shaped
# tensor, "channel" = one channel element of a pixel, "element" = one map element, "tap" = one
# conv tap of one pixel, "pixel" = one pixel, "partial" = one partial merged or summed.
# SASS addresses are those of the sm_90 code (float, NCHW, int32) of the build the table was read from.
LOOPS = {
    # (kernel, loop): Loop(flight (fp32, 16-bit), instructions per item (fp32, 16-bit), where, why)
    ("FwdMain", "stage_x_tile.weights"): Loop(
        (1, 1), (18, 20), "common.h:load_weights", "one weight per thread, its LDG then STS: one round trip"),
    ("FwdMain", "stage_x_tile"): Loop(
        (4, 4), (26, 26), "common.h:for_tile_vectors (copy_vec)",
        "vector: nvcc unrolls the copy by 4, 4 LDG.E.128 then 4 STS.128 (0x1980)"),
    ("FwdMain", "pool_rows"): Loop(
        (4, 1), (19, 21), "fwd.h:pool_visit (in channel_reduce)",
        "channel: fp32 unrolled 4, 4 predicated LDG/LDS (0x4540); bf16 not unrolled (0x3e30)"),
    ("FwdMain", "pool_rows.merge"): Loop(
        (1, 1), (6, 6), "common.h:channel_reduce (merge)",
        "partial: one thread per pixel, 16 LDS.64 + FADD per 100 instructions (0x4c00)"),
    ("FwdMain", "pool_rows_two_pass"): Loop(
        (4, 4), (52, 52), "fwd.h:pool_rows (two-pass branch)",
        "element: 4 LDG.E per unrolled iteration, two integer divisions each (0x28f0)"),
    ("FwdMain", "sigmoid_tile"): Loop(
        (1, 1), (17, 17), "fwd.h:sigmoid_tile (conv_pixel)",
        "tap: bounds checks, LDS, FFMA; 7 taps per 122 instructions (0x6270)"),
    ("FwdMain", "write_out_tile"): Loop(
        (1, 1), (44, 66), "fwd.h:write_out_tile",
        "vector: not unrolled, LDS.128 (two pass: LDG.E.128) then STG.E.128 (0x8da0)"),
    ("FwdPool", "pool_visit"): Loop(
        (4, 1), (9, 14), "fwd.h:FwdPool (pool_visit in channel_reduce)",
        "channel: fp32 unrolled 4, 4 LDG.E (0x0ed0); bf16 one LDG.E.U16 per iteration (0x0a00)"),
    ("FwdPool", "pool_visit.merge"): Loop(
        (1, 1), (6, 6), "common.h:channel_reduce (merge)", "partial: as FwdMain's merge (0x1370)"),
    ("BwdMain", "stage_inputs.weights"): Loop(
        (1, 1), (18, 20), "common.h:load_weights", "one weight per thread, its LDG then STS: one round trip"),
    ("BwdMain", "stage_inputs"): Loop(
        (4, 4), (26, 26), "common.h:for_tile_vectors (copy_vec)",
        "vector: grad_out copy unrolled 4, 4 LDG.E.128 then 4 STS.128 (0x19d0)"),
    ("BwdMain", "stage_inputs.pooled"): Loop(
        (4, 4), (52, 52), "bwd.h:stage_inputs (pooled rows)",
        "element: 4 LDG.E per unrolled iteration, integer divisions (0x2960)"),
    ("BwdMain", "stage_inputs.delta_rows"): Loop(
        (4, 1), (24, 29), "bwd.h:stage_inputs (rho, argmax rows)",
        "element: fp32 unrolled 4 (0x3c00); bf16 not unrolled (0x37e0)"),
    ("BwdMain", "rho_rows_from_x"): Loop(
        (1, 1), (40, 44), "bwd.h:rho_visit (in channel_reduce)",
        "channel: unrolled 4, but each FFMA waits for its x (and g) before the next LDG: the runtime "
        "from_tile branch sits between (0x4c80)"),
    ("BwdMain", "rho_rows_from_x.merge"): Loop(
        (1, 1), (31, 31), "common.h:channel_reduce (merge, argmax)",
        "partial: 124 instructions per 4 merges with argmax (0x6160)"),
    ("BwdMain", "sigmoid_delta_rows"): Loop(
        (1, 1), (17, 17), "bwd.h:sigmoid_delta_rows (conv_pixel)", "tap: 7 taps per 119 instructions (0x77d0)"),
    ("BwdMain", "gamma"): Loop(
        (1, 1), (17, 17), "bwd.h:gamma_and_weight_grad (conv_transpose_pixel)",
        "tap: 7 taps per 121 instructions (0x87c0)"),
    ("BwdMain", "weight_grad"): Loop(
        (1, 1), (46, 46), "bwd.h:gamma_and_weight_grad (partials loop)",
        "pixel: taps+1 threads each loop over every tile pixel, 182 instructions per 4 pixels incl. an "
        "integer division (0xa030)"),
    ("BwdMain", "write_dx_tile"): Loop(
        (1, 1), (83, 135), "bwd.h:write_dx_tile",
        "vector: not unrolled, LDS.128 (two pass: LDG.E.128) then STG.E.128 (0xcd10)"),
    ("BwdRho", "rho_visit"): Loop(
        (16, 1), (8, 31), "bwd.h:BwdRho (rho_visit in channel_reduce)",
        "channel: fp32 unrolled 16, 32 LDG.E before the first FFMA (0x18a0); bf16 one channel (x and g) "
        "per iteration (0x0930)"),
    ("BwdRho", "rho_visit.merge"): Loop(
        (1, 1), (26, 26), "common.h:channel_reduce (merge, argmax)",
        "partial: LDS.128 partials, 102 instructions per 4 merges (0x2d40)"),
    ("DwReduce", "sum_partials"): Loop(
        (16, 16), (3.5, 3.5), "bwd.h:DwReduce", "partial: lanes stride the blocks, unrolled 16 (16 LDG.E, 0x0730)"),
}

# The loops each kernel runs, in order: every one must have a LOOPS entry (tests check both ways).
KERNEL_LOOPS = {
    "FwdMain": ("stage_x_tile.weights", "stage_x_tile", "pool_rows", "pool_rows.merge", "pool_rows_two_pass",
                "sigmoid_tile", "write_out_tile"),
    "FwdPool": ("pool_visit", "pool_visit.merge"),
    "BwdMain": ("stage_inputs.weights", "stage_inputs", "stage_inputs.pooled", "stage_inputs.delta_rows",
                "rho_rows_from_x", "rho_rows_from_x.merge", "sigmoid_delta_rows", "gamma", "weight_grad",
                "write_dx_tile"),
    "BwdRho": ("rho_visit", "rho_visit.merge"),
    "DwReduce": ("sum_partials",),
}
KERNELS = tuple(KERNEL_LOOPS)
