"""`convert`: find spatial-attention modules in a model by their computation graph and swap in
the fused op with the same parameters.

A module is swapped when its ``forward``, traced with `torch.fx`, is exactly

    q = pool_C(x)  or  cat([pool_C(x), pool_C(x)], dim=1)     # mean and max, either order
    a = conv2d(q)       # one plain nn.Conv2d or F.conv2d on a parameter: 1 output channel,
                        # odd kernel, "same" zero padding, stride 1, dilation 1, groups 1
    s = sigmoid(a)      # torch.sigmoid, a.sigmoid(), F.sigmoid, torch.special.expit, nn.Sigmoid,
                        # or in place: torch.sigmoid_(a) / a.sigmoid_()
    return x * s        # or s * x, torch.mul, s.expand_as(x) * x ... or the map s itself

whatever the class and attribute names. The max is ``torch.max(x, 1)[0]``, ``x.max(dim=1,
keepdim=True).values`` and the like: these send a tie's gradient to the first maximum, as the
fused kernel does. ``amax`` shares it evenly among the tied channels, so an amax gate is left
alone (reported): converting it would change its gradient wherever channels tie (e.g. all zero
after a ReLU). Anything else in the graph (a BatchNorm or ReLU after the conv, a scale, a
stride, another padding mode, ...) means the module computes something else and it is left
alone. Modules that pool their input over channels and gate with a sigmoid-like map, but are
not swapped, are listed in the report with the reason. Modules are tried bottom-up, so a
spatial gate built from helper modules (a channel-pool module, a conv wrapper) is found at the
level that holds all of it.

The swapped-in `ConvertedAttention` re-registers the original's children, parameters and
buffers under the same names, so ``state_dict`` keys stay the same and old checkpoints load
with ``strict=True``; parameters are shared, not copied, so device, dtype and ``requires_grad``
are the original's.
"""
from __future__ import annotations

import builtins
import functools
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from . import export
from . import modules as _modules
from .ops import spatial_attention

# ---- what the matcher accepts ------------------------------------------------------------------

_MEAN = {torch.mean, "mean"}
# amax shares the gradient evenly among tied channels; the fused kernel (like torch.max(x, dim))
# routes all of it to the first maximum, so an amax gate converts only with a different gradient.
_MAX_EVEN_SPLIT = {torch.amax, "amax"}
_MAX_PAIR = {torch.max, "max"}              # return (values, indices) when given a dim
_UNSQUEEZE = {torch.unsqueeze, "unsqueeze"}
_CAT = {torch.cat, torch.concat, torch.concatenate}
_CONV = {F.conv2d, torch.conv2d}
_SIGMOID_INPLACE = {torch.sigmoid_, "sigmoid_"}
_SIGMOID = {torch.sigmoid, torch.special.expit, getattr(F, "sigmoid", torch.sigmoid), "sigmoid"} | _SIGMOID_INPLACE
_MUL = {operator.mul, torch.mul, torch.multiply, "mul", "multiply"}
_CHANNEL_DIMS = (1, -3)                     # the same dim of a 4-D input, the only rank the op takes
_POOL_OPS = _MEAN | _MAX_EVEN_SPLIT | _MAX_PAIR
# What a near-miss may use instead, so that it is reported rather than silently left alone:
# any reduction over channels, and sigmoid look-alikes.
_CHANNEL_REDUCTIONS = _POOL_OPS | {
    torch.sum, torch.amin, torch.min, torch.logsumexp, torch.norm, torch.std, torch.var, torch.median,
    torch.nanmean, "sum", "amin", "min", "logsumexp", "norm", "std", "var", "median", "nanmean"}
_GATE_LIKE = _SIGMOID | {F.hardsigmoid, torch.tanh, "hardsigmoid", "tanh", "softmax", F.softmax, torch.softmax}
_GATE_MODULES = (nn.Sigmoid, nn.Hardsigmoid, nn.Tanh, nn.Softmax)


