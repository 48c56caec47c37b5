"""Time Darknet's point-wise SAM ``x * sigmoid(y)``: eager, torch.compile and the fused op.

Shapes are YOLOv4's sam_layer inputs at a 608 input scaled down to CPU size (the neck's
38x38 / 19x19 maps). Cases: "fwd" (out only) and "fwdbwd" (out, then dx and dy from a fixed
upstream gradient). Inputs are built outside the timed region; the first call (compile) and
a warm-up are not timed. CUDA cases are skipped without a device. No timing is asserted.

    pytest benchmarks/test_pointwise.py --benchmark-group-by=param:case,param:shape
"""
from __future__ import annotations

import pytest
import torch

import sam_fused

SHAPES = [(4, 128, 38, 38), (4, 256, 19, 19), (1, 512, 19, 19)]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="CUDA not available"))]


def eager(x, y):
    return x * torch.sigmoid(y)


IMPLEMENTATIONS = {
    "eager": lambda: eager,
    "compile": lambda: torch.compile(eager, dynamic=False),
    "fused": lambda: sam_fused.pointwise_attention,
}


def _step(fn, x, y, grad, case, sync):
    """One timed call: the forward, and for fwdbwd both input gradients."""
    def run():
        if case == "fwd":
            with torch.no_grad():
                fn(x, y)
        else:
            torch.autograd.grad(fn(x, y), (x, y), grad)
        sync()
    return run


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("case", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_pointwise_attention(benchmark, impl, case, shape, dtype, device):
    gen = torch.Generator().manual_seed(0)
    x, y, grad = (torch.randn(shape, generator=gen).to(device=device, dtype=dtype) for _ in range(3))
    x.requires_grad_(case == "fwdbwd"), y.requires_grad_(case == "fwdbwd")
    if impl == "compile":
        torch._dynamo.reset()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    run = _step(IMPLEMENTATIONS[impl](), x, y, grad, case, sync)
    run()  # compile / first-touch, not timed
    n = x.numel() * x.element_size()
    # Own key names: benchmarks/report.py tabulates entries with "impl"/"case" as the pooled SAM's.
    benchmark.extra_info.update(op="pointwise_attention", implementation=impl, pass_=case, shape=list(shape),
                                dtype=str(dtype), device=device,
                                floor_bytes=(3 if case == "fwd" else 3 + 5) * n)  # fwd: x,y,out; bwd: g,x,y,dx,dy
    benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=1)
