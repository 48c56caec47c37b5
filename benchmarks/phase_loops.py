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
# conv tap of one pixel, "pixel" = one pixel, "partial" = one partial merged or summed, "step" =
# one shuffle step of a warp's butterfly.
# SASS addresses are those of the sm_90 code (NCHW, int32; "f32" float, "bf16" bfloat16) of the
# build the table was read from (block programs with cp.async staging, for_channels and
# stream_tile_vectors). Where a loop has paths with different instruction counts, instr is the
# path the benchmark plans take (said in why).
ALL = 1 << 16  # flight of a loop that has every load of the thread in flight at once (cp.async)

LOOPS = {
    # (kernel, loop): Loop(flight (fp32, 16-bit), instructions per item (fp32, 16-bit), where, why)
    ("FwdMain", "stage_x_tile.weights"): Loop(
        (1, 1), (18, 20), "common.h:load_weights",
        "one weight per thread, its LDG then STS: one round trip (f32 0x04a0, bf16 0x04b0)"),
    ("FwdMain", "stage_x_tile"): Loop(
        (ALL, ALL), (30, 30), "common.h:for_tile_vectors (copy_vec)",
        "vector: one LDGSTS.E.BYPASS.128 per iteration, nothing waits on it until copy_wait's DEPBAR: "
        "all of a thread's copies in flight; 30 instructions incl. the k / L division (f32 0x0b50, bf16 0x14a0)"),
    ("FwdMain", "pool_rows"): Loop(
        (8, 8), (8, 9), "fwd.h:pool_visit (for_channels)",
        "channel: kChannelUnroll = 8 loads before the first use; staged tile 63 / 71 instructions per 8 "
        "(LDS, f32 0x3220, bf16 0x3ba0), halo 66 / 74 (LDG.E, f32 0x2bb0, bf16 0x34d0)"),
    ("FwdMain", "pool_rows.merge"): Loop(
        (1, 1), (6, 6), "common.h:channel_reduce (merge)",
        "partial: one thread per pixel, 16 LDS.64 + FADD per 100 instructions (f32 0x39f0, bf16 0x43c0)"),
    ("FwdMain", "pool_rows_two_pass"): Loop(
        (4, 4), (52, 52), "fwd.h:pool_rows (two-pass branch)",
        "element: 4 LDG.E per unrolled iteration, two integer divisions each (f32 0x1690, bf16 0x1f70)"),
    ("FwdMain", "sigmoid_tile"): Loop(
        (1, 1), (17, 17), "fwd.h:sigmoid_tile (conv_pixel)",
        "tap: bounds checks, LDS, FFMA; 7 taps per 124 instructions (f32 0x5200, bf16 0x5b20)"),
    ("FwdMain", "write_out_tile"): Loop(
        (4, 4), (58, 80), "fwd.h:write_out_tile (stream_tile_vectors)",
        "vector, staged tile: kStreamUnroll = 4 LDS.128 then 4 x (sig LDS, FMUL, STG.E.128); 232 / 319 "
        "instructions per 4, the tile_vector k / L division again in the finish (f32 0x86e0, bf16 0x8c00)"),
    ("FwdMain", "write_out_tile.global"): Loop(
        (4, 4), (90, 113), "fwd.h:write_out_tile (stream_tile_vectors)",
        "vector, two pass: 4 LDG.E.128 (a k / L division each) then 4 STG.E.128; 362 / 451 per 4 "
        "(f32 0x86e0, bf16 0x8c00)"),
    ("FwdPool", "pool_visit"): Loop(
        (8, 8), (8.25, 9.25), "fwd.h:pool_visit (for_channels, in FwdPool)",
        "channel: 8 LDG.E before the first use, 66 / 74 instructions per 8 (f32 0x09c0, bf16 0x0930)"),
    ("FwdPool", "pool_visit.merge"): Loop(
        (1, 1), (6, 6), "common.h:channel_reduce (merge)",
        "partial: as FwdMain's merge (f32 0x11c0, bf16 0x1190)"),
    ("BwdMain", "stage_inputs.weights"): Loop(
        (1, 1), (19, 21), "common.h:load_weights",
        "one weight per thread, its LDG then STS: one round trip (f32 0x0510, bf16 0x04c0)"),
    ("BwdMain", "stage_inputs"): Loop(
        (ALL, ALL), (30, 31), "common.h:for_tile_vectors (copy_vec)",
        "vector: grad_out tile by LDGSTS.E.BYPASS.128, all of a thread's copies in flight until "
        "copy_wait (f32 0x0bf0, bf16 0x14d0)"),
    ("BwdMain", "stage_inputs.pooled"): Loop(
        (4, 4), (52, 52), "bwd.h:stage_inputs (pooled rows)",
        "element: 4 LDG.E per unrolled iteration, integer divisions (f32 0x17f0, bf16 0x2070)"),
    ("BwdMain", "stage_inputs.delta_rows"): Loop(
        (4, 1), (28, 29), "bwd.h:stage_inputs (rho, argmax rows)",
        "element: f32 unrolled 4, 113 instructions per 4 (0x2b70); bf16 not unrolled (0x2e90)"),
    ("BwdMain", "rho_rows_from_x"): Loop(
        (4, 4), (18, 20), "bwd.h:rho_visit (for_channels)",
        "channel: U = 4 channels (8 loads: x by LDG.E, g by LDS from the staged tile) before the first "
        "FFMA; 71 / 79 instructions per 4 without argmax (HAR), 123 / 131 with (f32 0x4630, bf16 0x4530; "
        "halo rows from global: 0x3a20, 0x3880, 1-2 more per channel)"),
    ("BwdMain", "rho_rows_from_x.merge"): Loop(
        (1, 1), (31, 31), "common.h:channel_reduce (merge, argmax)",
        "partial: 126 instructions per 4 merges with argmax (f32 0x5310, bf16 0x5280)"),
    ("BwdMain", "sigmoid_delta_rows"): Loop(
        (1, 1), (17, 17), "bwd.h:sigmoid_delta_rows (conv_pixel)",
        "tap: 7 taps per 120 instructions (f32 0x6a70, bf16 0x6920)"),
    ("BwdMain", "gamma"): Loop(
        (1, 1), (17, 17), "bwd.h:gamma_and_weight_grad (conv_transpose_pixel)",
        "tap: 7 taps per 123 instructions (f32 0x7ad0, bf16 0x7950)"),
    ("BwdMain", "weight_grad_partials"): Loop(
        (1, 1), (54, 49), "bwd.h:weight_grad_partials",
        "pixel: a warp per entry, lanes stride the tile pixels; unrolled 4 but each pixel's LDS delta, "
        "LDS pooled, FMUL, FADD waits on the last (one pixel per round trip); 215 / 197 instructions per "
        "4 incl. the i / W division (f32 0x9fc0, bf16 0x9d10)"),
    ("BwdMain", "weight_grad_partials.tree"): Loop(
        (1, 1), (25, 25), "bwd.h:weight_grad_partials (warp_reduce)",
        "step: 5 dependent SHFL.BFLY + FADD, lane 0's STG; with the round's entry -> tap setup (three "
        "divisions) about 125 instructions per round of entries (f32 0x8de0 setup, 0xad40 butterfly)"),
    ("BwdMain", "write_dx_tile"): Loop(
        (4, 4), (113, 112), "bwd.h:write_dx_tile (stream_tile_vectors)",
        "vector, staged grad_out: 4 LDS.128 (or LDG.E.128) then 4 x (s, gamma LDS, FMUL, FADD, STG.E.128); "
        "129 / 144 per vector, 16 / 32 fewer without the max map (HAR) (f32 0xccb0, bf16 0xc690)"),
    ("BwdMain", "write_dx_tile.global"): Loop(
        (4, 4), (129, 180), "bwd.h:write_dx_tile (stream_tile_vectors)",
        "vector, two pass: 4 LDG.E.128 then 4 finishes with the max map's argmax test (CBAM); 517 / 721 "
        "per 4 (f32 0xccb0, bf16 0xc690)"),
    ("BwdRho", "rho_visit"): Loop(
        (4, 4), (26, 28), "bwd.h:rho_visit (for_channels, in BwdRho)",
        "channel: U = 4 channels, 8 LDG.E (x and g) before the first FFMA; 105 / 111 per 4 with argmax "
        "(CBAM), 17 / 19 per channel without (f32 0x09a0, bf16 0x0980)"),
    ("BwdRho", "rho_visit.merge"): Loop(
        (1, 1), (30, 30), "common.h:channel_reduce (merge, argmax)",
        "partial: LDS.128 partials, 120 instructions per 4 merges (f32 0x14c0, bf16 0x1500)"),
    ("DwReduce", "sum_partials"): Loop(
        (16, 16), (3.5, 3.5), "bwd.h:DwReduce",
        "partial: lanes stride the blocks, unrolled 16 (16 LDG.E, 55 instructions, 0x0730)"),
}

# The loops each kernel runs, in order: every one must have a LOOPS entry (tests check both ways).
KERNEL_LOOPS = {
    "FwdMain": ("stage_x_tile.weights", "stage_x_tile", "pool_rows", "pool_rows.merge", "pool_rows_two_pass",
                "sigmoid_tile", "write_out_tile", "write_out_tile.global"),
    "FwdPool": ("pool_visit", "pool_visit.merge"),
    "BwdMain": ("stage_inputs.weights", "stage_inputs", "stage_inputs.pooled", "stage_inputs.delta_rows",
                "rho_rows_from_x", "rho_rows_from_x.merge", "sigmoid_delta_rows", "gamma", "weight_grad_partials",
                "weight_grad_partials.tree", "write_dx_tile", "write_dx_tile.global"),
    "BwdRho": ("rho_visit", "rho_visit.merge"),
    "DwReduce": ("sum_partials",),
}
KERNELS = tuple(KERNEL_LOOPS)