@dataclass(frozen=True)
class Variant:
    """What a matched module computes, and where its conv parameters live (attribute paths
    relative to the module, e.g. ``att_fc.0.weight``)."""

    pool: str                # "mean", "max", "mean+max" or "max+mean"
    kernel_size: tuple[int, int]
    weight_path: str
    bias_path: str | None
    return_map: bool

    def __str__(self):
        kh, kw = self.kernel_size
        out = "s" if self.return_map else "x*s"
        return f"pool={self.pool} kernel={kh}x{kw} bias={self.bias_path is not None} output={out}"


@dataclass
class ConvertReport:
    """What `convert` did: ``swapped`` (path, original class, variant) and ``skipped``
    (path, class, reason) for every module that looked like a spatial attention but was not
    converted. The model itself has path ``""``."""

    swapped: list[tuple[str, str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)

    def __str__(self):
        lines = [f"sam_fused.convert: {len(self.swapped)} swapped, {len(self.skipped)} skipped"]
        lines += [f"  swapped {path or '(model)'} [{cls}]: {what}" for path, cls, what in self.swapped]
        lines += [f"  skipped {path or '(model)'} [{cls}]: {why}" for path, cls, why in self.skipped]
        return "\n".join(lines)


class NoMatch(Exception):
    """The traced graph is not the pattern; the message says where it differs."""


# ---- the fused module --------------------------------------------------------------------------

class ConvertedAttention(nn.Module):
    """A converted spatial-attention module: the fused op on the original module's conv
    parameters. Holds the original's children, parameters and buffers under their names (so
    its ``state_dict`` is the original's), though only the conv parameters are used.

    `torch.jit.script` compiles a forward generated for the variant (`export.script_forward`):
    TorchScript cannot follow the attribute paths of ``forward``."""

    __constants__ = ["script_source"]

    def __init__(self, original: nn.Module, variant: Variant):
        super().__init__()
        for name, child in original._modules.items():
            self.add_module(name, child)
        for name, param in original._parameters.items():
            self.register_parameter(name, param)
        for name, buf in original._buffers.items():
            self.register_buffer(name, buf, persistent=name not in original._non_persistent_buffers_set)
        self.train(original.training)
        self.variant = variant
        self.original_class = type(original).__qualname__

    def _tensor(self, path):
        return functools.reduce(getattr, path.split("."), self)

    def forward(self, x):
        v = self.variant
        bias = self._tensor(v.bias_path) if v.bias_path else None
        return spatial_attention(x, self._tensor(v.weight_path), bias, v.pool, v.return_map)

    def __prepare_scriptable__(self):
        v = self.variant
        self.script_source = export.spatial_attention_forward_source(v.weight_path, v.bias_path, v.pool, v.return_map)
        export.script_forward(self, self.script_source)
        return self

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("forward", None)  # the generated forward of __prepare_scriptable__ is not picklable
        return state

    def extra_repr(self):
        return f"{self.original_class}: {self.variant}"


# ---- graph matching ----------------------------------------------------------------------------

def _target(node: fx.Node):
    """The function of a call_function node or the method name of a call_method node."""
    return node.target if node.op in ("call_function", "call_method") else None


def _is(node, targets) -> bool:
    if not isinstance(node, fx.Node):
        return False
    target = _target(node)
    try:
        return target in targets
    except TypeError:  # unhashable target
        return False


def _arg(node: fx.Node, pos: int, name: str, default=None):
    """Argument `pos` (counting self of a method call) or keyword `name` of a call node."""
    if len(node.args) > pos:
        return node.args[pos]
    return node.kwargs.get(name, default)


def _describe(node, module: nn.Module | None = None) -> str:
    """`node` for a message; a module call with its class when the traced `module` is given."""
    if not isinstance(node, fx.Node):
        return repr(node)
    if node.op == "call_module":
        cls = f" ({type(module.get_submodule(node.target)).__name__})" if module is not None else ""
        return f"module {node.target}{cls}"
    target = node.target
    return f"{node.op} {getattr(target, '__name__', target)}"


def _descendants(node: fx.Node) -> set[fx.Node]:
    """Every node that uses `node`'s value, directly or through others."""
    seen, todo = set(), [node]
    while todo:
        for user in todo.pop().users:
            if user not in seen:
                seen.add(user)
                todo.append(user)
    return seen


def _is_channel_dim(dim) -> bool:
    if isinstance(dim, (tuple, list)) and len(dim) == 1:
        dim = dim[0]
    return isinstance(dim, int) and not isinstance(dim, bool) and dim in _CHANNEL_DIMS


class _Matcher:
    """Matches the traced graph of `module` backwards from its output; records the nodes it
    accepts so that anything left over can be checked."""

    def __init__(self, module: nn.Module, graph: fx.Graph):
        self.module, self.graph = module, graph
        self.used: set[fx.Node] = set()
        self.inputs = [n for n in graph.nodes if n.op == "placeholder"]
        self.x = self.inputs[0] if self.inputs else None
        self.even_split_max = None  # the name of a pool whose tie gradient the kernel does not have

    def looks_like_attention(self) -> bool:
        """Whether a failed match is worth reporting: the graph pools, convolves and takes a
        sigmoid somewhere, or it gates the output with a pool of the input over channels (a
        helper module holding only the conv or the pooling is neither)."""
        nodes = list(self.graph.nodes)
        return (any(_is(n, _POOL_OPS) for n in nodes)
                and any(_is(n, _CONV) or self._is_module(n, nn.Conv2d) for n in nodes)
                and any(_is(n, _SIGMOID) or self._is_module(n, nn.Sigmoid) for n in nodes)
                ) or self._gates_with_channel_pool()

    def _gates_with_channel_pool(self) -> bool:
        """Whether some reduction of the input over channels reaches the output through a
        sigmoid-like op, or the output multiplies the input by something computed from it."""
        output = next(n for n in self.graph.nodes if n.op == "output")
        result = output.args[0]
        multiplies_x = _is(result, _MUL) and self.x in result.args
        for node in self.graph.nodes:
            if _is(node, _CHANNEL_REDUCTIONS) and node.args and node.args[0] is self.x and \
                    _is_channel_dim(_arg(node, 1, "dim")):
                downstream = _descendants(node)
                if output in downstream and (multiplies_x or any(
                        _is(n, _GATE_LIKE) or self._is_module(n, _GATE_MODULES) for n in downstream)):
                    return True
        return False

    def accept(self, node):
        self.used.add(node)
        return node

    def match(self) -> Variant:
        if len(self.inputs) != 1:
            raise NoMatch(f"forward takes {len(self.inputs)} inputs, the pattern has one")
        out = self.accept(next(n for n in self.graph.nodes if n.op == "output"))
        result, reader = out.args[0], out  # reader: the node that reads the map's values
        if _is(result, _MUL):
            return_map, reader = False, result
            a, b = self.accept(result).args[:2] if len(result.args) >= 2 else (None, None)
            s = b if a is self.x else a if b is self.x else None
            if s is None or len(result.args) != 2 or result.kwargs:
                raise NoMatch("the output multiplies something other than the input by the map")
            if _is(s, {"expand_as"}) and len(s.args) == 2 and s.args[1] is self.x:
                s = self.accept(s).args[0]
        else:
            return_map, s = True, result
        s = self._sigmoid_in_place(s, reader) or s
        if not _is(s, _SIGMOID) and not self._is_module(s, nn.Sigmoid):
            raise NoMatch(f"the map is {_describe(s, self.module)}, not a sigmoid (of the conv)")
        a = self.accept(s).args[0]
        weight, bias, kernel, q = self.conv(a)
        pool = self.pooled(q)
        if weight.shape[1] != len(pool.split("+")):
            raise NoMatch(f"conv has {weight.shape[1]} input channels for pool {pool}")
        self.check_leftovers()
        if self.even_split_max:
            raise NoMatch(f"max via {self.even_split_max} splits the gradient evenly on ties; the fused kernel "
                          "routes it to one index (the first maximum, as torch.max(x, 1)[0] does)")
        return Variant(pool, kernel, self.weight_path, self.bias_path, return_map)

    def _sigmoid_in_place(self, s, reader):
        """The one in-place sigmoid (``torch.sigmoid_(a)`` / ``a.sigmoid_()``) applied to `s`
        before `reader` reads it, whose result the graph then does not use; None if none."""
        if not isinstance(s, fx.Node):
            return None
        order = {n: i for i, n in enumerate(self.graph.nodes)}
        in_place = [u for u in s.users if _is(u, _SIGMOID_INPLACE) and u.args[:1] == (s,)]
        if len(in_place) == 1 and order[in_place[0]] < order[reader]:
            return in_place[0]
        return None

    def _is_module(self, node, classes) -> bool:
        """Whether `node` calls a submodule of exactly one of `classes` (a subclass may do more)."""
        classes = classes if isinstance(classes, tuple) else (classes,)
        return isinstance(node, fx.Node) and node.op == "call_module" and \
            type(self.module.get_submodule(node.target)) in classes

    # -- conv
    def conv(self, node):
        """(weight, bias, kernel, conv input) of the conv that `node` must be."""
        if self._is_module(node, nn.Conv2d):
            conv = self.module.get_submodule(node.target)
            if len(node.args) != 1 or node.kwargs:
                raise NoMatch(f"conv {node.target} is called with extra arguments")
            self.weight_path = f"{node.target}.weight"
            self.bias_path = f"{node.target}.bias" if conv.bias is not None else None
            self._check_conv_geometry(conv.weight, conv.stride, conv.padding, conv.dilation, conv.groups,
                                      conv.padding_mode, where=f"Conv2d {node.target!r}")
            self.accept(node)
            return conv.weight, conv.bias, tuple(conv.weight.shape[2:]), node.args[0]
        if _is(node, _CONV):
            self.accept(node)
            weight_node, bias_node = _arg(node, 1, "weight"), _arg(node, 2, "bias")
            weight = self._parameter(weight_node, "weight")
            bias = None if bias_node is None else self._parameter(bias_node, "bias")
            self.weight_path, self.bias_path = weight_node.target, getattr(bias_node, "target", None)
            self._check_conv_geometry(weight, _arg(node, 3, "stride", 1), _arg(node, 4, "padding", 0),
                                      _arg(node, 5, "dilation", 1), _arg(node, 6, "groups", 1), "zeros",
                                      where="F.conv2d")
            return weight, bias, tuple(weight.shape[2:]), _arg(node, 0, "input")
        if isinstance(node, fx.Node) and node.op == "call_module":
            cls = type(self.module.get_submodule(node.target)).__name__
            raise NoMatch(f"the sigmoid's input is module {node.target} ({cls}), not a plain nn.Conv2d")
        raise NoMatch(f"the sigmoid's input is {_describe(node)}, not a conv")

    def _parameter(self, node, what) -> torch.Tensor:
        """The module's own parameter or buffer a get_attr node reads."""
        if not (isinstance(node, fx.Node) and node.op == "get_attr"):
            raise NoMatch(f"conv {what} is {_describe(node)}, not a parameter of the module")
        self.accept(node)
        owner, _, name = node.target.rpartition(".")
        holder = self.module.get_submodule(owner)
        tensor = holder._parameters.get(name, holder._buffers.get(name))
        if tensor is None:
            raise NoMatch(f"conv {what} {node.target} is not a parameter or buffer of the module")
        return tensor

    @staticmethod
    def _check_conv_geometry(weight, stride, padding, dilation, groups, padding_mode, where):
        pair = lambda v: tuple(v) * (2 // len(v)) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
        if weight.dim() != 4 or weight.shape[0] != 1:
            raise NoMatch(f"{where} has weight shape {tuple(weight.shape)}, need 1 output channel [1, P, kh, kw]")
        kh, kw = weight.shape[2:]
        if kh % 2 == 0 or kw % 2 == 0:
            raise NoMatch(f"{where} has an even kernel {kh}x{kw}")
        if pair(stride) != (1, 1):
            raise NoMatch(f"{where} has stride {stride}, need 1")
        if pair(dilation) != (1, 1):
            raise NoMatch(f"{where} has dilation {dilation}, need 1")
        if groups != 1:
            raise NoMatch(f"{where} has groups={groups}, need 1")
        if padding_mode != "zeros":
            raise NoMatch(f"{where} has padding_mode {padding_mode!r}, need 'zeros'")
        same = (kh // 2, kw // 2)
        padding = {"same": same, "valid": (0, 0)}.get(padding, padding) if isinstance(padding, str) else padding
        if pair(padding) != same:
            raise NoMatch(f"{where} has padding {padding}, need {same} ('same') for a {kh}x{kw} kernel")

    # -- pooling
    def pooled(self, node) -> str:
        """The pool string of the conv input: one pooled map or a cat of two."""
        if _is(node, _CAT):
            tensors, dim = _arg(node, 0, "tensors"), _arg(node, 1, "dim", 0)
            if isinstance(node.kwargs.get("axis"), int):
                dim = node.kwargs["axis"]
            if not _is_channel_dim(dim):
                raise NoMatch(f"cat along dim {dim}, not the channel dim")
            if not isinstance(tensors, (tuple, list)) or not 1 <= len(tensors) <= 2:
                raise NoMatch("cat of other than one or two pooled maps")
            self.accept(node)
            maps = [self.pool(t) for t in tensors]
            if len(set(maps)) != len(maps):
                raise NoMatch(f"pooled maps {'+'.join(maps)}: only mean and max, once each")
            return "+".join(maps)
        return self.pool(node)

    def pool(self, node) -> str:
        """"mean" or "max" for a keepdim pool of the input over channels, or a pool without
        keepdim followed by unsqueeze(1)."""
        if _is(node, _UNSQUEEZE):
            if not _is_channel_dim(_arg(node, 1, "dim")):
                raise NoMatch(f"unsqueeze along dim {_arg(node, 1, 'dim')}, not the channel dim")
            return self._reduction(self.accept(node).args[0], keepdim=False)
        return self._reduction(node, keepdim=True)

    def _reduction(self, node, keepdim: bool) -> str:
        values = node
        if _is(node, {operator.getitem, builtins.getattr}) and node.args[1] in (0, "values") and \
                _is(node.args[0], _MAX_PAIR):
            node = self.accept(node).args[0]  # torch.max(x, dim, keepdim)[0] / .values
        elif _is(node, _MAX_PAIR):
            raise NoMatch("torch.max over channels is used without taking [0] / .values")
        if not _is(node, _POOL_OPS):
            raise NoMatch(f"the conv input is {_describe(values)}, not a pool over channels of the input")
        self.accept(node)
        if _is(node, _MAX_EVEN_SPLIT):
            self.even_split_max = getattr(node.target, "__name__", node.target)
        if node.args[0] is not self.x:
            raise NoMatch(f"{_describe(node)} pools something other than the module input")
        dim, kept = _arg(node, 1, "dim"), _arg(node, 2, "keepdim", False)
        if not _is_channel_dim(dim):
            raise NoMatch(f"{_describe(node)} pools over dim {dim}, not the channel dim 1")
        if kept is not keepdim:
            raise NoMatch(f"{_describe(node)} has keepdim={kept}" + ("" if keepdim else " before unsqueeze")
                          + ": the pooled map is not [B, 1, H, W]")
        if len(node.args) > 3 or set(node.kwargs) - {"dim", "keepdim"}:
            raise NoMatch(f"{_describe(node)} has extra arguments (dtype, out, ...)")
        return "mean" if _is(node, _MEAN) else "max"

    def check_leftovers(self):
        """Nodes outside the pattern may only be unused, side-effect-free queries (a stray
        ``B, C, H, W = x.size()``): module calls and in-place ops could change state."""
        for node in self.graph.nodes:
            if node in self.used or node.op in ("placeholder", "get_attr"):
                continue
            name = getattr(node.target, "__name__", str(node.target))
            inplace = name.endswith("_") and not name.endswith("__") or node.target in (
                operator.setitem, operator.iadd, operator.imul, operator.isub, operator.itruediv)
            if node.op == "call_module" or inplace:
                raise NoMatch(f"extra op {_describe(node)} besides the pattern")


# ---- the walk over the model -------------------------------------------------------------------

# The earlier name of ConvertedAttention, kept so pickles of converted models still load.
FusedSpatialAttention = ConvertedAttention

_FUSED = (ConvertedAttention, _modules.SpatialAttentionModule, _modules.SpatialGate)


def _conv_weights_on_pooled_maps(module: nn.Module, one_output: bool = False) -> bool:
    """Whether some parameter could be a conv weight over 1 or 2 pooled maps ([O, 1 or 2, kh, kw],
    with O = 1 if `one_output`): only such modules, and parameter-free ones, are traced."""
    return any(p.dim() == 4 and p.shape[1] <= 2 and (p.shape[0] == 1 or not one_output)
               for p in module.parameters())


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _has_forward_hooks(module: nn.Module) -> str | None:
    """The first (sub)module of `module` with forward (pre-)hooks, which a swap would drop."""
    return next((name or "the module" for name, m in module.named_modules()
                 if m._forward_hooks or m._forward_pre_hooks), None)


def _match(module: nn.Module) -> Variant | str | None:
    """What to do with one module whose descendants hold no spatial attention: the `Variant`
    to swap in, the reason (a str) to skip a module that looks like a spatial attention, or
    None for a module that does not."""
    if fx.Tracer().is_leaf_module(module, ""):
        return None
    conv_like, parameterless = _conv_weights_on_pooled_maps(module), next(module.parameters(), None) is None
    if not (conv_like or parameterless):
        return None
    try:
        matcher = _Matcher(module, fx.Tracer().trace(module))
    except Exception as error:  # noqa: BLE001  (any failure of user code under tracing)
        if not _conv_weights_on_pooled_maps(module, one_output=True):
            return None
        return f"cannot be traced by torch.fx ({_first_line(error)})"
    try:
        variant = matcher.match()
    except NoMatch as mismatch:
        return str(mismatch) if matcher.looks_like_attention() else None
    hooked = _has_forward_hooks(module)
    if hooked:
        return f"{hooked} has forward hooks, which the fused module would not run"
    return variant


def _swap(module: nn.Module, path: str, report: ConvertReport) -> tuple[nn.Module, bool]:
    """(replacement of `module`, whether its subtree holds a spatial attention, swapped or
    reported). Children first: a module is only tried when none of its descendants was."""
    cls = type(module).__qualname__
    if isinstance(module, _FUSED):
        return module, True
    if type(module) in _modules._TWINS:
        report.swapped.append((path, cls, "reference module -> fused twin"))
        return _modules._fused_twin(module), True
    found = False
    for name, child in list(module.named_children()):
        new, child_found = _swap(child, f"{path}.{name}" if path else name, report)
        if new is not child:
            setattr(module, name, new)
        found = found or child_found
    if found:
        return module, True
    outcome = _match(module)
    if outcome is None:
        return module, False
    if isinstance(outcome, str):
        report.skipped.append((path, cls, outcome))
        return module, True
    report.swapped.append((path, cls, str(outcome)))
    return ConvertedAttention(module, outcome), True


def convert(model: nn.Module, *, verbose: bool = False, return_report: bool = False):
    """Swap every spatial-attention module in `model` (at any depth, or `model` itself) for the
    fused op, keeping parameters (shared), ``state_dict`` keys, device, dtype and train mode.

    Recognised by the computation graph (see the module docstring), whatever the class and
    attribute names; the reference classes of `sam_fused.reference` become their fused twins.
    Returns the model (the same object changed in place, or the replacement when `model` itself
    is a spatial attention), or ``(model, report)`` with `return_report`; `verbose` prints the
    `ConvertReport`: what was swapped, with the variant, and what was skipped, with the reason.
    """
    report = ConvertReport()
    model, _ = _swap(model, "", report)
    if verbose:
        print(report)
    return (model, report) if return_report else model
