"""The fused op: argument checks, fake (meta) kernels, the functional API.

The kernels are registered in C++ (`csrc/sam_fused.cpp` holds the schema):

* ``sam_fused::spatial_attention_fwd(x, weight, bias, pool, return_map) -> (out, pooled)``
* ``sam_fused::spatial_attention_bwd(grad_out, x, weight, bias, pooled, pool, return_map)
  -> (grad_x, grad_weight, grad_bias)``

``pooled`` is the ``[B, P, H, W]`` stack of pooled maps in the accumulation dtype (float32
for fp16/bf16/fp32, float64 for fp64): 1/C of the input, saved so the backward recomputes
``s`` cheaply. ``out`` is ``x * s`` in x's layout (contiguous or channels_last), or the map
``s`` ``[B, 1, H, W]`` when ``return_map``.
"""
from __future__ import annotations

import torch

from typing import Optional

from . import _C  # noqa: F401  (loads the library that registers the ops)
from ._api import check_tensor, check_type, functorch_active
from .reference import POOLS, pool_maps

_fwd = torch.ops.sam_fused.spatial_attention_fwd
_bwd = torch.ops.sam_fused.spatial_attention_bwd
_composite = torch.ops.sam_fused.spatial_attention_composite
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_args(x, weight, bias, pool) -> None:
    """Raise a ValueError naming the argument when the inputs cannot be a spatial attention
    (TypeError where an argument is not even of the right Python type)."""
    check_tensor(x, "x")
    check_tensor(weight, "weight")
    if bias is not None:
        check_tensor(bias, "bias")
    check_type(pool, str, "pool")
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor [B, C, H, W], got shape {tuple(x.shape)}")
    if x.dtype not in _DTYPES:
        raise ValueError(f"x must be float32, float64, float16 or bfloat16, got {x.dtype}")
    if x.shape[1] == 0:
        raise ValueError("x must have at least one channel (C >= 1)")
    P = len(pool_maps(pool))
    if weight.dim() != 4 or weight.shape[0] != 1 or weight.shape[1] != P:
        raise ValueError(f"weight must have shape [1, {P}, kh, kw] for pool={pool!r}, "
                         f"got {tuple(getattr(weight, 'shape', ()))}")
    kh, kw = weight.shape[2], weight.shape[3]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"weight kernel size must be odd (same padding), got {kh}x{kw}")
    _check_like(x, weight, "weight")
    if bias is not None:
        if tuple(bias.shape) != (1,):
            raise ValueError(f"bias must have shape [1] or be None, got {tuple(getattr(bias, 'shape', ()))}")
        _check_like(x, bias, "bias")


def _check_like(x, t, name):
    if t.dtype != x.dtype:
        raise ValueError(f"{name} must have the dtype of x ({x.dtype}), got {t.dtype}")
    if t.device != x.device:
        raise ValueError(f"{name} must be on the device of x ({x.device}), got {t.device}")


def _acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _out_memory_format(x):
    # Mirrors the C++ choice: contiguous first, then channels_last, anything else is copied
    # to contiguous once.
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return torch.contiguous_format
    return torch.channels_last


@torch.library.register_fake("sam_fused::spatial_attention_fwd")
def _fwd_fake(x, weight, bias, pool, return_map):
    check_args(x, weight, bias, pool)
    B, _, H, W = x.shape
    P = weight.shape[1]
    pooled = x.new_empty((B, P, H, W), dtype=_acc_dtype(x.dtype))
    if return_map:
        return x.new_empty((B, 1, H, W)), pooled
    return torch.empty_like(x, memory_format=_out_memory_format(x)), pooled


