"""Bad input raises a ValueError/RuntimeError whose message names the argument, through the
public function (Python checks), the raw registered op (C++ checks) and the modules."""
import pytest
import torch

import sam_fused
from helpers import requires_cuda

BAD_INPUT = (ValueError, RuntimeError)
fwd_op = torch.ops.sam_fused.spatial_attention_fwd
bwd_op = torch.ops.sam_fused.spatial_attention_bwd


def _valid(pool="mean+max"):
    """Valid (x, weight, bias, pool) that each case then breaks in one place."""
    P = len(pool.split("+"))
    return {"x": torch.randn(2, 4, 5, 6), "weight": torch.randn(1, P, 3, 3), "bias": torch.randn(1), "pool": pool}


# id -> (changes to the valid arguments, message pattern naming the argument)
CASES = {
    "x rank 3": ({"x": torch.randn(4, 5, 6)}, r"x must be a 4-D"),
    "x rank 5": ({"x": torch.randn(2, 4, 5, 6, 1)}, r"x must be a 4-D"),
    "x int dtype": ({"x": torch.ones(2, 4, 5, 6, dtype=torch.int32)}, r"x must be float"),
    "x bool dtype": ({"x": torch.ones(2, 4, 5, 6, dtype=torch.bool)}, r"x must be float"),
    "x zero channels": ({"x": torch.randn(2, 0, 5, 6)}, r"x must have at least one channel"),
    "even kernel height": ({"weight": torch.randn(1, 2, 2, 3)}, r"weight kernel size must be odd"),
    "even kernel width": ({"weight": torch.randn(1, 2, 3, 4)}, r"weight kernel size must be odd"),
    "zero kernel": ({"weight": torch.randn(1, 2, 0, 3)}, r"weight kernel size must be odd"),
    "weight for one map, pool of two": ({"weight": torch.randn(1, 1, 3, 3)}, r"weight must have shape \[1, 2,"),
    "weight for two maps, pool of one": ({"pool": "max"}, r"weight must have shape \[1, 1,"),
    "weight rank 3": ({"weight": torch.randn(2, 3, 3)}, r"weight must have shape \[1, 2,"),
    "weight two outputs": ({"weight": torch.randn(2, 2, 3, 3)}, r"weight must have shape \[1, 2,"),
    "weight dtype": ({"weight": torch.randn(1, 2, 3, 3, dtype=torch.float64)}, r"weight must have the dtype of x"),
    "bias dtype": ({"bias": torch.randn(1, dtype=torch.float16)}, r"bias must have the dtype of x"),
    "weight device": ({"weight": torch.randn(1, 2, 3, 3, device="meta")}, r"weight must be on the device of x"),
    "bias device": ({"bias": torch.randn(1, device="meta")}, r"bias must be on the device of x"),
    "bias two elements": ({"bias": torch.randn(2)}, r"bias must have shape \[1\]"),
    "bias 0-dim": ({"bias": torch.tensor(0.5)}, r"bias must have shape \[1\]"),
    "bias 2-D": ({"bias": torch.randn(1, 1)}, r"bias must have shape \[1\]"),
    "unknown pool": ({"pool": "avg"}, r"pool must be one of"),
    "pool wrong case": ({"pool": "Mean+Max"}, r"pool must be one of"),
    "pool order with space": ({"pool": "mean + max"}, r"pool must be one of"),
}


def _bad_args(changes):
    args = _valid()
    args.update(changes)
    return args


@pytest.mark.parametrize("case", CASES)
def test_function_rejects(case):
    changes, message = CASES[case]
    a = _bad_args(changes)
    with pytest.raises(BAD_INPUT, match=message):
        sam_fused.spatial_attention(a["x"], a["weight"], a["bias"], a["pool"])


@pytest.mark.parametrize("case", CASES)
def test_raw_op_rejects(case):
    changes, message = CASES[case]
    a = _bad_args(changes)
    with pytest.raises(BAD_INPUT, match=message):
        fwd_op(a["x"], a["weight"], a["bias"], a["pool"], False)


@requires_cuda
@pytest.mark.parametrize("bad", ["x", "weight", "bias"])
def test_cpu_cuda_mix_rejected(bad):
    a = {k: (v.cuda() if isinstance(v, torch.Tensor) and k != bad else v) for k, v in _valid().items()}
    name = "weight" if bad == "x" else bad  # with x on the CPU, the weight is the one on the wrong device
    for call in (lambda: sam_fused.spatial_attention(a["x"], a["weight"], a["bias"], a["pool"]),
                 lambda: fwd_op(a["x"], a["weight"], a["bias"], a["pool"], False)):
        with pytest.raises(BAD_INPUT, match=rf"{name} must be on the device of x"):
            call()


def _bwd_args(**changes):
    a = _valid()
    out, pooled = fwd_op(a["x"], a["weight"], a["bias"], a["pool"], False)
    args = {"grad_out": torch.ones_like(out), "x": a["x"], "weight": a["weight"], "bias": a["bias"],
            "pooled": pooled, "pool": a["pool"], "return_map": False}
    args.update(changes)
    return args


