"""Parity of `sam_fused.spatial_attention` (output and the gradients of x, weight and bias) with
the reference modules.

The full cross product of every axis is too big to run in CI, so the grid is cut in three:
every pool x kernel x bias x return_map on a few shapes in fp64; every shape with a few
configurations in fp64 and fp32; and every dtype x layout on a smaller set. Tolerances: see
`helpers.TOLERANCE`.
"""
import pytest
import torch

import sam_fused
from helpers import (DEVICES, DTYPES, KERNELS, LAYOUTS, POOLS, TOLERANCE, assert_close_scaled, assert_results_close,
                     SATURATED_PREACTIVATIONS, assert_gate_gradients_relatively_close, check_parity,
                     forward_backward, fused_results, make_grad, make_input, make_pair, module_results,
                     requires_cuda, saturated_case)

HAR_SHAPES = [(2, 64, 64, 9), (2, 512, 8, 9)]  # UCI-HAR shapes of docs/design.md §7 at batch 2
ODD_SHAPES = [
    (1, 1, 1, 1),
    (3, 5, 7, 1),    # W = 1
    (2, 3, 1, 6),    # H = 1
    (2, 1, 6, 4),    # C = 1
    (0, 4, 5, 5),    # empty batch
    (1, 8, 37, 5),   # odd H
    (2, 128, 47, 9),  # big enough that the CPU kernel splits H into row chunks, the last partial
]
SHAPES = HAR_SHAPES + ODD_SHAPES
GRID_SHAPES = [(2, 64, 64, 9), (1, 8, 37, 5), (3, 5, 7, 1), (2, 3, 1, 6)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("return_map", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("shape", GRID_SHAPES)
def test_full_grid_fp64(shape, pool, kernel, bias, return_map, device):
    check_parity(make_input(shape, torch.float64, device=device), pool, kernel, bias, return_map)


# (kernel, bias, return_map): the HAR layer, and a CBAM-style gate returning the map.
CONFIGS = [((3, 1), True, False), ((7, 7), False, True)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kernel,bias,return_map", CONFIGS)
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("shape", SHAPES)
def test_shapes(shape, pool, kernel, bias, return_map, dtype, device):
    check_parity(make_input(shape, dtype, device=device), pool, kernel, bias, return_map)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("return_map", [False, True])
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 64, 64, 9), (1, 8, 37, 5), (2, 128, 47, 9)])
def test_dtypes_and_layouts(shape, dtype, layout, pool, return_map, device):
    check_parity(make_input(shape, dtype, layout, device), pool, (5, 3), True, return_map)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("return_map", [False, True])
@pytest.mark.parametrize("pool", POOLS)
def test_channels_last_in_channels_last_out(pool, return_map, device):
    x = make_input((2, 8, 5, 4), torch.float32, "channels_last", device)
    actual, expected = check_parity(x, pool, (3, 3), True, return_map)
    # Only the output's layout is compared: the layout of a gradient returned by autograd
    # follows the upstream gradient's, not x's.
    cl = torch.channels_last
    assert actual["out"].is_contiguous(memory_format=cl) == expected["out"].is_contiguous(memory_format=cl)
    if not return_map:
        assert actual["out"].is_contiguous(memory_format=cl)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pool", POOLS)
def test_nan_propagates(pool, device):
    x = make_input((2, 6, 5, 4), torch.float64, device=device)
    x[0, 2, 1, 1] = float("nan")  # one channel of one pixel
    x[1, :, 3, 2] = float("nan")  # every channel of one pixel
    actual, _ = check_parity(x, pool, (3, 3), True, False)
    assert torch.isnan(actual["out"]).any()


def _tied_input(device):
    """x where channels 1 and 3 share the channel max at every pixel, and one sample where all
    channels are equal."""
    x = make_input((2, 5, 4, 3), torch.float64, device=device)
    x[:, 1] = x[:, 3] = x.abs().amax(dim=1) + 1.0
    x[1] = 0.5
    return x


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pool", ["max", "mean+max", "max+mean"])
def test_max_ties_route_gradient_to_first_index(pool, device):
    x = _tied_input(device)
    actual, _ = check_parity(x, pool, (3, 3), True, False)
    # dx = g*s + (mean-pool term, the same for every channel) + (max-pool term, argmax only).
    ref, _, _ = make_pair(pool, (3, 3), True, True, device=device)  # same parameters, returns s
    extra = actual["x"] - make_grad(x.shape, x.dtype, device) * ref(x).detach()
    # sample 0: channels 1 and 3 tie; only channel 1 gets more than channel 0 (not a max) gets
    assert torch.allclose(extra[0, 3], extra[0, 0]), "the second tied channel got max-pool gradient"
    assert not torch.allclose(extra[0, 1], extra[0, 0]), "the first tied channel got no max-pool gradient"
    # sample 1: all channels tie; only channel 0 gets the max-pool gradient
    assert torch.allclose(extra[1, 4], extra[1, 1]) and not torch.allclose(extra[1, 0], extra[1, 1])


@pytest.mark.parametrize("pool", POOLS)
def test_autograd_function_matches_reference(pool):
    x = make_input((2, 6, 7, 5), torch.float64)
    ref, weight, bias = make_pair(pool, (3, 3), True, False)
    expected = module_results(ref, x)

    def fused(xx, p):
        return sam_fused.SpatialAttentionFunction.apply(xx, p["weight"], p["bias"], pool, False)[0]

    assert_results_close(forward_backward(fused, x, {"weight": weight, "bias": bias}), expected, torch.float64)


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("pool", POOLS)
def test_cpu_and_cuda_agree(pool, layout, dtype):
    x = make_input((2, 64, 16, 9), dtype, layout)
    _, weight, bias = make_pair(pool, (7, 7), True, False, dtype)
    grad_out = make_grad(x.shape, dtype)
    fwd = sam_fused.spatial_attention
    cpu = forward_backward(lambda xx, p: fwd(xx, p["weight"], p["bias"], pool), x,
                           {"weight": weight, "bias": bias}, grad_out)
    cuda = forward_backward(lambda xx, p: fwd(xx, p["weight"], p["bias"], pool), x.cuda(),
                            {"weight": weight.cuda(), "bias": bias.cuda()}, grad_out.cuda())
    for key in cpu:
        # Each side may round differently once per result: twice the per-result tolerance.
        assert_close_scaled(cuda[key], cpu[key], 2 * TOLERANCE[dtype], key)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("a", SATURATED_PREACTIVATIONS)
def test_saturated_sigmoid_slope_is_accurate(a, layout, device):
    x, weight, bias, grad_out, expected = saturated_case(a, layout, device)
    actual = fused_results(x, weight, bias, "mean+max", False, grad_out)
    assert_gate_gradients_relatively_close(actual, expected, f"a={a} {layout} {device}")
