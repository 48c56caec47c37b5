"""Build the CUDA extension here for a GPU machine, so its device minutes go to measuring.

    python tools/device_bundle.py [--torch 2.11.0] [--arch 9.0] [--out .gpu]

A lent GPU machine has its own torch (2.11 + CUDA 13.0 so far), no network, and a time budget
in which a CUDA build (6-8 minutes on 2 cores) would be most of one call. So this builds the
extension in a throwaway copy of HEAD against that torch version, in its own venv (kept in
/tmp between runs), for that architecture only; strips its debug info and xz-compresses it
(about 9 MB), into OUT (default `.gpu/`, which git ignores) with the build's `_build_info.py`.
The module is abi3, so it loads under the device's Python as under this one.

On the device, `bash tools/device_run.sh` (with OUT/ carried there) unpacks it into `sam_fused/`
and runs `make gpu-check` with `--skip-build`, the plan sweep and an Nsight Compute capture.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from venvs import create_venv, run  # noqa: E402


def venv_python(torch_version: str) -> str:
    """The bundle venv's python for this torch version, created (torch, setuptools, ninja) once."""
    path = Path(tempfile.gettempdir()) / f"sam-fused-bundle-torch{torch_version}"
    python = path / "bin" / "python"
    if not python.exists():
        create_venv(str(path), torch_version, packages=("setuptools>=69", "ninja>=1.11", "numpy"))
    return str(python)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch", default="2.11.0", help="the device's torch version (default 2.11.0)")
    parser.add_argument("--arch", default="9.0", help="TORCH_CUDA_ARCH_LIST (default 9.0: H100/H200)")
    parser.add_argument("--out", default=str(ROOT / ".gpu"), help="bundle folder (default .gpu/)")
    parser.add_argument("--jobs", default=str(os.cpu_count() or 2), help="MAX_JOBS")
    args = parser.parse_args()
    for tool in ("git", "strip", "xz"):
        if not shutil.which(tool):
            sys.exit(f"device_bundle: needs `{tool}` on PATH")
    python = venv_python(args.torch)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="sam-fused-bundle-") as tmp:
        # HEAD as committed: the bundle names one commit, whatever the working tree holds
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        env = dict(os.environ, SAM_FUSED_BUILD="cuda", TORCH_CUDA_ARCH_LIST=args.arch, MAX_JOBS=args.jobs)
        run([python, "setup.py", "build_ext", "--inplace"], cwd=tmp, env=env)
        built = sorted(Path(tmp, "sam_fused").glob("_C*.so"))
        if len(built) != 1:
            sys.exit(f"device_bundle: expected one built _C library, found {built}")
        so = out / built[0].name
        shutil.copy(built[0], so)
        shutil.copy(Path(tmp, "sam_fused", "_build_info.py"), out / "_build_info.py")
    run(["strip", "--strip-debug", str(so)])
    run(["xz", "-f", "-T0", str(so)])
    (out / "COMMIT").write_text(f"{commit} torch {args.torch} arch {args.arch}\n")
    size = (out / (so.name + ".xz")).stat().st_size / 2**20
    print(f"device bundle of {commit} (torch {args.torch}, arch {args.arch}): {out} ({size:.1f} MB)")
    print("carry it to the device and run there: bash tools/device_run.sh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
