"""Parity check of the fused op against the reference modules: `python -m sam_fused.check`.

For every pool variant, a few kernels, bias on/off, return_map on/off and both layouts, on
CPU (and CUDA when available), compares the output and the x / weight / bias gradients of the
fused op with the reference module run in float64 on the same inputs rounded to the checked
dtype (the exact answer for what the op is given, so the errors are the op's own rounding,
not that of its inputs), prints one line per group and exits non-zero when an error exceeds the
tolerance (docs/design.md §4: fp32 1e-5 of the output scale; fp64 1e-10; float16 / bfloat16,
with --dtype, the dtype's machine epsilon). A gradient summed over thousands of pixels carries
fp32 rounding above 1e-5 in any implementation, so an error also passes when it is no worse
than twice that of the reference module itself run in the same dtype ("ref err" column; the
"ratio" column is fused err / ref err, below 1 where the fused op is the more precise).
"""
from __future__ import annotations

import argparse
import itertools
import sys

import torch

from .ops import spatial_attention
from .reference import POOLS, SpatialGate

SHAPES = [(4, 64, 64, 9), (2, 512, 8, 9), (2, 16, 14, 14), (3, 5, 7, 1), (1, 1, 1, 1)]
KERNELS = [(3, 1), (7, 7), (3, 3)]
# --quick (a few seconds; the smoke test of an installed wheel): one shape, bias on, x*s output
QUICK = dict(shapes=[(2, 12, 10, 9)], kernels=[(3, 1), (7, 7)], biases=(True,), maps=(False,), layouts=(False,))
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10, torch.float16: torch.finfo(torch.float16).eps,
             torch.bfloat16: torch.finfo(torch.bfloat16).eps}
DEFAULT_DTYPES = ("float32", "float64")


def _run(ref_or_none, x, weight, bias, pool, return_map, g):
    """Output and x/weight/bias gradients of the reference module (or the fused op if None)."""
    x = x.clone().requires_grad_()
    params = [weight] + ([bias] if bias is not None else [])
    if ref_or_none is None:
        out = spatial_attention(x, weight, bias, pool, return_map)
    else:
        out = torch.func.functional_call(ref_or_none, {"weight": weight, "bias": bias}, (x,))
    return (out, *torch.autograd.grad(out, [x] + params, g))


def max_errors(shape, pool, kernel, bias, return_map, dtype, device, channels_last=False):
    """Largest error of fused and of the reference in `dtype` against the float64 reference,
    over out, dx, dweight, dbias, each relative to max(1, max|exact|)."""
    gen = torch.Generator().manual_seed(0)
    ref = SpatialGate(kernel, pool, bias, return_map).to(device)
    P = ref.weight.shape[1]
    weight = torch.randn((1, P, *ref.kernel_size), generator=gen, dtype=torch.float64).to(device)
    bias_t = torch.randn(1, generator=gen, dtype=torch.float64).to(device) if bias else None
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(device)
    g = torch.randn(ref(x.float()).shape, generator=gen, dtype=torch.float64).to(device)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)

    # Every run sees the inputs rounded to `dtype` (the exact one then holds them in float64):
    # otherwise the input rounding (eps/2 of each value) would be counted as the op's error, in
    # fp32 as much as in fp16/bf16, and would hide how precisely the op computes.
    def args(t):
        return [None if v is None else v.to(dtype).to(t).requires_grad_(v is not x) for v in (x, weight, bias_t)]

    exact = _run(ref, *args(torch.float64), pool, return_map, g.to(dtype).double())
    fused = _run(None, *args(dtype), pool, return_map, g.to(dtype))
    plain = _run(ref, *args(dtype), pool, return_map, g.to(dtype))
    err_fused, err_ref = 0.0, 0.0
    for e, f, r in zip(exact, fused, plain):
        if e.numel():
            scale = max(1.0, e.abs().max().item())
            err_fused = max(err_fused, (f.double() - e).abs().max().item() / scale)
            err_ref = max(err_ref, (r.double() - e).abs().max().item() / scale)
    return err_fused, err_ref


def group_errors(pool, dtype, device, grid):
    """(worst fused error, worst reference error, cases, ok) over the grid's cases of one pool;
    ok: every case within the tolerance or no worse than twice the reference's own error."""
    worst, worst_ref, cases, ok = 0.0, 0.0, 0, True
    for shape, kernel, bias, return_map, cl in itertools.product(*grid.values()):
        err, err_ref = max_errors(shape, pool, kernel, bias, return_map, dtype, device, cl)
        ok &= err <= max(TOLERANCE[dtype], 2 * err_ref)
        worst, worst_ref, cases = max(worst, err), max(worst_ref, err_ref), cases + 1
    return worst, worst_ref, cases, ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", action="append", help="cpu and/or cuda (default: cpu, plus cuda if available)")
    parser.add_argument("--dtype", action="append", choices=[str(d).removeprefix("torch.") for d in TOLERANCE],
                        help="dtypes to check (default: float32 and float64)")
    parser.add_argument("--quick", action="store_true", help="a few-second subset (one shape, two kernels)")
    args = parser.parse_args(argv)
    dtypes = [getattr(torch, name) for name in (args.dtype or DEFAULT_DTYPES)]
    grid = QUICK if args.quick else dict(shapes=SHAPES, kernels=KERNELS, biases=(True, False), maps=(False, True),
                                         layouts=(False, True))
    devices = args.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    failures = 0
    print(f"{'device':6} {'dtype':8} {'pool':9} {'cases':>5}  {'fused err':>9}  {'ref err':>9}  {'ratio':>5}  "
          "tolerance  result")
    for device, dtype, pool in itertools.product(devices, dtypes, POOLS):
        worst, worst_ref, cases, ok = group_errors(pool, dtype, device, grid)
        failures += not ok
        ratio = f"{worst / worst_ref:5.2f}" if worst_ref > 0 else "    -"
        print(f"{device:6} {str(dtype)[6:]:8} {pool:9} {cases:5}  {worst:9.2e}  {worst_ref:9.2e}  {ratio}  "
              f"{TOLERANCE[dtype]:9.0e}  {'ok' if ok else 'FAIL'}")
    print("parity: all variants match the reference" if not failures else f"parity: {failures} group(s) FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
