"""`sam_fused.convert` on spatial-attention modules written the many ways real code writes them
(a zoo), on near-misses that compute something else, on nested models, and state_dict round
trips. Every expected value comes from running the unconverted module (eager PyTorch)."""
from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sam_fused
from helpers import assert_results_close, make_input, module_results


def _randomized(module, seed=0):
    """Seeded random parameters with O(1) pre-activations, so every gradient term matters and a
    dropped or mixed-up parameter shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / fan_in ** 0.5 if p.dim() > 1 else 0.5))
    return module


# ---- the zoo: each is a spatial attention the fused op computes ------------------------------

class HarSam(nn.Module):
    """The HAR layer as in docs/design.md §1, under other names."""

    def __init__(self):
        super().__init__()
        self.att_fc = nn.Sequential(nn.Conv2d(1, 1, (3, 1), padding=(1, 0)), nn.Sigmoid())

    def forward(self, x):
        att = torch.mean(x, dim=1, keepdim=True)
        return x * self.att_fc(att)


class BasicConv(nn.Module):
    """CBAM's conv wrapper, here without BN and ReLU (as its SpatialGate configures it)."""

    def __init__(self, cin, cout, k, relu=False, bn=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout) if bn else None
        self.relu = nn.ReLU() if relu else None

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.relu is not None:
            x = self.relu(x)
        return x


class ChannelPool(nn.Module):
    """CBAM's ChannelPool: max and mean without keepdim, unsqueezed back."""

    def forward(self, x):
        return torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)


class CbamSpatialGate(nn.Module):
    def __init__(self, k=7):
        super().__init__()
        self.compress = ChannelPool()
        self.spatial = BasicConv(2, 1, k)

    def forward(self, x):
        x_out = self.spatial(self.compress(x))
        scale = torch.sigmoid(x_out)
        return x * scale


class MaxMethodGate(nn.Module):
    """mean+max with methods (max(...).values) and nn.Sigmoid; s * x."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, 3, padding=1, bias=True)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        avg_out = x.mean(1, keepdim=True)
        max_out = x.max(dim=1, keepdim=True).values
        s = self.sigmoid(self.conv1(torch.cat([avg_out, max_out], dim=1)))
        return s * x


class AmaxGate(MaxMethodGate):
    """The same with amax, which shares a tie's gradient evenly: left alone."""

    def forward(self, x):
        avg_out = x.mean(1, keepdim=True)
        max_out = x.amax(dim=1, keepdim=True)
        s = self.sigmoid(self.conv1(torch.cat([avg_out, max_out], dim=1)))
        return s * x


class MaxValuesGate(nn.Module):
    """max via .values, max first, torch.concat, torch.mul, F.sigmoid, padding='same'."""

    def __init__(self):
        super().__init__()
        self.spatial_conv = nn.Conv2d(2, 1, (5, 3), padding="same", bias=False)

    def forward(self, inputs):
        mx = torch.max(inputs, dim=1, keepdim=True).values
        av = torch.mean(inputs, 1, True)
        return torch.mul(inputs, F.sigmoid(self.spatial_conv(torch.concat((mx, av), 1))))


class MaxOnlyGate(nn.Module):
    """max only via x.max(...)[0], .sigmoid() method, expand_as."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 5, padding=2)

    def forward(self, x):
        m = x.max(dim=1, keepdim=True)[0]
        return x * self.conv(m).sigmoid().expand_as(x)


class AttentionMap(nn.Module):
    """Returns the map only (mean+max, 7x7)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=7, padding=3, bias=False)

    def forward(self, x):
        avg = torch.mean(x, dim=1, keepdim=True)
        mx, _ = torch.max(x, dim=1, keepdim=True)
        return torch.sigmoid(self.conv(torch.cat([avg, mx], dim=1)))


