"""SANN: the spatial-attention HAR network the layer comes from (docs/design.md §7).

Blocks of ``Conv2d -> SpatialAttentionModule -> BatchNorm2d -> ReLU`` over a ``[N, 1, T, M]``
window (T time steps, M sensor channels), then ``AdaptiveAvgPool2d((1, M))``, flatten and a
linear classifier. ``attention="fused"`` and ``attention="reference"`` build the same network
with the same parameter names, so a ``state_dict`` of one loads (strict) into the other and
`sam_fused.convert` turns a reference SANN into a fused one.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from . import reference
from .modules import SpatialAttentionModule as FusedSpatialAttentionModule

ATTENTIONS = {"fused": FusedSpatialAttentionModule, "reference": reference.SpatialAttentionModule}


def sann_block(in_channels, out_channels, attention, kernel, stride, padding) -> nn.Sequential:
    """One SANN block; the names (conv, attention, norm, act) become the state_dict keys."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding),
        attention=ATTENTIONS[attention](),
        norm=nn.BatchNorm2d(out_channels),
        act=nn.ReLU(inplace=True),
    ))


class SANN(nn.Module):
    """Spatial-attention HAR network.

    in_modalities: M, the number of sensor channels of a window.
    num_classes: number of activities.
    attention: "fused" (sam_fused op) or "reference" (eager PyTorch, docs/design.md §1).
    block_kernel / block_stride / block_padding: the block convolution (the public reference
        implementation's (3,1) / (2,1) / (1,0) by default).
    channels: output channels of the blocks, one block per entry.

    Input ``[N, 1, T, M]`` or ``[N, T, M]``; output logits ``[N, num_classes]``.
    """

    def __init__(self, in_modalities: int, num_classes: int, attention: str = "fused",
                 block_kernel=(3, 1), block_stride=(2, 1), block_padding=(1, 0),
                 channels=(64, 128, 256, 512)):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {tuple(ATTENTIONS)}, got {attention!r}")
        if in_modalities < 1 or num_classes < 1 or not channels:
            raise ValueError(f"need in_modalities >= 1, num_classes >= 1 and at least one block, got "
                             f"in_modalities={in_modalities}, num_classes={num_classes}, channels={channels}")
        self.in_modalities = in_modalities
        widths = (1, *channels)
        self.blocks = nn.Sequential(*[
            sann_block(c_in, c_out, attention, block_kernel, block_stride, block_padding)
            for c_in, c_out in zip(widths[:-1], widths[1:])
        ])
        self.pool = nn.AdaptiveAvgPool2d((1, in_modalities))
        self.classifier = nn.Linear(channels[-1] * in_modalities, num_classes)

    @property
    def attention(self) -> str:
        """"fused" or "reference", read off the modules (so it stays true after `convert`)."""
        fused = [type(block.attention) is FusedSpatialAttentionModule for block in self.blocks]
        return "fused" if all(fused) else "reference" if not any(fused) else "mixed"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[-1] != self.in_modalities:
            raise ValueError(f"SANN input must be [N, 1, T, {self.in_modalities}] or [N, T, {self.in_modalities}], "
                             f"got shape {tuple(x.shape)}")
        x = self.blocks(x)
        return self.classifier(torch.flatten(self.pool(x), 1))

    def extra_repr(self):
        return f"in_modalities={self.in_modalities}, attention={self.attention!r}"
