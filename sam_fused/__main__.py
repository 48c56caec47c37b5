"""`python -m sam_fused --info`: what this build of sam_fused was made for, and what is running."""
import argparse
import platform

import torch

from ._compat import describe_build, describe_running, load_build_info


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sam_fused", description=__doc__)
    parser.add_argument("--info", action="store_true", help="print the build info and the running torch")
    args = parser.parse_args(argv)
    if not args.info:
        parser.print_help()
        return
    info = load_build_info() or {}
    print(describe_build(info or None))
    for key, value in info.items():
        print(f"  {key:<22}{value}")
    print(f"running {describe_running(torch.__version__, torch.version.cuda)}, "
          f"Python {platform.python_version()}, CUDA device: {torch.cuda.is_available()}")


if __name__ == "__main__":
    main()
