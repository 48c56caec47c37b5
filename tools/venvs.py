"""Fresh virtual environments for tools/build_wheel.py and tools/smoke_wheel.py."""
import os
import subprocess
import sys
import time


def run(command, **kwargs):
    print("+", " ".join(map(str, command)), flush=True)
    subprocess.run(command, check=True, **kwargs)


def create_venv(path, torch_version, torch_index=None, packages=(), base_python=sys.executable):
    """A venv of base_python at `path` with torch==torch_version (from torch_index if given) and `packages`;
    returns its python."""
    started = time.monotonic()
    run([base_python, "-m", "venv", path])
    python = os.path.join(path, "bin", "python")
    index = ["--index-url", torch_index] if torch_index else []
    run([python, "-m", "pip", "install", "-q", f"torch=={torch_version}", *index])
    if packages:
        run([python, "-m", "pip", "install", "-q", *packages])
    print(f"venv with torch {torch_version} ready in {time.monotonic() - started:.0f} s", flush=True)
    return python


def torch_cuda_version(python):
    """torch.version.cuda of the torch installed for `python` ("" for a CPU-only build)."""
    return subprocess.run([python, "-c", "import torch; print(torch.version.cuda or '')"],
                          capture_output=True, text=True, check=True).stdout.strip()
