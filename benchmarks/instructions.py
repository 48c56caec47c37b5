"""Instructions per element of the fused CPU forward and backward, counted by callgrind.

    python benchmarks/instructions.py [--shape 16,64,64,9 ...] [--pool mean] [--kernel 3,1] [--dtype bfloat16]
        [--l2 1M]

Wall time on a shared machine drifts by tens of percent; instruction counts do not. The script
re-runs itself under ``valgrind --tool=callgrind`` at one thread, counts only inside the C++
entry functions of the ops (``--toggle-collect``) and ``at::native::clone`` (``x.clone()``, the
memory-floor baseline), and prints instructions per element of x for each: the mean over
``--reps`` calls of each op (the first call of a shape differs only by allocator work).

valgrind emulates no AVX-512, and its CPUID hides it, so the kernels choose at most AVX2 under
it (``SAM_FUSED_CPU_ISA`` still forces a lower one). The kernels size their bands from the L2
(the header prints the size planned with), so counts differ between CPUs; ``--l2`` plans for
another's (``SAM_FUSED_CPU_L2``). Needs valgrind (Debian/Ubuntu:
``apt-get install -y valgrind``; ``--install`` runs that when the script has root).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

# C++ entry functions counted (callgrind matches the demangled name; `*` is a wildcard).
FUNCTIONS = {
    "fwd": "sam_fused::spatial_attention_fwd_cpu(*",
    "bwd": "sam_fused::spatial_attention_bwd_cpu(*",
    "clone": "at::native::clone(*",
}
HAR = dict(pool="mean", kernel=(3, 1), bias=True)
DTYPES = ("float32", "float16", "bfloat16")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's sam_fused, as pytest's pythonpath = "." gives the tests


def parse_shape(text: str) -> tuple[int, ...]:
    shape = tuple(int(v) for v in text.split(","))
    if len(shape) != 4 or min(shape) <= 0:
        raise argparse.ArgumentTypeError(f"--shape must be four positive integers B,C,H,W, got {text!r}")
    return shape


def child(args) -> None:
    """Runs under callgrind: the counted calls, nothing else of note inside the toggles."""
    import torch
    import sam_fused  # noqa: F401  (registers the ops)

    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    kh, kw = args.kernel
    P = 2 if "+" in args.pool else 1
    fwd, bwd = torch.ops.sam_fused.spatial_attention_fwd, torch.ops.sam_fused.spatial_attention_bwd
    for shape in args.shape:
        # channels_last: x and grad (the layout autograd hands back for a channels_last output)
        # filled by copy_, since .contiguous(memory_format) would run the counted clone
        fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        x = torch.empty(shape, dtype=dtype, memory_format=fmt).copy_(torch.randn(shape, generator=gen))
        weight = (torch.randn(1, P, kh, kw, generator=gen) * 0.3).to(dtype)
        bias = torch.randn(1, generator=gen).to(dtype)
        grad = torch.empty(shape, dtype=dtype, memory_format=fmt).copy_(torch.randn(shape, generator=gen))
        for _ in range(args.reps):
            x.clone()
            _, pooled = fwd(x, weight, bias, args.pool, False)
            bwd(grad, x, weight, bias, pooled, args.pool, False)


def inclusive_counts(out_file: str) -> dict[str, int]:
    """Inclusive instruction count of each counted function, from callgrind_annotate."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", out_file],
                          capture_output=True, text=True, check=True).stdout
    counts = {}
    for line in text.splitlines():  # "  1,234 (12.3%)  file:function(args) [object]", highest first
        found = re.match(r"\s*([\d,]+)\s", line)
        for key, pattern in FUNCTIONS.items():
            if found and key not in counts and pattern.rstrip("*") in line:
                counts[key] = int(found[1].replace(",", ""))
    return counts


def ensure_valgrind(install: bool) -> str:
    path = shutil.which("valgrind")
    if path:
        return path
    if install and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-q"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "valgrind"], check=True)
        path = shutil.which("valgrind")
    if not path:
        sys.exit("valgrind not found: install it (Debian/Ubuntu: `apt-get install -y valgrind`, "
                 "or run this script with --install as root)")
    return path


