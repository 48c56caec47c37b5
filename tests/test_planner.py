"""The launch planner (docs/design.md §3, §8) against the documented limits of six GPU
architectures: no planned launch asks for more shared memory, threads or blocks than the
architecture allows, every valid input gets a plan (rows too wide for shared memory put the
map buffers in global scratch), 64-bit offsets are chosen from the largest tensor any kernel
indexes, and plans that spill or that target other architectures still compute the reference
results in the emulation. Planning uses ``_emulate_plan`` (no data), so shapes of billions of
elements cost nothing."""
import itertools
import math

import pytest
import torch

from sam_fused.emulation import (ARCHS, ONE_PASS, ONE_PASS_CHUNKED, ONE_PASS_STAGED_X, TWO_PASS, emulate_fwd,
                                 emulated_results, plan)
from helpers import REF_DTYPE, assert_results_close, make_grad, make_input, make_pair, module_results

KB = 1024
# CUDA C++ Programming Guide, technical specifications per compute capability:
# (max dynamic shared memory per block with opt-in, shared memory per SM, threads per SM)
LIMITS = {
    "sm_80": (163 * KB, 164 * KB, 2048),
    "sm_86": (99 * KB, 100 * KB, 1536),
    "sm_89": (99 * KB, 100 * KB, 1536),
    "sm_90": (227 * KB, 228 * KB, 2048),
    "sm_100": (227 * KB, 228 * KB, 2048),
    "sm_120": (99 * KB, 100 * KB, 1536),
}
RESERVED_PER_BLOCK = 1 * KB
# the representative part's SM count of each arch (csrc/block/limits.h names the parts)
SMS = {"sm_80": 108, "sm_86": 84, "sm_89": 142, "sm_90": 132, "sm_100": 148, "sm_120": 170}

# (shape, kernel, pool): the wide-row and large shapes the planner must fit, and common ones
SHAPES = [
    ((8, 16, 1, 20000), (1, 3), "mean"),
    ((8, 16, 1, 20000), (1, 3), "mean+max"),
    ((4, 4, 64, 2048), (3, 3), "mean+max"),
    ((32, 64, 56, 56), (7, 7), "mean+max"),     # CBAM
    ((128, 64, 64, 9), (3, 1), "mean"),         # UCI-HAR
    ((1, 4097, 512, 1025), (3, 3), "mean+max"),  # > 2^31 elements
    ((2, 2048, 7, 7), (7, 7), "mean+max"),
    ((1, 1, 3, 300000), (3, 3), "max"),
    ((2, 3, 5, 65536), (5, 5), "mean+max"),
    ((1, 8, 1000, 1000), (21, 21), "mean"),
    ((64, 512, 8, 9), (3, 1), "mean"),
    ((1, 1, 1, 1), (1, 1), "mean"),
]
DTYPES = (torch.float32, torch.bfloat16, torch.float64)
STAGE_CHUNKS = 4  # traits.h kStageChunks: the groups cp.async.wait_group names


def check_fits(t, arch, shape, what):
    optin, per_sm, _ = LIMITS[arch]
    B, _, H, _ = shape
    assert t.tiles * t.rows >= H > (t.tiles - 1) * t.rows or H == 0, what
    assert t.blocks == B * t.tiles, what
    for launch in t.launches:
        assert launch.smem <= optin and launch.smem + RESERVED_PER_BLOCK <= per_sm, f"{what}: {launch}"
        assert 0 < launch.threads <= 1024 and launch.grid < 2**31, f"{what}: {launch}"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("case", range(len(SHAPES)), ids=[f"{s}-{k[0]}x{k[1]}-{p}" for s, k, p in SHAPES])
