"""The CPU kernels' run-time instruction-set choice: every ISA this machine has (forced through
SAM_FUSED_CPU_ISA, which the op reads at every call) matches the reference and gives the same
bits on repeated calls and at any thread count; an unusable choice is a clear error. fp16 and
bf16 (both layouts) take the same loops with conversions at load and store: those are checked
against torch's conversions over every 16-bit value."""
import pytest
import torch

import sam_fused
from helpers import (POOLS, TOLERANCE, assert_results_close, check_parity, fused_results, make_grad, make_input,
                     make_pair, streamed_batch)
from test_pointwise import (ODD_SIZES, assert_f64_slope_accurate, assert_grad_y_relatively_close, pointwise_results,
                            saturated_operands, special_operands)
from test_pointwise import eager_results as pointwise_eager
from test_pointwise import operands as pointwise_operands

ISAS = ("default", "avx2", "avx512")


def _supported(isa: str) -> bool:
    mp = pytest.MonkeyPatch()
    mp.setenv("SAM_FUSED_CPU_ISA", isa)
    try:
        return torch.ops.sam_fused._cpu_isa() == isa
    except (ValueError, RuntimeError):
        return False
    finally:
        mp.undo()


SUPPORTED = [isa for isa in ISAS if _supported(isa)]
ISA_PARAMS = [pytest.param(isa, marks=() if isa in SUPPORTED else pytest.mark.skip(reason=f"this CPU has no {isa}"))
              for isa in ISAS]

# Pixel counts per block that are not multiples of any vector width (tails), outputs large
# enough to be streamed (> 4 MB): blocks of some rows, and blocks of whole samples (the flat,
# channel-spanning path; the last shape's samples of 17500 bytes start at every 4-byte offset in
# a line), and the HAR shape.
SHAPES = [(2, 64, 64, 9), (1, 8, 37, 5), (2, 19, 13, 7), (2, 64, 120, 90), (64, 128, 16, 9), (300, 7, 25, 25)]


@pytest.fixture
def isa(request, monkeypatch):
    monkeypatch.setenv("SAM_FUSED_CPU_ISA", request.param)
    assert torch.ops.sam_fused._cpu_isa() == request.param
    return request.param


def test_default_is_always_available():
    assert "default" in SUPPORTED


def test_automatic_choice_is_the_best_supported(monkeypatch):
    monkeypatch.delenv("SAM_FUSED_CPU_ISA", raising=False)
    assert torch.ops.sam_fused._cpu_isa() == SUPPORTED[-1]


def test_unknown_isa_is_a_value_error(monkeypatch):
    monkeypatch.setenv("SAM_FUSED_CPU_ISA", "sse9")
    x = torch.randn(1, 2, 3, 3)
    with pytest.raises(ValueError, match="SAM_FUSED_CPU_ISA must be default, avx2 or avx512"):
        torch.ops.sam_fused.spatial_attention_fwd(x, torch.ones(1, 1, 3, 1), None, "mean", False)


@pytest.mark.parametrize("missing", [isa for isa in ISAS if isa not in SUPPORTED] or [None])
def test_isa_the_cpu_lacks_is_a_value_error(missing, monkeypatch):
    if missing is None:
        pytest.skip("this CPU has every ISA the kernels are built for")
    monkeypatch.setenv("SAM_FUSED_CPU_ISA", missing)
    with pytest.raises(ValueError, match="does not support it"):
        torch.ops.sam_fused._cpu_isa()


@pytest.mark.parametrize("return_map", [False, True])
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("isa", ISA_PARAMS, indirect=True)
def test_parity_per_isa(isa, shape, pool, return_map):
    check_parity(make_input(shape, torch.float32), pool, (3, 1), True, return_map)


# Samples of 20 rows of 9 pixels: one sample (x in cache), or enough of them that x is over the
# 4 MiB the kernels take to come from memory (spatial_attention_cpu.cpp kStreamBytes).
WHERE = ("cache", "memory")
_ROWS = 20


def _rows_input(where, channels, dtype=torch.float32):
    batch = 1 if where == "cache" else streamed_batch((channels, _ROWS, 9), dtype)
    return torch.randn(batch, channels, _ROWS, 9).to(dtype)


