"""Deployment: the fused ops as standard ONNX operators, and scriptable converted modules.

A user exports a model that holds the fused ops with a plain ``torch.onnx.export(model, (x,), f)``
and gets a graph of standard ONNX operators (ReduceMean / ReduceMax, Concat, Conv, Sigmoid, Mul,
and Cast around them for float16 / bfloat16), which every ONNX runtime runs without our kernels:

* While `torch.onnx.export` traces the model (either exporter), `spatial_attention` and
  `pointwise_attention` compute with the ATen ops below instead of calling the fused op (the
  ``torch.onnx.is_in_onnx_export()`` pattern of torch's ONNX docs). Outside an export nothing
  changes: torch.compile, torch.export and AOTInductor keep the fused kernels.
* A model scripted before export has the fused op in its TorchScript graph; for the TorchScript
  exporter (``dynamo=False``) a symbolic function per op emits the same ONNX operators.
* Inside `onnx_custom_nodes`, the dynamo exporter writes one ``sam_fused``-domain node per layer
  instead, for runtimes that ship our kernels.

Both compute what the kernels compute: float16 / bfloat16 inputs are pooled, convolved and
multiplied in float32 and rounded once at the end.

`script_forward` gives a module a forward that TorchScript can compile when the conv
parameters sit at attribute paths known only at run time (`sam_fused.ConvertedAttention`).
"""
from __future__ import annotations

import contextlib
import hashlib
import keyword
import linecache
import types

import torch
import torch.nn.functional as F
import torch.onnx
from torch import Tensor, nn

from .reference import pool_maps


try:  # the flags that torch.onnx.is_in_onnx_export() reads, which imports them on every call (2.4 us)
    from torch.onnx._internal.exporter import _flags as _dynamo_exporter_flags
    from torch.onnx._internal.torchscript_exporter._globals import GLOBALS as _torchscript_exporter_state
except ImportError:  # another torch layout: the public function only
    _dynamo_exporter_flags = _torchscript_exporter_state = None


def exporting_onnx() -> bool:
    """Whether `torch.onnx.export` is tracing the model (dynamo=True or False)."""
    if _dynamo_exporter_flags is None:
        return torch.onnx.is_in_onnx_export()
    if torch.compiler.is_compiling():
        # Under TorchDynamo (torch.compile, strict export) only the dynamo exporter's flag, a
        # module global it can read and guard on: it will not trace the TorchScript exporter's
        # property, and that exporter never runs under it.
        return _dynamo_exporter_flags._is_onnx_exporting
    return _torchscript_exporter_state.in_onnx_export or _dynamo_exporter_flags._is_onnx_exporting


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """`t` in `dtype`; no op in the graph when it is already (the TorchScript exporter would
    record a Cast for ``t.to(t.dtype)``)."""
    return t if t.dtype == dtype else t.to(dtype)


# ---- the ops as ATen ops -----------------------------------------------------------------------

