"""The two-pass backward's map kernel BwdMaps (csrc/block/bwd_maps.h, docs/design.md §3), run on
the CPU through the emulation context: forced two-pass plans launch BwdRho, BwdMaps and BwdMain
(whose first blocks sum the weight gradient); their gradients match the reference modules for
every pool, dtype, odd kernel size, bias on/off, the edge shapes (H or W = 1, 2, 3) and both
layouts, with every sanitizer check on; the dx of the pure-stream main kernel is bit for bit the one-pass kernel's; the
weight gradient is bitwise deterministic."""
import itertools

import pytest
import torch

from sam_fused.emulation import ONE_PASS, TWO_PASS, emulate_bwd, emulate_fwd, plan
from helpers import (POOLS, REF_DTYPE, assert_results_close, make_grad, make_input, make_pair,
                     module_results)

DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
KERNELS = ((1, 1), (3, 1), (3, 3), (7, 7))
SHAPES = ((2, 5, 1, 7), (2, 3, 2, 1), (1, 4, 3, 3), (2, 6, 9, 5), (1, 3, 7, 2))  # H or W = 1, 2, 3
LAYOUTS = ("contiguous", "channels_last")


def two_pass_backward(x, pool, kernel, bias, sanitize=True, **kw):
    """(gradients dict, expected dict, backward Traffic) of a forced two-pass call."""
    ref, weight, b = make_pair(pool, kernel, bias, False, x.dtype)
    grad_out = make_grad(x.shape, x.dtype)
    expected = module_results(ref, x, REF_DTYPE[x.dtype], grad_out)
    out, pooled, _ = emulate_fwd(x, weight, b, pool, False, **kw)
    dx, dw, db, t = emulate_bwd(grad_out, x, weight, b, pooled, pool, False, TWO_PASS, sanitize=sanitize, **kw)
    actual = {"out": out, "x": dx, "weight": dw}
    if bias:
        actual["bias"] = db
    return actual, expected, t


@pytest.mark.parametrize("kernel", KERNELS, ids=[f"{k[0]}x{k[1]}" for k in KERNELS])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("pool", POOLS)
def test_two_pass_parity_every_pool_dtype_kernel(pool, dtype, kernel):
    # bias, layout, shape and tiling rotate over the grid so that each is met with every pool
    i = POOLS.index(pool) + len(POOLS) * (DTYPES.index(dtype) + len(DTYPES) * KERNELS.index(kernel))
    shape, layout, bias = SHAPES[i % len(SHAPES)], LAYOUTS[i % 2], i % 3 != 0
    x = make_input(shape, dtype, layout)
    actual, expected, t = two_pass_backward(x, pool, kernel, bias, rows=1 + i % 3, threads=64)
    assert_results_close(actual, expected, dtype, f"{shape} {layout} {pool} {kernel} bias={bias}")
    assert t.two_pass and len(t.launches) == 3  # BwdRho, BwdMaps, BwdMain (which also sums the weight gradient)
    maps = t.launches[1]
    assert maps.tiles * maps.rows >= shape[2] > (maps.tiles - 1) * maps.rows and maps.grid == shape[0] * maps.tiles


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kernel", [(3, 3), (7, 7)], ids=["3x3", "7x7"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_two_pass_parity_edge_shapes_auto_plan(shape, kernel, bias, layout):
    x = make_input(shape, torch.float64, layout)
    actual, expected, t = two_pass_backward(x, "mean+max", kernel, bias)
    assert_results_close(actual, expected, torch.float64, f"{shape} {layout} {kernel} bias={bias}")


def test_even_kernel_widths_are_rejected():
    x = make_input((1, 3, 4, 4), torch.float32)
    weight, pooled = torch.randn(1, 2, 3, 2), torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="odd"):
        emulate_bwd(torch.randn_like(x), x, weight, None, pooled, "mean+max", False, TWO_PASS)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("pool", POOLS)
def test_two_pass_dx_is_the_one_pass_dx_bit_for_bit(pool, layout, dtype):
    # BwdMaps' padded conv adds the same terms in the same order as the one-pass kernel's
    # checked conv (zeros for the taps outside the map), so s, gamma and dx agree exactly
    x = make_input((2, 6, 11, 7), dtype, layout)
    _, weight, b = make_pair(pool, (5, 3), True, False, dtype)
    grad_out = make_grad(x.shape, dtype)
    _, pooled, _ = emulate_fwd(x, weight, b, pool, False)
    one = emulate_bwd(grad_out, x, weight, b, pooled, pool, False, ONE_PASS, rows=4, threads=64)
    for rows in (1, 3, 0):  # map tiles of 1 and 3 rows, and the planner's
        two = emulate_bwd(grad_out, x, weight, b, pooled, pool, False, TWO_PASS, rows=rows, threads=64)
        assert two[3].two_pass and not one[3].two_pass
        assert torch.equal(two[0], one[0]), rows