def check_bwd_args(grad_out, x, weight, bias, pooled, pool, return_map) -> None:
    """The backward op's checks (csrc/sam_fused.cpp check_bwd_inputs), for its fake kernel."""
    check_args(x, weight, bias, pool)
    B, _, H, W = x.shape
    expected = (B, 1, H, W) if return_map else tuple(x.shape)
    if tuple(grad_out.shape) != expected:
        raise ValueError(f"grad_out must have shape {list(expected)}, got {list(grad_out.shape)}")
    if not grad_out.is_floating_point():
        raise ValueError(f"grad_out must be a floating-point tensor, got {grad_out.dtype}")
    if grad_out.device != x.device:
        raise ValueError(f"grad_out must be on the device of x ({x.device}), got {grad_out.device}")
    P = weight.shape[1]
    if tuple(pooled.shape) != (B, P, H, W) or pooled.dtype != _acc_dtype(x.dtype) or pooled.device != x.device:
        raise ValueError(f"pooled must be the [B, P, H, W] {_acc_dtype(x.dtype)} maps returned by "
                         f"spatial_attention_fwd on the device of x, got {list(pooled.shape)} {pooled.dtype} "
                         f"on {pooled.device}")


@torch.library.register_fake("sam_fused::spatial_attention_bwd")
def _bwd_fake(grad_out, x, weight, bias, pooled, pool, return_map):
    check_bwd_args(grad_out, x, weight, bias, pooled, pool, return_map)
    return (torch.empty_like(x, memory_format=_out_memory_format(x)),
            torch.empty_like(weight, memory_format=torch.contiguous_format),
            weight.new_empty((1,)))


def _setup_context(ctx, inputs, output):
    x, weight, bias, pool, return_map = inputs
    _, pooled = output
    ctx.mark_non_differentiable(pooled)
    ctx.save_for_backward(x, weight, bias, pooled)
    ctx.pool, ctx.return_map = pool, return_map


def _backward(ctx, grad_out, _grad_pooled):
    x, weight, bias, pooled = ctx.saved_tensors
    gx, gw, gb = _bwd(grad_out, x, weight, bias, pooled, ctx.pool, ctx.return_map)
    return gx, gw, (gb if bias is not None else None), None, None


# The op's own autograd kernel is in C++ (csrc/autograd/): one dispatch per call. This Python
# twin is the same formula as an explicit autograd.Function, for users who want one.
class SpatialAttentionFunction(torch.autograd.Function):
    """The fused forward/backward as an explicit `torch.autograd.Function` (eager use;
    `spatial_attention` calls the registered op, whose C++ autograd kernel does the same)."""

    @staticmethod
    def forward(x, weight, bias, pool, return_map):
        return _fwd(x, weight, bias, pool, return_map)

    setup_context = staticmethod(_setup_context)
    backward = staticmethod(_backward)


# Optional (not `X | None`) for TorchScript's parser.
def spatial_attention(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,  # noqa: UP045
                      pool: str = "mean", return_map: bool = False) -> torch.Tensor:
    """Fused spatial attention: ``x * sigmoid(conv(pool_C(x), weight) + bias)``.

    x: ``[B, C, H, W]``; weight: ``[1, P, kh, kw]`` with odd kh, kw and P pooled maps
    (1 for "mean"/"max", 2 for "mean+max"/"max+mean", concatenated in that order);
    bias: ``[1]`` or None. Returns ``x * s`` (or ``s`` ``[B, 1, H, W]`` with return_map).
    Bad arguments raise ValueError (TypeError for a wrong Python type) naming the argument:
    checked here, in C++ for real tensors, and by `check_args` in the fake kernel under
    torch.compile / export. Under torch.func transforms it computes the same function as
    differentiable ATen ops (see `sam_fused._api.functorch_active`).
    """
    if not torch.jit.is_scripting():
        check_tensor(x, "x")
        check_tensor(weight, "weight")
        if bias is not None:
            check_tensor(bias, "bias")
        check_type(pool, str, "pool")
        check_type(return_map, bool, "return_map")
        if functorch_active():
            return _composite(x, weight, bias, pool, return_map)
    return torch.ops.sam_fused.spatial_attention_fwd(x, weight, bias, pool, return_map)[0]