def _rows_as_samples(t):  # [B, C, H, W] -> [B*H, C, 1, W]: every row a sample
    B, C, H, W = t.shape
    return t.permute(0, 2, 1, 3).reshape(B * H, C, 1, W)


def _samples_as_rows(t):  # the inverse of _rows_as_samples for inputs of _rows_input
    BH, C, _, W = t.shape
    return t.reshape(BH // _ROWS, _ROWS, C, W).permute(0, 2, 1, 3)


# The backward's rho pass reads runs of 512 bytes or more from memory one channel at a time
# (memory order), from a cache and shorter runs in groups of pixels over all channels; both must
# give each pixel the same bits. With a 1x1 kernel every pixel is on its own, so the same pixels
# as rows of 180 (one band of long runs per sample: whole vectors and a tail) and as samples of 9
# (short runs) must give the same dx. C = 33: runs of 16 channels and a last run of one.
@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("pool", ["mean", "mean+max"])
@pytest.mark.parametrize("channels", [2, 16, 33])
@pytest.mark.parametrize("isa", ISA_PARAMS, indirect=True)
def test_rho_in_memory_order_gives_the_bits_of_the_groups(isa, channels, pool, where):
    torch.manual_seed(channels)
    x = _rows_input(where, channels)
    g = torch.randn_like(x)
    w, b = torch.randn(1, 2 if "+" in pool else 1, 1, 1), torch.randn(1)

    def dx(x, g):
        _, pooled = torch.ops.sam_fused.spatial_attention_fwd(x, w, b, pool, False)
        return torch.ops.sam_fused.spatial_attention_bwd(g, x, w, b, pooled, pool, False)[0]

    assert torch.equal(_samples_as_rows(dx(_rows_as_samples(x), _rows_as_samples(g))), dx(x, g))


# The forward's pool pass likewise: runs of 512 bytes or more from memory one channel at a time,
# shorter runs (or from a cache) of 128 values or more (16-bit) in blocks of 16 channels, and short
# runs by groups of pixels over all channels; all must give each pixel the same bits. With a 1x1
# kernel, the same pixels as rows of 180 (fp32: 720-byte runs, in order from memory; bf16: 360
# bytes, the blocks) and as samples of 9 (the groups) must give the same pooled maps and outputs.
# C = 65: the mean's runs of 64 channels and a last run of one.
@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("channels", [1, 2, 33, 65])
@pytest.mark.parametrize("isa", ISA_PARAMS, indirect=True)
def test_pool_in_memory_order_gives_the_bits_of_the_groups(isa, channels, pool, dtype, where):
    torch.manual_seed(channels)
    x = _rows_input(where, channels, dtype)
    w, b = torch.randn(1, 2 if "+" in pool else 1, 1, 1).to(dtype), torch.randn(1).to(dtype)

    out, pooled = torch.ops.sam_fused.spatial_attention_fwd(x, w, b, pool, False)
    out_rows, pooled_rows = torch.ops.sam_fused.spatial_attention_fwd(_rows_as_samples(x), w, b, pool, False)
    assert torch.equal(_samples_as_rows(pooled_rows), pooled)
    assert torch.equal(_samples_as_rows(out_rows), out)


# Streamed outputs (over 4 MiB) whose samples are not whole 64-byte lines: each sample's first
# line begins at another offset, so the head of a back-to-back run of channels (the values before
# its first whole line) takes every length from 0 to a line, and may end past a short run. Samples
# of 3 channels of one row of W pixels: with odd W the sample starts take every offset (16 of fp32,
# 32 of bf16). Before the fix a head shorter than a vector left the lines misaligned (a crash).
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("width", [1, 3, 5, 9, 17])
@pytest.mark.parametrize("isa", ISA_PARAMS, indirect=True)
def test_streamed_samples_at_every_line_offset(isa, width, dtype):
    check_parity(make_input((streamed_batch((3, 1, width), dtype), 3, 1, width), dtype), "mean", (1, 3), True, False)


# channels_last: channel counts that fill whole vectors of every ISA (64), leave a masked tail
# (19, 37), or fit in less than one vector (3); outputs > 4 MB stream whole lines, with C = 64 one
# pixel per 4 lines, with C = 40 (160 bytes) pixels that begin and end inside lines.
SHAPES_NHWC = [(2, 64, 64, 9), (1, 37, 11, 5), (2, 19, 13, 7), (2, 3, 20, 20), (2, 64, 120, 90), (1, 40, 160, 170)]


# 16-bit NCHW: vector tails (odd sizes), whole samples per block, and a streamed output (> 4 MB).
SHAPES_16 = [(2, 64, 64, 9), (1, 8, 37, 5), (2, 19, 13, 7), (3, 5, 3, 3), (4, 64, 120, 90)]
DTYPES_16 = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("return_map", [False, True])
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("shape", SHAPES_16)
@pytest.mark.parametrize("dtype", DTYPES_16)
@pytest.mark.parametrize("isa", ISA_PARAMS, indirect=True)
def test_16bit_parity_per_isa(isa, dtype, shape, pool, return_map):
    check_parity(make_input(shape, dtype), pool, (3, 1), True, return_map)


def every_16bit_value(dtype):
    """All 65536 bit patterns of a 16-bit dtype as a [1, 1, 256, 256] tensor."""
    bits = torch.arange(-(2 ** 15), 2 ** 15, dtype=torch.int32).to(torch.int16)
    return bits.view(dtype).reshape(1, 1, 256, 256)


@pytest.mark.parametrize("dtype", DTYPES_16)
@pytest.mark.parametrize("isa", ISA_PARAMS, indirect=True)
def test_16bit_conversions_match_torch(isa, dtype):
    # C = 1 and a 1x1 conv of weight 0: the pooled map is float(x) exactly (as a value), and every finite pixel
    # gets the same s = sigmoid(bias), which the fp32 op of this ISA gives as a float. So out is
    # float(x) * s rounded once: torch's rounding (to nearest even) of that product, on every
    # value, subnormals included. Non-finite x makes s NaN (0 * inf); a NaN output in bf16 has
    # c10::BFloat16's bits 0x7FC0.
    x = every_16bit_value(dtype)
    bias = torch.tensor([0.7], dtype=dtype)
    fwd = torch.ops.sam_fused.spatial_attention_fwd
    out, pooled = fwd(x, torch.zeros(1, 1, 1, 1, dtype=dtype), bias, "mean", False)
    s = fwd(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), bias.float(), "mean", True)[0].item()
    assert torch.equal(torch.isnan(pooled), torch.isnan(x))
    ok = ~torch.isnan(x)
    assert torch.equal(pooled[ok], x.float()[ok])  # the sum from +0 makes -0 a +0
    finite = torch.isfinite(x)
    expected = (x.float() * s).to(dtype)
    assert torch.equal(out[finite].view(torch.int16), expected[finite].view(torch.int16))
    assert torch.isnan(out[~finite]).all()
    if dtype == torch.bfloat16:
        assert (out[~finite].view(torch.int16) == 0x7FC0).all()


