"""fp16 on CPU: the branch-free conversions against torch's, over every half value, and the
F16C loops against the portable ones (SAM_FUSED_NO_F16C=1), bitwise, on specials too."""
import os
import subprocess
import sys

import pytest
import torch

import sam_fused  # noqa: F401  (registers the ops)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
fwd = torch.ops.sam_fused.spatial_attention_fwd
bwd = torch.ops.sam_fused.spatial_attention_bwd


def every_half():
    """All 65536 fp16 bit patterns as a [1, 1, 256, 256] tensor."""
    bits = torch.arange(-(2 ** 15), 2 ** 15, dtype=torch.int32).to(torch.int16)
    return bits.view(torch.float16).reshape(1, 1, 256, 256)


def same_bits_or_both_nan(a, b):
    """Bitwise equal, except that NaNs need only both be NaN and zeros only both be zero."""
    nan = torch.isnan(a)
    assert torch.equal(nan, torch.isnan(b))
    a, b = a[~nan], b[~nan]
    as_int = torch.int16 if a.dtype == torch.float16 else torch.int32
    differ = (a.view(as_int) != b.view(as_int)) & ~((a == 0) & (b == 0))
    assert not differ.any(), f"{int(differ.sum())} differ, e.g. {a[differ][:4].tolist()} vs {b[differ][:4].tolist()}"


def check_conversions():
    x = every_half()
    weight = torch.zeros(1, 1, 1, 1, dtype=torch.float16)  # 1x1: s at a pixel sees only that pixel
    bias = torch.zeros(1, dtype=torch.float16)
    out, pooled = fwd(x, weight, bias, "mean", False)
    # C = 1: the mean map is float(x) exactly; where x is finite, s = sigmoid(0) = 0.5 exactly
    # (0 * inf is NaN elsewhere), so out = half(float(x) * 0.5), rounded by torch for reference.
    same_bits_or_both_nan(pooled.reshape(-1), x.float().reshape(-1))
    finite = torch.isfinite(x).reshape(-1)
    same_bits_or_both_nan(out.reshape(-1)[finite], (x.float() * 0.5).half().reshape(-1)[finite])


def test_conversions_match_torch_for_every_half_value():
    check_conversions()


def sample_inputs():
    gen = torch.Generator().manual_seed(0)
    cases = []
    for shape, pool, channels_last in [((2, 7, 5, 19), "mean", False), ((2, 16, 6, 9), "mean+max", True),
                                       ((1, 33, 4, 40), "max", False), ((3, 5, 3, 3), "max+mean", True)]:
        x = torch.randn(shape, generator=gen).half()
        flat = x.view(-1)
        specials = torch.tensor([0.0, -0.0, 6e-8, -6e-8, 1e-5, 65504.0, -65504.0, 3e-5], dtype=torch.float16)
        flat[: specials.numel()] = specials
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        kh = 3 if pool == "mean" else 7
        weight = torch.randn(1, 1 if pool in ("mean", "max") else 2, kh, kh if pool != "mean" else 1,
                             generator=gen).half()
        bias = torch.randn(1, generator=gen).half()
        grad = torch.randn(shape, generator=gen).half()
        cases.append((x, weight, bias, pool, grad))
    return cases


def run_cases():
    results = []
    for x, weight, bias, pool, grad in sample_inputs():
        out, pooled = fwd(x, weight, bias, pool, False)
        results.append((out, pooled, *bwd(grad, x, weight, bias, pooled, pool, False)))
        results.append(fwd(x, weight, bias, pool, True))
    return results


def test_f16c_and_portable_loops_agree_bitwise(tmp_path):
    """Here (x86-64 with F16C) the op takes the F16C loops; a child process forced onto the
    portable ones must give the same bits. A run forced onto the baseline ISA
    (SAM_FUSED_CPU_ISA=default) has no F16C loops to compare: there SAM_FUSED_NO_F16C=1 selects
    the ISA loops with SSE2 conversions instead (test_baseline_fp16_conversions_without_f16c)."""
    if torch.ops.sam_fused._cpu_isa() == "default":
        pytest.skip("the baseline ISA is forced: no F16C loops here")
    path = tmp_path / "portable.pt"
    code = ("import sys, torch; sys.path.insert(0, 'tests'); import test_fp16_cpu as t; "
            f"t.check_conversions(); torch.save(t.run_cases(), {str(path)!r})")
    env = dict(os.environ, SAM_FUSED_NO_F16C="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)
    portable = torch.load(path)
    for here, there in zip(run_cases(), portable, strict=True):
        for a, b in zip(here, there, strict=True):
            same_bits_or_both_nan(a.contiguous().view(-1), b.contiguous().view(-1))


@pytest.mark.parametrize("pool", ["mean", "mean+max"])
def test_fp16_matches_the_fp32_kernel_rounded(pool):
    """fp16 runs the fp32 arithmetic on converted inputs: its output is the fp32 kernel's on
    x.float(), rounded once (within one fp16 ulp: s itself comes from fp16 weights either way)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 24, 9, 9, generator=gen).half()
    weight = torch.randn(1, 1 if pool == "mean" else 2, 3, 3, generator=gen).half()
    bias = torch.randn(1, generator=gen).half()
    out16, _ = fwd(x, weight, bias, pool, False)
    out32, _ = fwd(x.float(), weight.float(), bias.float(), pool, False)
    torch.testing.assert_close(out16.float(), out32, rtol=2 ** -10, atol=2 ** -14)


def test_baseline_fp16_conversions_without_f16c():
    """On the default ISA, a CPU with F16C runs fp16 in the portable loops (which use F16C); one
    without (SAM_FUSED_NO_F16C=1 here) runs the ISA loops with SSE2 conversions. A child process
    without F16C checks those against torch on every value and the reference on several shapes."""
    env = dict(os.environ, SAM_FUSED_NO_F16C="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cpu_isa.py",
                          "-k", "16bit and default and dtype0"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" in run.stdout
