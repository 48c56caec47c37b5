"""The parity tool that `make bench` and the wheel smoke test run: its quick grid passes."""
from sam_fused import check


def test_quick_parity_check_passes(capsys):
    assert check.main(["--quick", "--device", "cpu"]) == 0
    assert "parity: all variants match the reference" in capsys.readouterr().out


def test_half_precision_dtypes_are_checked_on_request(capsys):
    assert check.main(["--quick", "--device", "cpu", "--dtype", "float16", "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "float16" in out and "bfloat16" in out and "float32" not in out