@pytest.mark.parametrize("dtype", DTYPES_16)
@pytest.mark.parametrize("isa", ISA_PARAMS, indirect=True)
def test_16bit_nan_and_inf_propagate(isa, dtype):
    # A NaN in any channel of a pixel (vector lanes and the tail) makes both pools NaN there; an
    # inf makes the max inf and the mean inf, as in the reference.
    x = torch.randn(2, 19, 5, 7).to(dtype)
    x[0, 17, 1, 2] = x[1, 3, 4, 6] = float("nan")
    x[0, 5, 3, 3] = float("inf")
    for pool in ("mean", "max"):
        _, pooled = torch.ops.sam_fused.spatial_attention_fwd(x, torch.ones(1, 1, 1, 1, dtype=dtype), None, pool,
                                                              False)
        expected_nan = torch.zeros(2, 1, 5, 7, dtype=torch.bool)
        expected_nan[0, 0, 1, 2] = expected_nan[1, 0, 4, 6] = True
        assert torch.equal(torch.isnan(pooled), expected_nan), pool
        assert pooled[0, 0, 3, 3] == float("inf"), pool


@pytest.mark.parametrize("return_map", [False, True])
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("shape", SHAPES_NHWC)
@pytest.mark.parametrize("isa", ISA_PARAMS, indirect=True)
def test_channels_last_parity_per_isa(isa, shape, pool, return_map):
    actual, _ = check_parity(make_input(shape, torch.float32, "channels_last"), pool, (3, 1), True, return_map)
    if not return_map:
        assert actual["out"].is_contiguous(memory_format=torch.channels_last)
        assert actual["x"].is_contiguous(memory_format=torch.channels_last)