def spatial_attention_decomposed(x: Tensor, weight: Tensor, bias: Tensor | None, pool: str,
                                 return_map: bool) -> Tensor:
    """`sam_fused.spatial_attention` as ATen ops. ``amax`` rather than ``max(dim)``, which
    would also compute (and export) the indices."""
    acc = _acc_dtype(x.dtype)
    xa = _cast(x, acc)
    maps = [xa.mean(dim=1, keepdim=True) if m == "mean" else xa.amax(dim=1, keepdim=True) for m in pool_maps(pool)]
    pooled = torch.cat(maps, dim=1) if len(maps) > 1 else maps[0]
    kh, kw = weight.shape[2], weight.shape[3]
    bias = None if bias is None else _cast(bias, acc)
    logits = F.conv2d(pooled, _cast(weight, acc), bias, padding=(kh // 2, kw // 2))
    s = torch.sigmoid(logits)
    return _cast(s if return_map else xa * s, x.dtype)


def pointwise_attention_decomposed(x: Tensor, y: Tensor) -> Tensor:
    """`sam_fused.pointwise_attention` as ATen ops."""
    acc = _acc_dtype(x.dtype)
    return _cast(_cast(x, acc) * torch.sigmoid(_cast(y, acc)), x.dtype)


# ---- what the entry points compute while torch.onnx.export traces --------------------------------

_custom_nodes = False


@contextlib.contextmanager
def onnx_custom_nodes():
    """Within this block, ``torch.onnx.export(..., dynamo=True)`` writes each fused layer as one
    node of the ``sam_fused`` ONNX domain (version 1), for a runtime that ships our kernels:
    ``SpatialAttention(x, weight[, bias])`` with string attribute ``pool`` and int attribute
    ``return_map``, and ``PointwiseAttention(x, y)``. Outside it (the default) the layers are
    standard operators. The TorchScript exporter cannot write such nodes: it raises ValueError."""
    global _custom_nodes
    previous, _custom_nodes = _custom_nodes, True
    try:
        yield
    finally:
        _custom_nodes = previous


def _check_custom_nodes_exporter() -> None:
    """Inside `onnx_custom_nodes`, refuse the TorchScript exporter."""
    if _custom_nodes and _torchscript_exporter_state is not None and _torchscript_exporter_state.in_onnx_export:
        raise ValueError("sam_fused.export.onnx_custom_nodes() needs the dynamo exporter: "
                         "torch.onnx.export(..., dynamo=True)")


def onnx_spatial_attention(x: Tensor, weight: Tensor, bias: Tensor | None, pool: str, return_map: bool) -> Tensor:
    """`sam_fused.spatial_attention` while `torch.onnx.export` traces: ATen ops, or one custom
    node inside `onnx_custom_nodes`."""
    if not _custom_nodes:
        return spatial_attention_decomposed(x, weight, bias, pool, return_map)
    _check_custom_nodes_exporter()
    shape = (x.shape[0], 1, x.shape[2], x.shape[3]) if return_map else x.shape
    return torch.onnx.ops.symbolic("sam_fused::SpatialAttention", (x, weight, bias),
                                   {"pool": pool, "return_map": int(return_map)}, dtype=x.dtype, shape=shape, version=1)


def onnx_pointwise_attention(x: Tensor, y: Tensor) -> Tensor:
    """`sam_fused.pointwise_attention` while `torch.onnx.export` traces."""
    if not _custom_nodes:
        return pointwise_attention_decomposed(x, y)
    _check_custom_nodes_exporter()
    return torch.onnx.ops.symbolic("sam_fused::PointwiseAttention", (x, y), dtype=x.dtype, shape=x.shape, version=1)


# ---- the ops as ONNX operators (TorchScript exporter) ------------------------------------------

# ONNX TensorProto data types of the dtypes the ops take, by TorchScript scalar type name.
_ONNX_TYPES = {"Float": 1, "Double": 11, "Half": 10, "BFloat16": 16}
_ONNX_FLOAT = 1
_AXES_AS_INPUT_OPSET = 18  # ReduceMean / ReduceMax take their axes as an input from opset 18 on


def _scalar_type(value) -> str:
    scalar = value.type().scalarType()
    if scalar not in _ONNX_TYPES:
        raise ValueError(f"ONNX export of the fused ops: unsupported dtype {scalar}")
    return scalar


def _to_acc(g, value, scalar: str):
    """Half and bfloat16 are computed in float32, like the kernels."""
    return g.op("Cast", value, to_i=_ONNX_FLOAT) if scalar in ("Half", "BFloat16") else value


def _from_acc(g, value, scalar: str):
    return g.op("Cast", value, to_i=_ONNX_TYPES[scalar]) if scalar in ("Half", "BFloat16") else value


def _reduce_channels(g, op: str, x, opset: int):
    if opset >= _AXES_AS_INPUT_OPSET:
        axes = g.op("Constant", value_t=torch.tensor([1], dtype=torch.int64))
        return g.op(op, x, axes, keepdims_i=1)
    return g.op(op, x, axes_i=[1], keepdims_i=1)


def _spatial_attention_symbolic(opset: int):
    from torch.onnx import symbolic_helper

    @symbolic_helper.parse_args("v", "v", "v", "s", "b")
    def symbolic(g, x, weight, bias, pool, return_map):
        _check_custom_nodes_exporter()
        scalar = _scalar_type(x)
        xa = _to_acc(g, x, scalar)
        maps = [_reduce_channels(g, "ReduceMean" if m == "mean" else "ReduceMax", xa, opset) for m in pool_maps(pool)]
        pooled = g.op("Concat", *maps, axis_i=1) if len(maps) > 1 else maps[0]
        sizes = weight.type().sizes()
        if sizes is None or len(sizes) != 4:
            raise ValueError("ONNX export of spatial_attention: the weight shape must be known "
                             "(a parameter or constant)")
        kh, kw = sizes[2], sizes[3]
        conv_inputs = [pooled, _to_acc(g, weight, scalar)]
        if not symbolic_helper._is_none(bias):
            conv_inputs.append(_to_acc(g, bias, scalar))
        logits = g.op("Conv", *conv_inputs, kernel_shape_i=[kh, kw], pads_i=[kh // 2, kw // 2, kh // 2, kw // 2])
        s = g.op("Sigmoid", logits)
        out = s if return_map else g.op("Mul", xa, s)
        return _from_acc(g, out, scalar), pooled

    return symbolic


def _pointwise_attention_symbolic(g, x, y):
    _check_custom_nodes_exporter()
    scalar = _scalar_type(x)
    out = g.op("Mul", _to_acc(g, x, scalar), g.op("Sigmoid", _to_acc(g, y, scalar)))
    return _from_acc(g, out, scalar)


def _register_onnx_symbolics() -> None:
    from torch.onnx import register_custom_op_symbolic

    # Registered for an opset, a symbolic serves that opset and later ones, up to the next
    # registration.
    for opset in (9, _AXES_AS_INPUT_OPSET):
        register_custom_op_symbolic("sam_fused::spatial_attention_fwd", _spatial_attention_symbolic(opset), opset)
    register_custom_op_symbolic("sam_fused::pointwise_attention_fwd", _pointwise_attention_symbolic, 9)


# ---- TorchScript ---------------------------------------------------------------------------------

def _attribute_expression(path: str) -> str:
    """TorchScript for ``self.<path>``: ``getattr`` with a literal for names that are not
    identifiers (the children of nn.Sequential are "0", "1", ...)."""
    expression = "self"
    for name in path.split("."):
        expression = f"{expression}.{name}" if name.isidentifier() and not keyword.iskeyword(name) \
            else f"getattr({expression}, {name!r})"
    return expression


def spatial_attention_forward_source(weight_path: str, bias_path: str | None, pool: str, return_map: bool) -> str:
    """Source of a forward that calls the fused op on the parameters at these attribute paths."""
    bias = _attribute_expression(bias_path) if bias_path else "None"
    weight = _attribute_expression(weight_path)
    return (f"def forward(self, x: Tensor) -> Tensor:\n"
            f"    return spatial_attention(x, {weight}, {bias}, {pool!r}, {return_map!r})\n")


def script_forward(module: nn.Module, source: str) -> None:
    """Give `module` its own ``forward`` compiled from `source` (a function of ``self`` and
    ``x`` that may call ``spatial_attention``): `torch.jit.script` compiles a module's
    ``forward`` from its source text, which generated code has only in `linecache`.

    The module's class must list the attribute holding `source` in ``__constants__``: the
    constant keeps TorchScript from sharing one compiled forward between modules whose
    attributes look alike but whose sources differ."""
    filename = f"<sam_fused forward {hashlib.sha1(source.encode()).hexdigest()[:16]}>"  # one name per source
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    from .ops import spatial_attention

    namespace = {"Tensor": Tensor, "spatial_attention": spatial_attention}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102  (our own generated source)
    module.forward = types.MethodType(namespace["forward"], module)


_register_onnx_symbolics()
