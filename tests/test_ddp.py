"""DistributedDataParallel over 2 CPU processes (gloo, loopback) gives the gradients of a
single-process run on the concatenated batch, through the fused layer's backward.

BatchNorm is the one layer whose output depends on the other samples of a batch: in train
mode each rank would normalise its half with that half's statistics, a different function
from the full batch's (making them equal is SyncBatchNorm's job, not what is tested here).
The models therefore run in eval mode, where BatchNorm applies fixed running statistics and
every sample's loss depends on that sample alone; gradients still flow through every layer,
the fused attention included. Then the DDP gradient (the mean over ranks of each half's mean
loss gradient) must equal the full batch's mean loss gradient. float64 keeps the only
difference, the summation order, far below the tolerance.
"""
import os
import socket
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from sam_fused.models import SANN

WORLD_SIZE, STEPS, BATCH, T, M, CLASSES = 2, 2, 8, 16, 3, 4


def small_sann(attention="fused"):
    model = SANN(M, CLASSES, attention=attention, channels=(8, 16)).double()
    return model.eval()  # see the module docstring


def batches():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS, BATCH, 1, T, M, dtype=torch.float64, generator=generator)
    y = torch.randint(CLASSES, (STEPS, BATCH), generator=generator)
    return x, y


def train(model, x, y):
    """STEPS SGD steps; returns the gradients of each step (by the model's parameter names)."""
    named = dict(model.module.named_parameters() if hasattr(model, "module") else model.named_parameters())
    optimizer = torch.optim.SGD(named.values(), lr=0.1, momentum=0.9)
    grads = []
    for step in range(STEPS):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x[step]), y[step]).backward()
        grads.append({name: p.grad.clone() for name, p in named.items()})
        optimizer.step()
    return grads


def ddp_worker(rank, port, state, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        model = small_sann()
        model.load_state_dict(state)
        x, y = batches()
        shard = slice(rank * BATCH // WORLD_SIZE, (rank + 1) * BATCH // WORLD_SIZE)
        grads = train(DistributedDataParallel(model), x[:, shard], y[:, shard])
        torch.save({"grads": grads, "params": model.state_dict()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(state, out_dir, timeout=120):
    context = mp.spawn(ddp_worker, args=(free_port(), state, str(out_dir)), nprocs=WORLD_SIZE, join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"DDP ranks did not finish within {timeout} s")


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_ddp_gradients_equal_single_process_on_the_concatenated_batch(tmp_path):
    torch.manual_seed(0)
    model = small_sann()
    assert model.attention == "fused"
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    run_ranks(initial, tmp_path)
    original = small_sann("reference")
    original.load_state_dict(initial)
    expected = train(original, *batches())  # the original layer, one process: the drop-in rule
    train(model, *batches())
    for rank in range(WORLD_SIZE):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        for step in range(STEPS):
            for name, grad in expected[step].items():
                torch.testing.assert_close(result["grads"][step][name], grad, rtol=1e-9, atol=1e-12,
                                           msg=f"rank {rank}, step {step}, {name}")
        for name, value in model.state_dict().items():
            torch.testing.assert_close(result["params"][name], value, rtol=1e-9, atol=1e-12, msg=name)
