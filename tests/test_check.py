"""The parity tool that `make bench` and the wheel smoke test run: its quick grid passes."""
from sam_fused import check


def test_quick_parity_check_passes(capsys):
    assert check.main(["--quick", "--device", "cpu"]) == 0
    assert "parity: all variants match the reference" in capsys.readouterr().out
