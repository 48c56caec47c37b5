"""The CUDA kernels' block programs, run on the CPU through the emulation context
(docs/design.md §8), against the reference modules: forward output, pooled maps and every
gradient, for each kernel variant (one pass / two pass), pool, layout, dtype and the edge
shapes that exercise tiling (partial last tile, one-row tiles, tiles of a whole sample, C = 1,
W = 1, H = 1, several reduction rounds, NHWC with C > 32)."""
import pytest
import torch

from sam_fused.emulation import (ONE_PASS_CHUNKED, ONE_PASS_STAGED_X, ONE_PASS_UNSTAGED_X, TWO_PASS, TWO_PASS_STAGED,
                                 emulate_bwd, emulate_fwd, emulated_results)
from helpers import (POOLS, REF_DTYPE, SATURATED_PREACTIVATIONS, TOLERANCE, assert_close_scaled,
                     assert_gate_gradients_relatively_close, assert_results_close, assert_results_close_as_check,
                     make_grad, make_input, make_pair, module_results, saturated_case)

# (shape, kernel, rows per tile, threads per block); rows/threads 0 = the CUDA op's choice
CASES = [
    ((2, 5, 11, 4), (3, 3), 3, 64),    # partial last tile (11 = 3+3+3+2)
    ((2, 3, 7, 1), (5, 1), 2, 64),     # W = 1, halo of 2 rows over 2-row tiles
    ((2, 1, 6, 5), (3, 3), 4, 64),     # C = 1
    ((3, 4, 1, 6), (1, 3), 0, 0),      # H = 1
    ((1, 6, 9, 7), (7, 7), 2, 64),     # halo (3) wider than the tile, kernel wider than W
    ((2, 40, 5, 6), (3, 5), 1, 128),   # one-row tiles; NHWC: C > 32 channel slots
    ((2, 9, 13, 9), (3, 1), 0, 0),     # HAR kernel, auto plan (one tile per sample here)
    ((1, 3, 40, 3), (3, 3), 5, 64),    # several reduction rounds per block
    ((2, 5, 10, 13), (7, 7), 3, 64),   # 7x7: register-blocked conv groups (w 4..7) beside per-pixel ones
    ((2, 6, 11, 5), (3, 1), 5, 64),    # 3x1: column-blocked groups of 4 rows beside per-pixel rows and borders
]
LAYOUTS = ("contiguous", "channels_last", "permuted")


def check(x, pool, kernel, bias=True, return_map=False, many_pixels=False, **kw):
    """many_pixels: the gradients sum so many pixels that fp32 rounding passes the tolerance in
    any implementation; they are held to `python -m sam_fused.check`'s rule instead."""
    ref, weight, b = make_pair(pool, kernel, bias, return_map, x.dtype)
    grad_shape = (x.shape[0], 1, *x.shape[2:]) if return_map else x.shape
    grad_out = make_grad(grad_shape, x.dtype)
    expected = module_results(ref, x, REF_DTYPE[x.dtype], grad_out)
    actual, pooled, tf, tb = emulated_results(x, weight, b, pool, return_map, grad_out, **kw)
    what = f"{tuple(x.shape)} {x.dtype} pool={pool} kernel={kernel} bias={bias} return_map={return_map} {kw}"
    if many_pixels:
        assert_results_close_as_check(actual, expected, module_results(ref, x, x.dtype, grad_out), x.dtype, what)
    else:
        assert_results_close(actual, expected, x.dtype, what)
    xr = x.to(REF_DTYPE[x.dtype])
    maps = [xr.mean(1) if m == "mean" else xr.amax(1) for m in pool.split("+")]
    assert pooled.dtype == (torch.float64 if x.dtype == torch.float64 else torch.float32)
    assert_close_scaled(pooled, torch.stack(maps, 1), TOLERANCE[x.dtype], what + " pooled")
    if not return_map:
        want = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
            else torch.contiguous_format
        assert actual["out"].is_contiguous(memory_format=want) and actual["x"].is_contiguous(memory_format=want)
    return tf, tb


