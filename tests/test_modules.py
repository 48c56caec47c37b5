"""The drop-in modules: state_dict round trips with the reference modules (strict, both
directions), parity of the fused modules, and `convert` on a nested model."""
import copy

import pytest
import torch
from torch import nn

import sam_fused
from helpers import (DEVICES, DTYPES, POOLS, REF_DTYPE, assert_results_close, make_input, make_pair,
                     module_results)
from sam_fused import reference

HAR_KEYS = {"att_fc.0.weight": (1, 1, 3, 1), "att_fc.0.bias": (1,)}
GATE_CONFIGS = [(pool, kernel, bias, return_map) for pool in POOLS
                for kernel, bias, return_map in [(7, False, False), ((5, 3), True, True)]]


def _randomized(module, seed=0):
    """`module` with seeded random parameters, so a round trip that dropped one would show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return module


def _assert_same_state(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
        assert sa[key].dtype == sb[key].dtype and sa[key].device == sb[key].device, key


# ---- state_dict round trips ------------------------------------------------------------------

def test_har_state_dict_keys_match_reference():
    for module in (reference.SpatialAttentionModule(), sam_fused.SpatialAttentionModule()):
        assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == HAR_KEYS


def test_har_state_dict_round_trip_both_directions():
    ref, fused = _randomized(reference.SpatialAttentionModule(), 1), sam_fused.SpatialAttentionModule()
    fused.load_state_dict(ref.state_dict(), strict=True)
    _assert_same_state(fused, ref)
    fused = _randomized(fused, 2)
    back = reference.SpatialAttentionModule()
    back.load_state_dict(fused.state_dict(), strict=True)
    _assert_same_state(back, fused)


@pytest.mark.parametrize("pool,kernel,bias,return_map", GATE_CONFIGS)
def test_gate_state_dict_round_trip_both_directions(pool, kernel, bias, return_map):
    ref = _randomized(reference.SpatialGate(kernel, pool, bias, return_map), 1)
    fused = sam_fused.SpatialGate(kernel, pool, bias, return_map)
    assert set(fused.state_dict()) == ({"weight", "bias"} if bias else {"weight"})
    fused.load_state_dict(ref.state_dict(), strict=True)
    _assert_same_state(fused, ref)
    fused = _randomized(fused, 2)
    back = reference.SpatialGate(kernel, pool, bias, return_map)
    back.load_state_dict(fused.state_dict(), strict=True)
    _assert_same_state(back, fused)


# ---- parity of the fused modules ---------------------------------------------------------------

def _assert_module_parity(fused: nn.Module, ref: nn.Module, x):
    """The fused module (in x's dtype) equals the reference (run in REF_DTYPE) on x, output and
    the gradients of x and of every parameter."""
    expected = module_results(ref, x, REF_DTYPE[x.dtype])
    assert_results_close(module_results(fused, x), expected, x.dtype, type(fused).__name__)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 64, 64, 9), (2, 128, 32, 9), (2, 256, 16, 9), (2, 512, 8, 9)])
def test_har_module_matches_reference(shape, dtype, layout, device):
    ref = reference.SpatialAttentionModule().to(device=device, dtype=dtype)
    fused = sam_fused.SpatialAttentionModule().to(device=device, dtype=dtype)
    fused.load_state_dict(ref.state_dict(), strict=True)
    _assert_module_parity(fused, ref, make_input(shape, dtype, layout, device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pool,kernel,bias,return_map", GATE_CONFIGS)
def test_gate_module_matches_reference(pool, kernel, bias, return_map, device):
    ref, _, _ = make_pair(pool, kernel, bias, return_map, torch.float64, device)
    fused = sam_fused.SpatialGate(kernel, pool, bias, return_map).to(device=device, dtype=torch.float64)
    fused.load_state_dict(ref.state_dict(), strict=True)
    _assert_module_parity(fused, ref, make_input((2, 16, 11, 9), torch.float64, device=device))


# ---- convert -----------------------------------------------------------------------------------

class Block(nn.Module):
    """A SANN-like block (docs/design.md §7) with the HAR attention one level down."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, (3, 1), stride=(2, 1), padding=(1, 0))
        self.att = reference.SpatialAttentionModule()
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        return torch.relu(self.bn(self.att(self.conv(x))))


class NestedNet(nn.Module):
    """Reference attention modules at depths 1 to 4, in Sequential, ModuleList and ModuleDict
    containers, with a mix of train and eval mode."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, (3, 1), padding=(1, 0))
        self.sam = reference.SpatialAttentionModule()                                    # depth 1
        self.blocks = nn.Sequential(Block(8, 16), Block(16, 16))                         # depth 3
        self.gates = nn.ModuleList([
            reference.SpatialGate(7, "mean+max"),                               # depth 2
            nn.Sequential(nn.Identity(), reference.SpatialGate((5, 3), "max+mean", bias=True)),
        ])
        self.heads = nn.ModuleDict({"deep": nn.Sequential(nn.Sequential(
            reference.SpatialGate(3, "max", bias=True, return_map=True)))})    # depth 4
        self.gates[0].eval()
        self.blocks[1].att.eval()

    def forward(self, x):
        x = self.blocks(self.sam(self.stem(x)))
        for gate in self.gates:
            x = gate(x)
        return x * self.heads["deep"](x) + x


def _attention_modules(model):
    """{qualified name: module} of every reference or fused attention module."""
    kinds = (reference.SpatialAttentionModule, reference.SpatialGate)  # fused twins subclass these
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds)}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_convert_swaps_every_reference_module_keeping_state(dtype, device):
    model = _randomized(NestedNet()).to(device=device, dtype=dtype)
    original = copy.deepcopy(model)
    converted = sam_fused.convert(model)
    assert converted is model
    before, after = _attention_modules(original), _attention_modules(converted)
    assert before.keys() == after.keys() and len(before) == 6
    twins = {reference.SpatialAttentionModule: sam_fused.SpatialAttentionModule,
             reference.SpatialGate: sam_fused.SpatialGate}
    for name, old in before.items():
        new = after[name]
        assert type(new) is twins[type(old)], name
        assert new.training == old.training, name
        for attr in ("kernel_size", "pool", "return_map"):
            assert getattr(new, attr, None) == getattr(old, attr, None), (name, attr)
    assert [m.training for m in converted.modules()] == [m.training for m in original.modules()]
    _assert_same_state(converted, original)  # weights, dtype and device of every parameter and buffer
    # and the reverse: a fresh reference model loads the converted model's state strictly
    NestedNet().to(device=device, dtype=dtype).load_state_dict(converted.state_dict(), strict=True)


@pytest.mark.parametrize("device", DEVICES)
def test_converted_model_matches_reference_model(device):
    model = _randomized(NestedNet()).to(device=device, dtype=torch.float64)
    original = copy.deepcopy(model)
    x = make_input((3, 1, 32, 9), torch.float64, device=device)
    expected = module_results(original, x)
    assert_results_close(module_results(sam_fused.convert(model), x), expected, torch.float64, "NestedNet")


@pytest.mark.parametrize("module", [reference.SpatialAttentionModule(),
                                    reference.SpatialGate((5, 3), "max+mean", True, True).eval()])
def test_convert_of_a_reference_module_returns_its_twin(module):
    module = _randomized(module).double()
    twin = sam_fused.convert(module)
    assert type(twin) in (sam_fused.SpatialAttentionModule, sam_fused.SpatialGate)
    assert twin.training == module.training
    _assert_same_state(twin, module)


def test_convert_leaves_other_models_alone():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), sam_fused.SpatialGate(3), nn.ReLU())
    children = list(model.children())
    assert sam_fused.convert(model) is model
    assert list(model.children()) == children


def test_convert_keeps_the_reference_modules_objects():
    # the twin is the same module, its class swapped: an optimizer made before convert trains it,
    # and hooks on it (or on its conv) still run
    model = NestedNet().double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    model.sam.register_forward_hook(lambda m, a, o: seen.append("sam"))
    model.blocks[0].att.att_fc[0].register_forward_hook(lambda m, a, o: seen.append("conv"))
    sam, gate = model.sam, model.gates[0]
    converted = sam_fused.convert(model)
    assert converted.sam is sam and type(sam) is sam_fused.SpatialAttentionModule
    assert converted.gates[0] is gate and type(gate) is sam_fused.SpatialGate
    before = gate.weight.detach().clone()
    converted(make_input((2, 1, 16, 9), torch.float64)).sum().backward()
    optimizer.step()
    assert not torch.equal(gate.weight, before)
    assert seen == ["sam", "conv"]
