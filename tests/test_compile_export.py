"""The fused op under torch.compile(fullgraph=True) (one graph holding the op, same results as
eager) and torch.export. Compiling is slow on 2 cores, so these tests are few: most use the
"aot_eager" backend, whose point is graph capture and the AOT autograd path through the fake
and autograd registrations; one test uses the default (inductor) backend."""
import pytest
import torch
from torch import nn

import sam_fused
from helpers import TOLERANCE, assert_close_scaled, make_input

FWD_OP = torch.ops.sam_fused.spatial_attention_fwd.default


class SmallNet(nn.Module):
    """A conv and three fused attention variants: HAR (mean, 3x1, bias), CBAM gate (mean+max,
    7x7) and a max-pool map."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 8, (3, 1), padding=(1, 0))
        self.sam = sam_fused.SpatialAttentionModule()
        self.gate = sam_fused.SpatialGate(7, "mean+max")
        self.map = sam_fused.SpatialGate((3, 1), "max", bias=True, return_map=True)

    def forward(self, x):
        x = self.gate(self.sam(self.conv(x)))
        return x * self.map(x)


def _run(model, x):
    """Output and the gradients of x and of every parameter of sum(out * fixed weights)."""
    x = x.detach().requires_grad_()
    model.zero_grad(set_to_none=True)
    out = model(x)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    (out * weights).sum().backward()
    module = getattr(model, "_orig_mod", model)  # parameter names without torch.compile's prefix
    return {"out": out.detach(), "x": x.grad, **{n: p.grad for n, p in module.named_parameters()}}


def _assert_runs_match(actual, expected):
    for key in expected:
        assert_close_scaled(actual[key], expected[key], TOLERANCE[torch.float32], key)


class GraphRecorder:
    """A torch.compile backend that keeps every graph it is given and runs it eagerly."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        return gm.forward


def _count_fused_calls(graph):
    return sum(node.target in (FWD_OP, torch.ops.sam_fused.spatial_attention_fwd) for node in graph.nodes)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_fullgraph_captures_one_graph_with_the_op(layout, fresh_dynamo):
    model, x = SmallNet(), make_input((2, 1, 16, 9), torch.float32, layout)
    recorder = GraphRecorder()
    compiled = torch.compile(model, backend=recorder, fullgraph=True)
    _assert_runs_match(_run(compiled, x), _run(model, x))
    assert len(recorder.graphs) == 1
    assert _count_fused_calls(recorder.graphs[0].graph) == 3  # the ops themselves, not their decomposition


def test_aot_eager_dynamic_shapes(fresh_dynamo):
    model = SmallNet()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=True)
    for shape in [(2, 1, 16, 9), (3, 1, 11, 5)]:
        x = make_input(shape, torch.float32)
        _assert_runs_match(_run(compiled, x), _run(model, x))


def test_inductor_fullgraph(fresh_dynamo):
    model, x = SmallNet(), make_input((2, 1, 16, 9), torch.float32)
    compiled = torch.compile(model, fullgraph=True)
    _assert_runs_match(_run(compiled, x), _run(model, x))


def test_export_runs_and_matches_eager():
    model, x = SmallNet().eval(), make_input((2, 1, 16, 9), torch.float32)
    exported = torch.export.export(model, (x,))
    assert _count_fused_calls(exported.graph) == 3
    with torch.no_grad():
        assert_close_scaled(exported.module()(x), model(x), TOLERANCE[torch.float32], "out")


def test_export_with_dynamic_batch():
    model = SmallNet().eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(model, (make_input((2, 1, 16, 9), torch.float32),),
                                   dynamic_shapes={"x": {0: batch}})
    for b in (1, 5):
        x = make_input((b, 1, 16, 9), torch.float32)
        with torch.no_grad():
            assert_close_scaled(exported.module()(x), model(x), TOLERANCE[torch.float32], f"batch {b}")
