"""benchmarks/resource_report.py: ptxas resources of every CUDA kernel, no GPU needed. Compiles
the two .cu files device-only for sm_90 (about 40 s of CPU; the report itself also does sm_80)."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import resource_report  # noqa: E402

needs_nvcc = pytest.mark.skipif(resource_report.nvcc_path() is None or not torch.version.cuda,
                                reason="needs nvcc and a CUDA build of torch")


@needs_nvcc
def test_no_kernel_spills_registers_on_sm90():
    kernels = resource_report.collect([90], jobs=2)
    names = {k.name for k in kernels}
    # 4 dtypes x 2 layouts x 2 index widths of the four block programs, DwReduce per dtype, and the
    # point-wise kernels (fwd/bwd x dtype x vector/scalar)
    assert len(kernels) >= 68 and {"FwdMain<float, NCHW, i32>", "DwReduce<half>", "pointwise Bwd<bf16, x8>"} <= names
    spilled = [(k.name, k.spill_stores, k.spill_loads) for k in kernels if k.spill_stores or k.spill_loads]
    assert spilled == []
    assert all(0 < k.registers <= 255 and k.threads >= 32 and k.threads & (k.threads - 1) == 0 for k in kernels)
    assert "spills: none" not in resource_report.render(kernels)  # the table, then main() adds the verdict


def test_plan_threads_are_read_from_the_sources():
    threads = resource_report.plan_threads()
    assert resource_report.arch_choice(threads["arch_rules"], 9) is not None, "traits.h arch_traits not parsed"
    assert resource_report.arch_choice(threads["arch_rules"], 8) is not None
    assert threads["DwReduce"] and threads["pointwise"]


def test_parse_ptxas_and_occupancy():
    text = """ptxas info    : Compiling entry function '_Z1kv' for 'sm_90'
ptxas info    : Function properties for _Z1kv
    0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 1024 bytes smem, 400 bytes cmem[0]
"""
    (k,) = resource_report.parse_ptxas(text, 90)
    assert (k.registers, k.spill_stores, k.spill_loads, k.smem) == (64, 8, 4, 1024)
    k.threads = 256
    # 64 regs x 256 threads = 16384 registers a block: 4 blocks of 8 warps = 32 of 64 warps
    assert resource_report.occupancy(k) == (0.5, 1024)
    # a 96 KB dynamic tile leaves room for 2 blocks in 228 KB
    assert resource_report.occupancy(k, 96 * 1024) == (0.25, 512)


def test_pointwise_kernels_count_all_their_loads_in_flight():
    # unroll x 3 operands x 16 bytes; scalar: x 2-byte elements; the spatial kernels: one 16-byte load
    unroll = resource_report.pointwise_unroll()
    assert unroll >= 1
    kernel = resource_report.Kernel("k", 90, name="pointwise Bwd<bf16, x8>")
    assert resource_report.load_bytes_in_flight(kernel) == unroll * 3 * 16
    kernel.name = "pointwise Fwd<half, x1>"
    assert resource_report.load_bytes_in_flight(kernel) == unroll * 2 * 2
    kernel.name = "FwdMain<float, NCHW, i32>"
    assert resource_report.load_bytes_in_flight(kernel) == resource_report.VECTOR_BYTES
