"""A model holding the fused ops ships like the original: ONNX with both exporters (standard
operators only, ONNX Runtime parity, dynamic batch), TorchScript (script and trace, saved and
loaded in a fresh process) and torch.export + AOTInductor.

Each case pairs an eager PyTorch model (reference modules, or plain ATen ops for the point-wise
attention) with its deployed twin (`sam_fused.convert` of a copy, same parameters); expected
values come from the eager model, run in ``REF_DTYPE`` as in the parity tests. Dynamo exports
take seconds each on 2 cores, so every export covers several layers at once.
"""
from __future__ import annotations

import copy
import importlib.util
import io
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import sam_fused
from helpers import DEVICES, POOLS, REF_DTYPE, TOLERANCE, assert_close_scaled, make_input, make_pair
from sam_fused.models import SANN
from test_convert_zoo import ZOO, _randomized

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUSED_MODULES = (sam_fused.SpatialAttentionModule, sam_fused.SpatialGate, sam_fused.ConvertedAttention,
                 sam_fused.PointwiseSpatialAttention)


def _installed(*names):
    return all(importlib.util.find_spec(name) is not None for name in names)


needs_ort = pytest.mark.skipif(not _installed("onnx", "onnxruntime"),
                               reason="needs onnx and onnxruntime (pip install onnx onnxruntime)")
EXPORTERS = [pytest.param("dynamo", marks=pytest.mark.skipif(not _installed("onnxscript"),
                                                             reason="the dynamo exporter needs onnxscript")),
             "torchscript",
             "scripted"]  # torch.jit.script first, then the TorchScript exporter

# What the exported graphs may hold: the attention layers' operators and those of the layers
# around them in these models, all from the default ONNX domain.
STANDARD_OPS = {"ReduceMean", "ReduceMax", "Concat", "Conv", "Sigmoid", "Mul", "Add", "Cast", "Constant", "Identity",
                "BatchNormalization", "Relu", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Gemm"}


# ---- the cases: (eager model, deployed model, sample shape without the batch) ---------------

class PoolVariants(nn.Module):
    """A gate per pool variant, with and without bias, and two maps (return_map), all on the
    input and summed: each layer's output stays O(|x|), so the comparison sees every layer."""

    def __init__(self):
        super().__init__()
        variants = [(pool, kernel, bias)
                    for pool, kernel in zip(POOLS, [(3, 1), 3, 7, (5, 3)]) for bias in (True, False)]
        self.gates = nn.ModuleList(make_pair(pool, kernel, bias, dtype=torch.float32, seed=i)[0]
                                   for i, (pool, kernel, bias) in enumerate(variants))
        self.maps = nn.ModuleList(make_pair(pool, 3, bias, return_map=True, dtype=torch.float32, seed=10 + i)[0]
                                  for i, (pool, bias) in enumerate((("max", True), ("mean+max", False))))

    def forward(self, x):
        out = x * self.maps[0](x) * self.maps[1](x)
        for gate in self.gates:  # a loop, not sum(): TorchScript
            out = out + gate(x)
        return out


class ZooNet(nn.Module):
    """Every spatial attention of the convert tests' zoo, each swapped for a
    ConvertedAttention, all on the input and summed (the maps as x * map)."""

    def __init__(self):
        super().__init__()
        made = [(_randomized(factory(), seed), variant.endswith("output=s"))
                for seed, (factory, variant) in enumerate(ZOO.values())]
        self.gates = nn.ModuleList(m for m, is_map in made if not is_map)
        first_map, *maps = [m for m, is_map in made if is_map]
        self.first_map, self.maps = first_map, nn.ModuleList(maps)  # TorchScript cannot loop over a slice

    def forward(self, x):
        out = x * self.first_map(x)
        for attention_map in self.maps:
            out = out + x * attention_map(x)
        for gate in self.gates:
            out = out + gate(x)
        return out


class PointwiseEager(nn.Module):
    """YOLOv4's modified SAM in plain ATen ops, with PointwiseSpatialAttention's parameter names."""

    def __init__(self, channels=6, kernel_size=3):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x):
        return x * torch.sigmoid(self.conv(x))


def _eager_model(name):
    torch.manual_seed(0)
    if name == "sann":
        return SANN(9, 6, attention="reference", channels=(16, 32)), (1, 128, 9)
    if name == "har_layer":
        return _randomized(sam_fused.reference.SpatialAttentionModule()), (6, 10, 7)
    if name == "gate":
        return make_pair("mean+max", 7, False, dtype=torch.float32)[0], (6, 10, 7)
    if name == "gate_map":
        return make_pair("max", (3, 1), True, return_map=True, dtype=torch.float32)[0], (6, 10, 7)
    if name == "pool_variants":
        return PoolVariants(), (6, 10, 7)
    if name == "zoo":
        return ZooNet(), (6, 10, 7)
    if name == "pointwise":
        return PointwiseEager(), (6, 10, 7)
    raise ValueError(name)


