"""Drop-in conformance: every scenario the original layer supports, run on the original and on
the fused layer, must work on both with matching results (or fail on both).

Layers: the HAR layer, CBAM gates of every pool (bias, return_map), a user's model passed
through `sam_fused.convert`, and the point-wise SAM. Scenarios: eager fp64/fp32, autocast
fp16/bf16, no_grad, inference_mode, double backward (a gradient penalty), torch.func grad / vjp /
jvp / vmap, forward-mode AD (torch.autograd.forward_ad), deepcopy / pickle / state_dict round trips,
torch.compile(fullgraph) and torch.export.
DDP over gloo is tests/test_ddp.py (it spawns processes, so it runs once, not per layer).

Expected values always come from the original (reference) layer, never from the fused one.
"""
from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn
from torch.func import functional_call

import sam_fused
from helpers import DEVICES, TOLERANCE, assert_close_scaled, make_grad
from sam_fused import reference


class UserGate(nn.Module):
    """A CBAM spatial gate as users write it, to go through `convert`."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x):
        pooled = torch.cat([torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class UserNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.gate = UserGate()

    def forward(self, x):
        return self.gate(torch.relu(self.conv(x)))


class PointwiseReference(nn.Module):
    """YOLOv4's modified SAM in eager PyTorch, with the fused module's parameter names."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.conv(x))


def _randomize(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1.5 / max(1, p[0].numel()) ** 0.5))
    return module


def _twin(original, fused):
    fused.load_state_dict(original.state_dict(), strict=True)
    return original, fused


def har():
    return _twin(_randomize(reference.SpatialAttentionModule()), sam_fused.SpatialAttentionModule())


def gate(pool, bias=True, return_map=False, kernel=(3, 3)):
    return lambda: _twin(_randomize(reference.SpatialGate(kernel, pool, bias, return_map)),
                         sam_fused.SpatialGate(kernel, pool, bias, return_map))


def converted():
    original = _randomize(UserNet())
    fused, report = sam_fused.convert(copy.deepcopy(original), return_report=True)
    assert "1 swapped" in str(report), str(report)
    return original, fused


def pointwise():
    return _twin(_randomize(PointwiseReference(3)), sam_fused.PointwiseSpatialAttention(3))


LAYERS = {
    "har": (har, 4),
    **{f"gate-{pool}": (gate(pool), 3) for pool in reference.POOLS},
    "gate-map-nobias": (gate("mean+max", bias=False, return_map=True, kernel=(7, 7)), 3),
    "convert": (converted, 3),
    "pointwise": (pointwise, 3),
}
# The layers scenarios that cost a compile or an export run on (a few, to keep CI short).
SLOW_LAYERS = ["har", "gate-mean+max", "convert", "pointwise"]


def make_layers(name, dtype=torch.float64):
    factory, channels = LAYERS[name]
    original, fused = factory()
    x = torch.randn(2, channels, 9, 5, generator=torch.Generator().manual_seed(1))
    # Distinct channel values: the max's subgradient is then unique, so any correct rule agrees.
    return original.to(dtype), fused.to(dtype), x.to(dtype)


def run(module, x, grad_out=None):
    """Output and gradients of x and every parameter, as a dict."""
    x = x.detach().requires_grad_()
    params = {n: p.detach().requires_grad_() for n, p in module.named_parameters()}
    out = functional_call(module, params, (x,))
    if grad_out is None:
        grad_out = make_grad(out.shape, out.dtype)
    grads = torch.autograd.grad(out, [x, *params.values()], grad_out)
    names = [n.removeprefix("_orig_mod.") for n in params]  # torch.compile's wrapper prefix
    return {"out": out.detach(), "x": grads[0], **dict(zip(names, grads[1:]))}


