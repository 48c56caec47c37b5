"""Bitwise determinism: the same inputs give the same bits, forward and backward, on repeated
calls and on any number of threads (the weight/bias gradient is reduced in a fixed order)."""
import pytest
import torch

from helpers import DEVICES, POOLS, fused_results, make_grad, make_input, make_pair

# Several samples and enough rows that the CPU kernel cuts many work items, so a thread count
# or reduction order that leaked into the result would show.
SHAPE = (4, 64, 32, 9)


def _results(pool, dtype, layout, return_map, device="cpu"):
    x = make_input(SHAPE, dtype, layout, device)
    _, weight, bias = make_pair(pool, (7, 7), True, return_map, dtype, device)
    grad_shape = (SHAPE[0], 1, *SHAPE[2:]) if return_map else SHAPE
    return fused_results(x, weight, bias, pool, return_map, make_grad(grad_shape, dtype, device))


def _assert_bitwise_equal(a, b):
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("return_map", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("pool", POOLS)
def test_repeated_calls_bitwise_equal(pool, dtype, layout, return_map, device):
    first = _results(pool, dtype, layout, return_map, device)
    for _ in range(2):
        _assert_bitwise_equal(_results(pool, dtype, layout, return_map, device), first)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pool", ["mean", "max+mean"])
def test_thread_count_does_not_change_bits(pool, dtype, layout, restore_num_threads):
    torch.set_num_threads(1)
    single = _results(pool, dtype, layout, False)
    torch.set_num_threads(2)
    for _ in range(2):  # twice: a race between the threads need not show on the first run
        _assert_bitwise_equal(_results(pool, dtype, layout, False), single)
