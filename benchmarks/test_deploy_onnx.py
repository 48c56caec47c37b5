"""Time the SANN HAR model (UCI-HAR windows, 128 x 9, 6 classes) exported to ONNX and run by
ONNX Runtime, beside eager PyTorch with the fused layers and with the reference layers (same
weights). Inference only (``torch.no_grad``, eval mode). The ONNX graph is the default (dynamo)
exporter's, standard operators only, exported once at batch 2 with a dynamic batch; ONNX Runtime
gets torch's intra-op thread count. Inputs are built outside the timed region; two warm-up calls
are not timed. Skipped without onnx, onnxscript and onnxruntime. No timing is asserted.

    pytest benchmarks/test_deploy_onnx.py --torch-threads 1 --benchmark-group-by=param:batch
"""
from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

import sam_fused
from sam_fused.models import SANN

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="needs onnx, onnxscript and onnxruntime (pip install onnx onnxscript onnxruntime)")

T, M, CLASSES = 128, 9, 6  # UCI-HAR windows (benchmarks/conftest.py HAR_DATASETS)
BATCHES = [1, 128]
IMPLEMENTATIONS = ("onnxruntime", "eager-fused", "eager-reference")


@pytest.fixture(scope="module")
def har_models():
    """{implementation: callable on a [B, 1, T, M] float32 tensor}, all with the same weights."""
    import onnxruntime

    torch.manual_seed(0)
    reference = SANN(M, CLASSES, attention="reference").eval()
    fused = sam_fused.convert(copy.deepcopy(reference))
    program = torch.onnx.export(fused, (torch.randn(2, 1, T, M),), dynamo=True, verbose=False,
                                dynamic_shapes=({0: torch.export.Dim("batch")},))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def no_grad(model):
        def run(x):
            with torch.no_grad():
                return model(x)
        return run

    return {"onnxruntime": lambda x: session.run(None, {name: x.numpy()})[0],
            "eager-fused": no_grad(fused), "eager-reference": no_grad(reference)}


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_sann_inference(benchmark, har_models, impl, batch):
    x = torch.randn(batch, 1, T, M, generator=torch.Generator().manual_seed(batch))
    run = har_models[impl]
    expected = har_models["eager-reference"](x)
    torch.testing.assert_close(torch.as_tensor(run(x)), expected, rtol=1e-4, atol=1e-5)  # same model
    # Own key names: benchmarks/report.py tabulates entries with "impl"/"case" as the pooled SAM's.
    benchmark.extra_info.update(op="sann_inference", implementation=impl, shape=[batch, 1, T, M],
                                dtype="float32", device="cpu", threads=torch.get_num_threads())
    benchmark.pedantic(run, args=(x,), rounds=20 if batch > 1 else 200, iterations=1, warmup_rounds=2)
