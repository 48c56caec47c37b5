"""Registers, spills, shared memory and occupancy of every CUDA kernel, from ptxas, with no GPU.

    python benchmarks/resource_report.py [--arch 80 --arch 90] [--jobs 2]

Compiles csrc/cuda/*.cu device-only (`nvcc -cubin -Xptxas -v`, the build's flags and include
paths) into a temporary folder and prints, per kernel and architecture: registers per thread,
spill stores/loads, static shared memory, threads per block (the launch plan's: csrc/block/traits.h
and the launchers), theoretical occupancy from registers, threads and static smem (and, for the
main kernels, with a full staged tile of dynamic smem as the plan budgets it), and the bytes in
flight per SM if every resident thread has one 16-byte load outstanding, against what Little's
law needs to keep HBM busy (copy bandwidth x latency / SMs); the point-wise kernels issue all
their loads (unroll x operands) before computing. Dynamic smem below the tile budget
depends on the shape; `make gpu-check` measures achieved occupancy with ncu.
"""
from __future__ import annotations

import argparse
import glob
import inspect
import math
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# as setup.py: an `nvcc` wrapper on PATH would make torch guess a toolkit root without headers
if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

# Per SM: registers, threads, blocks, shared memory (bytes), smem reserved per block; HBM copy
# bandwidth (bytes/s), DRAM latency (s), SMs. H100 SXM and A100 80GB; latency and A100 copy
# bandwidth are typical published figures (assumed, not measured here).
ARCHS = {
    80: dict(card="A100", regs=65536, threads=2048, blocks=32, smem=164 * 1024, reserved=1024,
             bandwidth=1.8e12, latency=0.6e-6, sms=108),
    90: dict(card="H100", regs=65536, threads=2048, blocks=32, smem=228 * 1024, reserved=1024,
             bandwidth=3.0e12, latency=0.7e-6, sms=132),
}
VECTOR_BYTES = 16  # one 128-bit load per thread
STAGED = ("FwdMain", "BwdMain")
TOOLKIT_PARTS = ("cuda_runtime", "cuda_nvcc", "cuda_cccl", "cuda_nvrtc")  # as setup.py: the toolkit's own


@dataclass
class Kernel:
    mangled: str
    arch: int
    registers: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    stack: int = 0
    smem: int = 0
    name: str = ""
    threads: int = 0


# ----------------------------------------------------------------------------- compiling

def nvcc_path() -> str | None:
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    found = os.path.join(home, "bin", "nvcc")
    return found if os.access(found, os.X_OK) else shutil.which("nvcc")


def nvcc_flags() -> list[str]:
    """The device-side flags and include paths of setup.py's build (torch.utils.cpp_extension's)."""
    from torch.utils import cpp_extension

    includes = [os.path.join(ROOT, "csrc")]
    includes += sorted(p for p in glob.glob(os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "*", "include"))
                       if os.path.basename(os.path.dirname(p)) not in TOOLKIT_PARTS)
    try:
        includes += cpp_extension.include_paths(device_type="cuda")
    except TypeError:  # torch < 2.6
        includes += cpp_extension.include_paths(cuda=True)
    std = "-std=c++20" if "-std=c++20" in inspect.getsource(cpp_extension) else "-std=c++17"
    return ([f"-I{p}" for p in includes] + cpp_extension.COMMON_NVCC_FLAGS
            + ["-O3", "-lineinfo", std, "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C"])


def compile_ptxas(source: str, arch: int, out_dir: str, flags: list[str]) -> str:
    """ptxas -v output of one .cu for one architecture (device code only)."""
    cubin = os.path.join(out_dir, f"{os.path.basename(source)}.sm_{arch}.cubin")
    cmd = [nvcc_path(), "-cubin", f"-gencode=arch=compute_{arch},code=sm_{arch}", "-Xptxas", "-v", *flags,
           "-o", cubin, source]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"nvcc failed on {source} for sm_{arch}:\n{done.stderr[-4000:]}")
    return done.stderr + done.stdout


def parse_ptxas(text: str, arch: int) -> list[Kernel]:
    kernels, current, props_for = {}, None, None
    for line in text.splitlines():
        if m := re.search(r"Compiling entry function '(\S+)' for 'sm_(\d+)'", line):
            current = kernels.setdefault(m[1], Kernel(m[1], arch))
        elif m := re.search(r"Function properties for (\S+)", line):
            props_for = kernels.get(m[1])
        elif m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line):
            if props_for is not None:
                props_for.stack, props_for.spill_stores, props_for.spill_loads = map(int, m.groups())
        elif (m := re.search(r"Used (\d+) registers", line)) and current is not None:
            current.registers = int(m[1])
            smem = re.search(r"(\d+) bytes smem", line)
            current.smem = int(smem[1]) if smem else 0
            current = None
    return list(kernels.values())


