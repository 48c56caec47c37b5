"""CPU outputs of 128 KiB and up (out, dx) take blocks freed by earlier outputs
(csrc/cpu/output_cache.cpp): a reused block's old contents never show through, the results stay
the reference's, and layouts and dtypes are those of the uncached outputs."""
import pytest
import torch
from helpers import assert_results_close, fused_results, module_results

import sam_fused
from sam_fused import reference

fwd = torch.ops.sam_fused.spatial_attention_fwd
bwd = torch.ops.sam_fused.spatial_attention_bwd
SHAPE = (8, 64, 64, 40)  # 5.2 MB in fp32, 2.6 MB in bf16


def inputs(dtype, channels_last, shape=SHAPE):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    g = torch.randn(shape, generator=gen).to(dtype)
    weight = (torch.randn(1, 1, 3, 3, generator=gen) * 0.3).to(dtype)
    bias = torch.randn(1, generator=gen).to(dtype)
    return x, g, weight, bias


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_reused_blocks_are_fully_overwritten(dtype, channels_last):
    x, g, weight, bias = inputs(dtype, channels_last)
    out, pooled = fwd(x, weight, bias, "mean", False)
    dx, _, _ = bwd(g, x, weight, bias, pooled, "mean", False)
    expected = (out.clone(), dx.clone())
    out.fill_(float("nan"))  # what a reused block holds must not reach the next outputs
    dx.fill_(float("nan"))
    del out, dx
    out, _ = fwd(x, weight, bias, "mean", False)
    dx, _, _ = bwd(g, x, weight, bias, pooled, "mean", False)
    assert torch.equal(out, expected[0]) and torch.equal(dx, expected[1])
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for t in (out, dx):
        assert t.dtype == dtype and t.shape == SHAPE and t.is_contiguous(memory_format=fmt)


# The HAR layer at batch 16 (2.25 MiB) and 4 (576 KiB): outputs glibc returned to the kernel when
# freed, so that every forward+backward step first-touched their pages again (~960 page faults a
# step at batch 16, 2-4x the step's time on the development VM).
@pytest.mark.parametrize("shape", [SHAPE, (16, 64, 64, 9), (4, 64, 64, 9)])
def test_outputs_reuse_freed_blocks(shape):
    x, g, weight, bias = inputs(torch.float32, False, shape)
    out, pooled = fwd(x, weight, bias, "mean", False)
    dx, _, _ = bwd(g, x, weight, bias, pooled, "mean", False)
    freed = {out.data_ptr(), dx.data_ptr()}
    del out, dx
    out, _ = fwd(x, weight, bias, "mean", False)
    dx, _, _ = bwd(g, x, weight, bias, pooled, "mean", False)
    assert {out.data_ptr(), dx.data_ptr()} == freed


def test_cached_outputs_match_the_reference_through_autograd():
    torch.manual_seed(0)
    ref = reference.SpatialAttentionModule()
    fused = sam_fused.SpatialAttentionModule()
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(SHAPE)
    for _ in range(3):  # the later steps run on reused blocks
        expected = module_results(ref, x)
        conv = fused.att_fc[0]
        actual = fused_results(x, conv.weight, conv.bias, "mean", False)
        assert_results_close({"out": actual["out"], "x": actual["x"]}, {"out": expected["out"], "x": expected["x"]},
                             torch.float32, "HAR layer")


def test_cache_can_be_turned_off(monkeypatch):
    """SAM_FUSED_CPU_OUTPUT_CACHE=0: outputs from the default allocator, the same results and layout."""
    for channels_last in (False, True):
        x, g, weight, bias = inputs(torch.float32, channels_last)
        out, pooled = fwd(x, weight, bias, "mean", False)
        dx, _, _ = bwd(g, x, weight, bias, pooled, "mean", False)
        monkeypatch.setenv("SAM_FUSED_CPU_OUTPUT_CACHE", "0")
        out_off, _ = fwd(x, weight, bias, "mean", False)
        dx_off, _, _ = bwd(g, x, weight, bias, pooled, "mean", False)
        monkeypatch.delenv("SAM_FUSED_CPU_OUTPUT_CACHE")
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        assert torch.equal(out_off, out) and torch.equal(dx_off, dx)
        assert out_off.is_contiguous(memory_format=fmt) and dx_off.is_contiguous(memory_format=fmt)


@pytest.mark.skipif(not hasattr(__import__("resource"), "getrusage"), reason="needs resource.getrusage (Unix)")
def test_steps_do_not_fault_their_outputs_in_again():
    """Forward+backward steps at the HAR layer's batch 16 touch no new page of their outputs once
    the cache holds their blocks: ~1150 pages of out and dx a step were first-touched again when
    glibc gave the freed outputs back to the kernel (measured on the development VM)."""
    import resource

    x, g, _, _ = inputs(torch.float32, False, (16, 64, 64, 9))
    x.requires_grad_()
    layer = sam_fused.SpatialAttentionModule()
    pages = x.numel() * x.element_size() // 4096

    def step():
        torch.autograd.grad(layer(x), [x, *layer.parameters()], g)

    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    steps = 20
    for _ in range(steps):
        step()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps
    assert faults < pages / 8, f"{faults:.0f} page faults a step for outputs of {pages} pages each"
