"""Shared helpers of the sam_fused tests: reference modules with random parameters, inputs in
several memory layouts, one forward+backward runner and one scaled comparison.

Every expected value comes from `sam_fused.reference`, never from the code under test.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch.func import functional_call

import sam_fused
from sam_fused import reference

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]

POOLS = reference.POOLS
KERNELS = [(3, 1), (1, 1), (3, 3), (7, 7), (5, 3)]
LAYOUTS = ("contiguous", "channels_last", "permuted", "sliced")
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)

# The dtype the reference runs in when checking a dtype, and the allowed max abs error as a
# fraction of scale = max(1, max|expected|).
# - fp64: both sides are fp64; only summation order differs.
# - fp32: the reference runs in fp64 on the same fp32 inputs, so the comparison measures the
#   fused op's own rounding error (an fp32 reference would add its own error of the same size).
# - fp16/bf16: the fused op accumulates in fp32 and rounds each result once to the dtype. The
#   reference run in fp32 on the same (already rounded) inputs is that result before the final
#   rounding, so they differ by at most half an ulp (eps/2 * |value| <= eps/2 * scale) plus fp32
#   accumulation noise far below that: eps * scale bounds it with a 2x margin. (The reference
#   run in fp16/bf16 itself rounds every intermediate and would be the worse of the two.)
REF_DTYPE = {torch.float64: torch.float64, torch.float32: torch.float64,
             torch.float16: torch.float32, torch.bfloat16: torch.float32}
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5,
             torch.float16: torch.finfo(torch.float16).eps, torch.bfloat16: torch.finfo(torch.bfloat16).eps}


def make_pair(pool="mean+max", kernel=(3, 3), bias=True, return_map=False, dtype=torch.float64, device="cpu",
              seed=0):
    """A reference spatial gate with seeded random parameters in `dtype` on `device`, returned
    with its weight and bias (None without bias).

    The weight is scaled so the pre-activation is O(1): the sigmoid is then neither saturated
    (vanishing gradients) nor linear, so every term of the gradient matters.
    """
    gen = torch.Generator().manual_seed(seed)
    ref = reference.SpatialGate(kernel, pool, bias, return_map)
    with torch.no_grad():
        fan_in = ref.weight[0].numel()
        ref.weight.copy_(torch.randn(ref.weight.shape, generator=gen) * (2.0 / fan_in ** 0.5))
        if ref.bias is not None:
            ref.bias.copy_(torch.randn(1, generator=gen) * 0.5)
    ref.to(device=device, dtype=dtype)
    return ref, ref.weight, ref.bias


def make_input(shape, dtype=torch.float64, layout="contiguous", device="cpu", seed=1):
    """A random `[B, C, H, W]` tensor in `layout`: "contiguous", "channels_last", "permuted" (a
    permutation of a contiguous tensor that is neither of those) or "sliced" (every other
    channel and all but the first row of a larger tensor)."""
    gen = torch.Generator().manual_seed(seed)
    B, C, H, W = shape

    def randn(*size):
        return torch.randn(size, generator=gen).to(device=device, dtype=dtype)

    if layout == "contiguous":
        return randn(B, C, H, W)
    if layout == "channels_last":
        return randn(B, C, H, W).contiguous(memory_format=torch.channels_last)
    if layout == "permuted":
        return randn(B, W, C, H).permute(0, 2, 3, 1)
    if layout == "sliced":
        return randn(B, 2 * C, H + 1, W)[:, ::2, 1:, :]
    raise ValueError(f"unknown layout {layout!r}")


# The CPU kernels take arrays over this many bytes to come from memory, and stream their outputs
# (csrc/cpu/spatial_attention_cpu.cpp kStreamBytes).
STREAM_BYTES = 4 << 20


def streamed_batch(sample, dtype) -> int:
    """The smallest batch of `sample`-shaped `[C, H, W]` samples of `dtype` over STREAM_BYTES."""
    C, H, W = sample
    return STREAM_BYTES // (C * H * W * (torch.finfo(dtype).bits // 8)) + 1


def make_grad(shape, dtype, device="cpu", seed=2):
    """A random upstream gradient (seeded, rounded to `dtype`)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)


def forward_backward(fn, x, params: dict, grad_out=None):
    """Output of ``fn(x, params)`` and the gradients of x and every parameter under `grad_out`
    (a seeded random gradient when None), as a dict {"out", "x", <param names>}."""
    x = x.detach().requires_grad_()
    leaves = {name: p.detach().requires_grad_() for name, p in params.items() if p is not None}
    out = fn(x, leaves)
    if grad_out is None:
        grad_out = make_grad(out.shape, out.dtype, out.device)
    grads = torch.autograd.grad(out, [x, *leaves.values()], grad_out)
    return {"out": out.detach(), "x": grads[0], **dict(zip(leaves, grads[1:]))}


def module_results(module, x, dtype=None, grad_out=None):
    """Output and gradients (keyed by parameter name) of a copy of `module` run in `dtype`
    (default: x's) on the values of x and of the module's parameters (exactly up-cast)."""
    dtype = dtype or x.dtype
    module = copy.deepcopy(module).to(dtype)
    return forward_backward(lambda xx, p: functional_call(module, p, (xx,)), x.to(dtype),
                            dict(module.named_parameters()), None if grad_out is None else grad_out.to(dtype))


