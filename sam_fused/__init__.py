"""sam_fused: a fused spatial-attention layer (channel pooling, small conv, sigmoid, re-weight)."""
from .ops import SpatialAttentionFunction, spatial_attention
from .modules import SpatialAttentionModule, SpatialGate, convert
from . import reference

__version__ = "0.1.0"
__all__ = ["spatial_attention", "SpatialAttentionFunction", "SpatialAttentionModule", "SpatialGate",
           "convert", "reference", "__version__"]