def demangle(names: list[str]) -> list[str]:
    tool = shutil.which("cu++filt") or shutil.which("c++filt")
    if not tool or not names:
        return names
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return out if len(out) == len(names) else names


def short_name(demangled: str) -> str:
    """'void sam_fused::block::block_program_kernel<sam_fused::block::FwdMain<c10::Half, true, int>, ...>(...)'
    -> 'FwdMain<half, NHWC, i32>'; point-wise kernels -> 'pointwise Fwd<float, x8>'."""
    types = {"c10::Half": "half", "c10::BFloat16": "bf16", "long": "i64", "int": "i32", "true": "NHWC",
             "false": "NCHW"}
    if m := re.search(r"(FwdPool|FwdMain|BwdRho|BwdMaps|BwdMain|DwReduce)<([^<>]*)>", demangled):
        params = [p.strip() for p in m[2].split(",")]
        # the two-pass backward's main kernel (BwdMain<T, CL, I, Spill, TwoPass>)
        two_pass = m[1] == "BwdMain" and len(params) == 5 and params.pop() == "true"
        # the map buffers live in global scratch (BwdMaps<T, I, Spill> has no layout flag)
        spill = len(params) == (3 if m[1] == "BwdMaps" else 4) and params.pop() == "true"
        return (f"{m[1]}<{', '.join(types.get(p, p) for p in params)}{', spill' if spill else ''}"
                f"{', 2pass' if two_pass else ''}>")
    if m := re.search(r"Pointwise<[^<>]*::Pointwise(Fwd|Bwd), ([^,<>]+), (\d+)>", demangled):
        return f"pointwise {m[1]}<{types.get(m[2].strip(), m[2].strip())}, x{m[3]}>"
    return demangled[:70]


# ----------------------------------------------------------------------------- launch plan

def plan_threads() -> dict:
    """Threads per block the launchers use: traits.h kThreads (every arch), traits.h's
    DwReduce and the point-wise kernels (pointwise.h PointwisePlan: kThreads); parsed from the
    sources (None where not found)."""
    def read(path):
        with open(os.path.join(ROOT, path)) as f:
            return f.read()
    traits, limits = read("csrc/block/traits.h"), read("csrc/block/limits.h")
    # One thread count for every arch (kThreads); the staged-tile budget is the SM's shared
    # memory shared by the resident blocks (plan_launch), less the runtime's reserve.
    threads = re.search(r"constexpr int kThreads\s*=\s*(\d+)", traits)
    per_sm = re.search(r"constexpr int64_t kBlocksPerSm\s*=\s*(\d+)", traits)
    rules = []
    if threads and per_sm:
        for major, smem_sm_kb, reserved in re.findall(
                r'\{"sm_(\d+)\d",\s*\d+\s*\*\s*1024,\s*(\d+)\s*\*\s*1024,\s*(\d+),', limits):
            budget = int(smem_sm_kb) * 1024 // int(per_sm[1]) - int(reserved)
            rules.append(("==", major, threads[1], str(budget)))
    reduce = re.search(r"kReduceThreads\s*=\s*(\d+)", traits)
    pointwise = re.search(r"int threads = (\w+);", read("csrc/block/pointwise.h"))  # PointwisePlan::threads
    pw = pointwise[1] if pointwise else ""
    pw = threads[1] if pw == "kThreads" and threads else pw
    return {"arch_rules": rules, "DwReduce": int(reduce[1]) if reduce else None,
            "pointwise": int(pw) if pw.isdigit() else None}


def arch_choice(rules, major: int) -> tuple[int, int] | None:
    """(threads, staged-tile smem budget) of traits.h's arch_traits for an SM major."""
    ops = {">=": lambda a, b: a >= b, "==": lambda a, b: a == b, ">": lambda a, b: a > b}
    for op, value, threads, tile in rules:
        if not op or ops[op](major, int(value)):
            return int(threads), math.prod(int(t) for t in tile.split("*") if t.strip())
    return None