def fused_results(x, weight, bias, pool, return_map, grad_out=None):
    """Output and gradients of `sam_fused.spatial_attention`."""
    return forward_backward(lambda xx, p: sam_fused.spatial_attention(xx, p["weight"], p.get("bias"), pool, return_map),
                            x, {"weight": weight, "bias": bias}, grad_out)


def scaled_error(actual, expected, what=""):
    """max |actual - expected| / max(1, max|expected|) over the entries expected has no NaN at
    (0 if none), asserting the shapes agree and actual has NaN exactly where expected has."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    nan = torch.isnan(e)
    assert torch.equal(torch.isnan(a), nan), f"{what}: NaN at different positions"
    a, e = a[~nan], e[~nan]
    if e.numel() == 0:
        return 0.0
    return (a - e).abs().max().item() / max(1.0, e.abs().max().item())


def assert_close_scaled(actual, expected, tol, what=""):
    """max |actual - expected| <= tol * max(1, max|expected|), NaN only where expected has NaN."""
    err = scaled_error(actual, expected, what)
    assert err <= tol, f"{what}: max abs err / max(1, max|expected|) {err:.3g} > {tol:.3g}"


def assert_results_close(actual: dict, expected: dict, dtype, what=""):
    """Compare dicts from `forward_backward` key by key with the tolerance of `dtype`."""
    assert actual.keys() == expected.keys(), f"{what}: {sorted(actual)} != {sorted(expected)}"
    for key in expected:
        assert actual[key].dtype == dtype, f"{what} {key}: dtype {actual[key].dtype} != {dtype}"
        assert_close_scaled(actual[key], expected[key], TOLERANCE[dtype], f"{what} {key}")


def assert_results_close_as_check(actual: dict, expected: dict, own: dict, dtype, what=""):
    """The rule of `python -m sam_fused.check` (docs/design.md §4, "Tolerances") for gradients
    that sum so many pixels that fp32 rounding passes TOLERANCE in any implementation: each result
    within TOLERANCE of `expected` (the reference in REF_DTYPE), or no further from it than twice
    `own` (the reference run in `dtype`) is, both measured as assert_close_scaled measures."""
    assert actual.keys() == expected.keys() == own.keys(), what
    for key in expected:
        err, err_own = scaled_error(actual[key], expected[key], what), scaled_error(own[key], expected[key], what)
        assert err <= max(TOLERANCE[dtype], 2 * err_own), \
            f"{what} {key}: scaled error {err:.3g} > {TOLERANCE[dtype]:.3g} and > twice the reference's {err_own:.3g}"


def check_parity(x, pool, kernel, bias, return_map, seed=0):
    """Fused output and gradients of x, weight and bias equal the reference's (module built in
    x's dtype, run in REF_DTYPE[x.dtype] on the same values) within TOLERANCE[x.dtype]."""
    ref, weight, b = make_pair(pool, kernel, bias, return_map, x.dtype, x.device, seed)
    grad_shape = (x.shape[0], 1, *x.shape[2:]) if return_map else x.shape
    grad_out = make_grad(grad_shape, x.dtype, x.device)
    expected = module_results(ref, x, REF_DTYPE[x.dtype], grad_out)
    actual = fused_results(x, weight, b, pool, return_map, grad_out)
    what = f"{tuple(x.shape)} {x.dtype} pool={pool} kernel={kernel} bias={bias} return_map={return_map}"
    assert_results_close(actual, expected, x.dtype, what)
    return actual, expected


# Pre-activations where an fp32 sigmoid's slope s(1 - s) taken from the rounded s is off by
# 6e-5, 1e-4 and 7e-4 relative (1 - s keeps only the digits s kept), and one below 0, where it is
# not. saturated_case gives every pixel the same one, so that error is the same in every delta and
# the weight and bias gradients (sums of deltas) keep it.
SATURATED_PREACTIVATIONS = (7.0, 9.0, 11.0, -9.0)


def saturated_case(a, layout="contiguous", device="cpu"):
    """fp32 (x, weight, bias, grad_out, expected) of a mean+max 3x3 gate with weight 0 and bias
    `a` (every pixel's pre-activation), x and grad_out positive (no delta cancels another); the
    expected results from the reference in fp64."""
    shape = (2, 3, 9, 8)
    x = make_input(shape, torch.float32, layout, device).abs() + 0.5
    grad_out = make_grad(shape, torch.float32, device).abs() + 0.5
    ref, weight, bias = make_pair("mean+max", (3, 3), True, False, torch.float32, device)
    with torch.no_grad():
        weight.zero_()
        bias.fill_(a)
    return x, weight, bias, grad_out, module_results(ref, x, torch.float64, grad_out)


def assert_gate_gradients_relatively_close(actual: dict, expected: dict, what=""):
    """Every entry of the weight and bias gradients within fp32's tolerance of the expected one,
    relative to that entry (not to the largest: they are all small where the sigmoid saturates)."""
    for key in ("weight", "bias"):
        rel = ((actual[key].double().cpu() - expected[key]).abs() / expected[key].abs()).max().item()
        assert rel <= TOLERANCE[torch.float32], f"{what} {key}: relative error {rel:.2g}"
