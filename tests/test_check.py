"""The parity tool that `make bench` and the wheel smoke test run: its quick grid passes; on
the CPU, the fused fp32 op is no less precise than the reference module run in fp32."""
import pytest
import torch

from sam_fused import check


def test_quick_parity_check_passes(capsys):
    assert check.main(["--quick", "--device", "cpu"]) == 0
    assert "parity: all variants match the reference" in capsys.readouterr().out


def test_half_precision_dtypes_are_checked_on_request(capsys):
    assert check.main(["--quick", "--device", "cpu", "--dtype", "float16", "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "float16" in out and "bfloat16" in out and "float32" not in out


@pytest.mark.parametrize("pool", check.POOLS)
def test_fp32_cpu_error_no_worse_than_eager(pool):
    # The two large shapes of the full grid (64 and 512 channels; the bias gradient sums 2304
    # and 144 pixels) with every kernel, bias, output and layout: the worst fused error of the
    # group (out, dx, dweight, dbias against float64 on the same fp32 inputs) is at most the
    # worst error of eager PyTorch in fp32.
    grid = dict(shapes=check.SHAPES[:2], kernels=check.KERNELS, biases=(True, False), maps=(False, True),
                layouts=(False, True))
    worst, worst_ref, _, ok = check.group_errors(pool, torch.float32, "cpu", grid)
    assert ok and worst <= worst_ref, f"{pool}: fused {worst:.3g} vs eager {worst_ref:.3g}"