def occupancy(k: Kernel, dynamic_smem: int = 0) -> tuple[float, int]:
    """(theoretical occupancy, resident threads per SM) from registers, threads and smem."""
    a = ARCHS[k.arch]
    warps = math.ceil(k.threads / 32)
    regs_per_warp = math.ceil(max(k.registers, 1) * 32 / 256) * 256
    by_regs = (a["regs"] // regs_per_warp) // warps
    by_smem = a["smem"] // (k.smem + dynamic_smem + a["reserved"])
    blocks = min(a["blocks"], a["threads"] // k.threads, by_regs, by_smem)
    return blocks * k.threads / a["threads"], blocks * k.threads


# ----------------------------------------------------------------------------- report

def collect(archs: list[int], jobs: int) -> list[Kernel]:
    sources = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
    flags = nvcc_flags()
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max(1, jobs)) as pool:
        jobs_ = [(src, arch) for arch in archs for src in sources]
        texts = list(pool.map(lambda sa: compile_ptxas(sa[0], sa[1], tmp, flags), jobs_))
    kernels = [k for (src, arch), text in zip(jobs_, texts) for k in parse_ptxas(text, arch)]
    threads = plan_threads()
    for k, name in zip(kernels, demangle([k.mangled for k in kernels])):
        k.name = short_name(name)
        choice = arch_choice(threads["arch_rules"], k.arch // 10)
        if k.name.startswith("pointwise"):
            k.threads = threads["pointwise"] or 256
        elif k.name.startswith("DwReduce"):
            k.threads = threads["DwReduce"] or 128
        else:
            k.threads = choice[0] if choice else 256
    return kernels


POINTWISE_OPERANDS = {"Fwd": 2, "Bwd": 3}  # csrc/block/pointwise.h: inputs of PointwiseFwd / PointwiseBwd
ELEM_BYTES = {"double": 8, "float": 4, "half": 2, "bf16": 2}


def pointwise_unroll() -> int:
    """kPointwiseUnroll of csrc/block/pointwise.h: vectors per thread and operand loaded back to back."""
    with open(os.path.join(ROOT, "csrc", "block", "pointwise.h")) as f:
        m = re.search(r"kPointwiseUnroll\s*=\s*(\d+)", f.read())
    return int(m[1]) if m else 1


def load_bytes_in_flight(k: Kernel) -> int:
    """Bytes one thread has in flight: one 16-byte load, or for the point-wise programs all the
    loads they issue before computing (unroll x operands x vector)."""
    m = re.match(r"pointwise (Fwd|Bwd)<(\w+), x(\d+)>", k.name)
    if not m:
        return VECTOR_BYTES
    return pointwise_unroll() * POINTWISE_OPERANDS[m[1]] * ELEM_BYTES.get(m[2], 4) * int(m[3])


def occupancy_columns(k: Kernel, dynamic_smem: int, need: float, width: int) -> str:
    """Occupancy, bytes in flight per SM (load_bytes_in_flight per resident thread), and that / need."""
    occ, resident = occupancy(k, dynamic_smem)
    in_flight = resident * load_bytes_in_flight(k)
    return f"{occ:>{width}.0%}{in_flight / 1024:>8.1f}KB{in_flight / need:>7.2f}"


def render(kernels: list[Kernel]) -> str:
    threads = plan_threads()
    lines = []
    for arch in sorted({k.arch for k in kernels}):
        a = ARCHS[arch]
        need = a["bandwidth"] * a["latency"] / a["sms"]
        choice = arch_choice(threads["arch_rules"], arch // 10)
        tile = choice[1] if choice else 0
        ks = sorted((k for k in kernels if k.arch == arch), key=lambda k: k.name)
        regs = [k.registers for k in ks]
        lines += [f"sm_{arch} ({a['card']}): {len(ks)} kernels, {sum(k.spill_stores + k.spill_loads > 0 for k in ks)} "
                  f"with spills, registers {min(regs)}-{max(regs)}; Little's law needs "
                  f"{a['bandwidth'] / 1e12:.1f} TB/s x {a['latency'] * 1e6:.1f} us / {a['sms']} SMs = "
                  f"{need / 1024:.1f} KB in flight per SM; staged tile budget {tile // 1024} KB",
                  f"{'kernel':<30}{'regs':>5}{'spill st/ld':>12}{'stack':>6}{'smem':>6}{'threads':>8}"
                  f"{'occ':>6}{'in flight':>10}{'/ need':>7}{'occ+tile':>9}{'in flight':>10}{'/ need':>7}"]
        for k in ks:
            row = (f"{k.name:<30}{k.registers:>5}{f'{k.spill_stores}/{k.spill_loads}':>12}{k.stack:>6}{k.smem:>6}"
                   f"{k.threads:>8}" + occupancy_columns(k, 0, need, 6))
            if k.name.startswith(STAGED) and tile:
                row += occupancy_columns(k, tile, need, 9)
            lines.append(row)
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, action="append", choices=sorted(ARCHS),
                        help="SM version (default: 80 and 90)")
    parser.add_argument("--jobs", type=int, default=1, help="nvcc processes at once (default 1)")
    args = parser.parse_args(argv)
    if not nvcc_path():
        print("resource report: nvcc not found (set CUDA_HOME)")
        return 2
    kernels = collect(args.arch or sorted(ARCHS), args.jobs)
    print(render(kernels))
    spilled = [f"{k.name} sm_{k.arch}" for k in kernels if k.spill_stores or k.spill_loads]
    print(f"spills: {', '.join(spilled)}" if spilled else "spills: none")
    return 1 if spilled else 0


if __name__ == "__main__":
    sys.exit(main())
