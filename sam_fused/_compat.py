"""Load sam_fused._C only into the torch it was built for, with an error that says what to do.

A compiled extension uses torch's C++ ABI, which changes between torch minor releases and
between CUDA majors; loading it into another torch fails with an undefined-symbol error (or
worse, crashes later). The build records what it was made for in _build_info.py (written by
setup.py); this module compares that with the running torch before loading the library.
SAM_FUSED_SKIP_VERSION_CHECK=1 skips the comparison (the load itself is still guarded).
"""
import importlib
import os

import torch

SKIP_ENV = "SAM_FUSED_SKIP_VERSION_CHECK"
REBUILD_HINT = ("Install the sam_fused wheel built for your torch and CUDA (see docs/wheels.md), "
                "or build from source against the installed torch: pip install --no-build-isolation .")


def load_build_info():
    """The build's record as a dict, or None for a tree that was never built by setup.py."""
    try:
        info = importlib.import_module("sam_fused._build_info")
    except ImportError:
        return None
    return {key: value for key, value in vars(info).items() if key.isupper()}


def describe_build(info):
    if info is None:
        return "unknown build (no sam_fused/_build_info.py)"
    cuda = f"CUDA {info['CUDA_VERSION']}" if info["CUDA_VERSION"] else "CPU only"
    return f"sam_fused {info['VERSION']} built for torch {info['TORCH_VERSION']} ({cuda})"


def describe_running(torch_version, torch_cuda):
    return f"torch {torch_version} ({f'CUDA {torch_cuda}' if torch_cuda else 'CPU only'})"


def mismatch(info, torch_version, torch_cuda):
    """Why this build cannot load into the given torch, or None when it can."""
    if info is None:
        return None
    running_major_minor = ".".join(torch_version.split("+")[0].split(".")[:2])
    if running_major_minor != info["TORCH_MAJOR_MINOR"]:
        return f"built for torch {info['TORCH_MAJOR_MINOR']}, but torch {running_major_minor} is running"
    built_cuda = info["CUDA_VERSION"]
    if built_cuda and not torch_cuda:
        return "built with CUDA, but the running torch is a CPU-only build"
    if built_cuda and torch_cuda.split(".")[0] != built_cuda.split(".")[0]:
        return f"built with CUDA {built_cuda}, but the running torch uses CUDA {torch_cuda}"
    return None  # a CPU build loads into a CUDA torch too (it only registers CPU kernels)


def incompatibility_message(info, torch_version, torch_cuda, reason):
    return (f"sam_fused cannot load: {reason}.\n"
            f"  built:   {describe_build(info)}\n"
            f"  running: {describe_running(torch_version, torch_cuda)}\n"
            f"{REBUILD_HINT}\n"
            f"(Set {SKIP_ENV}=1 to try loading anyway.)")


def load_extension(running=None, import_module=importlib.import_module):
    """Check the build against the running torch, then import sam_fused._C (registers the ops).

    `running` is (torch version, torch CUDA version or None), the running torch's by default.
    """
    torch_version, torch_cuda = running or (torch.__version__, torch.version.cuda)
    info = load_build_info()
    if os.environ.get(SKIP_ENV) != "1":
        reason = mismatch(info, torch_version, torch_cuda)
        if reason:
            raise ImportError(incompatibility_message(info, torch_version, torch_cuda, reason))
    try:
        return import_module("sam_fused._C")
    except ModuleNotFoundError as error:
        if error.name != "sam_fused._C":
            raise
        raise ImportError("sam_fused._C is not built. Build it in place with "
                          "`python setup.py build_ext --inplace`, or " + REBUILD_HINT) from error
    except (ImportError, OSError) as error:  # undefined symbol, missing libc10_cuda.so, ...
        reason = f"the compiled library failed to load ({error})"
        raise ImportError(incompatibility_message(info, torch_version, torch_cuda, reason)) from error
