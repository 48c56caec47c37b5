"""One SANN training step (forward + backward + AdamW) with the fused attention layer vs the
eager reference layer vs torch.compile of the reference model (and of the fused model: the op
compiles as one node, inductor fuses the rest), at HAR data set shapes.

    pytest benchmarks/test_train_step.py              # batch 128, all four variants
    pytest benchmarks/test_train_step.py --quick      # batch 16, no torch.compile (slow to warm up)

Each (data set, device, batch) is one pytest-benchmark group, so the table compares the
variants side by side; the speedup is the reference's time over the variant's.
"""
import pytest
import torch

from sam_fused.demo import train_step
from sam_fused.models import SANN

# name: (time steps T, channels M, classes), see docs/design.md §7
DATASETS = {"uci-har": (128, 9, 6), "unimib-shar": (151, 3, 17)}
VARIANTS = ("fused", "reference", "compiled-reference", "compiled-fused")
DEVICES = [pytest.param("cpu"),
           pytest.param("cuda", marks=[pytest.mark.cuda,
                                       pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")])]


def quick_mode(request) -> bool:
    # --quick is registered by benchmarks/conftest.py when present; without it, full mode.
    return bool(request.config.getoption("--quick", default=False))


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dataset", DATASETS)
def test_train_step(benchmark, request, dataset, device, variant):
    quick = quick_mode(request)
    compiled = variant.startswith("compiled-")
    if quick and compiled:
        pytest.skip("torch.compile warm-up takes minutes on a small CPU; run without --quick")
    T, M, classes = DATASETS[dataset]
    batch = 16 if quick else 128
    torch.manual_seed(0)
    model = SANN(M, classes, attention=variant.removeprefix("compiled-")).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=1e-3)
    if compiled:
        model = torch.compile(model)
    x = torch.randn(batch, 1, T, M, device=device)
    y = torch.randint(classes, (batch,), device=device)

    def step():
        train_step(model, optimizer, x, y)
        sync(device)

    benchmark.group = f"SANN train step {dataset} ({batch}x1x{T}x{M}) {device}"
    benchmark.extra_info.update(dataset=dataset, batch=batch, window=(T, M), device=device, variant=variant)
    # Warm-up rounds: allocator, oneDNN/cuDNN algorithm choice, and compilation for torch.compile.
    benchmark.pedantic(step, rounds=3 if quick else 5, warmup_rounds=3 if compiled else 1)
