"""Darknet's point-wise SAM: `sam_fused.pointwise_attention(x, y)` against eager
``x * torch.sigmoid(y)`` (forward and both gradients) over dtypes, layouts and odd shapes;
gradcheck, opcheck, errors, and the `PointwiseSpatialAttention` module."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import sam_fused
from helpers import DEVICES, DTYPES, REF_DTYPE, TOLERANCE, assert_results_close, forward_backward, make_grad


def eager(x, y):
    return x * torch.sigmoid(y)


def _pair(shape, dtype, layout, device="cpu", seed=0):
    """x and y of `shape` in `layout`; y spans the sigmoid's whole range, both signs."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen)
    y = torch.randn(shape, generator=gen) * 4
    if layout == "channels_last":
        x, y = (t.contiguous(memory_format=torch.channels_last) for t in (x, y))
    elif layout == "permuted":  # same non-standard dense strides for both
        x, y = (t.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1) for t in (x, y))
    elif layout == "mixed":  # different layouts: the op copies to contiguous
        y = y.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":  # not dense
        x, y = (torch.cat([t, t], 1)[:, ::2] for t in (x, y))
    return x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)


# numel 1, 7 (less than one vector), 17, 945 (a tail after the vectors in every dtype), 4104
# (one fp32 block of the CUDA programs and a partial one), 12288 (whole fp16 blocks, a partial fp64 one)
ODD_SIZES = [(1,), (7,), (17,), (3, 5, 7, 9), (2, 4, 57, 9), (2, 64, 12, 8)]


def misaligned(t, device="cpu"):
    """t's values on `device` in storage that starts one element past a 16-byte boundary."""
    return torch.empty(t.numel() + 1, dtype=t.dtype, device=device)[1:].view(t.shape).copy_(t)


def operands(shape, dtype, layout):
    """x, y (_pair's layouts, or "misaligned") and grad on the CPU; grad shares the layout of x
    where both x and y have one."""
    x, y = _pair(shape, dtype, "contiguous" if layout == "misaligned" else layout)
    g = make_grad(shape, dtype)
    if layout == "misaligned":
        x, y, g = (misaligned(t) for t in (x, y, g))
    elif layout in ("channels_last", "permuted"):
        g = torch.empty_strided(shape, x.stride(), dtype=dtype).copy_(g)
    return x, y, g


def eager_results(x, y, g):
    """out, grad_x, grad_y of eager x * sigmoid(y) in REF_DTYPE[x.dtype] on the same values."""
    ref = REF_DTYPE[x.dtype]
    xr, yr = (t.to(ref).requires_grad_() for t in (x, y))
    out = xr * torch.sigmoid(yr)
    dx, dy = torch.autograd.grad(out, [xr, yr], g.to(ref))
    return {"out": out.detach(), "x": dx, "y": dy}


def pointwise_results(fn, x, y, grad):
    """out, grad_x, grad_y of fn(x, y) under grad (helpers.forward_backward's dict)."""
    return forward_backward(lambda xx, p: fn(xx, p["y"]), x, {"y": y}, grad)


SHAPES = [(2, 3, 5, 7), (1, 1, 1, 1), (3, 17, 4, 9), (2, 64, 16, 9), (0, 4, 3, 3)]
LAYOUTS = ["contiguous", "channels_last", "permuted", "mixed", "sliced"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_eager(shape, dtype, layout, device):
    x, y = _pair(shape, dtype, layout, device)
    grad = make_grad(shape, dtype, device)
    ref = REF_DTYPE[dtype]  # eager run in a wider dtype on the same values
    expected = pointwise_results(eager, x.to(ref), y.to(ref), grad.to(ref))
    actual = pointwise_results(sam_fused.pointwise_attention, x, y, grad)
    assert_results_close(actual, expected, dtype, f"{shape} {dtype} {layout}")


def special_operands(dtype=torch.float32):
    """x and y with NaN in each, y at +-inf, saturating (+-100, 1e4) and ordinary values: nine
    pairs repeated 8 times, so each value reaches many lanes, and the CPU loops' groups of
    vectors (64 elements on AVX-512) as well as their single vectors and masked tail."""
    x = torch.tensor([1.0, float("nan"), 2.0, -3.0, 0.5, 4.0, 1.0, 2.0, -1.0], dtype=dtype)
    y = torch.tensor([0.0, 1.0, float("nan"), 100.0, -100.0, float("inf"), -float("inf"), 3.0, 1e4], dtype=dtype)
    return x.repeat(8), y.repeat(8)


def saturated_operands(device="cpu"):
    """fp32 x, y, grad with y where the sigmoid saturates (5 to 12, and -12 to -5): an fp32
    slope s * (1 - s) taken from the rounded s is off there by up to 9e-3 relative."""
    y = torch.cat([torch.linspace(5, 12, 203), torch.linspace(-12, -5, 203)])
    x, g = torch.linspace(0.5, 2, y.numel()), torch.linspace(2, -1.5, y.numel())
    return (t.to(device) for t in (x, y, g))


def assert_grad_y_relatively_close(grad_y, x, y, g):
    """Every element of the gradient of y within fp32's tolerance of eager's in fp64, relative to
    that element (not to the largest: at -12 it is 1e5 times smaller than at -5)."""
    want = eager_results(x, y, g)["y"]
    rel = ((grad_y.double().cpu() - want.cpu()) / want.cpu()).abs().max().item()
    assert rel <= TOLERANCE[torch.float32], f"relative error {rel:.2g}"


@pytest.mark.parametrize("device", DEVICES)
def test_saturated_slope_is_accurate(device):
    x, y, g = saturated_operands(device)
    y.requires_grad_()
    sam_fused.pointwise_attention(x, y).backward(g)
    assert_grad_y_relatively_close(y.grad, x, y.detach(), g)


def assert_f64_slope_accurate():
    """The CPU op's fp64 gradient of y out to where exp(-|y|) is near double's smallest normal
    (y = +-708), and the map: each element within 1e-13 of exp(-|y|) / (1 + exp(-|y|))^2 (and
    the sigmoid from the same exp), relative to itself, where eager's s(1 - s) in fp64 is off by
    1e-3 at y = 30 and 0 from y = 37. Lengths reach the loops' groups, single vectors and tail."""
    y = torch.cat([torch.linspace(5, 708, 301), torch.linspace(-708, -5, 301)]).double()
    x, g = torch.linspace(0.5, 2, y.numel()).double(), torch.linspace(2, -1.5, y.numel()).double()
    e = torch.exp(-y.abs())
    s = torch.where(y >= 0, 1 / (1 + e), e / (1 + e))
    out = torch.ops.sam_fused.pointwise_attention_fwd(x, y)
    dx, dy = torch.ops.sam_fused.pointwise_attention_bwd(g, x, y)
    for got, want, name in ((out, x * s, "out"), (dx, g * s, "dx"), (dy, g * x * e / (1 + e) ** 2, "dy")):
        rel = ((got - want) / want).abs().max().item()
        assert rel <= 1e-13, f"{name}: relative error {rel:.2g}"


def test_fp64_slope_is_accurate_to_saturation():
    assert_f64_slope_accurate()


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "permuted"])
def test_output_keeps_a_shared_dense_layout(layout):
    x, y = _pair((2, 3, 4, 5), torch.float32, layout)
    out = sam_fused.pointwise_attention(x, y)
    assert out.stride() == x.stride()


