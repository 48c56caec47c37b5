"""Reference (eager PyTorch) spatial-attention modules: the ground truth of every parity test.

`SpatialAttentionModule` is the HAR layer exactly as in docs/design.md §1 (same attribute names, so
the same ``state_dict`` keys). `SpatialGate` covers the CBAM family the fused op
supports: pooled maps over C, one odd "same"-padded conv with one output channel, sigmoid,
then ``x * s`` (or ``s`` itself with ``return_map=True``).
"""
from __future__ import annotations

import torch
from torch import nn

POOLS = ("mean", "max", "mean+max", "max+mean")


def pool_maps(pool: str) -> list[str]:
    """The pooled maps of `pool` in concatenation order, e.g. "max+mean" -> ["max", "mean"]."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    return pool.split("+")


def kernel_pair(kernel_size) -> tuple[int, int]:
    """Normalise an int or (kh, kw) kernel size and check it is odd and positive."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    for k in (kh, kw):
        if not isinstance(k, int) or k <= 0 or k % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size!r}")
    return kh, kw


class SpatialAttentionModule(nn.Module):
    """HAR spatial attention: mean over C, 3x1 conv, sigmoid, re-weight (docs/design.md §1)."""

    def __init__(self):
        super().__init__()
        self.att_fc = nn.Sequential(
            nn.Conv2d(1, 1, kernel_size=(3, 1), stride=1, padding=(1, 0)),
            nn.Sigmoid(),
        )

    def forward(self, x):
        att = torch.mean(x, dim=1, keepdim=True)
        att = self.att_fc(att)
        return x * att


class SpatialGate(nn.Module):
    """CBAM-style spatial gate: cat of pooled maps -> odd conv (same padding) -> sigmoid -> x*s.

    Parameters ``weight`` ``[1, P, kh, kw]`` and ``bias`` ``[1]`` (or None), as the fused
    `sam_fused.SpatialGate` names them.
    """

    def __init__(self, kernel_size=7, pool="mean+max", bias=False, return_map=False):
        super().__init__()
        self.kernel_size = kernel_pair(kernel_size)
        self.pool = pool
        self.maps = pool_maps(pool)
        self.return_map = return_map
        kh, kw = self.kernel_size
        conv = nn.Conv2d(len(self.maps), 1, (kh, kw), padding=(kh // 2, kw // 2), bias=bias)
        self.weight = conv.weight
        self.bias = conv.bias

    def forward(self, x):
        pooled = [x.mean(dim=1, keepdim=True) if m == "mean" else torch.max(x, dim=1, keepdim=True)[0]
                  for m in self.maps]
        q = torch.cat(pooled, dim=1) if len(pooled) > 1 else pooled[0]
        kh, kw = self.kernel_size
        s = torch.sigmoid(nn.functional.conv2d(q, self.weight, self.bias, padding=(kh // 2, kw // 2)))
        return s if self.return_map else x * s

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, pool={self.pool!r}, bias={self.bias is not None}, "
                f"return_map={self.return_map}")


# The earlier name of the CBAM reference, kept so code and pickles that use it still load.
SpatialGateReference = SpatialGate