class FunctionalGate(nn.Module):
    """F.conv2d on nn.Parameter weight and bias, explicit padding tuple, negative dims."""

    def __init__(self, k=3):
        super().__init__()
        self.w = nn.Parameter(torch.empty(1, 2, k, k))
        self.b = nn.Parameter(torch.empty(1))
        self.k = k

    def forward(self, x):
        q = torch.cat([x.max(-3, keepdim=True)[0], x.mean(-3, keepdim=True)], dim=-3)
        return x * torch.sigmoid(F.conv2d(q, self.w, self.b, stride=1, padding=(self.k // 2, self.k // 2)))


class SizeQueryGate(nn.Module):
    """An unused `x.size()` (common in the wild), a 1x1 conv with padding 'valid'."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(1, 1, 1, padding="valid")

    def forward(self, x):
        b, c, h, w = x.size()
        return self.proj(x.mean(dim=(1,), keepdim=True)).sigmoid() * x


class SequentialMap(nn.Sequential):
    """A Sequential returning the map: channel pool module, conv, sigmoid."""

    class MeanPool(nn.Module):
        def forward(self, x):
            return x.mean(1, keepdim=True)

    def __init__(self):
        super().__init__(self.MeanPool(), nn.Conv2d(1, 1, 3, padding=1), nn.Sigmoid())


def _unpacked_max(x):
    m, _ = torch.max(x, 1, keepdim=True)
    return m


def _sigmoid_in_place(a):
    torch.sigmoid_(a)  # the result unused: a itself is the map
    return a


def _sigmoid_method_in_place(a):
    a.sigmoid_()
    return a


MAX_SPELLINGS = {
    "torch.max(x, 1)[0].unsqueeze(1)": lambda x: torch.max(x, 1)[0].unsqueeze(1),
    "x.max(1)[0].unsqueeze(1)": lambda x: x.max(1)[0].unsqueeze(1),
    "x.max(1, True)[0]": lambda x: x.max(1, True)[0],
    "x.max(dim=1, keepdim=True).values": lambda x: x.max(dim=1, keepdim=True).values,
    "torch.max(x, dim=1, keepdim=True)[0]": lambda x: torch.max(x, dim=1, keepdim=True)[0],
    "torch.max(x, dim=-3).values.unsqueeze(-3)": lambda x: torch.max(x, dim=-3).values.unsqueeze(-3),
    "m, _ = torch.max(x, 1, keepdim=True)": lambda x: _unpacked_max(x),
}
SIGMOID_SPELLINGS = {
    "torch.sigmoid": torch.sigmoid,
    "a.sigmoid()": lambda a: a.sigmoid(),
    "F.sigmoid": F.sigmoid,
    "torch.special.expit": torch.special.expit,
    "torch.sigmoid_(a), result used": torch.sigmoid_,
    "a.sigmoid_(), result used": lambda a: a.sigmoid_(),
    "torch.sigmoid_(a); a": _sigmoid_in_place,
    "a.sigmoid_(); a": _sigmoid_method_in_place,
}


class Spelled(nn.Module):
    """mean+max -> conv 3x3 -> sigmoid -> x * s, with the max and the sigmoid written by the
    given functions."""

    def __init__(self, max_of=MAX_SPELLINGS["torch.max(x, 1)[0].unsqueeze(1)"], sigmoid=torch.sigmoid):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 3, padding=1)
        self.max_of, self.sigmoid = max_of, sigmoid

    def forward(self, x):
        return x * self.sigmoid(self.conv(torch.cat([x.mean(1, keepdim=True), self.max_of(x)], 1)))


class InPlaceMap(nn.Module):
    """Returns the map, made in place by sigmoid_ on the conv output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)

    def forward(self, x):
        a = self.conv(torch.max(x, 1, keepdim=True)[0])
        a.sigmoid_()
        return a


ZOO = {
    # name: (module factory, expected variant string)
    "har": (HarSam, "pool=mean kernel=3x1 bias=True output=x*s"),
    "cbam": (CbamSpatialGate, "pool=max+mean kernel=7x7 bias=False output=x*s"),
    "max_values_nn_sigmoid_s_times_x": (MaxMethodGate, "pool=mean+max kernel=3x3 bias=True output=x*s"),
    "max_values_same_padding": (MaxValuesGate, "pool=max+mean kernel=5x3 bias=False output=x*s"),
    "max_only_expand_as": (MaxOnlyGate, "pool=max kernel=5x5 bias=True output=x*s"),
    "map_only": (AttentionMap, "pool=mean+max kernel=7x7 bias=False output=s"),
    "functional_parameter": (FunctionalGate, "pool=max+mean kernel=3x3 bias=True output=x*s"),
    "size_query_1x1_valid": (SizeQueryGate, "pool=mean kernel=1x1 bias=True output=x*s"),
    "sequential_map": (SequentialMap, "pool=mean kernel=3x3 bias=True output=s"),
    "cbam_3x3": (lambda: CbamSpatialGate(3), "pool=max+mean kernel=3x3 bias=False output=x*s"),
    "in_place_map": (InPlaceMap, "pool=max kernel=3x3 bias=False output=s"),
}
for _name, _max_of in MAX_SPELLINGS.items():
    ZOO[f"max {_name}"] = (functools.partial(Spelled, max_of=_max_of), "pool=mean+max kernel=3x3 bias=True output=x*s")
for _name, _sigmoid in SIGMOID_SPELLINGS.items():
    ZOO[f"sigmoid {_name}"] = (functools.partial(Spelled, sigmoid=_sigmoid),
                               "pool=mean+max kernel=3x3 bias=True output=x*s")
ZOO["sigmoid nn.Sigmoid()"] = (lambda: Spelled(sigmoid=nn.Sigmoid()), "pool=mean+max kernel=3x3 bias=True output=x*s")


@pytest.mark.parametrize("name", ZOO)
def test_zoo_module_is_swapped_with_parity(name):
    factory, variant = ZOO[name]
    original = _randomized(factory()).double()
    converted, report = sam_fused.convert(copy.deepcopy(original), return_report=True)
    assert isinstance(converted, sam_fused.ConvertedAttention), report
    assert report.swapped == [("", type(original).__qualname__, variant)] and report.skipped == []
    assert converted.state_dict().keys() == original.state_dict().keys()
    x = make_input((2, 5, 9, 7), torch.float64)
    expected = module_results(original, x)  # output and grads of x and of every parameter
    assert_results_close(module_results(converted, x), expected, torch.float64, name)


def _input_with_channel_ties(shape=(2, 5, 9, 7), seed=3):
    """Small integers: at most pixels several channels share the maximum."""
    x = torch.randint(-2, 3, shape, generator=torch.Generator().manual_seed(seed)).double()
    top = x.amax(1, keepdim=True)
    assert ((x == top).sum(1) > 1).float().mean() > 0.3  # ties at a good share of the pixels
    return x


@pytest.mark.parametrize("name", ZOO)
def test_zoo_gradient_on_channel_ties_is_the_original(name):
    """Where channels tie for the maximum, the converted gate's gradients (of x and of every
    parameter) are the original's: both route a tie's gradient to the first maximum."""
    factory, _ = ZOO[name]
    original = _randomized(factory()).double()
    converted = sam_fused.convert(copy.deepcopy(original))
    assert isinstance(converted, sam_fused.ConvertedAttention)
    x = _input_with_channel_ties()
    actual, expected = module_results(converted, x), module_results(original, x)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-12, atol=1e-12, msg=f"{name} {key}")


@pytest.mark.parametrize("gate", [AmaxGate, lambda: Spelled(max_of=lambda x: torch.amax(x, 1, keepdim=True))])
def test_amax_gate_is_skipped_because_its_tie_gradient_differs(gate):
    """amax shares a tie's gradient evenly: the gate is left alone with that reason, and the
    fused op on its parameters would indeed give another dx on ties."""
    module = _randomized(gate()).double()
    result, report = sam_fused.convert(module, return_report=True)
    assert result is module and report.swapped == []
    assert len(report.skipped) == 1 and "amax splits the gradient evenly on ties" in report.skipped[0][2]
    conv = module.conv1 if isinstance(module, AmaxGate) else module.conv
    x = _input_with_channel_ties()
    fused = functools.partial(sam_fused.spatial_attention, weight=conv.weight, bias=conv.bias, pool="mean+max")
    grad_out = torch.ones_like(x)
    dx_fused = torch.autograd.grad(fused(x.requires_grad_()), x, grad_out)[0]
    dx_original = torch.autograd.grad(module(x), x, grad_out)[0]
    assert (dx_fused - dx_original).abs().max() > 1e-3


def test_zoo_parity_in_float32_channels_last():
    original = _randomized(CbamSpatialGate())
    converted = sam_fused.convert(copy.deepcopy(original))
    x = make_input((2, 16, 12, 9), torch.float32, "channels_last")
    expected = module_results(original, x, torch.float64)  # the fp32 values, run in fp64
    assert_results_close(module_results(converted, x), expected, torch.float32, "cbam fp32")


# ---- near-misses: look alike, compute something else ------------------------------------------

class Gate(nn.Module):
    """mean+max -> conv -> [extra] -> sigmoid -> x*s (or the map s, which also runs when the
    conv changes the map's size), with the conv, the extra op and the pooling given."""

    def __init__(self, conv=None, extra=None, pool=None, map_only=False):
        super().__init__()
        self.conv = conv if conv is not None else nn.Conv2d(2, 1, 3, padding=1)
        self.extra = extra
        self.pool = pool
        self.map_only = map_only

    def forward(self, x):
        q = self.pool(x) if self.pool else torch.cat([x.mean(1, keepdim=True), x.max(1, keepdim=True)[0]], 1)
        a = self.conv(q)
        if self.extra is not None:
            a = self.extra(a)
        return torch.sigmoid(a) if self.map_only else x * torch.sigmoid(a)


class Scaled(Gate):
    def forward(self, x):
        return 2 * super().forward(x)


NEAR_MISSES = {
    # name: (module factory, words the reason must contain)
    "stride_2": (lambda: Gate(nn.Conv2d(2, 1, 3, stride=2, padding=1), map_only=True), "stride"),
    "dilation_2": (lambda: Gate(nn.Conv2d(2, 1, 3, dilation=2, padding=2)), "dilation"),
    "reflect_padding": (lambda: Gate(nn.Conv2d(2, 1, 3, padding=1, padding_mode="reflect")), "padding_mode"),
    "circular_padding": (lambda: Gate(nn.Conv2d(2, 1, 3, padding=1, padding_mode="circular")), "padding_mode"),
    "wrong_padding": (lambda: Gate(nn.Conv2d(2, 1, 3, padding=0), map_only=True), "padding"),
    "even_kernel": (lambda: Gate(nn.Conv2d(2, 1, 4, padding=2), map_only=True), "even kernel"),
    "batchnorm_after_conv": (lambda: Gate(extra=nn.BatchNorm2d(1)), "BatchNorm2d"),
    "relu_after_conv": (lambda: Gate(extra=nn.ReLU()), "ReLU"),
    "scaled_output": (lambda: Scaled(), "multiplies something other"),
    "two_output_channels": (lambda: Gate(nn.Conv2d(2, 2, 3, padding=1), map_only=True), "1 output channel"),
    "scaled_pooled_maps": (lambda: Gate(pool=lambda x: torch.cat(
        [x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1) * 0.5), "not a pool"),
    "pool_over_height": (lambda: Gate(pool=lambda x: x.mean(2, keepdim=True)), "dim 2"),
    "max_without_keepdim": (lambda: Gate(nn.Conv2d(2, 1, 3, padding=1), pool=lambda x: torch.amax(x, 1)),
                            "keepdim=False"),  # conv2d then takes [B, H, W] as one unbatched [C, H, W]
}


class GroupedGate(nn.Module):
    """groups=2 over 2 pooled maps needs 2 output channels, then a sum back to one map."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1, groups=2)

    def forward(self, x):
        q = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.conv(q).sum(1, keepdim=True))


NEAR_MISSES["grouped_conv_summed"] = (GroupedGate, "the sigmoid's input")


class NoConvGate(nn.Module):
    """A parameter-free gate: the sigmoid of the channel mean, no conv."""

    def forward(self, x):
        return x * torch.sigmoid(x.mean(1, keepdim=True))


class SigmoidAfterProduct(Spelled):
    """The in-place sigmoid runs after the product has read the conv output."""

    def forward(self, x):
        a = self.conv(torch.cat([x.mean(1, keepdim=True), self.max_of(x)], 1))
        y = x * a
        a.sigmoid_()
        return y


def _handwritten_sigmoid(a):
    return 1 / (1 + torch.exp(-a))


NEAR_MISSES.update({
    "amax_method": (AmaxGate, "max via amax splits the gradient evenly on ties"),
    "torch_amax": (lambda: Spelled(max_of=lambda x: torch.amax(x, dim=1, keepdim=True)), "max via amax"),
    "hardsigmoid": (lambda: Spelled(sigmoid=F.hardsigmoid), "the map is call_function hardsigmoid, not a sigmoid"),
    "hardsigmoid_module": (lambda: Spelled(sigmoid=nn.Hardsigmoid()), "module sigmoid (Hardsigmoid), not a sigmoid"),
    "tanh": (lambda: Spelled(sigmoid=torch.tanh), "not a sigmoid"),
    "handwritten_sigmoid": (lambda: Spelled(sigmoid=_handwritten_sigmoid), "the map is call_function truediv"),
    "sigmoid_in_place_after_the_product": (SigmoidAfterProduct, "the map is module conv (Conv2d), not a sigmoid"),
    "sum_over_channels": (lambda: Gate(pool=lambda x: torch.cat([x.sum(1, True), x.mean(1, True)], 1)),
                          "call_method sum, not a pool over channels"),
    "min_over_channels": (lambda: Gate(pool=lambda x: torch.cat([x.mean(1, True), torch.min(x, 1, True)[0]], 1)),
                          "not a pool over channels"),
    "no_conv": (NoConvGate, "the sigmoid's input is call_method mean, not a conv"),
})


@pytest.mark.parametrize("name", NEAR_MISSES)
def test_near_miss_is_left_untouched_and_reported(name):
    factory, reason_words = NEAR_MISSES[name]
    module = _randomized(factory()).double()
    x = make_input((2, 2, 6, 6), torch.float64)  # 2 channels, so that pooling over H still runs
    before = module(x)
    result, report = sam_fused.convert(module, return_report=True)
    assert result is module and report.swapped == []
    assert len(report.skipped) == 1 and report.skipped[0][0] == "", report
    assert reason_words in report.skipped[0][2], report
    assert torch.equal(result(x), before)


def test_module_that_cannot_be_traced_is_skipped_with_the_reason():
    class Branchy(Gate):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: not traceable
                return super().forward(x)
            return x

    model = nn.Sequential(nn.Identity(), Branchy())
    _, report = sam_fused.convert(model, return_report=True)
    assert report.swapped == []
    assert [(p, c) for p, c, _ in report.skipped] == [
        ("1", "test_module_that_cannot_be_traced_is_skipped_with_the_reason.<locals>.Branchy")]
    assert "cannot be traced" in report.skipped[0][2]


def test_module_with_hooks_is_skipped():
    module = HarSam()
    module.att_fc[0].register_forward_hook(lambda m, i, o: None)
    result, report = sam_fused.convert(module, return_report=True)
    assert result is module and "forward hooks" in report.skipped[0][2]


def test_unrelated_modules_are_not_reported():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), ChannelPool(), BasicConv(2, 1, 3))
    result, report = sam_fused.convert(model, return_report=True)
    assert result is model and report.swapped == [] and report.skipped == []


def test_verbose_prints_the_report(capsys):
    model = nn.Sequential(HarSam(), Gate(nn.Conv2d(2, 1, 3, stride=2, padding=1)))
    sam_fused.convert(model, verbose=True)
    printed = capsys.readouterr().out
    assert "1 swapped, 1 skipped" in printed
    assert "swapped 0 [HarSam]: pool=mean kernel=3x1" in printed
    assert "skipped 1 [Gate]: Conv2d 'conv' has stride" in printed


# ---- nested models ------------------------------------------------------------------------------

class ResBlock(nn.Module):
    """A ResNet basic block with a CBAM spatial gate before the residual sum."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.sa = CbamSpatialGate()

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.sa(self.bn2(self.conv2(out)))
        return torch.relu(out + x)


class TinyResNet(nn.Module):
    def __init__(self, c=8, blocks=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.layers = nn.Sequential(*[ResBlock(c) for _ in range(blocks)])
        self.near_miss = Gate(nn.Conv2d(2, 1, 3, padding=1, padding_mode="reflect"))
        self.head = nn.Linear(c, 4)

    def forward(self, x):
        x = self.near_miss(self.layers(self.stem(x)))
        return self.head(x.mean((2, 3)))


def test_resnet_with_a_gate_in_every_block():
    model = _randomized(TinyResNet()).double()
    original = copy.deepcopy(model)
    model.layers[1].eval()  # train mode survives per module
    original.layers[1].eval()
    converted, report = sam_fused.convert(model, return_report=True)
    assert converted is model
    assert [p for p, _, _ in report.swapped] == [f"layers.{i}.sa" for i in range(3)]
    assert [p for p, _, _ in report.skipped] == ["near_miss"]
    for i in range(3):
        assert isinstance(model.layers[i].sa, sam_fused.ConvertedAttention)
    assert [m.training for m in converted.modules() if not isinstance(m, sam_fused.ConvertedAttention)] == \
        [m.training for m in original.modules() if not isinstance(m, CbamSpatialGate)]
    assert converted.layers[1].sa.training is False
    x = make_input((2, 3, 10, 9), torch.float64)
    assert_results_close(module_results(converted, x), module_results(original, x), torch.float64, "TinyResNet")


def test_sann_reference_becomes_fused():
    from sam_fused.models import SANN

    model = _randomized(SANN(9, 6, attention="reference", channels=(8, 16))).double()
    original = copy.deepcopy(model)
    converted, report = sam_fused.convert(model, return_report=True)
    assert converted.attention == "fused" and len(report.swapped) == 2 and report.skipped == []
    x = make_input((3, 1, 32, 9), torch.float64)
    assert_results_close(module_results(converted.eval(), x), module_results(original.eval(), x), torch.float64,
                         "SANN")


# ---- state_dict round trips ---------------------------------------------------------------------

def test_state_dict_round_trip_before_and_after_conversion():
    model = _randomized(TinyResNet())
    checkpoint = copy.deepcopy(model.state_dict())
    converted = sam_fused.convert(model)
    # same keys and values after conversion
    after = converted.state_dict()
    assert after.keys() == checkpoint.keys()
    assert all(torch.equal(after[k], checkpoint[k]) for k in checkpoint)
    # an old checkpoint loads strictly into the converted model, and is then used
    fresh = sam_fused.convert(TinyResNet())
    fresh.load_state_dict(checkpoint, strict=True)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x))
    # and a converted model's checkpoint loads strictly into the unconverted model
    plain = TinyResNet()
    plain.load_state_dict(converted.state_dict(), strict=True)
    torch.testing.assert_close(plain.eval()(x), converted(x))


def test_conversion_keeps_device_dtype_and_shares_parameters():
    module = _randomized(AmaxGate()).to(torch.bfloat16)
    params = dict(module.named_parameters())
    converted = sam_fused.convert(module)
    assert {k: v for k, v in converted.named_parameters()} == params  # the same tensors
    assert all(p.dtype == torch.bfloat16 for p in converted.parameters())
    assert converted(torch.randn(2, 4, 5, 5, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_converted_gate_trains():
    module = _randomized(CbamSpatialGate()).double()
    converted = sam_fused.convert(copy.deepcopy(module))
    opt = torch.optim.SGD(converted.parameters(), lr=0.1)
    x = make_input((2, 4, 7, 7), torch.float64)
    before = converted.spatial.conv.weight.detach().clone()
    converted(x).square().sum().backward()
    opt.step()
    assert not torch.equal(before, converted.spatial.conv.weight)


def test_converted_module_compiles_fullgraph():
    original = _randomized(CbamSpatialGate()).double()
    converted = sam_fused.convert(copy.deepcopy(original))
    torch._dynamo.reset()
    compiled = torch.compile(converted, fullgraph=True, backend="eager")
    x = make_input((2, 4, 7, 7), torch.float64)
    torch.testing.assert_close(compiled(x), original(x))
    torch._dynamo.reset()