# 16-bit channels_last: whole vectors of channels, masked tails, fewer channels than a vector, and
# a streamed output (> 4 MB).
SHAPES_NHWC_16 = [(2, 64, 64, 9), (1, 37, 11, 5), (2, 3, 20, 20), (2, 64, 120, 90)]


@pytest.mark.parametrize("return_map", [False, True])
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("shape", SHAPES_NHWC_16)
@pytest.mark.parametrize("dtype", DTYPES_16)
@pytest.mark.parametrize("isa", ISA_PARAMS, indirect=True)
def test_16bit_channels_last_parity_per_isa(isa, dtype, shape, pool, return_map):
    actual, _ = check_parity(make_input(shape, dtype, "channels_last"), pool, (3, 1), True, return_map)
    if not return_map:
        assert actual["out"].is_contiguous(memory_format=torch.channels_last)
        assert actual["x"].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("isa", ISA_PARAMS, indirect=True)
def test_channels_last_nan_propagates(isa):
    # A NaN in any channel of a pixel (a vector lane or the scalar tail of the max) makes the
    # pooled value NaN for both pools, as in the reference.
    x = torch.randn(1, 19, 4, 4).contiguous(memory_format=torch.channels_last)
    x[0, 17, 1, 2] = float("nan")
    x[0, 3, 2, 1] = float("nan")
    for pool in ("mean", "max"):
        _, pooled = torch.ops.sam_fused.spatial_attention_fwd(x, torch.ones(1, 1, 1, 1), None, pool, False)
        expected = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
        expected[0, 0, 1, 2] = expected[0, 0, 2, 1] = True
        assert torch.equal(torch.isnan(pooled), expected), pool