@pytest.mark.parametrize("variant", [ONE_PASS_UNSTAGED_X, ONE_PASS_STAGED_X, TWO_PASS],
                         ids=["one_pass", "one_pass_staged_x", "two_pass"])
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_variants_fp64(case, pool, variant):
    shape, kernel, rows, threads = CASES[case]
    x = make_input(shape, torch.float64, LAYOUTS[case % len(LAYOUTS)])
    tf, tb = check(x, pool, kernel, variant=variant, rows=rows, threads=threads)
    assert tf.two_pass == tb.two_pass == (variant == TWO_PASS)
    assert tb.staged_x == (variant == ONE_PASS_STAGED_X) and not tf.staged_x
    if rows:
        assert tf.rows == min(rows, shape[2])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_two_pass_staged_forward_gives_the_two_pass_bits(case, dtype):
    # the second pass stages its x tile by asynchronous copies and waits for them before the
    # write: the same arithmetic on the same values (the sanitizer: no tile value read early)
    shape, kernel, rows, threads = CASES[case]
    x = make_input(shape, dtype, LAYOUTS[case % len(LAYOUTS)])
    _, weight, b = make_pair("mean+max", kernel, True, False, dtype)
    kw = dict(rows=rows, threads=threads)
    staged = emulate_fwd(x, weight, b, "mean+max", False, TWO_PASS_STAGED, sanitize=True, **kw)
    plain = emulate_fwd(x, weight, b, "mean+max", False, TWO_PASS, **kw)
    assert staged[2].two_pass and staged[2].chunk_rows > 0 and plain[2].chunk_rows == 0
    assert torch.equal(staged[0], plain[0]) and torch.equal(staged[1], plain[1])


