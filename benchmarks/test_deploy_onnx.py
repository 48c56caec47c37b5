"""Time the SANN HAR model (UCI-HAR windows, 128 x 9, 6 classes) and its first spatial-attention
layer alone, exported to ONNX and run by ONNX Runtime, beside eager PyTorch with the fused
layers and with the reference layers (same weights). Inference only (``torch.no_grad``, eval
mode). The ONNX graphs are the default (dynamo) exporter's, standard operators only, exported
once at batch 2 with a dynamic batch; ONNX Runtime gets torch's intra-op thread count. Inputs
are built outside the timed region; two warm-up calls are not timed. Skipped without onnx,
onnxscript and onnxruntime. No timing is asserted.

    pytest benchmarks/test_deploy_onnx.py --torch-threads 1 --benchmark-group-by=param:model,param:batch
"""
from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

import sam_fused
from sam_fused import reference
from sam_fused.models import SANN

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="needs onnx, onnxscript and onnxruntime (pip install onnx onnxscript onnxruntime)")

T, M, CLASSES = 128, 9, 6  # UCI-HAR windows (benchmarks/conftest.py HAR_DATASETS)
MODELS = {  # name: (eager reference model, sample shape without the batch)
    "sann": (lambda: SANN(M, CLASSES, attention="reference"), (1, T, M)),
    "har_layer_b1": (reference.SpatialAttentionModule, (64, T // 2, M)),  # SANN block 1's attention input
}
BATCHES = [1, 128]
IMPLEMENTATIONS = ("onnxruntime", "eager-fused", "eager-reference")


def _no_grad(model):
    def run(x):
        with torch.no_grad():
            return model(x)
    return run


@pytest.fixture(scope="module")
def deployed():
    """{model: {implementation: callable on a float32 batch}}, all with the same weights."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    runners = {}
    for name, (make, sample) in MODELS.items():
        torch.manual_seed(0)
        eager = make().eval()
        fused = sam_fused.convert(copy.deepcopy(eager))
        program = torch.onnx.export(fused, (torch.randn(2, *sample),), dynamo=True, verbose=False,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
        session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(), options,
                                               providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        runners[name] = {"onnxruntime": lambda x, s=session, n=input_name: s.run(None, {n: x.numpy()})[0],
                         "eager-fused": _no_grad(fused), "eager-reference": _no_grad(eager)}
    return runners


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_inference(benchmark, deployed, impl, model, batch):
    x = torch.randn(batch, *MODELS[model][1], generator=torch.Generator().manual_seed(batch))
    run = deployed[model][impl]
    torch.testing.assert_close(torch.as_tensor(run(x)), deployed[model]["eager-reference"](x), rtol=1e-4, atol=1e-5)
    # Own key names: benchmarks/report.py tabulates entries with "impl"/"case" as the pooled SAM's.
    benchmark.extra_info.update(op=f"{model}_inference", implementation=impl, shape=list(x.shape),
                                dtype="float32", device="cpu", threads=torch.get_num_threads())
    benchmark.pedantic(run, args=(x,), rounds=20 if batch > 1 else 200, iterations=1, warmup_rounds=2)
