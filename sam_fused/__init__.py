"""sam_fused: a fused spatial-attention layer (channel pooling, small conv, sigmoid, re-weight)."""
from ._compat import load_extension

# Before anything imports sam_fused._C: a build made for another torch or CUDA gets a clear
# ImportError here instead of an undefined-symbol error.
load_extension()

from .ops import SpatialAttentionFunction, spatial_attention
from .modules import SpatialAttentionModule, SpatialGate
from .pointwise import PointwiseSpatialAttention, pointwise_attention
from . import reference
from .graph_convert import ConvertReport, ConvertedAttention, convert
from .graph_convert import FusedSpatialAttention as FusedSpatialAttention  # earlier name, for old pickles

__version__ = "0.1.0"
__all__ = ["spatial_attention", "SpatialAttentionFunction", "SpatialAttentionModule", "SpatialGate",
           "pointwise_attention", "PointwiseSpatialAttention", "convert", "ConvertReport",
           "ConvertedAttention", "reference", "__version__"]
