"""Argument checks and routing shared by the Python entry points of the ops."""
from __future__ import annotations

import torch


def check_tensor(value, name: str) -> None:
    """TypeError naming the argument when it is not a tensor (the C++ checks need one)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")


def check_type(value, kind: type, name: str) -> None:
    """TypeError naming the argument: no silent coercion of e.g. return_map=1 or None."""
    if type(value) is not kind:
        raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__} ({value!r})")


def functorch_active() -> bool:
    """Whether a torch.func transform (grad, vjp, jvp, vmap, ...) is tracing this call.

    The fused kernels have C++ autograd, which functorch cannot enter; under a transform the
    entry points compute the same function as differentiable ATen ops instead (the composite,
    csrc/autograd/composite.cpp). torch.compile traces the fused op (is_compiling short-circuits
    the functorch query, which dynamo does not need to see).
    """
    return not torch.compiler.is_compiling() and torch._C._are_functorch_transforms_active()
