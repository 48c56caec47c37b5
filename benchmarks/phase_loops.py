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
    since nvcc unrolls the 16-bit loops differently. Conv loops (item = tap) also cost `row`
    instructions per kernel row (slot, kernel row: the kw loop's setup and unroll remainder) and
    `pixel` per pixel (its index, window test, sigmoid, stores)."""
    flight: tuple[int, int]
    instr: tuple[float, float]
    where: str  # file:function of the loop in csrc/block
    why: str    # one line: what the SASS shows
    row: tuple[float, float] = (0.0, 0.0)
    pixel: tuple[float, float] = (0.0, 0.0)


# Key: (kernel, "phase" or "phase.loop"). Items: "vector" = one V-element access of an x-shaped
# tensor, "channel" = one channel element of a pixel, "element" = one map element, "tap" = one
# conv tap of one pixel, "pixel" = one pixel, "partial" = one partial merged or summed, "step" =
# one shuffle step of a warp's butterfly.
# SASS addresses are those of the sm_90 code (NCHW, int32; "f32" float, "bf16" bfloat16) of the
# build the table was read from (halo rows reduced while the tile's copies land, conv taps
# unchecked inside the map, weight-gradient partials without divisions, rho kChannelUnroll
# channels ahead). BwdMain's stage_inputs and rho entries were re-read after the x tile staging
# and kRhoUnroll (their loops moved; the other BwdMain addresses are of the build before, whose
# loops these changes left as they were). Where a loop has paths with different instruction counts, instr is the path
# the benchmark plans take (said in why). Conv loops: ".border" is the checked path of the
# pixels whose window crosses the map's edge; row is read for kw = 7 (CBAM; kw = 1, UCI-HAR,
# costs 8-11 fewer per row).
ALL = 1 << 16  # flight of a loop that has every load of the thread in flight at once (cp.async)

_CONV_IN = "tap: window inside the map, unchecked LDS + LDS + FFMA; kw loop unrolled 16 / 8 / 4 (4.1 / 5 per tap), " \
    "a kw = 7 row 65 instructions with its setup and 3-tap remainder, kw = 1 27"
_CONV_BORDER = "tap, window crossing the border: 64-bit bounds tests per tap, 48 per 4 taps, a kw = 7 row 125"

LOOPS = {
    # (kernel, loop): Loop(flight (fp32, 16-bit), instructions per item (fp32, 16-bit), where, why)
    ("FwdMain", "stage_x_tile.weights"): Loop(
        (1, 1), (18, 20), "common.h:load_weights",
        "one weight per thread, its LDG then STS: one round trip (f32 0x0460, bf16 0x0430)"),
    ("FwdMain", "stage_x_tile"): Loop(
        (ALL, ALL), (31, 33), "common.h:for_tile_vectors (copy_vec)",
        "vector: one LDGSTS.E.BYPASS.128 per iteration, nothing waits on it until run's copy_wait: all of a "
        "thread's copies in flight; 31 / 33 instructions incl. the k / L division (f32 0x07e0, bf16 0x1550)"),
    ("FwdMain", "stage_x_tile.runs"): Loop(
        (ALL, ALL), (24, 25), "common.h:stage_tile_chunks (NCHW chunks)",
        "part: 8 lanes per part of up to 8 vectors of one channel run of a chunk, one LDGSTS.E.BYPASS.128 per "
        "lane, (run, part) stepped without a division; 24 / 25 per part (f32 0x0c30, bf16 0x1780)"),
    ("FwdMain", "pool_halo_rows"): Loop(
        (8, 8), (7.25, 8.25), "fwd.h:pool_visit (for_channels, pool_halo_rows)",
        "channel, mean+max: halo rows from global/L2 while the tile's copies land, 8 LDG.E before the first use, "
        "58 / 66 per 8 (f32 0x1530, bf16 0x1ec0; the pool a template argument of the loop)"),
    ("FwdMain", "pool_halo_rows.mean"): Loop(
        (8, 8), (4.4, 5.25), "fwd.h:pool_visit (for_channels, pool_halo_rows)",
        "channel, mean only: the loop without the max's FSETP/PLOP3/FSEL, 35 / 42 per 8 (f32 0x1ae0, bf16 0x2510)"),
    ("FwdMain", "pool_halo_rows.merge"): Loop(
        (1, 1), (6, 6), "common.h:channel_reduce (merge)",
        "partial: one thread per pixel, 16 LDS.64 + FADD per 100 instructions (f32 0x1d00, bf16 0x2780)"),
    ("FwdMain", "pool_rows"): Loop(
        (8, 8), (6.9, 7.9), "fwd.h:pool_visit (for_channels)",
        "channel, mean+max: tile rows only, kChannelUnroll = 8 LDS from the staged tile before the first use, "
        "55 / 63 per 8 (f32 0x6890, bf16 0x75a0; unstaged rows from global 65 / 73)"),
    ("FwdMain", "pool_rows.mean"): Loop(
        (8, 8), (3.9, 4.9), "fwd.h:pool_visit (for_channels)",
        "channel, mean only: 8 LDS + 8 FADD and the addressing, 31 / 39 per 8 (f32 0x6df0, bf16 0x7b90); "
        "before the pool became a template argument every pool ran the max too, 63 / 71"),
    ("FwdMain", "pool_rows.merge"): Loop(
        (1, 1), (6, 6), "common.h:channel_reduce (merge)",
        "partial: 100 instructions per 16 merges (f32 0x5be0, bf16 0x6790)"),
    ("FwdMain", "pool_rows.vectors"): Loop(
        (4, 2), (7.25, 21.5), "common.h:channel_sum_vectors (fwd.h pool_tile_vectors)",
        "channel vector: a mean pool by 16-byte vectors (Plan::sum_vectors), kSumUnroll16 = 4 / 2 LDS.128 before "
        "the first FADD, 29 per 4 (f32 0x6ed0) / 43 per 2 (bf16 0x6ec0: widen, a shift or a mask per element)"),
    ("FwdMain", "pool_rows.vectors.merge"): Loop(
        (1, 1), (6, 6), "common.h:channel_sum_vectors (merge)",
        "partial: LDS + FADD per slot, 6 (f32 0x73f0, bf16 0x7600); pixel: its index (a shift and a mask), "
        "the division by C and the store, 35",
        pixel=(35, 35)),
    ("FwdMain", "pool_rows_two_pass"): Loop(
        (4, 4), (52, 52), "fwd.h:pool_rows (two-pass branch)",
        "element: 4 LDG.E per unrolled iteration, two integer divisions each (f32 0x3900, bf16 0x4390)"),
    ("FwdMain", "sigmoid_tile"): Loop(
        (1, 1), (5, 5), "fwd.h:sigmoid_tile (conv_pixel, qin)",
        _CONV_IN + "; the pixels not in a blocked group (map border; kw without a blocked conv). pixel: "
        "window_inside, sigmoid, s STS", row=(30, 30), pixel=(140, 140)),
    ("FwdMain", "sigmoid_tile.block"): Loop(
        (1, 1), (46, 46), "common.h:conv_row_block (sigmoid_tile)",
        "kernel row of a kConvBlock = 4 pixel group, kw = 7: 3 LDS.128 of the pooled window (VectorRowWindow; "
        "10 scalar LDS before) + 7 weight LDS + 28 FFMA, the row loop not unrolled, 46 per row (f32 0xec50, "
        "bf16 0xf230; 53 before); pixel: sigmoid (MUFU.EX2, MUFU.RCP) 24, s STS, the "
        "group's index, window tests and slot loop (260 per group less the 65 of its rows' loop) / 4", pixel=(49, 49)),
    ("FwdMain", "sigmoid_tile.block_border"): Loop(
        (1, 1), (91, 90), "fwd.h:sigmoid_tile (border groups, conv_row_block)",
        "kernel row of a border group (kConvBlock = 4 pixels whose windows cross the map's edge), kw = 7: 10 "
        "pooled LDS, each behind its column's and the row's tests (22 ISETP), + 7 weight LDS + 28 FFMA, 91 per row "
        "(f32 0x10300, bf16 0x10dd0; conv_pixel with qat: 12 a tap and 41 a row, about 125 a pixel and row); "
        "pixel: sigmoid, s STS, the group's index and window tests (307 per group less the 103 of its rows' "
        "loop and one peeled row) / 4", pixel=(28, 28)),
    ("FwdMain", "sigmoid_tile.column"): Loop(
        (1, 1), (157, 157), "common.h:conv_column_block (sigmoid_tile)",
        "group of kConvBlock = 4 pixels of one column, 3 x 1 kernel: the group's index, 4 sigmoids (MUFU.EX2, "
        "MUFU.RCP) and s STS, 157 (f32 0xe0d0, bf16 0xe700); row = one slot: 6 pooled LDS + 3 weight LDS + "
        "12 FFMA, 33", row=(33, 33)),
    ("FwdMain", "sigmoid_tile.pixels"): Loop(
        (1, 1), (40, 40), "fwd.h:sigmoid_tile (per-pixel loop)",
        "pixel: one per thread (coalesced STG): i / W, the blocked-group test, one pass: P x (LDS, STG) of the "
        "pooled maps saved for the backward"),
    ("FwdMain", "sigmoid_tile.border"): Loop(
        (1, 1), (12, 12), "fwd.h:sigmoid_tile (conv_pixel, qat)",
        _CONV_BORDER + " (f32 0xa3a0, bf16 0xafc0)", row=(41, 41)),
    ("FwdMain", "write_out_tile"): Loop(
        (4, 4), (59, 80), "fwd.h:write_out_tile (stream_tile_vectors)",
        "vector, staged tile: kStreamUnroll = 4 LDS.128 then 4 x (sig LDS, FMUL, STG.E.128); the loop holds both "
        "paths, 365 / 453 per 4, the staged one skips each vector's 32 global-address instructions "
        "(f32 0xd6c0, bf16 0xdfc0)"),
    ("FwdMain", "write_out_tile.global"): Loop(
        (4, 4), (90, 113), "fwd.h:write_out_tile (stream_tile_vectors)",
        "vector, two pass: 4 LDG.E.128 (a k / L division each) then 4 STG.E.128; 361 / 452 per 4 "
        "(f32 0xd6c0, bf16 0xdfc0)"),
    ("FwdPool", "pool_visit"): Loop(
        (8, 8), (7.25, 8.25), "fwd.h:pool_visit (for_channels, in FwdPool)",
        "channel, mean+max (the two-pass plans of the benchmarks are CBAM's): 8 LDG.E before the first use, "
        "58 instructions per 8 (f32 0x0930; bf16 read as FwdMain's global loop, 66); mean only 35"),
    ("FwdPool", "pool_visit.merge"): Loop(
        (1, 1), (6, 6), "common.h:channel_reduce (merge)",
        "partial: as FwdMain's merge (f32 0x11c0, bf16 0x1190)"),
    ("BwdMain", "stage_inputs.weights"): Loop(
        (1, 1), (18, 20), "common.h:load_weights",
        "one weight per thread, its LDG then STS: one round trip (f32 0x0580, bf16 0x0580)"),
    ("BwdMain", "stage_inputs"): Loop(
        (ALL, ALL), (41, 42), "common.h:for_tile_vectors (copy_vec)",
        "tile vector: grad_out's LDGSTS.E.BYPASS.128 and, predicated on Plan::staged_x, x's, all of a thread's "
        "copies in flight until run's copy_wait; 41 / 42 per vector either way (f32 0x4790, bf16 0x6460)"),
    ("BwdMain", "stage_inputs.runs"): Loop(
        (ALL, ALL), (37, 37), "common.h:stage_tile_chunks (NCHW chunks)",
        "part: as FwdMain's, grad_out's LDGSTS.E.BYPASS.128 and, predicated on Plan::staged_x, x's per lane; "
        "37 per part (f32 0x4bf0, bf16 0x6600)"),
    ("BwdMain", "stage_inputs.pooled"): Loop(
        (4, 4), (52, 52), "bwd.h:stage_inputs (pooled rows)",
        "element: 4 LDG.E per unrolled iteration, integer divisions; one pass, while the tile's copies land "
        "(f32 0x16e0, bf16 0x2020)"),
    ("BwdMain", "stage_tile_maps"): Loop(
        (4, 4), (32.5, 32.5), "bwd.h:stage_tile_maps",
        "pixel, two pass: s, gamma of each slot and the argmax from the workspace (LDG.E), unrolled 4: 16 "
        "LDG before the STS, 130 instructions per 4 (f32 0x0ce0, bf16 0x0ce0)"),
    ("BwdMain", "rho_halo_rows"): Loop(
        (8, 8), (11.75, 13.75), "bwd.h:rho_visit (for_channels, rho_halo_rows)",
        "channel: halo rows, x and g by LDG.E from L2 while the tile's copies land, U = 8 channels (16 loads) "
        "before the first FFMA, the loop without the argmax (a template argument; halo rows never take it): "
        "94 / 110 per 8 (f32 0x8240, bf16 0x9780)"),
    ("BwdMain", "rho_halo_rows.merge"): Loop(
        (1, 1), (31, 31), "common.h:channel_reduce (merge, argmax)",
        "partial: 124 instructions per 4 merges with argmax (f32 0x4af0, bf16 0x4cd0)"),
    ("BwdMain", "rho_rows_from_x"): Loop(
        (16, 8), (8.5, 11.25), "bwd.h:rho_visit (for_channels)",
        "channel: tile rows only, x by LDG.E, g by LDS from the staged tile, fp32 kRhoUnroll = 16 channels "
        "(16-bit kChannelUnroll = 8) before the first FFMA; without the argmax (HAR, mean pool) 136 per 16 "
        "(f32 0xf150) / 90 per 8 (bf16 0x10210), with it 381 per 16 / 211 per 8"),
    ("BwdMain", "rho_rows_staged"): Loop(
        (8, 8), (8.6, 10.6), "bwd.h:rho_visit (for_channels, x and g staged)",
        "channel: tile rows with both tiles staged (Plan::staged_x), U = 8 channels (16 LDS) before the first "
        "FFMA; without the argmax (HAR) 69 / 85 per 8 (f32 0xcf20, bf16 0xe960), with it 191 / 207"),
    ("BwdMain", "rho_rows_staged.merge"): Loop(
        (1, 1), (31, 31), "common.h:channel_reduce (merge, argmax)",
        "partial: as rho_rows_from_x's merge"),
    ("BwdMain", "rho_rows_staged.vectors"): Loop(
        (4, 2), (9.25, 31.5), "common.h:channel_sum_vectors (bwd.h rho_tile_vectors, x staged)",
        "channel vector: rho by 16-byte vectors of both tiles (Plan::sum_vectors), kSumUnroll16 = 4 / 2 channels "
        "(8 / 4 LDS.128) before the first FFMA, 37 per 4 (f32 0xbf20) / 63 per 2 (bf16 0xc6e0: widen, a shift "
        "or a mask per element; fp16 HADD2.F32, also 63)"),
    ("BwdMain", "rho_rows_staged.vectors.merge"): Loop(
        (1, 1), (6, 6), "common.h:channel_sum_vectors (merge)",
        "partial: LDS + FADD per slot, 6 (f32 0xc4d0, bf16 0xcff0); pixel: its index and the store, 22",
        pixel=(22, 22)),
    ("BwdMain", "rho_rows_from_x.vectors"): Loop(
        (4, 2), (10.25, 35.5), "common.h:channel_sum_vectors (bwd.h rho_tile_vectors, x from global)",
        "channel vector: x by LDG.E.128, g by LDS.128 from the staged tile, 4 / 2 channels ahead, 41 per 4 "
        "(f32 0xd0a0) / 71 per 2 (bf16 0xda10)"),
    ("BwdMain", "rho_rows_from_x.vectors.merge"): Loop(
        (1, 1), (6, 6), "common.h:channel_sum_vectors (merge)",
        "partial: as rho_rows_staged.vectors.merge (f32 0xd6e0, bf16 0xe400)",
        pixel=(22, 22)),
    ("BwdMain", "rho_rows_from_x.merge"): Loop(
        (1, 1), (31, 31), "common.h:channel_reduce (merge, argmax)",
        "partial: 124 instructions per 4 merges with argmax (f32 0x8990, bf16 0x8d90)"),
    ("BwdMain", "sigmoid_delta_rows"): Loop(
        (1, 1), (5, 5), "bwd.h:sigmoid_delta_rows (conv_pixel, qin)",
        _CONV_IN + "; pixel: i / W, window_inside, sigmoid, delta, s STS (f32 0xa1e0 / 0xa850, bf16 0xa5e0 / "
        "0xac50)", row=(30, 30), pixel=(125, 125)),
    ("BwdMain", "sigmoid_delta_rows.border"): Loop(
        (1, 1), (12, 12), "bwd.h:sigmoid_delta_rows (conv_pixel, qat)",
        _CONV_BORDER + " (f32 0xade0, bf16 0xb1b0)", row=(41, 41)),
    ("BwdMain", "gamma"): Loop(
        (1, 1), (5, 5), "bwd.h:gamma_and_weight_grad (conv_transpose_pixel, din)",
        _CONV_IN + " (71 per 16 here); pixel: i / W, window_inside, both slots' setup, 2 STS (f32 0xbf80 / "
        "0xc670, bf16 0xc2c0 / 0xc9b0)", row=(30, 30), pixel=(113, 113)),
    ("BwdMain", "gamma.border"): Loop(
        (1, 1), (12, 12), "bwd.h:gamma_and_weight_grad (conv_transpose_pixel, dat)",
        _CONV_BORDER + " (f32 0xcad0, bf16 0xce10)", row=(41, 41)),
    ("BwdMain", "weight_grad_partials"): Loop(
        (4, 4), (23.5, 23.5), "bwd.h:weight_grad_partials",
        "pixel: a warp per tap group (a kernel row, kw known at compile time: 1 for UCI-HAR), lanes stride the "
        "tile pixels without divisions (row and column tracked for the border); unrolled 4 with the 8 LDS ahead "
        "of the FMUL/FADD chain: 94 instructions per 4 (f32 0x145f0, bf16 0x15bf0; kw = 7: 116 per pixel for "
        "7 taps, 0x17de0)"),
    ("BwdMain", "weight_grad_partials.tree"): Loop(
        (1, 1), (25, 25), "bwd_maps.h:store_weight_grad_partials (warp_reduce)",
        "step: 5 dependent SHFL.BFLY + FADD per sum of the group, lane 0's STG; with the round's group -> tap "
        "setup about 125 instructions per round for kw = 1 (f32 0x13a50, bf16 0x15040)"),
    ("BwdMain", "write_dx_tile"): Loop(
        (4, 4), (113, 112), "bwd.h:write_dx_tile (stream_tile_vectors)",
        "vector, staged grad_out: 4 LDS.128 (or LDG.E.128) then 4 x (s, gamma LDS, FMUL, FADD, STG.E.128); "
        "the loop holds both paths, the staged one skips the global addressing (f32 0x12260, bf16 0x123a0)"),
    ("BwdMain", "write_dx_tile.global"): Loop(
        (4, 4), (100, 151.5), "bwd.h:write_dx_tile (stream_tile_vectors)",
        "vector, two pass (run's own branch: no staged-tile path in the loop): 4 LDG.E.128 then 4 finishes, "
        "each element's s, gamma and argmax by LDS (CBAM); 401 / 606 per 4 (f32 0x2950, bf16 0x29d0)"),
    ("BwdMaps", "stage_padded_maps.weights"): Loop(
        (1, 1), (18, 20), "common.h:load_weights",
        "one weight per thread, its LDG then STS: one round trip (f32 0x03b0, bf16 0x03b0)"),
    ("BwdMaps", "stage_padded_maps"): Loop(
        (16, 16), (9.75, 9.75), "bwd_maps.h:fill_padded_units (stage_padded_maps)",
        "element: where W is a multiple of 4, a 16-byte unit of 4 values per loop trip, one cp.async "
        "(LDGSTS.E.BYPASS.128) or one STS.128 of zeros, the unit's position and source offset stepped "
        "without divisions: 35-39 instructions per unit (f32 0x0d80, 0x1530; one value a unit otherwise, "
        "33-37 per value); nothing waits in registers, so every copy is in flight (c4c9f91; 43 per value "
        "through registers at 3f28ae8)"),
    ("BwdMaps", "sigmoid_delta_maps"): Loop(
        (1, 1), (6.0, 6.0), "bwd_maps.h:sigmoid_delta_maps (conv_run_row)",
        "tap of a run of kMapRun = 4 pixels, kw = 7 unrolled (with_kernel_width): per kernel row 3 "
        "LDS.128 of the run's window and 2 of the row's weights, 28 FFMA; kernel rows unrolled 2 (84 "
        "instructions per 2 rows, f32 0x17a10; 7.8 per tap with scalar loads at 3f28ae8); pixel: per run, "
        "its division, 4 sigmoids, the deltas as vectors and the s STG.128, about 200 (estimate kept)",
        pixel=(200, 200)),
    ("BwdMaps", "gamma_maps"): Loop(
        (1, 1), (6.0, 6.0), "bwd_maps.h:gamma_maps (conv_run_row)",
        "tap of a run, kw = 7 unrolled: the window read from the vector it starts in, otherwise as "
        "sigmoid_delta_maps (84 per 2 kernel rows, f32 0x19100); pixel: per run, its division and per slot "
        "the gamma STG.128, about 84 (estimate kept)", pixel=(84, 84)),
    ("BwdMaps", "weight_grad_maps"): Loop(
        (8, 8), (10.75, 10.75), "bwd_maps.h:weight_grad_maps",
        "pixel: a warp per kernel row (kw = 7 known), lanes stride runs of kMapRun = 4 pixels in padded "
        "coordinates (the column tracked for the pad), 1 + 3 LDS.128 (deltas and the run's q window) and "
        "28 FFMA per run; unrolled 2 runs: 86 instructions per 8 pixels (f32 0x1aeb0; 208 per 16 with "
        "scalar loads at 3f28ae8)"),
    ("BwdMaps", "weight_grad_maps.tree"): Loop(
        (1, 1), (30, 30), "bwd_maps.h:store_weight_grad_partials (warp_reduce)",
        "step: 7 SHFL.BFLY + 7 FADD (the row's sums), lane 0's 7 STG and the round's group setup: about 150 "
        "instructions per round (f32 0x17b70, bf16 0x17b90)"),
    ("BwdRho", "rho_visit"): Loop(
        (8, 8), (23, 25), "bwd.h:rho_visit (for_channels, in BwdRho)",
        "channel: U = 8 channels, 16 LDG.E (x and g) before the first FFMA; with the argmax (CBAM) 183 per 8 "
        "(f32 0x09c0; bf16 estimated +16), without it 52"),
    ("BwdRho", "rho_visit.merge"): Loop(
        (1, 1), (30, 30), "common.h:channel_reduce (merge, argmax)",
        "partial: LDS.128 partials, 120 instructions per 4 merges (f32 0x1a70, bf16 0x1b90)"),
    ("BwdMain", "sum_partials"): Loop(
        (16, 16), (3.5, 3.5), "bwd.h:reduce_weight_grad",
        "partial: the two-pass BwdMain's first blocks sum the weight-gradient entries as DwReduce does (the "
        "same function: its loop, as read off DwReduce)"),
    ("DwReduce", "sum_partials"): Loop(
        (16, 16), (3.5, 3.5), "bwd.h:DwReduce",
        "partial: lanes stride the blocks, unrolled 16 (16 LDG.E, 55 instructions, 0x0730)"),
}

# The loops each kernel runs, in order: every one must have a LOOPS entry (tests check both ways).
KERNEL_LOOPS = {
    "FwdMain": ("stage_x_tile.weights", "stage_x_tile", "stage_x_tile.runs", "pool_halo_rows", "pool_halo_rows.mean",
                "pool_halo_rows.merge",
                "pool_rows", "pool_rows.mean",
                "pool_rows.merge", "pool_rows.vectors", "pool_rows.vectors.merge", "pool_rows_two_pass",
                "sigmoid_tile", "sigmoid_tile.block", "sigmoid_tile.block_border", "sigmoid_tile.border",
                "sigmoid_tile.column", "sigmoid_tile.pixels", "write_out_tile", "write_out_tile.global"),
    "FwdPool": ("pool_visit", "pool_visit.merge"),
    "BwdMain": ("stage_inputs.weights", "stage_inputs", "stage_inputs.runs", "stage_inputs.pooled", "stage_tile_maps",
                "rho_halo_rows", "rho_halo_rows.merge", "rho_rows_from_x", "rho_rows_from_x.merge",
                "rho_rows_from_x.vectors", "rho_rows_from_x.vectors.merge",
                "rho_rows_staged", "rho_rows_staged.merge", "rho_rows_staged.vectors", "rho_rows_staged.vectors.merge",
                "sigmoid_delta_rows", "sigmoid_delta_rows.border", "gamma", "gamma.border", "weight_grad_partials",
                "weight_grad_partials.tree", "write_dx_tile", "write_dx_tile.global", "sum_partials"),
    "BwdRho": ("rho_visit", "rho_visit.merge"),
    "BwdMaps": ("stage_padded_maps.weights", "stage_padded_maps", "sigmoid_delta_maps", "gamma_maps",
                "weight_grad_maps", "weight_grad_maps.tree"),
    "DwReduce": ("sum_partials",),
}
KERNELS = tuple(KERNEL_LOOPS)