def tied_input(shape, dtype, layout):
    """Small integers (most pixels have several channels at their max) with two NaN in one pixel,
    one in another pixel's last channel."""
    x = torch.randint(-3, 3, shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    C = shape[1]
    x[0, C // 3, 1, 2] = x[0, C - 1, 1, 2] = float("nan")
    x[-1, C - 1, 2, 1] = float("nan")
    return x.contiguous(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)


# The max pool's argmax over ties and NaN: lanes of 4 vectors of pixels keep a running max and
# index over the channels, the tails a masked vector.
ARGMAX_SHAPES = [(2, 19, 13, 7), (2, 64, 8, 9), (1, 3, 5, 5)]


@pytest.mark.parametrize(("layout", "dtype"), [(layout, dtype) for layout in ("contiguous", "channels_last")
                                               for dtype in (torch.float32, *DTYPES_16)])
@pytest.mark.parametrize("shape", ARGMAX_SHAPES)
@pytest.mark.parametrize("isa", ISA_PARAMS, indirect=True)
def test_max_pool_gradient_goes_to_first_argmax(isa, shape, layout, dtype):
    # A 1x1 conv of weight 1 on the max map, gradient 1 on the map: dx is s(1-s) (NaN where the
    # max is NaN) at the channel torch.max(dim=1) picks (the first of equal values, the first
    # NaN) and 0 at every other channel.
    x = tied_input(shape, dtype, layout)
    weight = torch.ones(1, 1, 1, 1, dtype=dtype)
    fwd, bwd = torch.ops.sam_fused.spatial_attention_fwd, torch.ops.sam_fused.spatial_attention_bwd
    _, pooled = fwd(x, weight, None, "max", True)
    grad = torch.ones(shape[0], 1, *shape[2:], dtype=dtype)
    dx = bwd(grad, x, weight, None, pooled, "max", True)[0].double()
    xd = x.double().requires_grad_(True)
    torch.sigmoid(xd.max(dim=1, keepdim=True)[0]).backward(grad.double())
    expected = xd.grad
    assert torch.equal(torch.isnan(dx), torch.isnan(expected))
    assert torch.equal(dx != 0, expected != 0)
    ok = ~torch.isnan(expected)
    torch.testing.assert_close(dx[ok], expected[ok], rtol=1e-2 if dtype != torch.float32 else 1e-6, atol=0)


@pytest.mark.parametrize("pool", [p for p in POOLS if "max" in p])
@pytest.mark.parametrize("isa", ISA_PARAMS, indirect=True)
def test_tied_max_parity_per_isa(isa, pool):
    x = tied_input((2, 19, 13, 7), torch.float32, "contiguous")
    x[torch.isnan(x)] = 1.0  # the reference's conv spreads a NaN over its neighbourhood: no parity to check there
    check_parity(x, pool, (3, 3), True, False)


def _results(pool, return_map, shape=(4, 64, 32, 9), layout="contiguous", dtype=torch.float32):
    x = make_input(shape, dtype, layout)
    _, weight, bias = make_pair(pool, (7, 7), True, return_map, dtype)
    grad_shape = (shape[0], 1, *shape[2:]) if return_map else shape
    return fused_results(x, weight, bias, pool, return_map, make_grad(grad_shape, dtype))


@pytest.mark.parametrize(("layout", "dtype"), [(layout, dtype) for layout in ("contiguous", "channels_last")
                                               for dtype in (torch.float32, *DTYPES_16)])
@pytest.mark.parametrize("return_map", [False, True])
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("isa", ISA_PARAMS, indirect=True)
def test_bitwise_deterministic_per_isa(isa, pool, return_map, layout, dtype, restore_num_threads):
    torch.set_num_threads(1)
    first = _results(pool, return_map, layout=layout, dtype=dtype)
    torch.set_num_threads(2)
    for _ in range(2):
        again = _results(pool, return_map, layout=layout, dtype=dtype)
        for key in first:
            assert torch.equal(again[key], first[key]), f"{isa}: {key} differs"


# Just short of where exp(-a) overflows (88.7228 in float, 709.78 in double) the sigmoid is a
# subnormal number, as torch.sigmoid gives, not 0: the kernels' exp stopped at 88.3 (709.0), so
# an input of 1e30 there got 0 where eager gives 3.7e-9, and an infinite one NaN where eager
# gives inf (found by a randomized sweep against eager).
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("isa", ISA_PARAMS, indirect=True)
def test_sigmoid_is_subnormal_short_of_overflow(isa, dtype):
    inf = float("inf")
    top = {torch.float32: 88.72283, torch.float64: 709.7827}[dtype]
    a = -torch.tensor([top - 0.4, top - 0.2, top - 1e-4, top], dtype=torch.float64).to(dtype)
    want = torch.sigmoid(a)
    assert (want > 0).all() and (want < torch.finfo(dtype).tiny).all()  # subnormal: the band tested
    # the spatial op: a = -mean_c(x) per pixel through a 1x1 kernel of -1
    x = (-a).view(1, 1, 1, -1).expand(1, 3, 1, -1).contiguous()
    s = sam_fused.spatial_attention(x, -torch.ones(1, 1, 1, 1, dtype=dtype), None, "mean", True)
    torch.testing.assert_close(s.flatten(), want, rtol=1e-5, atol=0)
    # the point-wise op, in the loops' groups, single vectors and tail, and x s at x = 1e30 and inf
    y = a.repeat(40)
    for x in (torch.full_like(y, 1e30), torch.full_like(y, inf)):
        out = sam_fused.pointwise_attention(x, y)
        torch.testing.assert_close(out, x * torch.sigmoid(y), rtol=1e-5, atol=0)
    dx, dy = torch.ops.sam_fused.pointwise_attention_bwd(torch.ones_like(y), torch.ones_like(y), y)
    torch.testing.assert_close(dx, torch.sigmoid(y), rtol=1e-5, atol=0)
    torch.testing.assert_close(dy, torch.sigmoid(y), rtol=1e-5, atol=0)  # s(1 - s) is s there


# The sigmoid where exp(-a) over- or underflows in float: s is exactly 0 or 1, as torch.sigmoid
# gives, and s(1 - s) is 0. The kernels clamp exp's argument to its polynomial's range; with the
# clamped value alone, s was 4.5e-39 at every a below -88.3 (inf * s then inf, not NaN), and an
# input of 3e37 got a gradient of -0.13 through s(1 - s), where the reference's is 0.
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("isa", ISA_PARAMS, indirect=True)
def test_sigmoid_saturates_exactly(isa, dtype, layout):
    inf = float("inf")
    memory_format = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}[layout]
    # a = -mean_c(x) per pixel (a 1x1 kernel of -1): -inf, -1e30, -100, -88.2, 0, 87.2, 100, 1e30, inf
    means = torch.tensor([inf, 1e30, 100.0, 88.2, 0.0, -87.2, -100.0, -1e30, -inf])
    x = means.view(1, 1, 1, -1).expand(1, 3, 1, -1).to(dtype).contiguous(memory_format=memory_format)
    w = -torch.ones(1, 1, 1, 1, dtype=dtype)
    s = sam_fused.spatial_attention(x, w, None, "mean", True)
    assert s.flatten()[:3].tolist() == [0.0, 0.0, 0.0] and s.flatten()[-3:].tolist() == [1.0, 1.0, 1.0]
    expected = torch.sigmoid(-means.to(dtype).float()).double()  # float's: exp(100) is inf there
    torch.testing.assert_close(s.flatten().double(), expected, rtol=TOLERANCE[dtype], atol=0)
    out = sam_fused.spatial_attention(x, w, None, "mean")
    ref = x.double() * expected.view(1, 1, 1, -1)
    assert torch.equal(torch.isnan(out), torch.isnan(ref))  # inf * 0 is NaN, -inf * 1 is -inf
    torch.testing.assert_close(out[~torch.isnan(out)].double(), ref[~torch.isnan(ref)], rtol=TOLERANCE[dtype], atol=0)
    # Huge finite inputs: rho = sum_c g*x is about 1e38 here, and s(1 - s) is 0 (a = -3e37) or
    # 0 to float precision (a = 3e37), so each pixel's gradient is x's own term, s: 0 or 1.
    for mean in (3e37, -3e37):
        xg = torch.full((1, 2, 2, 2), mean).to(dtype).contiguous(memory_format=memory_format)
        xg.requires_grad_()
        dx, = torch.autograd.grad(sam_fused.spatial_attention(xg, w, None, "mean").sum(), [xg])
        assert torch.equal(dx.float(), torch.full(dx.shape, 0.0 if mean > 0 else 1.0)), mean


# The mean's channel sum in runs of 64 channels added in double: with one pair of float chains
# over all of C the pooled mean of 2072 channels of one value was 1.5e-5 off (eager fp32:
# 4e-7), past the tests' fp32 tolerance in the map and the weight gradient.
@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("channels", [65, 2072])
@pytest.mark.parametrize("isa", ISA_PARAMS, indirect=True)
def test_mean_of_many_channels_is_accurate(isa, channels, where):
    sample = (channels, 10, 11)
    batch = 1 if where == "cache" else streamed_batch(sample, torch.float32)
    values = torch.randn(batch, 1, *sample[1:], generator=torch.Generator().manual_seed(channels)).abs() + 0.5
    x = values.expand(batch, *sample).contiguous()
    _, pooled = torch.ops.sam_fused.spatial_attention_fwd(x, torch.ones(1, 1, 1, 1), None, "mean", False)
    error = ((pooled.double() - values.double()).abs() / values.double()).max().item()
    assert error < 1e-6, error


# Outputs > 4 MB: channel runs of whole 64-byte lines (pixel blocks over all channels), runs
# that are not (per channel run, or the flat path over whole samples), and runs shorter than a
# vector (the flat path's lines then span several channels); 16-bit elements need twice the count.
STREAMED = [(shape, dtype) for dtype in (torch.float32, *DTYPES_16)
            for shape in ((4, 64, 120, 90), (64 if dtype == torch.float32 else 128, 256, 8, 9), (4, 64, 128, 64),
                          (4096 if dtype == torch.float32 else 8192, 32, 1, 9))]


@pytest.mark.parametrize(("shape", "dtype"), STREAMED)
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("isa", ISA_PARAMS, indirect=True)
def test_streamed_results_bitwise_equal_to_cached(isa, shape, pool, dtype):
    # A large output takes non-temporal stores with plain-store heads and tails (per channel
    # run, or over a whole sample's runs at once); the same elements computed in a small tensor
    # (plain stores only) have the same bits, forward and backward.
    big, grad = make_input(shape, dtype), make_grad(shape, dtype)
    weight = (torch.randn(1, 2 if "+" in pool else 1, 3, 1, generator=torch.Generator().manual_seed(0)) * 0.3).to(dtype)
    fwd, bwd = torch.ops.sam_fused.spatial_attention_fwd, torch.ops.sam_fused.spatial_attention_bwd
    out_big, pooled_big = fwd(big, weight, None, pool, False)
    dx_big = bwd(grad, big, weight, None, pooled_big, pool, False)[0]
    one, grad_one = big[1:2].clone(), grad[1:2].clone()
    out_one, pooled_one = fwd(one, weight, None, pool, False)
    dx_one = bwd(grad_one, one, weight, None, pooled_one, pool, False)[0]
    assert torch.equal(out_big[1:2], out_one)
    assert torch.equal(dx_big[1:2], dx_one)


def test_cache_sizes_reported():
    l1d, l2, l3 = torch.ops.sam_fused._cpu_cache_sizes()
    assert l1d > 0 and l2 > 0 and l3 >= 0


def _functions_in(lib: str) -> dict:
    """Disassembled host functions of lib by demangled name (objdump -d -C): name -> text."""
    import subprocess
    out = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", lib], capture_output=True, text=True,
                         check=True).stdout
    funcs, name, body = {}, None, []
    for line in out.splitlines():
        if line.endswith(">:") and " <" in line:
            if name:
                funcs[name] = "\n".join(body)
            name, body = line[line.index(" <") + 2:-2], []
        elif name:
            body.append(line)
    if name:
        funcs[name] = "\n".join(body)
    return funcs


