"""Build of the sam_fused extension (sam_fused._C).

SAM_FUSED_BUILD=auto|cuda|cpu (default auto: CUDA sources are built whenever a CUDA toolkit
and a CUDA build of torch are found, even on a machine without a GPU).
TORCH_CUDA_ARCH_LIST defaults to "8.0;9.0+PTX"; MAX_JOBS limits parallel compiles (ninja).
SAM_FUSED_TEST_OPS=0 leaves out the test-only ops (csrc/testing/), as release wheels do.
SAM_FUSED_LOCAL_VERSION adds a local version tag, e.g. "cu130torch2.14" -> 0.1.0+cu130torch2.14
(tools/build_wheel.py sets it). What the build was made for is written to sam_fused/_build_info.py,
which sam_fused checks against the running torch at import.
"""
import glob
import os
import re
import subprocess
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

sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/autograd/*.cpp") + glob.glob("csrc/autocast/*.cpp")
                 + glob.glob("csrc/cpu/*.cpp"))
# Test-only ops (csrc/testing/: the CUDA block programs run on the CPU, for the tests, the
# benchmark reports and the GPU tools) are built by default; release wheels leave them out.
WITH_TEST_OPS = os.environ.get("SAM_FUSED_TEST_OPS", "1") != "0"
if WITH_TEST_OPS:
    sources += sorted(glob.glob("csrc/testing/*.cpp"))
include_dirs = [os.path.join(ROOT, "csrc")]
# torch's CUDA wheels bundle headers (cusparse.h, ...) that its own headers include:
# nvidia/cu13/include for CUDA 13, one nvidia/<library>/include per library for CUDA 12.
# The toolkit's own parts (runtime, nvcc's crt, cccl) come from CUDA_HOME: those of another
# CUDA minor would shadow the headers the compiler was made for.
TOOLKIT_PARTS = ("cuda_runtime", "cuda_nvcc", "cuda_cccl", "cuda_nvrtc")
bundled = glob.glob(os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "*", "include"))
include_dirs += sorted(path for path in bundled if os.path.basename(os.path.dirname(path)) not in TOOLKIT_PARTS)

cxx_flags = ["-O3", "-fopenmp", "-DPy_LIMITED_API=0x030A0000"]
extra = dict(extra_compile_args={"cxx": cxx_flags}, extra_link_args=["-fopenmp"])
if with_cuda:
    sources += sorted(glob.glob("csrc/cuda/*.cu"))
    # SAM_FUSED_TEST_OPS: the CUDA test ops (forced plans, csrc/cuda/spatial_attention_cuda.cu)
    extra["extra_compile_args"]["nvcc"] = ["-O3", "-lineinfo"] + (["-DSAM_FUSED_TEST_OPS"] if WITH_TEST_OPS else [])
    ext = cpp_extension.CUDAExtension("sam_fused._C", sources, include_dirs=include_dirs, py_limited_api=True, **extra)
else:
    ext = cpp_extension.CppExtension("sam_fused._C", sources, include_dirs=include_dirs, py_limited_api=True, **extra)


def toolkit_release():
    """The CUDA toolkit nvcc reports (it may be an older 12.x than torch's CUDA: minor-version compatible)."""
    try:
        out = subprocess.run([os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc"), "--version"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    found = re.search(r"release (\d+\.\d+)", out)
    return found[1] if found else None


def git_revision():
    # tools/build_wheel.py builds a copy of the tree and points GIT_DIR / GIT_WORK_TREE at the original
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"  # building from an sdist or an exported tree


base_version = re.search(r'__version__ = "([^"]+)"', open(os.path.join(ROOT, "sam_fused", "__init__.py")).read())[1]
local_version = os.environ.get("SAM_FUSED_LOCAL_VERSION", "")
version = f"{base_version}+{local_version}" if local_version else base_version
build_info = dict(
    VERSION=version,
    TORCH_VERSION=torch.__version__.split("+")[0],
    TORCH_MAJOR_MINOR=".".join(torch.__version__.split(".")[:2]),
    CUDA_VERSION=torch.version.cuda if with_cuda else None,
    CUDA_TOOLKIT_VERSION=toolkit_release() if with_cuda else None,
    TORCH_CUDA_ARCH_LIST=os.environ["TORCH_CUDA_ARCH_LIST"] if with_cuda else None,
    GIT_REVISION=git_revision(),
    BUILD_MODE="cuda" if with_cuda else "cpu",
    TEST_OPS=WITH_TEST_OPS,
)
with open(os.path.join(ROOT, "sam_fused", "_build_info.py"), "w") as f:
    f.write('"""Generated by setup.py at build time; do not edit."""\n')
    f.writelines(f"{key} = {value!r}\n" for key, value in build_info.items())

class PersistentBuildExtension(cpp_extension.BuildExtension):
    """Objects go to build/temp-<mode>-torch<X.Y> in the tree, not to pip's fresh temporary folder, so
    ninja recompiles only what changed and a no-op rebuild takes seconds."""

    def finalize_options(self):
        super().finalize_options()
        tag = f"{build_info['BUILD_MODE']}-torch{build_info['TORCH_MAJOR_MINOR']}"
        self.build_temp = os.path.join(ROOT, "build", f"temp-{tag}")


setup(
    version=version,
    ext_modules=[ext],
    cmdclass={"build_ext": PersistentBuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
