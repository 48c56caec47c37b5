"""benchmarks/cpu_walltime.py: the training-like chain times each part of every step."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import cpu_walltime  # noqa: E402


def test_chain_times_the_fused_parts_and_the_floor_parts():
    t = cpu_walltime.chain((2, 8, 5, 3), steps=3)
    assert list(t) == ["fwd", "bwd", "copy", "add"]
    assert all(0 < lo <= mid for lo, mid in t.values())