def test_two_pass_weight_gradient_is_bitwise_deterministic():
    x = make_input((2, 8, 13, 9), torch.float32, "channels_last")
    _, weight, b = make_pair("mean+max", (7, 7), True, False, torch.float32)
    grad_out = make_grad(x.shape, torch.float32)
    _, pooled, _ = emulate_fwd(x, weight, b, "mean+max", False)
    runs = [emulate_bwd(grad_out, x, weight, b, pooled, "mean+max", False, TWO_PASS, rows=2) for _ in range(2)]
    assert torch.equal(runs[0][1], runs[1][1]) and torch.equal(runs[0][2], runs[1][2])


def test_map_tiles_fill_the_resident_blocks_for_cbam():
    # latency-bound map kernel (one 8-warp block per SM measured 3x its issue time on an H100):
    # for CBAM (32 samples of 56 rows) the two blocks an SM of an H100 (132) holds at once, each of
    # 7 rows, where one block per SM of 14 rows did less work in total but with half the warps
    for dtype, kernel in itertools.product((torch.float32, torch.bfloat16), [(7, 7)]):
        t, _ = plan((32, 64, 56, 56), dtype, "mean+max", kernel, True)
        rho, maps, main = t.launches
        assert t.two_pass and 132 < maps.grid <= 2 * 132 and maps.rows * maps.tiles == 56
        assert main.smem < maps.smem  # the main kernel holds only the tile's per-pixel maps


VECTOR_KERNELS = ((1, 1), (3, 3), (5, 5), (7, 7), (1, 9), (3, 11))  # widths 9 and 11: no unrolled path


@pytest.mark.parametrize("kernel", VECTOR_KERNELS, ids=[f"{k[0]}x{k[1]}" for k in VECTOR_KERNELS])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_vector_staged_maps_match_the_reference(dtype, kernel):
    # widths that are whole 16-byte vectors: BwdMaps stages its rows by vector copies and reads
    # the conv windows as vectors from the left pad on (fp64: two values a vector); 13 is not
    # a whole vector (fp32) and is staged one value at a time
    for i, shape in enumerate(((2, 5, 9, 8), (1, 3, 6, 4), (2, 4, 5, 16), (1, 2, 4, 13))):
        bias = i % 2 == 0
        x = make_input(shape, dtype, LAYOUTS[i % 2])
        actual, expected, t = two_pass_backward(x, "mean+max", kernel, bias, rows=1 + i % 3, threads=64)
        assert_results_close(actual, expected, dtype, f"{shape} {kernel} bias={bias}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_maps_staged_from_a_pooled_view_off_a_vector(dtype):
    # a pooled tensor whose data does not start on 16 bytes (a view one value into a buffer):
    # its rows are staged one value at a time, with the same results
    x = make_input((2, 5, 7, 8), dtype)
    _, weight, b = make_pair("mean+max", (7, 7), True, False, dtype)
    grad_out = make_grad(x.shape, dtype)
    _, pooled, _ = emulate_fwd(x, weight, b, "mean+max", False)
    shifted = torch.empty(pooled.numel() + 1, dtype=pooled.dtype)[1:].view_as(pooled).copy_(pooled)
    assert shifted.data_ptr() % 16 != 0
    kw = dict(rows=3, threads=64, sanitize=True)
    aligned = emulate_bwd(grad_out, x, weight, b, pooled, "mean+max", False, TWO_PASS, **kw)
    unaligned = emulate_bwd(grad_out, x, weight, b, shifted, "mean+max", False, TWO_PASS, **kw)
    for a, u in zip(aligned[:3], unaligned[:3]):
        assert torch.equal(a, u)


@pytest.mark.parametrize("width", [28, 56])
def test_map_windows_are_read_without_bank_conflicts(width):
    # a warp's lanes take consecutive four-pixel runs, crossing from one padded map row to the
    # next: the padded width is chosen so that the 16-byte window loads of any 8 lanes still fall
    # on distinct banks (at 72 columns for 56, 16% of the call's shared wavefronts were excess;
    # an H100 counted 27% of BwdMaps')
    x = make_input((2, 16, 14, width), torch.float32)
    _, weight, b = make_pair("mean+max", (7, 7), False, False, torch.float32)
    grad_out = make_grad(x.shape, torch.float32)
    _, pooled, _ = emulate_fwd(x, weight, b, "mean+max", False)
    t = emulate_bwd(grad_out, x, weight, b, pooled, "mean+max", False, TWO_PASS, rows=7)[3]
    shared = t["shared"]
    assert t.two_pass and shared["sectors"] <= 1.03 * shared["ideal_sectors"], shared
