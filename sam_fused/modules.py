"""Drop-in fused modules with the reference modules' parameter names (`convert` is in graph_convert.py)."""
from __future__ import annotations

from torch import nn

from . import reference
from .ops import spatial_attention


class SpatialAttentionModule(reference.SpatialAttentionModule):
    """Fused HAR spatial attention. Same constructor, parameters and ``state_dict`` keys
    (``att_fc.0.weight``, ``att_fc.0.bias``) as `sam_fused.reference.SpatialAttentionModule`."""

    def forward(self, x):
        conv = self.att_fc[0]
        return spatial_attention(x, conv.weight, conv.bias, "mean")


class SpatialGate(reference.SpatialGate):
    """Fused CBAM-style spatial gate with ``.weight`` ``[1, P, kh, kw]`` and ``.bias``."""

    def forward(self, x):
        return spatial_attention(x, self.weight, self.bias, self.pool, self.return_map)


# reference class -> fused twin; both share __init__ and parameters, so a swap is a copy of
# the parameters into a twin built with the same constructor arguments.
_TWINS = {
    reference.SpatialAttentionModule: lambda m: SpatialAttentionModule(),
    reference.SpatialGate: lambda m: SpatialGate(m.kernel_size, m.pool, m.bias is not None, m.return_map),
}


def _fused_twin(module: nn.Module) -> nn.Module:
    twin = _TWINS[type(module)](module)
    first = next(module.parameters())
    twin.to(device=first.device, dtype=first.dtype)
    twin.load_state_dict(module.state_dict(), strict=True)
    twin.train(module.training)
    return twin