# The 7x7 groups at the map's border convolve through bounds-tested windows (0 outside the map):
# each pixel must get the bits of the same pixel inside a zero-padded map, where its window lies
# inside and the vector windows read it. C = 1 (or a max pool) keeps the pooled maps' bits
# independent of the plan.
# Widths: no group's window inside the row's columns (5, 8), one (12: vector rows; 13: scalar),
# several (17, 28); the top and bottom tile rows' groups whose columns lie inside read kernel rows
# outside the map as 0 (RowsInMap).
@pytest.mark.parametrize("variant", [ONE_PASS_STAGED_X, TWO_PASS], ids=["one_pass", "two_pass"])
@pytest.mark.parametrize("pool,channels", [("mean", 1), ("mean+max", 1), ("max", 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("width", [5, 8, 12, 13, 17, 28])
def test_border_groups_give_the_bits_of_interior_pixels(width, dtype, pool, channels, variant):
    x = make_input((2, channels, 10, width), dtype)
    _, weight, b = make_pair(pool, (7, 7), True, True, dtype)
    right = 3 + (-(width + 7)) % 4  # the padded rows (4 + width + right) start on a vector
    padded = torch.nn.functional.pad(x, (4, right, 3, 3))
    kw = dict(variant=variant, rows=3, threads=64, sanitize=True)
    s = emulate_fwd(x, weight, b, pool, True, **kw)[0]
    s_padded = emulate_fwd(padded, weight, b, pool, True, **kw)[0]
    assert torch.equal(s, s_padded[:, :, 3:-3, 4:4 + width])


def test_an_unknown_variant_is_refused():
    x = make_input((1, 2, 5, 5), torch.float32)
    _, weight, b = make_pair("mean", (3, 3), True, False, torch.float32)
    with pytest.raises(ValueError, match=r"variant must be 0 \(auto\).* or 6 \(two pass"):
        emulate_fwd(x, weight, b, "mean", False, 7)


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_two_pass_staged_matches_the_reference(layout, pool):
    x = make_input((2, 16, 12, 8), torch.float32, layout)
    tf, tb = check(x, pool, (7, 7), variant=TWO_PASS_STAGED, rows=2)
    assert tf.two_pass and tb.two_pass and tf.chunk_rows == 2 and tb.chunk_rows == 0


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("bias,return_map", [(False, False), (True, True), (False, True)])
@pytest.mark.parametrize("pool", POOLS)
def test_bias_and_return_map(pool, bias, return_map, layout):
    x = make_input((2, 6, 9, 5), torch.float64, layout)
    check(x, pool, (3, 3), bias, return_map, rows=2, threads=64)


@pytest.mark.parametrize("variant", [ONE_PASS_UNSTAGED_X, ONE_PASS_STAGED_X, TWO_PASS],
                         ids=["one_pass", "one_pass_staged_x", "two_pass"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pool", ["mean", "mean+max"])
def test_dtypes_vectorised(dtype, layout, variant, pool):
    # H*W and rows*W are multiples of 8 elements: every x-shaped access is 128 bits wide; with a
    # mean pool the one-pass tile reductions (the pool, rho) read 16-byte vectors too (Plan::sum_vectors)
    x = make_input((2, 16, 12, 8), dtype, layout)
    tf, tb = check(x, pool, (3, 3), variant=variant, rows=4)
    assert tf.vec == tb.vec == 16 // x.element_size()
    vector_sums = pool == "mean" and layout == "contiguous" and variant != TWO_PASS
    assert tf.sum_vectors == tb.sum_vectors == vector_sums


# (shape, rows, threads): vector sums over chunks of more vectors than threads (blocks of
# vectors), runs that leave lanes of an 8-lane group idle, and channel counts that the slots do
# not divide (the unroll's remainder)
VECTOR_SUM_CASES = [((1, 3, 10, 68), 10, 64), ((2, 20, 6, 12), 6, 64), ((2, 37, 4, 20), 4, 256)]


@pytest.mark.parametrize("variant", [ONE_PASS_UNSTAGED_X, ONE_PASS_STAGED_X, ONE_PASS_CHUNKED])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", range(len(VECTOR_SUM_CASES)))
def test_vector_sums(case, dtype, variant):
    shape, rows, threads = VECTOR_SUM_CASES[case]
    x = make_input(shape, dtype, "contiguous")
    tf, tb = check(x, "mean", (3, 3), variant=variant, rows=rows, threads=threads, sanitize=True)
    assert tf.sum_vectors and tb.sum_vectors and tf.vec == 16 // x.element_size()


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_int64_indexing(layout):
    x = make_input((2, 5, 11, 4), torch.float64, layout)
    check(x, "max+mean", (3, 3), rows=3, index64=True)


@pytest.mark.parametrize("shape", [(0, 4, 5, 5), (2, 3, 0, 4), (2, 3, 4, 0)])
def test_empty(shape):
    ref, weight, b = make_pair("mean+max", (3, 3), True, False, torch.float32)
    x = torch.randn(shape)
    out, pooled, _ = emulate_fwd(x, weight, b, "mean+max", False)
    assert out.shape == x.shape and pooled.shape == (shape[0], 2, *shape[2:])
    dx, dw, db, _ = emulate_bwd(torch.randn(shape), x, weight, b, pooled, "mean+max", False)
    assert dx.shape == x.shape and torch.equal(dw, torch.zeros_like(weight)) and torch.equal(db, torch.zeros(1))


@pytest.mark.parametrize("variant", [ONE_PASS_UNSTAGED_X, ONE_PASS_STAGED_X, TWO_PASS],
                         ids=["one_pass", "one_pass_staged_x", "two_pass"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_max_ties_route_to_first_channel(layout, variant):
    # small integers: most pixels have several channels equal to the max
    x = torch.randint(-2, 3, (2, 37, 6, 5), generator=torch.Generator().manual_seed(3)).double()
    x = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
    check(x, "max", (3, 3), variant=variant, rows=2, threads=64)


def test_nan_propagates_like_reference():
    x = make_input((1, 4, 6, 5), torch.float64)
    x[0, 2, 3, 1] = float("nan")
    ref, weight, b = make_pair("mean+max", (3, 3), True, False, torch.float64)
    out, pooled, _ = emulate_fwd(x, weight, b, "mean+max", False, rows=2, threads=64)
    assert_close_scaled(out, ref(x), TOLERANCE[torch.float64], "nan")
    assert torch.isnan(pooled[0, :, 3, 1]).all()


@pytest.mark.parametrize("shape,two_pass", [((2, 512, 8, 9), False), ((2, 64, 64, 9), False), ((1, 2048, 7, 7), True)])
def test_auto_plan_of_har_and_cbam_shapes(shape, two_pass):
    kernel = (3, 1) if shape[-1] == 9 else (7, 7)
    ref, weight, b = make_pair("mean" if shape[-1] == 9 else "mean+max", kernel, True, False, torch.float64)
    x = make_input(shape, torch.float32)
    out, _, tf = emulate_fwd(x, weight.float(), b.float(), ref.pool, False)
    assert tf.two_pass == two_pass and tf.vec == (4 if shape[-1] == 9 else 1)  # 7x7 rows are not 16-byte runs
    assert_close_scaled(out, ref(x.double()), TOLERANCE[torch.float32], str(shape))


@pytest.mark.parametrize("pool", ["mean", "mean+max"])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("case", range(len(CASES) + len(VECTOR_SUM_CASES)))
def test_chunked_staging_changes_no_bits(case, backward, pool):
    # the staged tile's channel reduction runs chunk by chunk as the chunks land (Plan::chunks);
    # every pixel still sums its channels in the same order (by elements, or with a mean pool's
    # vector sums by vectors), so the results are bit for bit those of the tile staged as one chunk
    shape, kernel, rows, threads = CASES[case] if case < len(CASES) else \
        (VECTOR_SUM_CASES[case - len(CASES)][0], (3, 3), *VECTOR_SUM_CASES[case - len(CASES)][1:])
    x = make_input(shape, torch.float32, LAYOUTS[case % len(LAYOUTS)] if case < len(CASES) else "contiguous")
    ref, weight, b = make_pair(pool, kernel, True, False, x.dtype)
    grad_out = make_grad(shape, x.dtype)
    kw = dict(rows=rows, threads=threads)
    chunked, _, tf, tb = emulated_results(x, weight, b, pool, False, grad_out, variant=ONE_PASS_CHUNKED, **kw)
    whole, _, tf1, tb1 = emulated_results(x, weight, b, pool, False, grad_out, variant=ONE_PASS_UNSTAGED_X, **kw)
    t, t1 = (tb, tb1) if backward else (tf, tf1)
    assert t1.chunk_rows == t1.rows and t.rows == t1.rows
    for name in (("x", "weight", "bias") if backward else ("out",)):
        assert torch.equal(chunked[name], whole[name]), name


def test_chunked_staging_is_exercised():
    # the cases above include tiles of several chunks (else the test could not fail)
    counts = []
    for shape, kernel, rows, threads in CASES:
        x = make_input(shape, torch.float32, "contiguous")
        _, weight, b = make_pair("mean", kernel, True, False, x.dtype)
        _, _, t = emulate_fwd(x, weight, b, "mean", False, variant=ONE_PASS_CHUNKED, rows=rows, threads=threads)
        counts.append(-(-t.rows // t.chunk_rows))
    assert max(counts) >= 3 and min(counts) == 1, counts


# The block programs take the sigmoid's slope from exp(-a), not from 1 - s (sam_math.h
# sigmoid_slope): see helpers.SATURATED_PREACTIVATIONS.
@pytest.mark.parametrize("variant", [ONE_PASS_UNSTAGED_X, TWO_PASS], ids=["one_pass", "two_pass"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("a", SATURATED_PREACTIVATIONS)
def test_saturated_sigmoid_slope_is_accurate(a, layout, variant):
    x, weight, bias, grad_out, expected = saturated_case(a, layout)
    actual, *_ = emulated_results(x, weight, bias, "mean+max", False, grad_out, variant=variant)
    assert_gate_gradients_relatively_close(actual, expected, f"a={a} {layout} variant={variant}")
