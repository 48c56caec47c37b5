"""The pure parts of the wheel tooling (tools/): which files make a CUDA_HOME, which toolkit a build may use."""
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tools"))
import build_wheel  # noqa: E402
import debian_cuda_toolkit  # noqa: E402


@pytest.mark.parametrize("member, expected", [
    ("./usr/lib/nvidia-cuda-toolkit/bin/nvcc", "bin/nvcc"),
    ("./usr/lib/nvidia-cuda-toolkit/bin/cicc", "nvvm/bin/cicc"),
    ("./usr/lib/nvidia-cuda-toolkit/bin/crt/link.stub", "bin/crt/link.stub"),
    ("./usr/lib/nvidia-cuda-toolkit/libdevice/libdevice.10.bc", "nvvm/libdevice/libdevice.10.bc"),
    ("./usr/bin/ptxas", "bin/ptxas"),
    ("./usr/include/cuda_runtime.h", "include/cuda_runtime.h"),
    ("./usr/include/nv/target", "include/nv/target"),
    ("./usr/lib/x86_64-linux-gnu/libcudart.so.12", "lib64/libcudart.so.12"),
    ("./usr/lib/x86_64-linux-gnu/libcudart_static.a", "lib64/libcudart_static.a"),
    ("./usr/lib/x86_64-linux-gnu/libnvvm.so.4", "nvvm/lib64/libnvvm.so.4"),
    # Debian's profile is a link to /etc/nvcc.profile: we write our own, so it must not be taken
    ("./usr/lib/nvidia-cuda-toolkit/bin/nvcc.profile", None),
    ("./usr/bin/nvcc", None),  # Debian's wrapper script, not the compiler
    ("./usr/bin/nvdisasm", None),
    ("./usr/lib/x86_64-linux-gnu/libcublas.so.12", None),
    ("./usr/share/doc/nvidia-cuda-toolkit/copyright", None),
])
def test_debian_files_map_to_a_cuda_home_layout(member, expected):
    assert debian_cuda_toolkit.destination_of(member) == expected


def fake_toolkit(root, release):
    nvcc = root / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.1'\n")
    nvcc.chmod(0o755)
    return str(root)


@pytest.mark.parametrize("toolkit, torch_cuda, usable", [
    ("12.4", "12.8", True),    # older minor of the same major: minor-version compatible
    ("12.8", "12.8", True),
    ("12.9", "12.8", False),   # newer than the runtime torch brings
    ("13.0", "12.8", False),
    ("12.8", "13.0", False),
])
def test_a_toolkit_is_used_only_for_the_same_cuda_major_and_no_newer_minor(tmp_path, toolkit, torch_cuda, usable):
    home = fake_toolkit(tmp_path / "cuda", toolkit)
    if usable:
        assert build_wheel.find_cuda_home(torch_cuda, places=[str(tmp_path / "absent"), home]) == home
    else:
        with pytest.raises(SystemExit, match=f"no CUDA {torch_cuda.split('.')[0]}.x toolkit"):
            build_wheel.find_cuda_home(torch_cuda, places=[home])
