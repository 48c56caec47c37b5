"""fp64 `torch.autograd.gradcheck` of the hand-written backward, and `torch.library.opcheck` of
the registered forward and backward ops (schema, fake kernel, autograd registration, AOT
dispatch). Double backward is not supported by the op and is not tested."""
import pytest
import torch

import sam_fused
from helpers import DEVICES, POOLS, make_grad, make_input, make_pair

fwd_op = torch.ops.sam_fused.spatial_attention_fwd.default
bwd_op = torch.ops.sam_fused.spatial_attention_bwd.default


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel,layout", [((3, 3), "contiguous"), ((5, 1), "channels_last")])
@pytest.mark.parametrize("return_map", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("pool", POOLS)
def test_gradcheck(pool, bias, return_map, kernel, layout, device):
    # Random normal inputs: the channel max of each pixel is far (>> gradcheck's eps) from the
    # runner-up, so the finite differences never cross an argmax switch.
    x = make_input((2, 3, 5, 4), torch.float64, layout, device).requires_grad_()
    _, weight, b = make_pair(pool, kernel, bias, return_map, torch.float64, device)
    inputs = (x, weight.detach().requires_grad_(), None if b is None else b.detach().requires_grad_())
    assert torch.autograd.gradcheck(lambda *t: sam_fused.spatial_attention(*t, pool=pool, return_map=return_map),
                                    inputs)


def _fwd_args(pool, bias, return_map, device, layout="contiguous", requires_grad=True):
    x = make_input((2, 4, 6, 5), torch.float64, layout, device)
    _, weight, b = make_pair(pool, (3, 3), bias, return_map, torch.float64, device)
    tensors = [t if t is None else t.detach().requires_grad_(requires_grad) for t in (x, weight, b)]
    return (*tensors, pool, return_map)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("return_map", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("pool", POOLS)
def test_opcheck_forward(pool, bias, return_map, device):
    torch.library.opcheck(fwd_op, _fwd_args(pool, bias, return_map, device))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_forward_channels_last(device):
    torch.library.opcheck(fwd_op, _fwd_args("mean+max", True, False, device, "channels_last"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias,return_map,layout", [(True, False, "contiguous"), (False, True, "channels_last")])
@pytest.mark.parametrize("pool", POOLS)
def test_opcheck_backward(pool, bias, return_map, layout, device):
    x, weight, b, *_ = _fwd_args(pool, bias, return_map, device, layout, requires_grad=False)
    out, pooled = fwd_op(x, weight, b, pool, return_map)
    grad_out = make_grad(out.shape, out.dtype, device)
    torch.library.opcheck(bwd_op, (grad_out, x, weight, b, pooled, pool, return_map))
