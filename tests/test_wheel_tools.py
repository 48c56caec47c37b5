"""The pure parts of the wheel tooling (tools/): which files make a CUDA_HOME, which toolkit a build may use."""
import fnmatch
import pathlib
import shutil
import subprocess
import sys

import pytest

import sam_fused

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


# Libraries the manylinux policies let a wheel take from the system (auditwheel's whitelist, the
# part a C++ extension can use).
MANYLINUX_SYSTEM_LIBS = {"libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1", "libpthread.so.0",
                         "libdl.so.2", "librt.so.1", "ld-linux-x86-64.so.2"}


def test_every_library_the_extension_needs_is_the_systems_or_torchs():
    """auditwheel would graft any other library into the wheel: a second copy beside torch's."""
    library = next(pathlib.Path(sam_fused.__file__).parent.glob("_C*.so"))
    if shutil.which("readelf") is None:
        pytest.skip("no readelf (binutils)")
    dynamic = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    needed = [line.split("[")[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line]
    assert needed, "readelf listed no NEEDED libraries"
    foreign = [name for name in needed if name not in MANYLINUX_SYSTEM_LIBS
               and not any(fnmatch.fnmatch(name, pattern) for pattern in build_wheel.FROM_TORCH)]
    assert not foreign, f"{library.name} needs {foreign}: add them to FROM_TORCH or stop linking them"
