"""Shared- and global-memory access widths in the SASS of the spatial-attention kernels.

Counts, per kernel (block_program_kernel<...> instantiation) and per architecture in the
binary, the byte-wide shared accesses (STS.U8 / LDS.U8: what a memcpy into a T* of unknown
alignment compiles to) and the 128-bit shared, global and asynchronous global-to-shared
(LDGSTS, cp.async) accesses. Needs `cuobjdump` (the
nvidia-cuda-cuobjdump wheel, or a CUDA toolkit) and a CUDA build of sam_fused._C (or any
cubin / shared library given with --binary).

    python benchmarks/sass_report.py [--binary PATH] [--arch sm_90] [--per-kernel]
    python benchmarks/sass_report.py --binary NEW --same-as OLD [--arch sm_90]

--same-as tells, per kernel, whether its instructions are OLD's (branch targets and other
addresses aside): which kernels of a build are those a GPU timed in another (a bundle of
tools/device_bundle.py, unpacked with xz -d, or a cubin).
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
from collections import Counter

# instruction class -> regular expression over one SASS instruction's opcode
CLASSES = {
    "STS.U8": r"STS\.U8\b",
    "LDS.U8": r"LDS\.U8\b",
    "STS.128": r"STS\.128\b",
    "LDS.128": r"LDS\.128\b",
    "LDG.128": r"LDG\.E\.(?:EL\.|LTC\d+B\.|CONSTANT\.)*128\b",
    "STG.128": r"STG\.E\.(?:EF\.|LTC\d+B\.)*128\b",
    "LD.128": r"\bLD\.E\.(?:\w+\.)*128\b",    # generic-space 128-bit loads
    "ST.128": r"\bST\.E\.(?:\w+\.)*128\b",
    # asynchronous global -> shared copies (cp.async, sm_80+): the staged tile's 16-byte path
    "LDGSTS.128": r"\bLDGSTS\.E\.(?:\w+\.)*128\b",
}
SPATIAL_KERNELS = ("FwdMain", "FwdPool", "BwdMain", "BwdMaps", "BwdRho")
BYTE_WIDE_SHARED = ("STS.U8", "LDS.U8")
BLOCK_PROGRAMS = SPATIAL_KERNELS + ("DwReduce",)


def find_cuobjdump() -> str | None:
    """cuobjdump from PATH, the nvidia-cuda-cuobjdump wheel or CUDA_HOME."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    import site

    roots = site.getsitepackages() + [site.getusersitepackages()]
    cands = [c for r in roots for c in glob.glob(os.path.join(r, "nvidia", "*", "bin", "cuobjdump"))]
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    cands.append(os.path.join(cuda_home, "bin", "cuobjdump"))
    return next((c for c in cands if os.access(c, os.X_OK)), None)


def default_binary() -> str | None:
    """The built sam_fused._C library next to the sam_fused package, if it holds CUDA code."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    libs = glob.glob(os.path.join(here, "sam_fused", "_C*.so"))
    return libs[0] if libs else None


def sass(binary: str, cuobjdump: str, arch: str | None = None) -> str:
    """cuobjdump -sass of `binary`; empty when it holds no device code (a CPU-only build)."""
    cmd = [cuobjdump, "-sass"] + (["-arch", arch] if arch else []) + [binary]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0 and "does not contain device code" in run.stdout + run.stderr:
        return ""
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {run.stderr.strip() or run.stdout.strip()}")
    return run.stdout


def kernel_name(mangled: str) -> str:
    """'BwdMain<bf16,NCHW,i32>'-style short name of a block_program_kernel instantiation
    (',spill': map buffers in global scratch; ',2pass': the two-pass backward's main kernel;
    'Pointwise<Bwd,bf16,x8>' for the point-wise programs)."""
    dtypes = (("N3c108BFloat16", "bf16"), ("N3c104Half", "f16"), ("f", "f32"), ("d", "f64"))
    if pw := re.search(r"Pointwise(Fwd|Bwd)E(N3c108BFloat16E|N3c104HalfE|f|d)Li(\d+)E", mangled):
        dtype = next(short for code, short in dtypes if pw[2].startswith(code))
        return f"Pointwise<{pw[1]},{dtype},x{pw[3]}>"
    prog = re.search(r"(FwdMain|FwdPool|BwdMain|BwdMaps|BwdRho|DwReduce)I(.*)", mangled)
    if not prog:
        return mangled
    name, rest = prog.groups()
    dtype = next((short for code, short in dtypes if rest.startswith(code)), "?")
    if maps := re.search(r"^(?:N3c108BFloat16E|N3c104HalfE|f|d)([il])Lb([01])E", rest):  # BwdMaps<T, I, Spill>
        return f"{name}<{dtype},{'i64' if maps[1] == 'l' else 'i32'}{',spill' if maps[2] == '1' else ''}>"
    layout = re.search(r"Lb([01])E([il])", rest)
    if not layout:
        return f"{name}<{dtype}>"
    spill = ",spill" if re.search(r"Lb[01]E[il]Lb1E", rest) else ""  # map buffers in global scratch
    two_pass = ",2pass" if re.search(r"Lb[01]E[il]Lb[01]ELb1E", rest) else ""  # BwdMain<T, CL, I, Spill, TwoPass>
    return (f"{name}<{dtype},{'NHWC' if layout[1] == '1' else 'NCHW'},{'i64' if layout[2] == 'l' else 'i32'}"
            f"{spill}{two_pass}>")


def instructions(sass_text: str):
    """(arch, kernel, opcode text) of every instruction of the cuobjdump -sass text, in order."""
    arch, kernel = "?", None
    for line in sass_text.splitlines():
        m = re.search(r"(?:arch = |code for )(sm_\d+[af]?)", line)
        if m:
            arch = m.group(1)
            continue
        m = re.search(r"Function : (\S+)", line)
        if m:
            kernel = kernel_name(m.group(1))
            continue
        if kernel is not None and re.match(r"\s*/\*[0-9a-f]{4,}\*/", line):
            yield arch, kernel, line.split("*/", 1)[1].split(";")[0]


def count(sass_text: str) -> dict:
    """{(arch, kernel): Counter of CLASSES} over the cuobjdump -sass text."""
    out: dict = {}
    for arch, kernel, op in instructions(sass_text):
        current = out.setdefault((arch, kernel), Counter())
        for cls, rx in CLASSES.items():
            if re.search(rx, op):
                current[cls] += 1
    return out


# global-memory instructions (loads, stores, atomics, asynchronous copies), and the two of a
# programmatic dependent launch: griddepcontrol.launch_dependents and griddepcontrol.wait
GLOBAL_ACCESS = r"\b(?:LDG|STG|LDGSTS|LD|ST|ATOMG|ATOM|RED|UBLKCP|UTMALDG|UTMASTG)\.|\bLDGSTS\b"
LAUNCH_DEPENDENTS, GRID_WAIT = r"\bPREEXIT\b", r"\bACQBULK\b"


def dependent_launch_order(sass_text: str) -> dict:
    """{(arch, kernel): (launch_dependents, wait, first global access)}: the instruction index of
    each in the kernel's SASS (None where absent), for the block programs."""
    out: dict = {}
    for arch, kernel, op in instructions(sass_text):
        if not kernel.startswith(BLOCK_PROGRAMS):
            continue
        current = out.setdefault((arch, kernel), [None, None, None, 0])
        for slot, rx in enumerate((LAUNCH_DEPENDENTS, GRID_WAIT, GLOBAL_ACCESS)):
            if current[slot] is None and re.search(rx, op):
                current[slot] = current[3]
        current[3] += 1
    return {k: tuple(v[:3]) for k, v in out.items()}


