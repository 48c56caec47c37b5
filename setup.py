"""Build of the sam_fused extension (sam_fused._C).

SAM_FUSED_BUILD=auto|cuda|cpu (default auto: CUDA sources are built whenever a CUDA toolkit
and a CUDA build of torch are found, even on a machine without a GPU).
TORCH_CUDA_ARCH_LIST defaults to "8.0;9.0+PTX"; MAX_JOBS limits parallel compiles (ninja).
"""
import glob
import os
import sysconfig

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
MODE = os.environ.get("SAM_FUSED_BUILD", "auto").lower()
if MODE not in ("auto", "cuda", "cpu"):
    raise SystemExit(f"SAM_FUSED_BUILD must be auto, cuda or cpu, got {MODE!r}")

# torch guesses the toolkit root from `nvcc` on PATH; where that is a wrapper script the
# guess has no cudart. The conventional root is the right answer when it exists.
if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")

import torch  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402

with_cuda = MODE == "cuda" or (MODE == "auto" and cpp_extension.CUDA_HOME is not None and torch.version.cuda)
if MODE == "cuda" and (cpp_extension.CUDA_HOME is None or not torch.version.cuda):
    raise SystemExit("SAM_FUSED_BUILD=cuda needs a CUDA toolkit (CUDA_HOME) and a CUDA build of torch")

sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/autograd/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
include_dirs = [os.path.join(ROOT, "csrc")]
# torch's CUDA wheels bundle headers (cusparse.h, ...) that its own headers include.
bundled = os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "cu13", "include")
if os.path.isdir(bundled):
    include_dirs.append(bundled)

cxx_flags = ["-O3", "-fopenmp", "-DPy_LIMITED_API=0x030A0000"]
extra = dict(extra_compile_args={"cxx": cxx_flags}, extra_link_args=["-fopenmp"])
if with_cuda:
    sources += sorted(glob.glob("csrc/cuda/*.cu"))
    extra["extra_compile_args"]["nvcc"] = ["-O3", "-lineinfo"]
    ext = cpp_extension.CUDAExtension("sam_fused._C", sources, include_dirs=include_dirs, py_limited_api=True, **extra)
else:
    ext = cpp_extension.CppExtension("sam_fused._C", sources, include_dirs=include_dirs, py_limited_api=True, **extra)

setup(
    ext_modules=[ext],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
