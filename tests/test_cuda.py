"""The CUDA kernels on a GPU (skipped without one): parity with the reference modules over the
HAR and CBAM shapes in every dtype, fp64 gradcheck, opcheck, torch.compile, bitwise
determinism, CPU-vs-CUDA agreement, the point-wise op and a > 2^31-element input (slow)."""
import pytest
import torch

import sam_fused
from helpers import (POOLS, REF_DTYPE, TOLERANCE, assert_close_scaled, assert_results_close, fused_results, make_grad,
                     make_pair, module_results)
from test_pointwise import ODD_SIZES, eager_results, misaligned, operands

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

HAR = [(128, 64, 64, 9), (128, 128, 32, 9), (128, 256, 16, 9), (128, 512, 8, 9)]
HAR_BATCH1 = [(1, c, h, w) for _, c, h, w in HAR]
# CBAM stage 1 and 4 at batch 8: the plans of batch 32 (passes, rows, staging, spill; only the
# grid is smaller: test_planner.py::test_cbam_batch_8_plans_as_batch_32), at a quarter of the
# fp64 reference's time (64 cases took 240 s of an H100 run's 300 s at batch 32)
CBAM = [(8, 256, 56, 56), (8, 2048, 7, 7)]
ODD = [(3, 5, 7, 1), (1, 1, 1, 1), (2, 3, 1, 6), (2, 1, 6, 4), (1, 8, 37, 5)]
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def cuda_input(shape, dtype, channels_last=False, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen).to("cuda", dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def check(x, pool, kernel, bias, return_map=False):
    ref, weight, b = make_pair(pool, kernel, bias, return_map, x.dtype, "cuda")
    grad_shape = (x.shape[0], 1, *x.shape[2:]) if return_map else x.shape
    grad_out = make_grad(grad_shape, x.dtype, "cuda")
    expected = module_results(ref, x, REF_DTYPE[x.dtype], grad_out)
    actual = fused_results(x, weight, b, pool, return_map, grad_out)
    assert_results_close(actual, expected, x.dtype, f"{tuple(x.shape)} {x.dtype} {pool} {kernel}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", HAR + HAR_BATCH1)
def test_har_parity(shape, dtype):
    check(cuda_input(shape, dtype), "mean", (3, 1), True)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("shape", CBAM)
def test_cbam_parity(shape, pool, dtype, channels_last):
    check(cuda_input(shape, dtype, channels_last), pool, (7, 7), False)


@pytest.mark.parametrize("return_map", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("shape", ODD)
def test_odd_shapes_parity(shape, pool, channels_last, return_map):
    for kernel in [(1, 1), (3, 3), (5, 3), (7, 7)]:
        check(cuda_input(shape, torch.float64, channels_last), pool, kernel, True, return_map)


@pytest.mark.parametrize("pool", POOLS)
def test_gradcheck_fp64(pool):
    x = cuda_input((2, 5, 6, 4), torch.float64).requires_grad_()
    _, weight, b = make_pair(pool, (3, 3), True, False, torch.float64, "cuda")
    w, bb = weight.detach().requires_grad_(), b.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w, b: sam_fused.spatial_attention(x, w, b, pool), (x, w, bb))


def test_opcheck():
    x = cuda_input((2, 8, 9, 5), torch.float32)
    _, weight, b = make_pair("mean+max", (3, 3), True, False, torch.float32, "cuda")
    torch.library.opcheck(torch.ops.sam_fused.spatial_attention_fwd, (x, weight, b, "mean+max", False))
    out, pooled = torch.ops.sam_fused.spatial_attention_fwd(x, weight, b, "mean+max", False)
    torch.library.opcheck(torch.ops.sam_fused.spatial_attention_bwd,
                          (torch.randn_like(out), x, weight, b, pooled, "mean+max", False))


def test_compile_fullgraph(fresh_dynamo):
    x = cuda_input((4, 64, 16, 9), torch.float32).requires_grad_()
    _, weight, b = make_pair("mean", (3, 1), True, False, torch.float32, "cuda")
    fn = torch.compile(lambda x: sam_fused.spatial_attention(x, weight, b, "mean"), fullgraph=True)
    out = fn(x)
    assert_close_scaled(out, sam_fused.spatial_attention(x, weight, b, "mean"), TOLERANCE[torch.float32], "compile")
    out.sum().backward()


@pytest.mark.parametrize("shape", [(128, 64, 64, 9), (32, 2048, 7, 7)])
@torch.no_grad()
def test_backward_bitwise_deterministic(shape):
    # no_grad: the fused kernels. With grad mode on and a weight that requires grad (a Parameter)
    # the backward op differentiates its composite of ATen ops instead (double backward), whose
    # cuDNN convolution gradient is not deterministic by default: this test failed that way on
    # the first GPU run, which called it with grad mode on.
    x = cuda_input(shape, torch.float32)
    _, weight, b = make_pair("mean+max", (3, 3), True, False, torch.float32, "cuda")
    out, pooled = torch.ops.sam_fused.spatial_attention_fwd(x, weight, b, "mean+max", False)
    g = torch.randn_like(out)
    first = torch.ops.sam_fused.spatial_attention_bwd(g, x, weight, b, pooled, "mean+max", False)
    for _ in range(3):
        again = torch.ops.sam_fused.spatial_attention_bwd(g, x, weight, b, pooled, "mean+max", False)
        differ = {name: f"{int((u != v).sum())} elements, max |diff| {(u - v).abs().max().item():.3g}"
                  for name, u, v in zip(("dx", "dweight", "dbias"), first, again) if not torch.equal(u, v)}
        assert not differ, f"backward not bitwise repeatable: {differ}"
    out_again, pooled_again = torch.ops.sam_fused.spatial_attention_fwd(x, weight, b, "mean+max", False)
    assert torch.equal(out, out_again) and torch.equal(pooled, pooled_again)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("pool", POOLS)
def test_cpu_and_cuda_agree(pool, channels_last):
    x = cuda_input((4, 32, 20, 9), torch.float32, channels_last)
    _, weight, b = make_pair(pool, (3, 3), True, False, torch.float32, "cuda")
    cpu = fused_results(x.cpu(), weight.cpu(), b.cpu(), pool, False, make_grad(x.shape, x.dtype))
    cuda = fused_results(x, weight, b, pool, False, make_grad(x.shape, x.dtype, "cuda"))
    for key in cpu:
        assert_close_scaled(cuda[key], cpu[key], 2 * TOLERANCE[torch.float32], key)


def test_current_stream_and_device():
    x = cuda_input((2, 8, 9, 5), torch.float32)
    _, weight, b = make_pair("mean", (3, 1), True, False, torch.float32, "cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out, _ = torch.ops.sam_fused.spatial_attention_fwd(x, weight, b, "mean", False)
    stream.synchronize()
    expected, _ = torch.ops.sam_fused.spatial_attention_fwd(x, weight, b, "mean", False)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("layout", ["contiguous", "misaligned", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_pointwise_parity(dtype, layout):
    """The point-wise block programs (csrc/block/pointwise.h) against eager: 128-bit and scalar
    (misaligned storage) programs, tails, partial blocks and a UCI-HAR-sized input."""
    for shape in [*ODD_SIZES, HAR[-1]]:
        if layout == "channels_last" and len(shape) != 4:
            continue
        x, y, g = operands(shape, dtype, layout)
        xd, yd, gd = (misaligned(t, "cuda") if layout == "misaligned" else t.to("cuda") for t in (x, y, g))
        ops = torch.ops.sam_fused
        results = (ops.pointwise_attention_fwd(xd, yd), *ops.pointwise_attention_bwd(gd, xd, yd))
        actual = dict(zip(("out", "x", "y"), results))
        for key, want in eager_results(x, y, g).items():
            assert_close_scaled(actual[key], want, TOLERANCE[dtype], f"{shape} {dtype} {layout} {key}")


@pytest.mark.slow
def test_int64_indexing_large_input():
    # 2^31 + a bit elements in bf16 (4 GiB): offsets past 2^31 must not wrap
    shape = (1, 4097, 512, 1025)
    if torch.cuda.get_device_properties(0).total_memory < 24 * 2**30:
        pytest.skip("needs 24 GiB of GPU memory")
    x = torch.ones(shape, device="cuda", dtype=torch.bfloat16)
    x[0, :, -1, -1] = 2
    weight = torch.zeros(1, 1, 3, 3, device="cuda", dtype=torch.bfloat16)
    out, pooled = torch.ops.sam_fused.spatial_attention_fwd(x, weight, None, "mean", False)
    assert out.flatten()[-1].item() == 1.0 and out.flatten()[0].item() == 0.5  # s = sigmoid(0) = 0.5
    assert pooled[0, 0, -1, -1].item() == 2.0