def make_case(name, dtype=torch.float32):
    """(eager model, deployed model, sample shape); the deployed one holds only fused layers."""
    eager, sample = _eager_model(name)
    eager = eager.to(dtype).eval()
    if name == "pointwise":
        deployed = sam_fused.PointwiseSpatialAttention(6, 3).to(dtype).eval()
        deployed.load_state_dict(eager.state_dict())
    else:
        deployed = sam_fused.convert(copy.deepcopy(eager))
    assert any(isinstance(m, FUSED_MODULES) for m in deployed.modules()), f"{name}: nothing was converted"
    return eager, deployed, sample


def expected_output(eager, x):
    """The eager model's output, computed in REF_DTYPE[x.dtype] on the same values."""
    ref_dtype = REF_DTYPE[x.dtype]
    with torch.no_grad():
        return copy.deepcopy(eager).to(ref_dtype)(x.to(ref_dtype))


def deployed_output(deployed, x):
    with torch.no_grad():
        return deployed(x)


def _calls_fused_op(graph) -> bool:
    """Whether a TorchScript graph calls one of the fused ops."""
    return "sam_fused::" in str(graph)


CASES = ["sann", "pool_variants", "zoo", "pointwise"]
LAYERS = ["har_layer", "gate", "gate_map"]


# ---- ONNX ----------------------------------------------------------------------------------------

def export_onnx(model, x, exporter, opset_version=None) -> bytes:
    """The model exported with dynamic batch, as a user would (no sam_fused-specific argument)."""
    if exporter == "dynamo":
        program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},),
                                    verbose=False)
        return program.model_proto.SerializeToString()
    if exporter == "scripted":  # the TorchScript graph holds the fused ops: the registered symbolics translate them
        model = torch.jit.script(model)
        assert _calls_fused_op(model.inlined_graph)
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, dynamo=False, input_names=["x"], output_names=["out"],
                      dynamic_axes={"x": {0: "batch"}, "out": {0: "batch"}}, opset_version=opset_version)
    return buffer.getvalue()


def onnx_op_types(model_bytes) -> set[tuple[str, str]]:
    import onnx

    model = onnx.load_from_string(model_bytes)
    onnx.checker.check_model(model, full_check=True)
    return {(node.domain, node.op_type) for node in model.graph.node}


def run_onnxruntime(model_bytes, x):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return torch.from_numpy(out)


def assert_standard_ops(model_bytes, what) -> set[str]:
    """The op types of an exported model, checked to be standard ONNX operators."""
    op_types = onnx_op_types(model_bytes)
    domains = {domain for domain, _ in op_types}
    assert domains <= {""}, f"{what}: nodes outside the default ONNX domain: {domains}"
    ops = {op for _, op in op_types}
    assert ops <= STANDARD_OPS, f"{what}: unexpected ONNX ops {ops - STANDARD_OPS}"
    assert {"Sigmoid", "Mul"} <= ops, f"{what}: {ops}"
    return ops


@needs_ort
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", CASES)
def test_onnx_export_has_standard_ops_and_matches_eager(name, exporter):
    eager, deployed, sample = make_case(name)
    model_bytes = export_onnx(deployed, make_input((2, *sample), torch.float32), exporter)
    ops = assert_standard_ops(model_bytes, f"{exporter} {name}")
    if name == "pool_variants":
        assert {"ReduceMean", "ReduceMax", "Concat", "Conv"} <= ops
    for batch in (2, 5):  # exported at batch 2
        x = make_input((batch, *sample), torch.float32, seed=batch)
        assert_close_scaled(run_onnxruntime(model_bytes, x), expected_output(eager, x), TOLERANCE[torch.float32],
                            f"{exporter} {name} batch {batch}")


@pytest.mark.parametrize("exporter", EXPORTERS[:2])
def test_exporting_onnx_agrees_with_torch(exporter):
    """`sam_fused.export.exporting_onnx` reads the flags of torch.onnx.is_in_onnx_export directly
    (that function imports them on every call): both say the same in eager mode and in export."""
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append((sam_fused.export.exporting_onnx(), torch.onnx.is_in_onnx_export()))
            return x + 1

    x = torch.ones(2, 3)
    Probe()(x)
    if exporter == "dynamo":
        torch.onnx.export(Probe(), (x,), dynamo=True, verbose=False)
    else:
        torch.onnx.export(Probe(), (x,), io.BytesIO(), dynamo=False)
    assert seen[0] == (False, False)
    assert (True, True) in seen[1:] and all(ours == torchs for ours, torchs in seen), seen