def test_every_launch_fits_the_arch(case, arch):
    shape, kernel, pool = SHAPES[case]
    for dtype, backward, channels_last, return_map in itertools.product(DTYPES, (False, True), (False, True),
                                                                       (False, True)):
        what = f"{shape} {kernel} {pool} {dtype} backward={backward} cl={channels_last} map={return_map} {arch}"
        t, _ = plan(shape, dtype, pool, kernel, backward, channels_last, return_map, arch)
        check_fits(t, arch, shape, what)
        # forward: FwdPool (two pass), FwdMain; backward: BwdRho, BwdMaps (two pass), BwdMain, DwReduce
        # (one pass: the two-pass BwdMain sums the weight gradient in its first blocks)
        assert len(t.launches) == ((3 if t.two_pass else 2) if backward else (2 if t.two_pass else 1)), what
        if t.two_pass or return_map:  # nothing staged: within half an SM unless not even one row fits there
            one_row, _ = plan(shape, dtype, pool, kernel, backward, channels_last, return_map, arch, rows=1)
            half_sm = LIMITS[arch][1] // 2 - RESERVED_PER_BLOCK
            main = -2 if backward and not t.two_pass else -1
            kernels = [main] + ([1] if t.two_pass and backward else [])  # the main kernel, BwdMaps
            for k in kernels:
                assert t.launches[k].smem <= half_sm or one_row.launches[k].smem > half_sm, what
        if t.staged_x:  # x staged too only in the one-pass backward, and never at the cost of resident blocks
            assert backward and not t.two_pass and not return_map, what
            per_sm = min(2, -(-t.blocks // SMS[arch]))
            assert per_sm * (t.launches[0].smem + RESERVED_PER_BLOCK) <= LIMITS[arch][1], what
        if t.two_pass and backward:  # BwdMaps' map tiles cover every row of each sample
            maps = t.launches[1]
            assert maps.tiles * maps.rows >= shape[2] > (maps.tiles - 1) * maps.rows, what
            assert maps.grid == shape[0] * maps.tiles, what


@pytest.mark.parametrize("arch", ARCHS)
def test_one_pass_keeps_two_blocks_per_sm(arch):
    # one pass only when the staged tile and every buffer fit half an SM's shared memory
    t, _ = plan((128, 64, 64, 9), torch.float32, "mean", (3, 1), True, arch=arch)
    assert not t.two_pass and not t.spill
    assert t.launches[0].smem + RESERVED_PER_BLOCK <= LIMITS[arch][1] // 2


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tall_kernel_forwards_take_one_pass_only_for_whole_samples(arch, dtype):
    # traits.h one_pass_min_rows: a forward whose kernel is taller than 3 rows pools its halo rows
    # from global memory in dependent rounds (measured on an H100: 21-25% of copy bandwidth for
    # one-pass 7x7 tiles of 2 and 4 rows), so it stages a tile only when the tile is a whole sample
    for shape in [(32, 64, 56, 56), (32, 256, 56, 56), (8, 64, 40, 40)]:  # a sample does not fit: two pass
        t, _ = plan(shape, dtype, "mean+max", (7, 7), False, arch=arch)
        assert t.two_pass and t.threads == 128, shape  # kTwoPassForwardThreads
    for kernel in [(5, 5), (7, 7), (5, 1)]:
        t, _ = plan((32, 32, 14, 14), dtype, "mean+max", kernel, False, arch=arch)  # a sample: 12.5-25 KB
        assert not t.two_pass and t.rows == 14 and t.tiles == 1, kernel
    for shape in HAR_SHAPES:  # 3x1: one pass on tiles of any height
        t, _ = plan(shape, dtype, "mean", (3, 1), False, arch=arch)
        assert not t.two_pass, shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_two_pass_forward_blocks_of_128_threads_take_half_the_rows(dtype):
    # on an H100 the CBAM (32, 64, 56, 56) two-pass forward ran fastest at 128 threads and tiles
    # of 2 rows (1.34x fp32, 1.24x bf16 over 256 threads and 4 rows): the target elements per
    # block scale with its threads; the two-pass backward keeps 256
    t, _ = plan((32, 64, 56, 56), dtype, "mean+max", (7, 7), False, arch="sm_90")
    assert (t.two_pass, t.threads, t.rows, t.blocks) == (True, 128, 2, 32 * 28)
    assert [launch.threads for launch in t.launches] == [128, 128]
    t, _ = plan((32, 64, 56, 56), dtype, "mean+max", (7, 7), True, arch="sm_90")
    assert t.two_pass and t.threads == 256


HAR_SHAPES = [(128, 64, 64, 9), (128, 128, 32, 9), (128, 256, 16, 9), (128, 512, 8, 9)]


@pytest.mark.parametrize("shape", HAR_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_har_backward_stages_x_only_when_asked(shape, dtype):
    """sm_90: the one-pass backward reads x in its reduction (on an H100 the staged plans were
    slower in 5 of 6 UCI-HAR cases); the staged variant adds exactly one tile of x to the shared
    memory of the same tiles, where that fits the opt-in maximum."""
    t, _ = plan(shape, dtype, "mean", (3, 1), True, arch="sm_90")
    staged, _ = plan(shape, dtype, "mean", (3, 1), True, arch="sm_90", variant=ONE_PASS_STAGED_X)
    tile = t.rows * shape[1] * shape[3] * dtype.itemsize
    assert not t.two_pass and not t.staged_x and (t.rows, t.blocks) == (staged.rows, staged.blocks)
    assert staged.staged_x == (t.launches[0].smem + tile <= LIMITS["sm_90"][0])
    assert staged.launches[0].smem == t.launches[0].smem + (tile if staged.staged_x else 0)


@pytest.mark.parametrize("shape", HAR_SHAPES[:3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_har_backward_is_one_wave_of_two_tiles_per_sample(shape, dtype):
    """sm_90: in the H100 sweep replayed from CUDA graphs (docs/gpu-data/, 68460bd) the fastest
    256-thread UCI-HAR backward plan had two tiles per sample: 256 blocks of 18432 elements, one
    wave at two blocks per SM, 1.12-1.25x faster than the two-wave plans of half the elements."""
    t, _ = plan(shape, dtype, "mean", (3, 1), True, arch="sm_90")
    assert not t.two_pass and t.threads == 256
    assert (t.rows, t.blocks) == (shape[2] // 2, 256)


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "bwd"])
def test_har_block_4_fp32_takes_the_whole_sample(backward):
    """sm_90: UCI-HAR (128, 512, 8, 9) fp32 ran 1.23-1.31x faster forward and 1.07-1.09x backward
    on an H100 at one 8-row tile per sample (only the opt-in shared memory holds it, one block per
    SM) than at two 4-row tiles (docs/design.md §8, UCI-HAR block 4)."""
    t, _ = plan((128, 512, 8, 9), torch.float32, "mean", (3, 1), backward, arch="sm_90")
    assert not t.two_pass and (t.rows, t.tiles, t.blocks, t.threads) == (8, 1, 128, 256)
    assert 113 * KB < t.launches[0].smem <= LIMITS["sm_90"][0]


@pytest.mark.parametrize("arch", ARCHS)
def test_cbam_bf16_backward(arch):
    t, _ = plan((32, 64, 56, 56), torch.bfloat16, "mean+max", (7, 7), True, arch=arch)
    check_fits(t, arch, (32, 64, 56, 56), arch)
    # two pass without the halo minimum: smaller tiles, several blocks per SM
    assert t.two_pass and not t.spill and t.rows < 12
    assert t.launches[1].smem + RESERVED_PER_BLOCK <= LIMITS[arch][1] // 2


@pytest.mark.parametrize("arch", ARCHS)
def test_rows_too_wide_for_shared_memory_spill(arch):
    # one row of W = 20000 needs 160 KB (fwd) of pooled + s buffers for "mean+max"
    for backward in (False, True):
        t, _ = plan((8, 16, 1, 20000), torch.float32, "mean+max", (1, 3), backward, arch=arch)
        assert t.two_pass and (t.spill or LIMITS[arch][0] >= 160 * KB)
        check_fits(t, arch, (8, 16, 1, 20000), arch)
    t, _ = plan((4, 4, 64, 2048), torch.float32, "mean+max", (3, 3), True, arch=arch)
    check_fits(t, arch, (4, 4, 64, 2048), arch)


@pytest.mark.parametrize("arch", ARCHS)
def test_index64_from_the_largest_tensor(arch):
    for backward in (False, True):
        assert plan((1, 4097, 512, 1025), torch.float32, "mean+max", (3, 3), backward, arch=arch)[1]
        assert not plan((1, 4096, 512, 1023), torch.float32, "mean+max", (3, 3), backward, arch=arch)[1]
    # C = 1 with two maps: the pooled maps have twice the elements of x
    assert plan((1, 1, 2**15, 2**15), torch.float32, "mean+max", (1, 1), False, arch=arch)[1]
    assert not plan((1, 1, 2**15, 2**15), torch.float32, "mean", (1, 1), False, arch=arch)[1]


def test_emulation_reports_the_planned_launches():
    x = make_input((2, 6, 9, 16), torch.float32)
    _, weight, b = make_pair("mean+max", (3, 3), True, False, torch.float32)
    for arch, variant in itertools.product(("sm_86", "sm_90"), (0, ONE_PASS, TWO_PASS)):
        _, _, t = emulate_fwd(x, weight, b, "mean+max", False, variant=variant, arch=arch)
        want, _ = plan(x.shape, x.dtype, "mean+max", (3, 3), False, arch=arch, variant=variant)
        assert t.launches == want.launches and (t.rows, t.tiles, t.two_pass, t.vec) == (want.rows, want.tiles,
                                                                                       want.two_pass, want.vec)
    assert emulate_fwd(x, weight, b, "mean+max", False)[2].launches == emulate_fwd(x, weight, b, "mean+max", False,
                                                                                   arch="sm_90")[2].launches


def test_emulation_raises_where_the_device_would():
    # a forced one-pass tile of 128 KB: within an H100's opt-in limit, over an sm_86's 99 KB
    x = make_input((1, 64, 8, 64), torch.float32)
    _, weight, b = make_pair("mean", (3, 3), True, False, torch.float32)
    emulate_fwd(x, weight, b, "mean", False, variant=ONE_PASS, rows=8, arch="sm_90")
    with pytest.raises(RuntimeError, match="shared memory per block, more than the sm_86 limit of 101376"):
        emulate_fwd(x, weight, b, "mean", False, variant=ONE_PASS, rows=8, arch="sm_86")
    with pytest.raises(RuntimeError, match="more than the sm_86 limit"):
        plan(x.shape, x.dtype, "mean", (3, 3), False, arch="sm_86", variant=ONE_PASS, rows=8)
    with pytest.raises(RuntimeError, match="threads per block, more than the kernels' launch bound of 256"):
        emulate_fwd(x, weight, b, "mean", False, threads=512)
    with pytest.raises(ValueError, match="arch must be one of sm_80, sm_86"):
        emulate_fwd(x, weight, b, "mean", False, arch="sm_75")


def check_parity(shape, pool, kernel, layout="contiguous", dtype=torch.float64, **kw):
    x = make_input(shape, dtype, layout)
    ref, weight, b = make_pair(pool, kernel, True, False, dtype)
    grad_out = make_grad(shape, dtype)
    expected = module_results(ref, x, REF_DTYPE[dtype], grad_out)
    actual, _, tf, tb = emulated_results(x, weight, b, pool, False, grad_out, **kw)
    assert_results_close(actual, expected, dtype, f"{shape} {pool} {kernel} {layout} {kw}")
    return tf, tb


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("pool", ["mean", "max+mean"])
def test_spilled_maps_match_the_reference(pool, layout):
    # one row of maps needs ~200-320 KB: more than any arch's shared memory per block
    tf, tb = check_parity((1, 3, 5, 8000), pool, (3, 3), layout, arch="sm_86")
    assert tf.spill and tb.spill and tf.two_pass and tb.two_pass
    assert all(launch.smem <= LIMITS["sm_86"][0] for launch in tf.launches + tb.launches)


@pytest.mark.parametrize("arch", ARCHS)
def test_auto_plans_of_each_arch_match_the_reference(arch):
    check_parity((2, 40, 9, 16), "mean+max", (3, 3), arch=arch)
    check_parity((2, 5, 7, 24), "max", (5, 3), "channels_last", torch.float32, arch=arch)


def _reduction_trips(t, shape, kernel, px):
    """Dependent round trips of one block's channel reductions with px pixels per round
    (docs/design.md §3): per round ceil(C / (channel slots * 8 channels ahead)); the one-pass
    kernels reduce the tile rows and, apart, the halo rows."""
    C, W = shape[1], shape[3]
    trips = -(-C // ((t.threads // px) * 8))
    tile, halo = t.rows * W, (0 if t.two_pass else 2 * (kernel[0] // 2) * W)
    return (-(-tile // px) + (-(-halo // px) if halo else 0)) * trips


@pytest.mark.parametrize("shape,kernel,pool", SHAPES + [
    ((128, 256, 16, 9), (3, 1), "mean"), ((128, 512, 8, 9), (3, 1), "mean"), ((32, 256, 56, 56), (7, 7), "mean+max")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "bwd"])
def test_reduction_split_has_the_fewest_round_trips(shape, kernel, pool, dtype, backward):
    # NCHW: the planner's pixels per round leave no power-of-two split with fewer dependent
    # round trips per thread, and a tie keeps the most pixels per round
    t, _ = plan(shape, dtype, pool, kernel, backward)
    assert 32 <= t.px <= t.threads and t.threads % t.px == 0
    splits = [t.threads >> k for k in range(8) if t.threads >> k >= 32]
    best = min(_reduction_trips(t, shape, kernel, px) for px in splits)
    assert _reduction_trips(t, shape, kernel, t.px) == best
    assert t.px == max(px for px in splits if _reduction_trips(t, shape, kernel, px) == best)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16", "fp64"])
def test_staged_tiles_arrive_in_whole_vector_chunks(dtype, backward, arch):
    # traits.h plan_chunks: the planner stages a tile as one chunk; the chunked variant copies it
    # in at most four chunks of rows, each a whole number of vectors in every channel's run
    # (NCHW), covering the tile; nothing staged: none
    for (shape, kernel, pool), channels_last in itertools.product(SHAPES, (False, True)):
        t, _ = plan(shape, dtype, pool, kernel, backward, channels_last=channels_last, arch=arch)
        what = f"{shape} {kernel} {pool} {dtype} {'bwd' if backward else 'fwd'} cl={channels_last} {arch}"
        if t.two_pass or shape[2] * shape[3] == 0:
            assert t.chunk_rows == 0, what
            continue
        assert t.chunk_rows == t.rows, what
        t, _ = plan(shape, dtype, pool, kernel, backward, channels_last=channels_last, arch=arch,
                    variant=ONE_PASS_CHUNKED)
        W = shape[3]
        assert 1 <= t.chunk_rows <= t.rows and math.ceil(t.rows / t.chunk_rows) <= STAGE_CHUNKS, what
        if not channels_last:
            assert t.chunk_rows * W % t.vec == 0, what
            assert t.vec > 1 or t.chunk_rows == t.rows, what  # scalar NCHW tiles: one chunk


@pytest.mark.parametrize("shape", HAR_SHAPES[:3])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "bwd"])
def test_har_bf16_tiles_are_staged_as_one_chunk(shape, backward):
    # on an H100 the chunked UCI-HAR tiles (the chunked variant: 16 or more rows of 9 columns in
    # chunks of 8 rows, whole 16-byte vectors per channel, except a backward grid of more than one
    # wave, 132 SMs x 2 blocks) ran slower than one chunk, which the planner now stages
    t, _ = plan(shape, torch.bfloat16, "mean", (3, 1), backward)
    chunked, _ = plan(shape, torch.bfloat16, "mean", (3, 1), backward, variant=ONE_PASS_CHUNKED)
    # (the one-wave backward of (128, 256, 16, 9) takes 8-row tiles: two per sample)
    assert t.chunk_rows == t.rows == chunked.rows >= (8 if backward else 16)
    assert chunked.chunk_rows == (t.rows if backward and t.blocks > 132 * 2 else 8), chunked


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("c_hw", [(256, 56), (2048, 7)])
def test_cbam_batch_8_plans_as_batch_32(c_hw, dtype, channels_last):
    """tests/test_cuda.py runs its CBAM parity at batch 8 to save GPU time, standing for the
    batch-32 workloads: each block's plan (passes, rows, threads, staging, spill) is the same,
    only the grid is smaller. Not BwdMaps' tile height: it fills the SMs' resident blocks, so it
    follows the grid (56 x 56 maps: 7 rows at batch 32, 2 at batch 8); test_bwd_maps_emulation.py checks the
    map kernel's results over tile heights against the one-pass backward's."""
    c, hw = c_hw

    def structure(batch, backward):
        t, index64 = plan((batch, c, hw, hw), dtype, "mean+max", (7, 7), backward, channels_last=channels_last)
        return (t.two_pass, t.rows, t.threads, t.staged_x, t.spill, t.chunk_rows, t.sum_slots, t.vec, index64)

    for backward in (False, True):
        assert structure(8, backward) == structure(32, backward)