def cpu_isa_and_l2() -> tuple[str, int]:
    """The ISA the kernels choose outside valgrind, and the L2 size (KiB) they plan with."""
    import torch
    import sam_fused  # noqa: F401
    ops = torch.ops.sam_fused
    return ops._cpu_isa(), ops._cpu_cache_sizes()[1] >> 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=parse_shape, action="append", help="B,C,H,W (repeatable; default 16,64,64,9)")
    parser.add_argument("--pool", default=HAR["pool"])
    parser.add_argument("--kernel", type=lambda t: tuple(int(v) for v in t.split(",")), default=HAR["kernel"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="dtype of x, weight and grad")
    parser.add_argument("--reps", type=int, default=3, help="calls of each op counted (the mean is printed)")
    parser.add_argument("--keep", metavar="DIR", help="keep callgrind.out.<shape> there (for callgrind_annotate)")
    parser.add_argument("--install", action="store_true", help="apt-get install valgrind when it is missing")
    parser.add_argument("--l2", help="plan the bands for this L2 size (512K, 1M: SAM_FUSED_CPU_L2)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.shape = args.shape or [(16, 64, 64, 9)]
    if args.child:
        return child(args)
    if args.l2:  # read once per process: set before this one or its children load the library
        os.environ["SAM_FUSED_CPU_L2"] = args.l2

    valgrind = ensure_valgrind(args.install)
    rows = []
    for shape in args.shape:
        with tempfile.TemporaryDirectory() as tmp:
            out_file = os.path.join(tmp, "callgrind.out")
            cmd = [valgrind, "--tool=callgrind", "--collect-atstart=no", f"--callgrind-out-file={out_file}"]
            cmd += [f"--toggle-collect={f}" for f in FUNCTIONS.values()]
            cmd += [sys.executable, os.path.abspath(__file__), "--child", "--shape", ",".join(map(str, shape)),
                    "--pool", args.pool, "--kernel", ",".join(map(str, args.kernel)), "--reps", str(args.reps),
                    "--dtype", args.dtype]
            cmd += ["--channels-last"] if args.channels_last else []
            env = dict(os.environ, OMP_NUM_THREADS="1")
            run = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if run.returncode != 0:
                sys.exit(f"valgrind run failed ({run.returncode}):\n{run.stderr[-3000:]}")
            counts = inclusive_counts(out_file)
            if args.keep:
                os.makedirs(args.keep, exist_ok=True)
                shutil.copy(out_file, os.path.join(args.keep, f"callgrind.out.{'x'.join(map(str, shape))}"))
        missing = set(FUNCTIONS) - set(counts)
        if missing:
            sys.exit(f"callgrind counted no instructions in {sorted(missing)}; is the extension built with symbols?")
        numel = shape[0] * shape[1] * shape[2] * shape[3]
        rows.append((shape, {k: v / args.reps / numel for k, v in counts.items()}))

    with_isa = os.environ.get("SAM_FUSED_CPU_ISA")
    isa, l2_kib = cpu_isa_and_l2()
    print(f"callgrind, 1 thread, {args.dtype}, pool={args.pool}, kernel={args.kernel}, "
          f"{'channels_last' if args.channels_last else 'contiguous'}, SAM_FUSED_CPU_ISA={with_isa or '(auto)'}, "
          f"ISA outside valgrind: {isa}, bands planned for an L2 of {l2_kib} KiB{' (--l2)' if args.l2 else ''}")
    print(f"{'shape':>16} | {'clone':>7} | {'fwd':>7} | {'bwd':>7} | {'fwd/clone':>9}   (instructions per element)")
    for shape, per in rows:
        print(f"{'x'.join(map(str, shape)):>16} | {per['clone']:7.2f} | {per['fwd']:7.2f} | {per['bwd']:7.2f} | "
              f"{per['fwd'] / per['clone']:9.2f}")


if __name__ == "__main__":
    main()