@pytest.mark.skipif(not any(isa in SUPPORTED for isa in ("avx2", "avx512")), reason="x86 dispatch only")
def test_streamed_write_loops_issue_the_next_bands_prefetches():
    """The scale and dx loops of every ISA and dtype, both layouts, and the NCHW rho pass contain
    the prefetches of the next band's x (and g). GCC 12 once deleted every NCHW one without a warning: the prefetches
    sat in a free function that did nothing else, which GCC took for pure, so its calls went."""
    import shutil
    if shutil.which("objdump") is None:
        pytest.skip("needs objdump (binutils)")
    funcs = _functions_in(sam_fused._C.__file__)
    loops = {name: body for name, body in funcs.items()
             if "sam_fused::cpu::isa_" in name and "[clone .cold]" not in name
             and any(f"::{k}<" in name for k in ("scale", "dx_terms", "rho", "scale_nhwc", "dx_nhwc_terms"))}
    # three ISAs x 3 dtypes x ((scale + 8 dx term sets) x 2 layouts + the NCHW rho pass)
    assert len(loops) >= 3 * 3 * (9 * 2 + 1), sorted(loops)
    without = sorted(name for name, body in loops.items() if "prefetch" not in body)
    assert not without, f"{len(without)} write loops issue no prefetch: {without[:6]}"