def fingerprints(sass_text: str) -> dict:
    """{(arch, kernel): its instruction text with hexadecimal numbers (addresses, branch targets,
    constant-bank offsets) masked}: equal where two builds compiled a kernel alike."""
    out: dict = {}
    for arch, kernel, op in instructions(sass_text):
        out.setdefault((arch, kernel), []).append(re.sub(r"0x[0-9a-f]+", "#", op.strip()))
    return {k: "\n".join(v) for k, v in out.items()}


def same_as(new_text: str, old_text: str) -> dict:
    """{(arch, kernel) of the new build: True where the old build has the same instructions,
    False where they differ, None where it has no such kernel}."""
    old = fingerprints(old_text)
    return {k: (old[k] == v if k in old else None) for k, v in fingerprints(new_text).items()}


def is_spatial(kernel: str) -> bool:
    return kernel.startswith(SPATIAL_KERNELS)


def totals(counts: dict, spatial_only: bool = True) -> dict:
    """{arch: Counter} summed over the (spatial) kernels."""
    out: dict = {}
    for (arch, kernel), c in counts.items():
        if not spatial_only or is_spatial(kernel):
            out.setdefault(arch, Counter()).update(c)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=default_binary(), help="cubin or shared library (default: sam_fused/_C*.so)")
    ap.add_argument("--arch", default=None, help="only this architecture, e.g. sm_90")
    ap.add_argument("--per-kernel", action="store_true", help="one line per kernel instantiation")
    ap.add_argument("--same-as", metavar="OLD", help="per kernel: the same instructions as in this binary?")
    args = ap.parse_args(argv)
    tool = find_cuobjdump()
    if tool is None or not args.binary:
        print("needs cuobjdump and a CUDA build (pip install nvidia-cuda-cuobjdump; SAM_FUSED_BUILD=cuda)",
              file=sys.stderr)
        return 2
    if args.same_as:
        result = same_as(sass(args.binary, tool, args.arch), sass(args.same_as, tool, args.arch))
        for (arch, kernel), same in sorted(result.items()):
            print(f"{arch:7} {kernel:34} {'same' if same else 'differs' if same is False else 'absent in OLD'}")
        return 0
    counts = count(sass(args.binary, tool, args.arch))
    if not counts:
        print(f"no CUDA kernels in {args.binary}", file=sys.stderr)
        return 2
    cols = list(CLASSES)
    print(f"{'arch':7} {'kernel':34} " + " ".join(f"{c:>8}" for c in cols))
    if args.per_kernel:
        rows = sorted(counts.items())
    else:
        rows = [((arch, "spatial kernels (sum)"), c) for arch, c in sorted(totals(counts).items())]
    for (arch, kernel), c in rows:
        print(f"{arch:7} {kernel:34} " + " ".join(f"{c[k]:>8}" for k in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