def assert_dicts_close(actual, expected, tol, what):
    assert actual.keys() == expected.keys(), f"{what}: {sorted(actual)} != {sorted(expected)}"
    for key in expected:
        assert actual[key].dtype == expected[key].dtype, f"{what} {key}: {actual[key].dtype} != {expected[key].dtype}"
        assert_close_scaled(actual[key], expected[key], tol, f"{what} {key}")


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_eager(name, dtype):
    original, fused, x = make_layers(name, dtype)
    assert_dicts_close(run(fused, x), run(original, x), TOLERANCE[dtype], f"{name} {dtype}")


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("lowp", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("x_dtype", ["float32", "lowp"])
@pytest.mark.parametrize("device", DEVICES)
def test_autocast(name, lowp, x_dtype, device):
    """Same dtypes as the original under the same autocast context, values within the
    low-precision dtype's tolerance of the fp32 original run without autocast (the fused op
    accumulates in fp32; the original's own autocast error is of the same order)."""
    original, fused, x = make_layers(name, torch.float32)
    original, fused, x = original.to(device), fused.to(device), x.to(device)
    x = x if x_dtype == "float32" else x.to(lowp)
    with torch.autocast(device, dtype=lowp):
        expected = run(original, x)
        grad_out = make_grad(expected["out"].shape, expected["out"].dtype, device, seed=2)
        expected = run(original, x, grad_out)
        actual = run(fused, x, grad_out)
    for key in expected:
        assert actual[key].dtype == expected[key].dtype, f"{name} {key}: {actual[key].dtype} != {expected[key].dtype}"
    exact = run(original, x.float(), grad_out.float())
    eps = torch.finfo(lowp).eps
    for key in expected:
        # The original under autocast is itself only that close to the fp32 result.
        assert_close_scaled(expected[key].float(), exact[key], 16 * eps, f"{name} original {key}")
        assert_close_scaled(actual[key].float(), exact[key], 16 * eps, f"{name} fused {key}")


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_no_grad_modes(name, mode):
    original, fused, x = make_layers(name)
    context = torch.no_grad if mode == "no_grad" else torch.inference_mode
    with context():
        expected, actual = original(x), fused(x)
    assert actual.grad_fn is None and actual.requires_grad == expected.requires_grad
    assert_close_scaled(actual, expected, TOLERANCE[torch.float64], name)


def gradient_penalty(module, x):
    """Gradients of ``out.sum() + |d(out . g)/dx|^2``: a WGAN-GP style penalty, which needs the
    backward to be differentiable (double backward)."""
    x = x.detach().requires_grad_()
    params = {n: p.detach().requires_grad_() for n, p in module.named_parameters()}
    out = functional_call(module, params, (x,))
    g = make_grad(out.shape, out.dtype, seed=5)
    gx, = torch.autograd.grad((out * g).sum(), x, create_graph=True)
    loss = out.sum() + gx.pow(2).sum()
    grads = torch.autograd.grad(loss, [x, *params.values()])
    return {"x": grads[0], **dict(zip(params, grads[1:]))}


@pytest.mark.parametrize("name", LAYERS)
def test_double_backward(name):
    original, fused, x = make_layers(name)
    assert_dicts_close(gradient_penalty(fused, x), gradient_penalty(original, x), 1e-9, name)


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("transform", ["grad", "vjp", "jvp", "vmap", "hessian"])
def test_torch_func(name, transform):
    original, fused, x = make_layers(name)
    params = {n: p.detach() for n, p in original.named_parameters()}
    g = make_grad(original(x).shape, x.dtype, seed=3)

    def run_transform(module):
        def f(p, xx):
            return functional_call(module, p, (xx,))

        if transform == "grad":
            return torch.func.grad(lambda p, xx: (f(p, xx) * g).sum(), argnums=(0, 1))(params, x)
        if transform == "vjp":
            out, vjp_fn = torch.func.vjp(f, params, x)
            return out, vjp_fn(g)
        if transform == "jvp":
            tangents = ({n: torch.ones_like(p) for n, p in params.items()}, torch.cos(x))
            return torch.func.jvp(f, (params, x), tangents)
        if transform == "vmap":
            xs = torch.stack([x, 2 * x, -x])
            return torch.func.vmap(lambda xx: f(params, xx))(xs)
        # hessian of a scalar function of a small x: forward-over-reverse, two transforms at once
        small = x[:1, :, :3, :2].contiguous()
        return torch.func.hessian(lambda xx: f(params, xx).sin().sum())(small)

    expected = torch.utils._pytree.tree_leaves(run_transform(original))
    actual = torch.utils._pytree.tree_leaves(run_transform(fused))
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert_close_scaled(a, e, TOLERANCE[torch.float64], f"{name} {transform}")


@pytest.mark.parametrize("name", LAYERS)
def test_copy_pickle_state_dict(name):
    original, fused, x = make_layers(name)
    expected = original(x)
    buffer = io.BytesIO()
    torch.save(fused, buffer)
    buffer.seek(0)
    for clone in (copy.deepcopy(fused), pickle.loads(pickle.dumps(fused)), torch.load(buffer, weights_only=False)):
        assert_close_scaled(clone(x), expected, TOLERANCE[torch.float64], f"{name} {type(clone).__name__}")
    # state_dicts are interchangeable both ways (strict)
    back = copy.deepcopy(original)
    back.load_state_dict(fused.state_dict(), strict=True)
    fused.load_state_dict(original.state_dict(), strict=True)
    assert_close_scaled(back(x), expected, TOLERANCE[torch.float64], f"{name} state_dict")


@pytest.mark.parametrize("name", SLOW_LAYERS)
def test_compile_fullgraph(name, fresh_dynamo):
    original, fused, x = make_layers(name, torch.float32)
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    assert_dicts_close(run(compiled, x), run(original, x), TOLERANCE[torch.float32], name)


@pytest.mark.parametrize("name", SLOW_LAYERS)
def test_export(name):
    original, fused, x = make_layers(name, torch.float32)
    exported = torch.export.export(fused, (x,))
    assert_close_scaled(exported.module()(x), original(x), TOLERANCE[torch.float32], name)


def test_double_backward_variant_gradgradcheck():
    """fp64 gradgradcheck of the op over pools x bias x return_map x layouts."""
    gen = torch.Generator().manual_seed(0)
    for pool in reference.POOLS:
        for bias in (False, True):
            for return_map in (False, True):
                for channels_last in (False, True):
                    x = torch.randn(2, 3, 4, 3, dtype=torch.float64, generator=gen)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    P = len(reference.pool_maps(pool))
                    w = torch.randn(1, P, 3, 3, dtype=torch.float64, generator=gen) * 0.5
                    b = torch.randn(1, dtype=torch.float64, generator=gen) if bias else None
                    inputs = (x.requires_grad_(), w.requires_grad_()) + ((b.requires_grad_(),) if bias else ())

                    def f(xx, ww, bb=None, pool=pool, return_map=return_map):
                        return sam_fused.spatial_attention(xx, ww, bb, pool, return_map)

                    assert torch.autograd.gradgradcheck(f, inputs), (pool, bias, return_map, channels_last)


def test_pointwise_gradgradcheck():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 3, dtype=torch.float64, generator=gen).requires_grad_()
    y = torch.randn(2, 3, 4, 3, dtype=torch.float64, generator=gen).requires_grad_()
    assert torch.autograd.gradgradcheck(sam_fused.pointwise_attention, (x, y))


