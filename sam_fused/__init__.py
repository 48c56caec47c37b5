"""sam_fused: a fused spatial-attention layer (channel pooling, small conv, sigmoid, re-weight)."""
from .ops import SpatialAttentionFunction, spatial_attention
from .modules import SpatialAttentionModule, SpatialGate
from .pointwise import PointwiseSpatialAttention, pointwise_attention
from . import reference
from .graph_convert import ConvertReport, FusedSpatialAttention, convert

__version__ = "0.1.0"
__all__ = ["spatial_attention", "SpatialAttentionFunction", "SpatialAttentionModule", "SpatialGate",
           "pointwise_attention", "PointwiseSpatialAttention", "convert", "ConvertReport",
           "FusedSpatialAttention", "reference", "__version__"]