def test_other_shapes_than_4d():
    x, y = torch.randn(7, 3, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    torch.testing.assert_close(sam_fused.pointwise_attention(x, y), eager(x, y))


def test_nan_and_saturation_propagate_like_eager():
    x = torch.tensor([1.0, float("nan"), 2.0, -3.0, 1.0])
    y = torch.tensor([float("nan"), 0.0, 1e4, -1e4, float("inf")])
    torch.testing.assert_close(sam_fused.pointwise_attention(x, y), eager(x, y), equal_nan=True)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "mixed"])
def test_gradcheck(layout):
    x, y = _pair((2, 3, 4, 5), torch.float64, layout)
    x.requires_grad_(), y.requires_grad_()
    assert torch.autograd.gradcheck(sam_fused.pointwise_attention, (x, y))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "mixed"])
def test_opcheck(layout):
    x, y = _pair((2, 3, 4, 5), torch.float32, layout)
    torch.library.opcheck(torch.ops.sam_fused.pointwise_attention_fwd, (x.requires_grad_(), y.requires_grad_()))
    g = torch.randn_like(x)
    torch.library.opcheck(torch.ops.sam_fused.pointwise_attention_bwd, (g, x.detach(), y.detach()))


def test_compiles_fullgraph():
    torch._dynamo.reset()
    fn = torch.compile(sam_fused.pointwise_attention, fullgraph=True, backend="eager")
    x, y = _pair((2, 3, 4, 5), torch.float32, "contiguous")
    torch.testing.assert_close(fn(x, y), eager(x, y))
    torch._dynamo.reset()


@pytest.mark.parametrize("y,match", [
    (torch.randn(2, 3, 4, 4), "y must have the shape of x"),
    (torch.randn(2, 3, 4, 5, dtype=torch.float64), "y must have the dtype of x"),
])
def test_errors(y, match):
    x = torch.randn(2, 3, 4, 5)
    with pytest.raises(ValueError, match=match):
        sam_fused.pointwise_attention(x, y)


def test_error_integer_dtype_and_backward_grad_shape():
    with pytest.raises(ValueError, match="x must be float32"):
        sam_fused.pointwise_attention(torch.ones(3, dtype=torch.int64), torch.ones(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="grad must have the shape of x"):
        torch.ops.sam_fused.pointwise_attention_bwd(torch.ones(2), torch.ones(3), torch.ones(3))


def test_error_under_compile_names_the_argument():
    torch._dynamo.reset()
    fn = torch.compile(sam_fused.pointwise_attention, fullgraph=True, backend="eager")
    with pytest.raises(Exception, match="y must have the dtype of x"):
        fn(torch.randn(2, 3), torch.randn(2, 3, dtype=torch.float64))
    torch._dynamo.reset()


# ---- the module -----------------------------------------------------------------------------------

class DarknetSam(nn.Module):
    """YOLOv4 sam_layer in eager PyTorch: the reference of PointwiseSpatialAttention."""

    def __init__(self, channels, kernel_size=1):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x):
        return x * torch.sigmoid(self.conv(x))


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_module_matches_darknet_sam(kernel_size):
    from helpers import module_results

    ref = DarknetSam(6, kernel_size).double()
    fused = sam_fused.PointwiseSpatialAttention(6, kernel_size).double()
    assert fused.state_dict().keys() == ref.state_dict().keys()
    fused.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 6, 7, 5, dtype=torch.float64)
    assert_results_close(module_results(fused, x), module_results(ref, x), torch.float64, "PointwiseSAM")


def test_module_rejects_even_kernel():
    with pytest.raises(ValueError, match="odd"):
        sam_fused.PointwiseSpatialAttention(4, kernel_size=2)
