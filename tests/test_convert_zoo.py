"""`sam_fused.convert` on spatial-attention modules written the many ways real code writes them
(a zoo), on near-misses that compute something else, on nested models, and state_dict round
trips. Every expected value comes from running the unconverted module (eager PyTorch)."""
from __future__ import annotations

import copy

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


class AmaxGate(nn.Module):
    """mean+max with amax, methods and nn.Sigmoid; s * x."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, 3, padding=1, bias=True)
        self.sigmoid = nn.Sigmoid()

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
        q = torch.cat([x.amax(-3, keepdim=True), x.mean(-3, keepdim=True)], dim=-3)
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


ZOO = {
    # name: (module factory, expected variant string)
    "har": (HarSam, "pool=mean kernel=3x1 bias=True output=x*s"),
    "cbam": (CbamSpatialGate, "pool=max+mean kernel=7x7 bias=False output=x*s"),
    "amax_nn_sigmoid_s_times_x": (AmaxGate, "pool=mean+max kernel=3x3 bias=True output=x*s"),
    "max_values_same_padding": (MaxValuesGate, "pool=max+mean kernel=5x3 bias=False output=x*s"),
    "max_only_expand_as": (MaxOnlyGate, "pool=max kernel=5x5 bias=True output=x*s"),
    "map_only": (AttentionMap, "pool=mean+max kernel=7x7 bias=False output=s"),
    "functional_parameter": (FunctionalGate, "pool=max+mean kernel=3x3 bias=True output=x*s"),
    "size_query_1x1_valid": (SizeQueryGate, "pool=mean kernel=1x1 bias=True output=x*s"),
    "sequential_map": (SequentialMap, "pool=mean kernel=3x3 bias=True output=s"),
    "cbam_3x3": (lambda: CbamSpatialGate(3), "pool=max+mean kernel=3x3 bias=False output=x*s"),
}


@pytest.mark.parametrize("name", ZOO)
def test_zoo_module_is_swapped_with_parity(name):
    factory, variant = ZOO[name]
    original = _randomized(factory()).double()
    converted, report = sam_fused.convert(copy.deepcopy(original), return_report=True)
    assert isinstance(converted, sam_fused.FusedSpatialAttention), report
    assert report.swapped == [("", type(original).__qualname__, variant)] and report.skipped == []
    assert converted.state_dict().keys() == original.state_dict().keys()
    x = make_input((2, 5, 9, 7), torch.float64)
    expected = module_results(original, x)  # output and grads of x and of every parameter
    assert_results_close(module_results(converted, x), expected, torch.float64, name)


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
        q = self.pool(x) if self.pool else torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
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
        assert isinstance(model.layers[i].sa, sam_fused.FusedSpatialAttention)
    assert [m.training for m in converted.modules() if not isinstance(m, sam_fused.FusedSpatialAttention)] == \
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
