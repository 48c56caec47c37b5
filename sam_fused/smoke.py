"""A few-second parity check of an installed sam_fused on CPU: `python -m sam_fused.smoke`.

Run by tools/smoke_wheel.py on a freshly installed wheel (python -m sam_fused.check is the full,
minutes-long version). Compares output and gradients of the fused op with the reference module
run in float64, for every pool variant, in float32 and float64.
"""
import sys

import torch

from .ops import spatial_attention
from .reference import POOLS, SpatialGateReference

TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}


def max_errors(pool, kernel, dtype, generator):
    reference = SpatialGateReference(kernel_size=kernel, pool=pool, bias=True).double()
    x = torch.randn(2, 12, 10, 9, dtype=torch.float64, generator=generator)
    grad_out = torch.randn(x.shape, dtype=torch.float64, generator=generator)
    x.requires_grad_()
    expected = reference(x)
    expected = [expected, *torch.autograd.grad(expected, [x, reference.weight, reference.bias], grad_out)]
    fused_inputs = [t.detach().to(dtype).requires_grad_() for t in (x, reference.weight, reference.bias)]
    out = spatial_attention(*fused_inputs, pool=pool)
    got = [out, *torch.autograd.grad(out, fused_inputs, grad_out.to(dtype))]
    return max(((g.double() - e).abs().max() / e.abs().max().clamp_min(1)).item() for g, e in zip(got, expected))


def main():
    generator = torch.Generator().manual_seed(0)
    failures = 0
    for pool in POOLS:
        for kernel, dtype in [((3, 1), torch.float32), (7, torch.float32), (3, torch.float64)]:
            error = max_errors(pool, kernel, dtype, generator)
            ok = error <= TOLERANCE[dtype]
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} pool={pool:<9} kernel={kernel!s:<7} {str(dtype)[6:]:<8} max rel err {error:.2e}")
    print("smoke parity:", "FAILED" if failures else "passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