@pytest.mark.parametrize("op", ["spatial_attention_fwd", "spatial_attention_bwd", "pointwise_attention_fwd",
                                "pointwise_attention_bwd"])
def test_every_op_has_autograd_and_autocast_kernels(op):
    """No op falls back to torch's autograd fallback (which warns and returns zero gradients);
    the forward ops have autocast kernels for CPU and CUDA."""
    name = f"sam_fused::{op}"
    assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "Autograd"), name
    if op.endswith("_fwd"):
        for key in ("AutocastCPU", "AutocastCUDA"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(name, key), (name, key)


def test_double_backward_through_fused_backward_op_is_not_zero():
    """The gradient penalty of the op alone (the case that used to return zeros)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, generator=gen).requires_grad_()
    w = (torch.randn(1, 1, 3, 1, dtype=torch.float64, generator=gen) * 0.5).requires_grad_()
    gx, = torch.autograd.grad(sam_fused.spatial_attention(x, w).pow(2).sum(), x, create_graph=True)
    fused = torch.autograd.grad(gx.sum(), [x, w])
    ref = reference.SpatialGate((3, 1), "mean", bias=False).double()
    with torch.no_grad():
        ref.weight.copy_(w)
    x2 = x.detach().requires_grad_()
    gx2, = torch.autograd.grad(ref(x2).pow(2).sum(), x2, create_graph=True)
    expected = torch.autograd.grad(gx2.sum(), [x2, ref.weight])
    for a, e in zip(fused, expected):
        assert e.abs().max() > 0
        assert_close_scaled(a, e, 1e-10, "second derivative")


def forward_mode_ad(module, x):
    """Output and its tangent under torch.autograd.forward_ad (not torch.func): x and every
    parameter dual, tangents cos(x) and ones."""
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        params = {n: fwAD.make_dual(p.detach(), torch.ones_like(p)) for n, p in module.named_parameters()}
        out = functional_call(module, params, (fwAD.make_dual(x, torch.cos(x)),))
        primal, tangent = fwAD.unpack_dual(out)
    return primal, tangent


@pytest.mark.parametrize("name", LAYERS)
def test_forward_mode_ad(name):
    # C++ custom Functions have no jvp (torch raised "jvp is not implemented"): the fused forward
    # ops compute their composite when an operand carries a tangent
    original, fused, x = make_layers(name)
    expected, actual = forward_mode_ad(original, x), forward_mode_ad(fused, x)
    assert expected[1] is not None and actual[1] is not None
    for a, e, what in zip(actual, expected, ("out", "tangent")):
        assert_close_scaled(a, e, TOLERANCE[torch.float64], f"{name} {what}")


@pytest.mark.parametrize("name", ["har", "pointwise"])
def test_forward_mode_ad_through_the_fused_backward_names_torch_func(name):
    # a dual grad_out reaching the fused backward op: refused, not silently dropped
    import torch.autograd.forward_ad as fwAD

    _, fused, x = make_layers(name)
    x = x.detach().requires_grad_()
    out = fused(x)
    g = make_grad(out.shape, out.dtype, seed=4)
    with fwAD.dual_level(), pytest.raises(RuntimeError, match="torch.func"):
        torch.autograd.grad(out, x, fwAD.make_dual(g, torch.ones_like(g)))


def har_pair():
    torch.manual_seed(0)
    original, fused = reference.SpatialAttentionModule(), sam_fused.SpatialAttentionModule()
    fused.load_state_dict(original.state_dict())
    return original.double(), fused.double()


@pytest.mark.filterwarnings("ignore:.*weight_norm.*deprecated")
@pytest.mark.parametrize("how", ["weight_norm", "parametrized_weight_norm", "spectral_norm"])
def test_the_har_conv_reparametrized_as_in_the_original(how):
    # the deprecated nn.utils.weight_norm / spectral_norm recompute conv.weight in a pre-hook of
    # the conv, which only the original calls: the fused layer used the stale weight (0.16 off)
    original, fused = har_pair()
    x = torch.randn(2, 6, 9, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for module in (original, fused):
        conv = module.att_fc[0]
        if how == "weight_norm":
            torch.nn.utils.weight_norm(conv)
            with torch.no_grad():
                conv.weight_v.mul_(3.0)
                conv.weight_g.mul_(0.5)
        elif how == "parametrized_weight_norm":
            torch.nn.utils.parametrizations.weight_norm(conv)
            with torch.no_grad():
                conv.parametrizations.weight.original1.mul_(3.0)
        else:
            torch.nn.utils.spectral_norm(conv)
    torch.manual_seed(2)  # spectral_norm's power iteration starts from random vectors
    expected = run(original, x)
    torch.manual_seed(2)
    actual = run(fused, x)
    assert set(actual) == set(expected)
    assert_dicts_close(actual, expected, 1e-10, how)


@pytest.mark.parametrize("where", ["conv", "sigmoid", "att_fc", "global"])
def test_hooks_of_the_har_submodules_fire_as_in_the_original(where):
    original, fused = har_pair()
    x = torch.randn(2, 6, 9, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    seen = []

    def hook(module, args, output):
        seen.append(type(module).__name__)
        return output * 2  # a hook that changes the output changes the layer's result

    results = []
    for module in (original, fused):
        seen.clear()
        if where == "global":
            handle = torch.nn.modules.module.register_module_forward_hook(
                lambda m, a, o: (seen.append(type(m).__name__), o)[1])
        else:
            target = {"conv": module.att_fc[0], "sigmoid": module.att_fc[1], "att_fc": module.att_fc}[where]
            handle = target.register_forward_hook(hook)
        try:
            results.append((module(x), sorted(seen)))
        finally:
            handle.remove()
    (expected, seen_original), (actual, seen_fused) = results
    seen_fused = [n for n in seen_fused if n != "SpatialAttentionModule"]  # the layer's own class, both
    seen_original = [n for n in seen_original if n != "SpatialAttentionModule"]
    assert seen_fused == seen_original and seen_original
    assert_close_scaled(actual, expected, TOLERANCE[torch.float64], where)
    assert_close_scaled(fused(x), original(x), TOLERANCE[torch.float64], "after the hook's removal")
