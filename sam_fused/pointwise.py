"""Darknet's point-wise spatial attention (YOLOv4 "modified SAM", ``sam_layer``).

``out = x * sigmoid(y)`` element by element, with ``y`` the shape of ``x`` (in YOLOv4 ``y`` is
a conv C -> C of the same feature map). Unlike the pooled SAM there is no pooling over
channels: every element gets its own gate. The fused op does the sigmoid and the product in
one pass and its backward ``dx = g*s``, ``dy = g*x*s*(1-s)`` in another, instead of eager's
separate sigmoid, multiply and their backward kernels.

Kernels (``csrc/cpu/pointwise_cpu.cpp``; CUDA: the block programs of ``csrc/block/pointwise.h``,
launched by ``csrc/cuda/pointwise_cuda.cu`` and emulated on the CPU by ``sam_fused.emulation``):

* ``sam_fused::pointwise_attention_fwd(x, y) -> out``
* ``sam_fused::pointwise_attention_bwd(grad, x, y) -> (grad_x, grad_y)``

They run over flat storage when all operands share one dense layout (contiguous,
channels_last, any permutation); otherwise each is copied to contiguous once.
"""
from __future__ import annotations

import torch
from torch import nn

from . import _C  # noqa: F401  (loads the library that registers the ops)
from . import export
from ._api import check_tensor, functorch_active

_fwd = torch.ops.sam_fused.pointwise_attention_fwd
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _check(named: dict) -> None:
    """The C++ checks, for the fake kernels: ValueError naming the argument."""
    (first, x), *others = named.items()
    if x.dtype not in _DTYPES:
        raise ValueError(f"{first} must be float32, float64, float16 or bfloat16, got {x.dtype}")
    for name, t in others:
        if t.shape != x.shape:
            raise ValueError(f"{name} must have the shape of {first} {list(x.shape)}, got {list(t.shape)}")
        if t.dtype != x.dtype:
            raise ValueError(f"{name} must have the dtype of {first} ({x.dtype}), got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} must be on the device of {first} ({x.device}), got {t.device}")


def _empty_like_result(*operands):
    """An output in the layout the kernels use: the operands' common strides when they share
    those of a non-overlapping dense tensor, else contiguous (mirrors pointwise_operands)."""
    x = operands[0]
    if torch._prims_common.is_non_overlapping_and_dense_or_false(x) and all(t.stride() == x.stride() for t in operands):
        return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
    return x.new_empty(x.shape)


@torch.library.register_fake("sam_fused::pointwise_attention_fwd")
def _fwd_fake(x, y):
    _check({"x": x, "y": y})
    return _empty_like_result(x, y)


@torch.library.register_fake("sam_fused::pointwise_attention_bwd")
def _bwd_fake(grad, x, y):
    _check({"x": x, "y": y, "grad": grad})
    return _empty_like_result(x, y, grad), _empty_like_result(x, y, grad)


# Autograd is registered in C++ (csrc/autograd/pointwise_autograd.cpp), like the spatial op's.


def pointwise_attention(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fused ``x * torch.sigmoid(y)`` for ``y`` of the shape, dtype and device of ``x``
    (float32/64, float16, bfloat16; fp16/bf16 computed in float32 and rounded once).
    Bad arguments raise ValueError naming the argument.

    Under torch.func transforms (grad, vjp, jvp, vmap, ...) it computes the same function as
    differentiable ATen ops, which every transform supports."""
    if not torch.jit.is_scripting():
        check_tensor(x, "x")
        check_tensor(y, "y")
        if export.exporting_onnx():  # standard ONNX operators instead of our op (docs/deploy.md)
            return export.onnx_pointwise_attention(x, y)
        if functorch_active():
            _check({"x": x, "y": y})
            return x * torch.sigmoid(y)
    return _fwd(x, y)


class PointwiseSpatialAttention(nn.Module):
    """YOLOv4's modified SAM: ``x * sigmoid(conv(x))`` with a C -> C conv of odd `kernel_size`
    ("same" padding; 1 as in YOLOv4's cfg files). The conv is ``self.conv``, so the
    ``state_dict`` keys are ``conv.weight`` and ``conv.bias``."""

    def __init__(self, channels: int, kernel_size: int = 1, bias: bool = True):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}")
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, bias=bias)

    def forward(self, x):
        return pointwise_attention(x, self.conv(x))