@pytest.mark.parametrize("changes,message", [
    # the shapes as lists, as the fake kernel (ops.py) writes them
    ({"grad_out": torch.ones(2, 1, 5, 6)}, r"grad_out must have shape \[2, 4, 5, 6\], got \[2, 1, 5, 6\]"),
    ({"return_map": True}, r"grad_out must have shape \[2, 1, 5, 6\], got \[2, 4, 5, 6\]"),  # x-shaped, for the map
    ({"pooled": torch.zeros(2, 1, 5, 6)}, r"pooled must be"),
    ({"pooled": torch.zeros(2, 2, 5, 6, dtype=torch.float64)}, r"pooled must be"),
    ({"weight": torch.randn(1, 2, 4, 3)}, r"weight kernel size must be odd"),
    ({"pool": "avg"}, r"pool must be one of"),
], ids=["grad_out shape", "grad_out for map", "pooled maps", "pooled dtype", "even kernel", "pool"])
def test_raw_backward_op_rejects(changes, message):
    a = _bwd_args(**changes)
    with pytest.raises(BAD_INPUT, match=message):
        bwd_op(*a.values())


@pytest.mark.parametrize("kernel_size", [4, 0, -3, (3, 2), (2, 3), (0, 1)])
@pytest.mark.parametrize("module", [sam_fused.SpatialGate, sam_fused.reference.SpatialGate])
def test_module_rejects_kernel_size(module, kernel_size):
    with pytest.raises(BAD_INPUT, match=r"kernel_size must be odd and positive"):
        module(kernel_size=kernel_size)


@pytest.mark.parametrize("module", [sam_fused.SpatialGate, sam_fused.reference.SpatialGate])
def test_module_rejects_pool(module):
    with pytest.raises(BAD_INPUT, match=r"pool must be one of"):
        module(pool="avg+max")


def test_module_rejects_bad_input():
    gate = sam_fused.SpatialGate(3, "mean+max")
    with pytest.raises(BAD_INPUT, match=r"x must be a 4-D"):
        gate(torch.randn(4, 5, 6))
    with pytest.raises(BAD_INPUT, match=r"weight must have the dtype of x"):
        gate(torch.randn(2, 4, 5, 6, dtype=torch.float64))


@pytest.mark.parametrize("args,error,message", [
    ((None, torch.randn(1, 1, 3, 3)), TypeError, r"x must be a torch.Tensor, got NoneType"),
    ((torch.randn(2, 4, 5, 6), None), TypeError, r"weight must be a torch.Tensor"),
    ((torch.randn(2, 4, 5, 6), torch.randn(1, 1, 3, 3), 0.5), TypeError, r"bias must be a torch.Tensor"),
    ((torch.randn(2, 4, 5, 6), torch.randn(1, 1, 3, 3), None, None), TypeError, r"pool must be a str"),
    ((torch.randn(2, 4, 5, 6), torch.randn(1, 1, 3, 3), None, "mean", None), TypeError, r"return_map must be a bool"),
    ((torch.randn(2, 4, 5, 6), torch.randn(1, 1, 3, 3), None, "mean", 1), TypeError, r"return_map must be a bool"),
    ((torch.randn(2, 4, 5, 6), torch.randn(1, 1, 3, 3), None, "mean", torch.tensor(True)), TypeError,
     r"return_map must be a bool"),
], ids=["x None", "weight None", "bias float", "pool None", "return_map None", "return_map int", "return_map tensor"])
def test_function_rejects_wrong_types(args, error, message):
    """No silent coercion: each argument of the wrong Python type is named."""
    with pytest.raises(error, match=message):
        sam_fused.spatial_attention(*args)


@pytest.mark.parametrize("args,message", [
    ((None, torch.randn(2, 3)), r"x must be a torch.Tensor"),
    ((torch.randn(2, 3), [1.0, 2.0]), r"y must be a torch.Tensor"),
], ids=["x None", "y list"])
def test_pointwise_rejects_wrong_types(args, message):
    with pytest.raises(TypeError, match=message):
        sam_fused.pointwise_attention(*args)


@pytest.mark.parametrize("changes,message", [
    ({"grad_out": torch.ones(2, 1, 5, 6)}, r"grad_out must have shape \[2, 4, 5, 6\], got \[2, 1, 5, 6\]"),
    ({"grad_out": torch.ones(2, 4, 5, 6, dtype=torch.int64)}, r"grad_out must be a floating-point"),
    ({"grad_out": torch.ones(2, 4, 5, 6, device="meta")}, r"grad_out must be on the device of x"),
    ({"pooled": torch.zeros(2, 2, 5, 6, device="meta")}, r"pooled must be"),
    ({"pooled": torch.zeros(2, 1, 5, 6)}, r"pooled must be"),
], ids=["grad_out shape", "grad_out int", "grad_out device", "pooled device", "pooled maps"])
def test_backward_fake_and_real_kernels_check_alike(changes, message):
    """The fake kernel (torch.compile / export) rejects what the real kernels reject."""
    from sam_fused.ops import _bwd_fake

    a = _bwd_args(**changes)
    with pytest.raises(BAD_INPUT, match=message):
        _bwd_fake(*a.values())
    if all(t.device.type == "cpu" for t in a.values() if isinstance(t, torch.Tensor)):
        with pytest.raises(BAD_INPUT, match=message):
            bwd_op(*a.values())
