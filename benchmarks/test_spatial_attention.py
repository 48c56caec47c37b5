"""Time each implementation of the spatial-attention layer on every workload of conftest.py.

Implementations (one test each, so ``--benchmark-group-by=param`` puts them side by side):
eager reference module, ``torch.compile`` of it (default mode; also max-autotune without CUDA
graphs on CUDA), the fused op, the same op through the Python ``SpatialAttentionFunction``
instead of its C++ autograd kernel (what a LibTorch stable-ABI build, which has no C++ autograd,
would cost: docs/wheels.md), and ``x.clone()`` as the memory-floor baseline (one read and one
write of x, 2·N·e bytes).

Timing rules: inputs and modules are built outside the timed region and are the same for all
implementations (seeded per workload); the first call (which compiles, for torch.compile) and
the warm-up calls are not timed, the first call's time is stored as ``compile_s``; on CUDA the
timed function ends with ``torch.cuda.synchronize()``. No timing is asserted.
"""
from __future__ import annotations

import time
import zlib

import pytest
import torch

import sam_fused
from sam_fused import reference
from sam_fused.ops import SpatialAttentionFunction

REFERENCE = {
    "har": reference.SpatialAttentionModule,
    "cbam": lambda: reference.SpatialGate(kernel_size=7, pool="mean+max", bias=False),
}
FUSED = {
    "har": sam_fused.SpatialAttentionModule,
    "cbam": lambda: sam_fused.SpatialGate(kernel_size=7, pool="mean+max", bias=False),
}
COMPILE_MODES = {"compile": "default", "compile-max-autotune": "max-autotune-no-cudagraphs"}


def test_eager(benchmark, workload, timing_budget):
    run(benchmark, workload, timing_budget, "eager")


def test_compile(benchmark, workload, timing_budget, start_compiler, pytestconfig):
    if pytestconfig.getoption("--quick") and not workload.compiled_in_quick_mode:
        pytest.skip("quick mode compiles a few workloads only (compile time dominates it)")
    start_compiler(workload.device)
    run(benchmark, workload, timing_budget, "compile")


@pytest.mark.cuda
def test_compile_max_autotune(benchmark, workload, timing_budget, start_compiler, pytestconfig):
    if pytestconfig.getoption("--quick"):
        pytest.skip("max-autotune takes minutes per workload: full mode only")
    start_compiler(workload.device)
    run(benchmark, workload, timing_budget, "compile-max-autotune")


def test_fused(benchmark, workload, timing_budget):
    run(benchmark, workload, timing_budget, "fused")


def test_fused_python_autograd(benchmark, workload, timing_budget):
    run(benchmark, workload, timing_budget, "fused-python-autograd")


def test_clone(benchmark, workload, timing_budget):
    run(benchmark, workload, timing_budget, "clone")


# ----------------------------------------------------------------------------- harness

def make_inputs(w):
    """x and the upstream gradient g, the same for every implementation of a workload (and
    every case of a shape): seeded by shape, dtype and device, made directly on the device."""
    gen = torch.Generator(device=w.device)
    gen.manual_seed(zlib.crc32(f"{w.shape_name}-{w.dtype_name}-{w.device}".encode()))
    x = torch.randn(w.shape, generator=gen, dtype=w.dtype, device=w.device)
    g = torch.randn(w.shape, generator=gen, dtype=w.dtype, device=w.device)
    return x.requires_grad_(w.case != "fwd"), g


def make_reference(w):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = REFERENCE[w.layer]()
    return module.to(device=w.device, dtype=w.dtype)


def make_impl(impl, w):
    """The callable to time for `impl` and the parameters it differentiates."""
    ref = make_reference(w)
    if impl == "clone":
        return torch.clone, []
    if impl == "eager":
        return ref, list(ref.parameters())
    if impl in ("fused", "fused-python-autograd"):
        fused = FUSED[w.layer]().to(device=w.device, dtype=w.dtype)
        fused.load_state_dict(ref.state_dict(), strict=True)
        if impl == "fused":
            return fused, list(fused.parameters())
        conv, pool = (fused.att_fc[0], "mean") if w.layer == "har" else (fused, fused.pool)
        return (lambda x: SpatialAttentionFunction.apply(x, conv.weight, conv.bias, pool, False)[0],
                list(fused.parameters()))
    # A fresh dynamo cache per benchmark: static shapes, no recompile limit across workloads.
    torch._dynamo.reset()
    return torch.compile(ref, mode=COMPILE_MODES[impl], dynamic=False), list(ref.parameters())


def make_call(fn, params, w, x, g, impl):
    """(setup, target) for benchmark.pedantic: setup (untimed) returns target's arguments."""
    sync = torch.cuda.synchronize if w.device == "cuda" else (lambda: None)

    if impl == "clone" or w.case == "fwd":
        def forward():
            with torch.no_grad():
                fn(x)
            sync()
        return None, forward

    inputs = [x, *params]
    if w.case == "fwdbwd":
        def forward_backward():
            torch.autograd.grad(fn(x), inputs, g)
            sync()
        return None, forward_backward

    def forward_only():
        out = fn(x)
        sync()
        return (out,), {}

    def backward(out):
        torch.autograd.grad(out, inputs, g)
        sync()
    return forward_only, backward


def run(benchmark, w, budget, impl):
    threads = torch.get_num_threads()
    if w.threads:
        torch.set_num_threads(w.threads)
    try:
        timed_run(benchmark, w, budget, impl)
    finally:
        torch.set_num_threads(threads)


def timed_run(benchmark, w, budget, impl):
    benchmark.group = w.group
    x, g = make_inputs(w)
    fn, params = make_impl(impl, w)
    setup, target = make_call(fn, params, w, x, g, impl)

    def call_once():
        args, kwargs = setup() if setup else ((), {})
        start = time.perf_counter()
        target(*args, **kwargs)
        return time.perf_counter() - start

    try:
        first_call_s = call_once()  # compiles (torch.compile), allocates, warms caches
    except NotImplementedError as err:
        if impl == "fused" and w.device == "cuda":
            pytest.skip(f"fused op has no CUDA kernel in this build: {err}")
        raise
    per_call_s = min(call_once() for _ in range(2))
    rounds = max(budget.min_rounds, min(budget.max_rounds, int(budget.seconds / max(per_call_s, 1e-7))))

    benchmark.extra_info.update(
        impl=impl, case=w.case, label=w.label, layer=w.layer, shape=list(w.shape), dtype=w.dtype_name,
        device=w.device, numel=w.numel, elem_bytes=w.dtype.itemsize, floor_bytes=w.floor_bytes,
        threads=torch.get_num_threads(),
    )
    if impl in COMPILE_MODES:
        benchmark.extra_info["compile_s"] = first_call_s
    benchmark.pedantic(target, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)
    if w.device == "cuda":
        benchmark.extra_info["peak_mem_bytes"] = peak_memory(call_once)


def peak_memory(call_once) -> int:
    """CUDA bytes allocated at the peak of one call, above what was allocated before it."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    call_once()
    return torch.cuda.max_memory_allocated() - before
