"""The point-wise CUDA block programs (csrc/block/pointwise.h) run on the CPU through the
emulation context (docs/design.md §8): forward and both gradients against eager
``x * torch.sigmoid(y)`` over tiny, odd and unaligned sizes, layouts and dtypes; the global
traffic at the floor (x, y and grad read once, each result written once, whole 32-byte
sectors); and the sanitizers (race, bounds, init, barrier) clean."""
import math

import pytest
import torch

from sam_fused.emulation import emulate_pointwise_bwd, emulate_pointwise_fwd
from helpers import DTYPES, TOLERANCE, assert_close_scaled, make_grad
from test_pointwise import (ODD_SIZES, assert_grad_y_relatively_close, eager_results, operands, saturated_operands,
                            special_operands)

THREADS, UNROLL = 256, 4  # csrc/block/traits.h kThreads, pointwise.h kPointwiseUnroll


def emulate(x, y, g, **kw):
    out, tf = emulate_pointwise_fwd(x, y, **kw)
    dx, dy, tb = emulate_pointwise_bwd(g, x, y, **kw)
    return {"out": out, "x": dx, "y": dy}, tf, tb


def check(x, y, g, **kw):
    actual, tf, tb = emulate(x, y, g, **kw)
    want = eager_results(x, y, g)
    what = f"{tuple(x.shape)} {x.dtype} strides={x.stride()} {kw}"
    for key in want:
        assert actual[key].dtype == x.dtype, what
        assert_close_scaled(actual[key], want[key], TOLERANCE[x.dtype], f"{what} {key}")
    return actual, tf, tb


def vector_width(x, aligned=True):
    return 16 // x.element_size() if aligned else 1


@pytest.mark.parametrize("layout", ["contiguous", "misaligned"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ODD_SIZES)
def test_matches_eager(shape, dtype, layout):
    x, y, g = operands(shape, dtype, layout)
    _, tf, tb = check(x, y, g)
    vec = vector_width(x, layout != "misaligned")
    per_block = THREADS * vec * UNROLL
    for t in (tf, tb):
        assert (t.vec, t.threads, t.rows, t.blocks) == (vec, THREADS, per_block, math.ceil(x.numel() / per_block))
        assert [(launch.grid, launch.smem) for launch in t.launches] == [(t.blocks, 0)]


@pytest.mark.parametrize("layout", ["channels_last", "permuted", "mixed", "sliced"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layouts(dtype, layout):
    x, y, g = operands((2, 24, 5, 7), dtype, layout)
    actual, tf, _ = check(x, y, g)
    if layout in ("channels_last", "permuted"):  # a shared dense layout: kept, no copies
        assert actual["out"].stride() == actual["x"].stride() == actual["y"].stride() == x.stride()
    else:
        assert actual["out"].is_contiguous() and actual["y"].is_contiguous()
    assert tf.vec == vector_width(x)


def test_nan_inf_and_saturation_like_eager():
    x, y = special_operands()
    check(x, y, make_grad(x.shape, x.dtype))


def test_saturated_slope_is_accurate():
    x, y, g = saturated_operands()
    _, dy, _ = emulate_pointwise_bwd(g, x, y)
    assert_grad_y_relatively_close(dy, x, y, g)


def test_empty_launches_nothing():
    x = torch.randn(0, 4, 3, 3)
    out, tf = emulate_pointwise_fwd(x, x)
    dx, dy, tb = emulate_pointwise_bwd(x, x, x)
    assert out.shape == dx.shape == dy.shape == x.shape
    assert tf.launches == tb.launches == [] and tf["x"]["read"] == tb["grad"]["read"] == 0


def test_bad_arguments_raise_value_errors_naming_them():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="y must have the shape of x"):
        emulate_pointwise_fwd(x, torch.randn(3, 2))
    with pytest.raises(ValueError, match="grad must have the dtype of x"):
        emulate_pointwise_bwd(x.double(), x, x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 5, 7, 9), (2, 64, 12, 8)])
def test_traffic_at_the_floor(shape, dtype):
    """x, y (and grad) read once, out (grad_x, grad_y) written once: 3N e forward, 5N e backward,
    nothing requested twice; every warp-wide access touches only the sectors its bytes need
    (945 elements end with a partial block, partial warps and a scalar tail)."""
    x, y, g = operands(shape, dtype, "contiguous")
    _, tf, tb = emulate(x, y, g)
    nbytes = x.numel() * x.element_size()
    read_once = {"read": nbytes, "read_unique": nbytes, "written": 0, "written_unique": 0}
    written_once = {"read": 0, "read_unique": 0, "written": nbytes, "written_unique": nbytes}
    untouched = {"read": 0, "read_unique": 0, "written": 0, "written_unique": 0, "sectors": 0, "ideal_sectors": 0}
    for t, reads, writes in ((tf, ("x", "y"), ("out",)), (tb, ("grad", "x", "y"), ("out", "grad_y"))):
        for slot in t.counts:
            want = read_once if slot in reads else written_once if slot in writes else untouched
            assert {k: t[slot][k] for k in want} == want, (slot, t[slot])
        assert all(t[s]["sectors"] == t[s]["ideal_sectors"] > 0 for s in reads + writes), t.counts


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_misaligned_storage_costs_at_most_one_sector_per_access(dtype):
    """Scalar accesses from storage one element off a sector boundary: each warp-wide access of
    32 * e bytes touches at most one sector more than it needs; bytes are still the floor."""
    x, y, g = operands((2, 64, 12, 8), dtype, "misaligned")
    _, tf, _ = emulate(x, y, g)
    nbytes = x.numel() * x.element_size()
    accesses = x.numel() // 32
    for slot in ("x", "y", "out"):
        c = tf[slot]
        assert c["read"] + c["written"] == nbytes and c["read_unique"] + c["written_unique"] == nbytes
        assert c["ideal_sectors"] <= c["sectors"] <= c["ideal_sectors"] + accesses


@pytest.mark.parametrize("layout", ["contiguous", "misaligned", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sanitizers_run_clean(dtype, layout):
    """Race, bounds, init and barrier checks over whole and partial blocks, the scalar tail and
    the scalar (misaligned) program; the sanitizer changes neither results nor counts."""
    for shape in ((3, 5, 7, 9), (2, 4, 57, 9)):
        x, y, g = operands(shape, dtype, layout)
        plain, tf, tb = emulate(x, y, g)
        checked, tf_s, tb_s = check(x, y, g, sanitize=True)
        assert all(torch.equal(plain[k], checked[k]) for k in plain)
        assert tf.counts == tf_s.counts and tb.counts == tb_s.counts


def test_max_blocks_runs_only_the_first_blocks():
    x, y, g = operands((2, 64, 12, 8), torch.float32, "contiguous")
    per_block = THREADS * 4 * UNROLL
    _, tf = emulate_pointwise_fwd(x, y, max_blocks=1)
    assert tf.blocks == 3 and tf["x"]["read"] == per_block * 4 and tf["out"]["written"] == per_block * 4