# The band plan follows the L2 size (SAM_FUSED_CPU_L2 stands in for another CPU's): bands of a
# few rows (strided channel runs, the prefetch walk switching runs), of many rows, and whole
# samples (one flat run), in both layouts. Outputs over 4 MB, so the streamed loops and their
# prefetches run.
_BAND_CASES = (((32, 64, 64, 9), "mean", (3, 1), torch.float32, False),
               ((64, 512, 8, 9), "max", (3, 1), torch.float32, False),
               ((8, 64, 56, 56), "mean+max", (7, 7), torch.float32, False),
               ((32, 64, 64, 9), "mean", (3, 1), torch.bfloat16, False),
               ((32, 64, 64, 9), "mean+max", (3, 1), torch.float32, True))
_BAND_SCRIPT = r"""
import os, sys, torch
sys.path.insert(0, sys.argv[3])
import sam_fused  # noqa: F401
from helpers import make_grad, make_input
import test_cpu_isa as t
fwd, bwd = torch.ops.sam_fused.spatial_attention_fwd, torch.ops.sam_fused.spatial_attention_bwd
results = {"l2": torch.ops.sam_fused._cpu_cache_sizes()[1]}
for isa in sys.argv[2].split(","):
    os.environ["SAM_FUSED_CPU_ISA"] = isa
    for n, (shape, pool, (kh, kw), dtype, channels_last) in enumerate(t._BAND_CASES):
        x, g = make_input(shape, dtype), make_grad(shape, dtype)
        if channels_last:
            x, g = (v.contiguous(memory_format=torch.channels_last) for v in (x, g))
        gen = torch.Generator().manual_seed(1)
        w = (torch.randn(1, 2 if "+" in pool else 1, kh, kw, generator=gen) * 0.3).to(dtype)
        b = torch.full((1,), 0.1, dtype=dtype)
        out, pooled = fwd(x, w, b, pool, False)
        results[f"{isa} {n}"] = (out, *bwd(g, x, w, b, pooled, pool, False))
torch.save(results, sys.argv[1])
"""