def test_strict_capture_during_onnx_export_uses_aten_ops(monkeypatch):
    """The dynamo exporter falls back to strict (TorchDynamo) capture when non-strict fails:
    there too the layers trace as ATen ops while it exports, and as the fused op otherwise."""
    from torch.onnx._internal.exporter import _flags

    _, deployed, sample = make_case("gate")
    x = make_input((2, *sample), torch.float32)
    for exporting in (False, True):
        monkeypatch.setattr(_flags, "_is_onnx_exporting", exporting)
        program = torch.export.export(deployed, (x,), strict=True)
        fused = any(str(node.target).startswith("sam_fused.") for node in program.graph.nodes)
        assert fused is not exporting


@needs_ort
@pytest.mark.skipif(not _installed("onnxscript"), reason="the dynamo exporter needs onnxscript")
def test_plain_onnx_export_call(tmp_path):
    """``torch.onnx.export(model, (x,), path)``, no other argument, as a user would write it."""
    import onnx

    eager, deployed, sample = make_case("gate")
    x = make_input((2, *sample), torch.float32)
    torch.onnx.export(deployed, (x,), str(tmp_path / "gate.onnx"))
    model_bytes = onnx.load(str(tmp_path / "gate.onnx")).SerializeToString()
    assert assert_standard_ops(model_bytes, "plain export") == {"ReduceMean", "ReduceMax", "Concat", "Conv", "Sigmoid",
                                                                  "Mul"}
    assert_close_scaled(run_onnxruntime(model_bytes, x), expected_output(eager, x), TOLERANCE[torch.float32],
                        "plain export")


@needs_ort
@pytest.mark.skipif(not _installed("onnxscript"), reason="the dynamo exporter needs onnxscript")
def test_custom_nodes_on_request():
    """Inside `onnx_custom_nodes` every fused layer is one node of the sam_fused domain, with
    the variant in its attributes; the TorchScript exporter refuses; after the block the
    layers are standard operators again."""
    import onnx

    _, deployed, sample = make_case("pool_variants")
    x = make_input((2, *sample), torch.float32)
    _, pointwise, _ = make_case("pointwise")
    with sam_fused.export.onnx_custom_nodes():
        model = onnx.load_from_string(export_onnx(deployed, x, "dynamo"))
        pointwise_model = onnx.load_from_string(export_onnx(pointwise, x, "dynamo"))
        with pytest.raises(ValueError, match="dynamo exporter"):
            export_onnx(deployed, x, "torchscript")
    assert [(n.domain, n.op_type) for n in pointwise_model.graph.node] == [("", "Conv"),
                                                                         ("sam_fused", "PointwiseAttention")]
    layers = [m for m in deployed.modules() if isinstance(m, sam_fused.SpatialGate)]
    nodes = [n for n in model.graph.node if n.domain == "sam_fused"]
    assert [n.op_type for n in nodes] == ["SpatialAttention"] * len(layers) == ["SpatialAttention"] * 10
    # (pool, return_map, inputs) of each node and of each layer, in any order
    attributes = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in nodes]
    found = sorted((a["pool"].decode(), a["return_map"], len(n.input)) for a, n in zip(attributes, nodes))
    assert found == sorted((m.pool, int(m.return_map), 2 + (m.bias is not None)) for m in layers)
    assert {"ReduceMean", "ReduceMax", "Conv"}.isdisjoint(n.op_type for n in model.graph.node)
    assert ("sam_fused", 1) in {(o.domain, o.version) for o in model.opset_import}
    assert "ReduceMean" in assert_standard_ops(export_onnx(deployed, x, "torchscript"), "after the block")


@needs_ort
@pytest.mark.parametrize("exporter", ["torchscript", "scripted"])
def test_torchscript_exporter_before_opset_18(exporter):
    """Before opset 18 ReduceMean / ReduceMax take their axes as an attribute."""
    eager, deployed, sample = make_case("pool_variants")
    model_bytes = export_onnx(deployed, make_input((2, *sample), torch.float32), exporter, opset_version=17)
    assert {"ReduceMean", "ReduceMax"} <= assert_standard_ops(model_bytes, f"{exporter} opset 17")
    x = make_input((3, *sample), torch.float32, seed=3)
    assert_close_scaled(run_onnxruntime(model_bytes, x), expected_output(eager, x), TOLERANCE[torch.float32],
                        f"{exporter} opset 17")


@needs_ort
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", ["gate", "pointwise"])
def test_onnx_export_float16_computes_in_float32(name, exporter):
    """float16 layers export as Cast to float32, the float32 computation, one Cast back: the
    kernels' rounding, so the output is within float16's eps of the float32 eager model."""
    eager, deployed, sample = make_case(name, torch.float16)
    model_bytes = export_onnx(deployed, make_input((2, *sample), torch.float16), exporter)
    assert "Cast" in {op for _, op in onnx_op_types(model_bytes)}
    x = make_input((3, *sample), torch.float16, seed=3)
    out = run_onnxruntime(model_bytes, x)
    assert out.dtype == torch.float16
    assert_close_scaled(out, expected_output(eager, x), TOLERANCE[torch.float16], f"{exporter} {name} float16")


