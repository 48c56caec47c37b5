"""Install a sam_fused wheel into a fresh venv with the matching torch and run the CPU smoke parity check.

    python tools/smoke_wheel.py dist/sam_fused-0.1.0+cputorch2.13-cp310-abi3-manylinux_2_34_x86_64.whl --torch 2.13.0
    python tools/smoke_wheel.py WHEEL --torch 2.13.0 --python python3.13   # the abi3 wheel on another CPython

Runs `python -m sam_fused --info` and `python -m sam_fused.check --quick` (a few seconds) from outside
the source tree, so the installed wheel is what gets imported. Exits non-zero on any failure.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from venvs import create_venv, run  # noqa: E402


def smoke(wheel, torch_version, torch_index=None, base_python=sys.executable):
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sam_fused_smoke_") as workdir:
        python = create_venv(os.path.join(workdir, "venv"), torch_version, torch_index, base_python=base_python)
        # --no-deps: the wheel's "torch>=2.5" must not let pip swap the torch chosen above.
        run([python, "-m", "pip", "install", "-q", "--no-deps", os.path.abspath(wheel)])
        run([python, "-m", "sam_fused", "--info"], cwd=workdir)
        run([python, "-m", "sam_fused.check", "--quick", "--device", "cpu"], cwd=workdir)
    print(f"smoke test of {os.path.basename(wheel)} passed in {time.monotonic() - started:.0f} s "
          f"(venv of {base_python})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheel")
    parser.add_argument("--torch", required=True, help="torch version to install with it, e.g. 2.14.1")
    parser.add_argument("--torch-index", help="pip index for torch, e.g. https://download.pytorch.org/whl/cu128")
    parser.add_argument("--python", default=sys.executable,
                        help="the CPython to make the venv with (default: this one)")
    args = parser.parse_args()
    smoke(args.wheel, args.torch, args.torch_index, args.python)


if __name__ == "__main__":
    main()
