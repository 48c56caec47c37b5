"""Drop-in fused modules with the reference modules' parameter names (`convert` is in graph_convert.py)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as _nn_module

from . import reference
from .ops import spatial_attention


def _hooked(module: nn.Module) -> bool:
    """Whether module has forward (pre-)hooks or backward (pre-)hooks of its own."""
    return bool(module._forward_pre_hooks or module._forward_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def _global_hooks() -> bool:
    """Whether hooks registered for every module (nn.modules.module.register_module_*) exist."""
    return bool(_nn_module._global_forward_pre_hooks or _nn_module._global_forward_hooks
                or _nn_module._global_backward_hooks or _nn_module._global_backward_pre_hooks)


class SpatialAttentionModule(reference.SpatialAttentionModule):
    """Fused HAR spatial attention. Same constructor, parameters and ``state_dict`` keys
    (``att_fc.0.weight``, ``att_fc.0.bias``) as `sam_fused.reference.SpatialAttentionModule`."""

    def forward(self, x):
        if not torch.jit.is_scripting():
            # dict lookups: nn.Sequential's [0] and nn.Module's attribute hook took 1.6 µs of a
            # 16 µs batch-1 call (the weight stays an attribute: parametrizations make it a property)
            att_fc = self._modules["att_fc"]
            conv = att_fc._modules["0"]
            if _hooked(att_fc) or _hooked(conv) or _hooked(att_fc._modules["1"]) or _global_hooks():
                # hooks of the submodules run only when they are called (the deprecated
                # nn.utils.weight_norm recomputes the weight in one; a user's feature hook): the
                # original's computation then, or their effects would silently differ
                return super().forward(x)
            return spatial_attention(x, conv.weight, conv.bias, "mean")
        conv = self.att_fc[0]
        return spatial_attention(x, conv.weight, conv.bias, "mean")


class SpatialGate(reference.SpatialGate):
    """Fused CBAM-style spatial gate with ``.weight`` ``[1, P, kh, kw]`` and ``.bias``."""

    def forward(self, x):
        return spatial_attention(x, self.weight, self.bias, self.pool, self.return_map)


# reference class -> fused twin: a subclass that overrides only forward, so a swap changes the
# module's class in place. Its parameters (those an optimizer already holds), submodules, hooks
# and parametrizations stay the very objects they were; a copy into a new module lost them all.
_TWINS = {
    reference.SpatialAttentionModule: SpatialAttentionModule,
    reference.SpatialGate: SpatialGate,
}


def _fused_twin(module: nn.Module) -> nn.Module:
    module.__class__ = _TWINS[type(module)]
    return module