# ---- TorchScript -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CASES + LAYERS)
def test_script_calls_the_fused_op_and_matches_eager(name):
    eager, deployed, sample = make_case(name)
    scripted = torch.jit.script(deployed)
    assert _calls_fused_op(scripted.inlined_graph), f"{name}: the scripted graph does not call the fused op"
    x = make_input((3, *sample), torch.float32)
    assert_close_scaled(deployed_output(scripted, x), expected_output(eager, x), TOLERANCE[torch.float32], name)
    # Scripting gave the converted modules a generated forward; the eager model still works,
    # copies and pickles.
    assert_close_scaled(deployed_output(copy.deepcopy(deployed), x), expected_output(eager, x),
                        TOLERANCE[torch.float32], f"{name} eager after scripting")
    torch.save(deployed, io.BytesIO())


def test_converted_modules_alike_but_for_the_conv_script_apart():
    """Two converted modules with the same attributes, one using conv1 and one conv2: TorchScript
    must not reuse the first one's compiled forward for the second."""

    class TwoConvs(nn.Module):
        def __init__(self, use_second):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1)
            self.use_second = use_second

        def forward(self, x):
            conv = self.conv2 if self.use_second else self.conv1
            return x * torch.sigmoid(conv(x.mean(1, keepdim=True)))

    eager = nn.Sequential(_randomized(TwoConvs(False)), _randomized(TwoConvs(True), seed=1)).eval()
    deployed = sam_fused.convert(copy.deepcopy(eager))
    assert all(isinstance(m, sam_fused.ConvertedAttention) for m in deployed)
    x = make_input((2, 4, 6, 5), torch.float32)
    assert_close_scaled(deployed_output(torch.jit.script(deployed), x), expected_output(eager, x),
                        TOLERANCE[torch.float32], "scripted")


def test_script_and_trace_load_in_a_fresh_process(tmp_path):
    """Each case scripted and traced, saved, then loaded and run in a new Python process (which
    imports sam_fused to register the ops, as a deployment must)."""
    expected, stems = {}, []
    for name in CASES + LAYERS:
        eager, deployed, sample = make_case(name)
        x = make_input((2, *sample), torch.float32, seed=7)
        expected[name] = expected_output(eager, x)
        torch.save(x, tmp_path / f"{name}.x.pt")
        for how, module in (("script", torch.jit.script(deployed)), ("trace", torch.jit.trace(deployed, (x,)))):
            assert _calls_fused_op(module.inlined_graph), f"{how} {name}: no fused op in the graph"
            stem = str(tmp_path / f"{name}.{how}")
            torch.jit.save(module, stem + ".pt")
            stems.append((name, how, stem))
    code = ("import sys, torch, sam_fused\n"
            "for stem in sys.argv[1:]:\n"
            "    module, x = torch.jit.load(stem + '.pt'), torch.load(stem.rsplit('.', 1)[0] + '.x.pt')\n"
            "    with torch.no_grad():\n"
            "        torch.save(module(x), stem + '.out.pt')\n")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", code, *(stem for _, _, stem in stems)], cwd=ROOT, env=env, check=True)
    for name, how, stem in stems:
        assert_close_scaled(torch.load(stem + ".out.pt"), expected[name], TOLERANCE[torch.float32],
                            f"{how} {name} loaded in a fresh process")


# ---- torch.export + AOTInductor ------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_aoti_package_of_a_converted_model_runs(device, tmp_path):
    """A converted CBAM gate (ConvertedAttention) and a gate twin, exported with dynamic
    batch, compiled by AOTInductor into a package, loaded and run at two batch sizes."""
    eager = nn.Sequential(_randomized(ZOO["cbam"][0]()), make_pair("mean", (3, 1), True, dtype=torch.float32)[0])
    eager = eager.eval().to(device)
    deployed = sam_fused.convert(copy.deepcopy(eager))
    sample = (6, 10, 7)
    program = torch.export.export(deployed, (make_input((2, *sample), torch.float32, device=device),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=256)},))
    assert any(str(node.target).startswith("sam_fused.") for node in program.graph.nodes)
    package = torch._inductor.aoti_compile_and_package(program, package_path=str(tmp_path / "model.pt2"))
    runner = torch._inductor.aoti_load_package(package)
    for batch in (2, 5):
        x = make_input((batch, *sample), torch.float32, device=device, seed=batch)
        assert_close_scaled(deployed_output(runner, x), expected_output(eager, x), TOLERANCE[torch.float32],
                            f"AOTInductor {device} batch {batch}")
