"""benchmarks/time_model.py: the bytes it predicts are the DRAM bytes (unique per launch) that the
CPU emulation of the block programs records, and the time is launches * overhead + bytes / bandwidth."""
import math
import sys
from pathlib import Path

import pytest
import torch

from sam_fused.emulation import ONE_PASS, TWO_PASS, emulate_bwd, emulate_fwd
from helpers import make_grad, make_input, make_pair

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import time_model  # noqa: E402


def dram_bytes(t, slots=("x", "grad_out", "out", "pooled", "workspace")):
    return sum(t[s]["read_unique"] + t[s]["written_unique"] for s in slots)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("return_map", [False, True])
@pytest.mark.parametrize("variant", [ONE_PASS, TWO_PASS], ids=["one_pass", "two_pass"])
@pytest.mark.parametrize("pool", ["mean", "max+mean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_model_bytes_equal_emulated_dram_bytes(dtype, pool, variant, return_map, layout):
    shape, kernel = (2, 12, 11, 9), (3, 3)
    _, weight, bias = make_pair(pool, kernel, True, return_map, dtype)
    x = make_input(shape, dtype, layout)
    out, pooled, tf = emulate_fwd(x, weight, bias, pool, return_map, variant, rows=3, threads=64)
    *_, tb = emulate_bwd(make_grad(out.shape, dtype), x, weight, bias, pooled, pool, return_map, variant, rows=3,
                         threads=64)
    P, e, two_pass = weight.shape[1], x.element_size(), variant == TWO_PASS
    fwd = time_model.forward_traffic(shape, e, P, two_pass, return_map)
    # the weight-gradient partials come from the two-pass map kernel (second launch) or the main kernel
    partial_blocks = tb.launches[1].grid if tb.two_pass else tb.blocks
    bwd = time_model.backward_traffic(shape, e, P, two_pass, return_map, has_max="max" in pool,
                                      blocks=partial_blocks, taps=weight.numel())
    assert fwd.bytes == dram_bytes(tf)
    assert bwd.bytes == dram_bytes(tb)
    assert (fwd.launches, bwd.launches) == ((2, 3) if two_pass and not return_map else (1, 2))


def test_floors_and_predicted_time():
    shape, e = (128, 64, 64, 9), 4  # UCI-HAR block 1, float32
    N, maps = math.prod(shape), 128 * 64 * 9 * 4
    one = time_model.case_traffic("fwd", shape, e, 1, False, False)
    assert one == time_model.Traffic(2 * N * e + maps, 1)
    assert time_model.case_traffic("bwd", shape, e, 1, False, False).bytes == 3 * N * e + maps
    two_pass = time_model.case_traffic("fwdbwd", shape, e, 1, True, True)
    assert two_pass.bytes == (3 * N * e + 2 * maps) + (4 * N * e + 3 * maps + 4 * maps)  # + s, gamma twice
    assert time_model.case_traffic("clone", shape, e, 1, False, False) == time_model.Traffic(2 * N * e, 1)
    card = time_model.Card("test card", copy_bandwidth=2e12, launch_overhead=4e-6)
    assert time_model.predicted_seconds(one, card) == pytest.approx(4e-6 + (2 * N * e + maps) / 2e12)
    assert time_model.predicted_seconds(one) == pytest.approx(5e-6 + (2 * N * e + maps) / 3.0e12)
    with pytest.raises(ValueError, match="case"):
        time_model.case_traffic("fwd+bwd", shape, e, 1, False, False)


def test_launch_plans_follow_the_staged_tile_budget():
    # HAR block 1 stages its tile (one pass). 7x7: the forward takes one pass only when a whole
    # sample is its tile, the backward when a 12-row tile fits. 64 x 14 x 9 float16 samples: both
    # fit (one pass each); 1024 channels: a 2-row forward tile would fit, but not a whole sample
    # (two pass), nor the backward's 12 rows; 4096: nothing fits
    assert time_model.launch_plans((128, 64, 64, 9), torch.float32, "mean", (3, 1)) == (False, False)
    assert time_model.launch_plans((2, 64, 14, 9), torch.float16, "mean+max", (7, 7)) == (False, False)
    assert time_model.launch_plans((2, 1024, 14, 9), torch.float16, "mean+max", (7, 7)) == (True, True)
    assert time_model.launch_plans((2, 4096, 14, 9), torch.float16, "mean+max", (7, 7)) == (True, True)


def test_predicted_report_puts_measured_beside_predicted():
    import predicted_report

    info = dict(case="fwd", label="UCI-HAR b1", layer="har", shape=[128, 64, 64, 9], dtype="float32", device="cuda")
    data = {"benchmarks": [{"extra_info": {**info, "impl": "fused"}, "stats": {"median": 40e-6}},
                           {"extra_info": {**info, "impl": "clone"}, "stats": {"median": 20e-6}},
                           {"extra_info": {**info, "impl": "eager"}, "stats": {"median": 90e-6}},
                           {"extra_info": {**info, "impl": "fused", "device": "cpu"}, "stats": {"median": 1e-3}}]}
    card = time_model.Card("test card", copy_bandwidth=2e12, launch_overhead=5e-6)
    fused, clone = predicted_report.rows(data, card)
    N = 128 * 64 * 64 * 9
    predicted = 5e-6 + (2 * N * 4 + 128 * 64 * 9 * 4) / 2e12
    cells = [c.strip() for c in fused.split("|")[1:-1]]
    assert cells[:6] == ["fwd", "UCI-HAR b1", "128x64x64x9", "float32", "fused", "1-pass"]
    assert cells[8:] == [f"{predicted * 1e6:.1f}", "40.0", f"{100 * predicted / 40e-6:.0f}%"]
    clone_cells = [c.strip() for c in clone.split("|")[1:-1]]
    assert clone_cells[4] == "clone" and clone_cells[8] == f"{(5e-6 + 2 * N * 4 / 2e12) * 1e6:.1f}"
