"""The block-program headers stay C++17: torch up to 2.11 at least compiles extensions with
-std=c++17 (2.13 and 2.14 with C++20), and a requires-expression in csrc/block/ctx_cuda.cuh once
broke the build against torch 2.11 while every test here, built against 2.14, passed. The
headers need no ATen (whose 2.14 headers require C++20), so they are compiled alone, as C++17:
the CPU context with g++, the CUDA context with nvcc. The files that include ATen follow the
installed torch's standard and are not checked here."""
import os
import shutil
import subprocess

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
TORCH_INCLUDE = os.path.join(os.path.dirname(torch.__file__), "include")  # c10/util/BFloat16.h
CPU_HEADERS = ("block/ctx_cpu.h", "block/sanitizer_cpu.h", "block/bwd.h", "block/pointwise.h", "block/limits.h")
CUDA_HEADERS = ("block/ctx_cuda.cuh", "block/bwd.h", "block/pointwise.h", "block/limits.h")
# as setup.py's nvcc flags (torch.utils.cpp_extension's)
NVCC_FLAGS = ["--expt-relaxed-constexpr", "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
              "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__"]


def translation_unit(tmp_path, headers, suffix):
    path = tmp_path / f"cxx17{suffix}"
    path.write_text("".join(f'#include "{h}"\n' for h in headers))
    return str(path)


def test_block_headers_compile_as_cxx17_on_the_cpu(tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    source = translation_unit(tmp_path, CPU_HEADERS, ".cpp")
    done = subprocess.run([cxx, "-std=c++17", "-fsyntax-only", f"-I{CSRC}", f"-I{TORCH_INCLUDE}", source],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_block_headers_compile_as_cxx17_with_nvcc(tmp_path):
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    nvcc = next((p for p in (os.path.join(cuda_home, "bin", "nvcc"), shutil.which("nvcc")) if p and os.path.exists(p)),
                None)
    if nvcc is None:
        pytest.skip("no nvcc")
    source = translation_unit(tmp_path, CUDA_HEADERS, ".cu")
    done = subprocess.run([nvcc, "-std=c++17", "-arch=sm_90", "-c", "-o", str(tmp_path / "cxx17.o"), f"-I{CSRC}",
                           f"-I{TORCH_INCLUDE}", *NVCC_FLAGS, source], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
