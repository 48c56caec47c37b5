"""GPU-free performance proof (docs/design.md §3, §8): the global-memory bytes the CUDA block
programs move, recorded access by access by the CPU emulation context, equal the floor.

What is counted: every global load/store of every thread ("read"/"written": bytes requested
from L2), and per kernel launch the distinct bytes touched ("*_unique": what must come from
or go to DRAM; the halo rows a block re-reads were read by its neighbour in the same launch
and are assumed to hit L2 — a tile and its halo are a few tens of KB, L2 is tens of MB).
Unique bytes restart at each launch: between two launches of a large problem x has left L2.

Floors (N = B*C*H*W elements of e bytes): forward one pass reads x once and writes out once
(2N e); two pass reads x twice (3N e). Backward one pass reads grad_out and x once and writes
grad_x once (3N e); two pass re-reads grad_out (4N e). Plus the O(N/C) maps and tiny weight
terms, whose exact sizes are computed below from the shape and the plan's rows per tile.
"""
import pytest
import torch

from sam_fused.emulation import ONE_PASS, ONE_PASS_STAGED_X, ONE_PASS_UNSTAGED_X, TWO_PASS, emulate_bwd, emulate_fwd
from helpers import make_grad, make_input, make_pair

SHAPES = [(2, 12, 11, 9), (3, 5, 8, 6)]


def tiles(H, R):
    return [(h0, min(h0 + R, H)) for h0 in range(0, H, R)]


def rows_with_halo(H, R, halo):
    """Rows each block of a sample touches (its tile plus `halo` rows each side, clipped), summed."""
    return sum(min(h1 + halo, H) - max(h0 - halo, 0) for h0, h1 in tiles(H, R))


def run(shape, pool, variant, return_map, layout, dtype=torch.float32, kernel=(3, 3), rows=3, threads=64):
    ref, weight, bias = make_pair(pool, kernel, True, return_map, dtype)
    x = make_input(shape, dtype, layout)
    out, pooled, tf = emulate_fwd(x, weight, bias, pool, return_map, variant, rows, threads)
    g = make_grad(out.shape, dtype)
    *_, tb = emulate_bwd(g, x, weight, bias, pooled, pool, return_map, variant, rows, threads)
    return x, tf, tb


def sizes(x, pool, kernel):
    B, C, H, W = x.shape
    e, a = x.element_size(), (8 if x.dtype == torch.float64 else 4)
    P = len(pool.split("+"))
    return B, C, H, W, e, a, P, P * kernel[0] * kernel[1]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("return_map", [False, True])
@pytest.mark.parametrize("variant", [ONE_PASS, TWO_PASS], ids=["one_pass", "two_pass"])
@pytest.mark.parametrize("pool", ["mean", "mean+max"])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_bytes(shape, pool, variant, return_map, layout):
    kernel = (3, 3)
    x, t, _ = run(shape, pool, variant, return_map, layout, kernel=kernel)
    B, C, H, W, e, a, P, taps = sizes(x, pool, kernel)
    N, R, rh = x.numel(), t.rows, kernel[0] // 2
    blocks = B * len(tiles(H, R))
    assert t.blocks == blocks
    two_pass = variant == TWO_PASS and not return_map  # return_map never re-reads x
    assert t.two_pass == two_pass
    x_reads = 2 * N * e if two_pass else B * C * W * e * rows_with_halo(H, R, rh)
    assert t["x"] == {**t["x"], "read": x_reads, "read_unique": (2 if two_pass else 1) * N * e, "written": 0}
    out_bytes = B * H * W * e if return_map else N * e
    assert (t["out"]["read"], t["out"]["written"], t["out"]["written_unique"]) == (0, out_bytes, out_bytes)
    pooled_reads = B * P * W * a * rows_with_halo(H, R, rh) if two_pass else 0
    assert (t["pooled"]["read"], t["pooled"]["written"]) == (pooled_reads, B * P * H * W * a)
    assert t["weight"]["read"] == blocks * taps * e and t["bias"]["read"] == blocks * e
    assert t["grad_out"]["read"] == t["workspace"]["read"] == t["workspace"]["written"] == 0
    # the DRAM floor of docs/design.md §3: x once (twice for two pass), out once
    dram_x_out = t["x"]["read_unique"] + t["out"]["written_unique"]
    assert dram_x_out == (3 if two_pass else 2) * N * e - (0 if not return_map else N * e - out_bytes)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("return_map", [False, True])