def test_band_plans_give_the_same_results(tmp_path):
    """Forward and dx have the same bits under every band plan (each element's sums run over
    the channels, in one order); the weight and bias gradients, whose double partials are summed
    per band, agree to float rounding."""
    import os
    import subprocess
    import sys
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    runs = {}
    for l2 in ("64K", "512K", "4M"):
        path = tmp_path / f"{l2}.pt"
        env = {**os.environ, "SAM_FUSED_CPU_L2": l2}
        subprocess.run([sys.executable, "-c", _BAND_SCRIPT, str(path), ",".join(SUPPORTED), tests_dir], env=env,
                       check=True, cwd=os.path.dirname(tests_dir))
        runs[l2] = torch.load(path)
    assert [runs[k]["l2"] for k in runs] == [64 << 10, 512 << 10, 4 << 20]
    first = runs.pop("64K")
    cases = [key for key in first if key != "l2"]
    for l2, other in runs.items():
        for key in cases:
            (out, dx, dw, db), (o_out, o_dx, o_dw, o_db) = first[key], other[key]
            assert torch.equal(out, o_out), f"{key}: forward differs at L2 {l2}"
            assert torch.equal(dx, o_dx), f"{key}: dx differs at L2 {l2}"
            torch.testing.assert_close(o_dw, dw, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(o_db, db, rtol=1e-5, atol=1e-6)


def test_bad_l2_size_is_a_value_error():
    import os
    import subprocess
    import sys
    code = "import torch, sam_fused; torch.ops.sam_fused._cpu_cache_sizes()"
    env = {**os.environ, "SAM_FUSED_CPU_L2": "lots"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "ValueError: SAM_FUSED_CPU_L2 must be a size" in proc.stderr


# The point-wise op's loops (fp64, fp32, fp16, bf16) are in each ISA's table too
# (PointwiseKernels): every size with a tail, misaligned storage, saturation, NaN and inf as eager
# gives them, and the slope's accuracy near saturation.
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, *DTYPES_16])
@pytest.mark.parametrize("isa", ISA_PARAMS, indirect=True)
def test_pointwise_per_isa(isa, dtype):
    for shape in ODD_SIZES:
        for layout in ("contiguous", "misaligned"):
            x, y, g = pointwise_operands(shape, dtype, layout)
            actual = pointwise_results(sam_fused.pointwise_attention, x, y, g)
            assert_results_close(actual, pointwise_eager(x, y, g), dtype, f"{isa} {shape} {layout}")
    x, y = special_operands(dtype)
    g = torch.ones_like(x)
    actual = pointwise_results(sam_fused.pointwise_attention, x, y, g)
    assert_results_close(actual, pointwise_eager(x, y, g), dtype, f"{isa} special values")  # NaN where eager's
    if dtype == torch.float32:
        x, y, g = saturated_operands()
        assert_grad_y_relatively_close(torch.ops.sam_fused.pointwise_attention_bwd(g, x, y)[1], x, y, g)
    if dtype == torch.float64:
        assert_f64_slope_accurate()