@pytest.mark.parametrize("variant", [ONE_PASS, TWO_PASS], ids=["one_pass", "two_pass"])
@pytest.mark.parametrize("pool", ["mean", "max", "mean+max"])
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_bytes(shape, pool, variant, return_map, layout):
    kernel = (3, 3)
    x, _, t = run(shape, pool, variant, return_map, layout, kernel=kernel)
    B, C, H, W, e, a, P, taps = sizes(x, pool, kernel)
    N, R, rh, HW = x.numel(), t.rows, kernel[0] // 2, H * W
    blocks = B * len(tiles(H, R))
    has_max = "max" in pool
    two_pass = variant == TWO_PASS and not return_map
    assert t.blocks == blocks and t.two_pass == two_pass
    halo_rows = rows_with_halo(H, R, rh)
    if return_map:  # grad_out is the [B,1,H,W] map; x is read only for the argmax
        g = (B * W * e * halo_rows, B * HW * e)
        xr = (N * e, N * e) if has_max else (0, 0)
    elif two_pass:
        g, xr = (2 * N * e, 2 * N * e), (N * e, N * e)
    else:
        g, xr = (B * C * W * e * halo_rows, N * e), (B * C * W * e * halo_rows, N * e)
    assert (t["grad_out"]["read"], t["grad_out"]["read_unique"]) == g
    assert (t["x"]["read"], t["x"]["read_unique"], t["x"]["written"]) == (*xr, 0)
    assert (t["out"]["read"], t["out"]["written"], t["out"]["written_unique"]) == (0, N * e, N * e)
    # two pass: the map kernel BwdMaps (second launch, its own map rows Rm) reads the pooled maps
    # and rho, each with its halo, and writes s, gamma per slot and the weight-gradient partials;
    # the main kernel reads the tile's s, gamma and argmax and no pooled map or weight
    Rm = t.launches[1].rows if two_pass else R
    map_blocks = B * len(tiles(H, Rm))
    assert not two_pass or t.launches[1].grid == map_blocks
    assert t["pooled"]["read"] == B * P * W * a * rows_with_halo(H, Rm, 2 * rh) and t["pooled"]["written"] == 0
    partials = (taps + 1) * map_blocks * a
    amax = B * HW * 4 if has_max else 0
    maps_written = (B * HW * a + amax + (1 + P) * B * HW * a) if two_pass else 0  # rho, argmax; s, gamma
    maps_read = (B * W * a * rows_with_halo(H, Rm, rh) + amax + (1 + P) * B * HW * a) if two_pass else 0
    assert t["workspace"]["written"] == partials + maps_written
    assert t["workspace"]["read"] == partials + maps_read
    assert t["weight"]["read"] == map_blocks * taps * e and t["bias"]["read"] == map_blocks * e
    if not return_map:  # the DRAM floor of docs/design.md §3: g, x once (g twice for two pass), dx once
        dram = t["grad_out"]["read_unique"] + t["x"]["read_unique"] + t["out"]["written_unique"]
        assert dram == (4 if two_pass else 3) * N * e


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", [(2, 64, 16, 9), (2, 32, 12, 40)])
def test_coalescing_of_x_shaped_tensors(shape, layout):
    """32-byte sectors touched per warp-wide access of x, grad_out and out are >= 90% ideal."""
    x, tf, tb = run(shape, "mean+max", ONE_PASS, False, layout, kernel=(3, 1), rows=0, threads=0)
    assert tf.coalescing("x", "out") >= 0.9, tf.counts
    assert tb.coalescing("x", "grad_out", "out") >= 0.9, tb.counts


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape,kernel", [((2, 64, 16, 8), (3, 1)), ((2, 5, 12, 16), (3, 3)), ((1, 41, 9, 7), (3, 3))])
@pytest.mark.parametrize("variant", [ONE_PASS_UNSTAGED_X, ONE_PASS_STAGED_X], ids=["x_read", "x_staged"])
@pytest.mark.parametrize("pool", ["mean", "mean+max"])
def test_staged_tile_accesses_are_bank_conflict_free(shape, kernel, dtype, layout, variant, pool):
    """Shared-memory wavefronts of the staged-tile phases (128-bit staging stores, the channel
    reduction's reads: by element, or with a mean pool by 128-bit vectors, the write phase's
    128-bit reads back and, in NCHW, its reads of the maps as 16-byte runs: load_map_run) equal
    the ideal bytes / 128 per warp-wide access: no bank conflicts. The third shape is not
    vectorisable (scalar accesses)."""
    x, tf, tb = run(shape, pool, variant, False, layout, dtype=dtype, kernel=kernel, rows=0, threads=0)
    vector_sums = pool == "mean" and layout == "contiguous" and shape[-1] != 7
    assert tf.sum_vectors == tb.sum_vectors == vector_sums
    N, e = x.numel(), x.element_size()
    assert tb.staged_x == (variant == ONE_PASS_STAGED_X)
    for t in (tf, tb):
        assert not t.two_pass
        sh = t["shared"]
        # staged once, read by the reduction and by the write; the backward's staged x tile is
        # staged once more and read by the reduction
        tiles = 2 if t.staged_x else 1
        assert sh["written"] == tiles * N * e and sh["read"] >= (tiles + 1) * N * e, sh
        if layout == "contiguous" and t.vec > 1:  # the write phase's map runs are counted too
            acc = 8 if dtype == torch.float64 else 4
            maps = acc if t is tf else 2 * acc if pool == "mean" else 3 * acc + 4  # s; gamma; argmax, gamma-max
            assert sh["read"] >= (tiles + 1) * N * e + N * maps, sh
        assert sh["sectors"] == sh["ideal_sectors"] > 0, sh
    assert tf.vec == tb.vec == (1 if shape[-1] == 7 else 16 // e)
