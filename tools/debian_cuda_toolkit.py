"""A CUDA 12 toolkit laid out as a CUDA_HOME, unpacked from Debian's packages, for cu12 wheels.

    python tools/debian_cuda_toolkit.py [--dest DIR]     # prints the CUDA_HOME it made

Why Debian: on PyPI, nvidia-cuda-nvcc-cu12 holds ptxas but no nvcc or cicc (checked: 12.1,
12.4, 12.6, 12.8, 12.9), and NVIDIA's download site is not reachable from the build machine.
Debian trixie's non-free archive packages NVIDIA's CUDA 12.4 binaries. This downloads seven of
its .deb files (about 1 GB, checked against the archive's SHA-256 sums) and unpacks only what a
build needs (no install, no root, no apt): nvcc, cicc, ptxas, fatbinary, nvlink, cudafe++,
libdevice, the headers and libcudart. A 12.4 toolkit builds for any CUDA 12.x torch: CUDA's
minor-version compatibility lets code built with 12.4 run on the 12.8 runtime torch ships.
"""
import argparse
import hashlib
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request

MIRROR = "http://deb.debian.org/debian"
SUITE = "trixie"
VERSION = "12.4"
# {archive component: packages}; main has CCCL (libcu++'s <nv/target>, which cuda_fp16.h includes).
PACKAGES = {"non-free": ["nvidia-cuda-toolkit", "nvidia-cuda-dev", "libcudart12", "libnvvm4"],
            "main": ["libcu++-dev", "libcub-dev", "libthrust-dev"]}
DEFAULT_DEST = os.path.join(os.path.expanduser("~"), ".cache", "sam_fused", f"cuda-{VERSION}")
# Where each piece lies in Debian's layout -> where CUDA_HOME conventionally has it; a key that
# ends in * stands for every file whose path starts with the rest.
LAYOUT = {
    "usr/lib/nvidia-cuda-toolkit/bin/nvcc": "bin/nvcc",
    "usr/lib/nvidia-cuda-toolkit/bin/crt/*": "bin/crt/",
    "usr/bin/cudafe++": "bin/cudafe++",
    "usr/bin/fatbinary": "bin/fatbinary",
    "usr/bin/nvlink": "bin/nvlink",
    "usr/bin/ptxas": "bin/ptxas",
    "usr/bin/bin2c": "bin/bin2c",
    "usr/bin/cuobjdump": "bin/cuobjdump",
    "usr/lib/nvidia-cuda-toolkit/bin/cicc": "nvvm/bin/cicc",
    "usr/lib/nvidia-cuda-toolkit/libdevice/*": "nvvm/libdevice/",
    "usr/lib/x86_64-linux-gnu/libnvvm.so*": "nvvm/lib64/libnvvm.so",
    "usr/include/*": "include/",
    "usr/lib/x86_64-linux-gnu/libcudart*": "lib64/libcudart",  # .so, .so.12, _static.a
    "usr/lib/x86_64-linux-gnu/libcudadevrt.a": "lib64/libcudadevrt.a",  # nvcc links it into programs
}
# The stock profile of a toolkit installed under one root (Debian's points at /usr and /etc).
NVCC_PROFILE = """\
TOP              = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
LD_LIBRARY_PATH += $(TOP)/lib64:$(TOP)/nvvm/lib64:
PATH            += $(TOP)/nvvm/bin:$(_HERE_):
INCLUDES        +=  "-I$(TOP)/include" $(_SPACE_)
LIBRARIES        =+ $(_SPACE_) "-L$(TOP)/lib64/stubs" "-L$(TOP)/lib64"
CUDAFE_FLAGS    +=
PTXAS_FLAGS     +=
"""


def package_index():
    """{package: (pool path, sha256)} for PACKAGES, from the suite's amd64 package lists."""
    index = {}
    for component, wanted in PACKAGES.items():
        url = f"{MIRROR}/dists/{SUITE}/{component}/binary-amd64/Packages.xz"
        with urllib.request.urlopen(url, timeout=120) as response:
            text = lzma.decompress(response.read()).decode()
        for stanza in text.split("\n\n"):
            fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
            if fields.get("Package") in wanted:
                index[fields["Package"]] = (fields["Filename"], fields["SHA256"])
        missing = set(wanted) - set(index)
        if missing:
            raise SystemExit(f"{url} lists no {', '.join(sorted(missing))}")
    return index


def download(pool_path, sha256, folder):
    path = os.path.join(folder, os.path.basename(pool_path))
    print(f"downloading {pool_path}", flush=True)
    digest = hashlib.sha256()
    with urllib.request.urlopen(f"{MIRROR}/{pool_path}", timeout=600) as response, open(path, "wb") as out:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256:
        raise SystemExit(f"{pool_path}: SHA-256 mismatch (got {digest.hexdigest()}, archive says {sha256})")
    return path


def destination_of(member):
    """Where a file of the package goes under CUDA_HOME, or None when a build does not need it."""
    name = member[2:] if member.startswith("./") else member
    for source, target in LAYOUT.items():
        if name == source or (source.endswith("*") and name.startswith(source[:-1])):
            return target + name[len(source.rstrip("*")):]
    return None


def unpack(deb, dest):
    """Unpacks the needed files of one .deb (dpkg-deb gives the data tar) into the CUDA_HOME layout."""
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE) as dpkg:
        with tarfile.open(fileobj=dpkg.stdout, mode="r|") as archive:  # streamed: the tar is GBs
            for member in archive:
                target = destination_of(member.name)
                if target is None or member.isdir():
                    continue
                member.name = target
                if member.issym() and "/" in member.linkname:  # Debian's absolute links -> siblings
                    member.linkname = os.path.basename(member.linkname)
                archive.extract(member, dest, filter="fully_trusted")
    if dpkg.returncode:
        raise SystemExit(f"dpkg-deb could not read {deb}")


def nvcc_release(cuda_home):
    """The X.Y that `CUDA_HOME/bin/nvcc --version` reports, or None when it does not run."""
    try:
        out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"], capture_output=True, text=True)
    except OSError:
        return None
    found = re.search(r"release (\d+\.\d+)", out.stdout) if out.returncode == 0 else None
    return found[1] if found else None


def make_toolkit(dest=DEFAULT_DEST):
    """Builds the toolkit at dest (once) and returns dest."""
    if os.path.exists(os.path.join(dest, "bin", "nvcc.profile")):
        return dest
    if shutil.which("dpkg-deb") is None:
        raise SystemExit("unpacking Debian's CUDA packages needs dpkg-deb (Debian, Ubuntu); "
                         "set CUDA_HOME to a CUDA 12 toolkit")
    index = package_index()
    staging = dest + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="sam_fused_debs_") as debs:
        for pool_path, sha256 in index.values():
            deb = download(pool_path, sha256, debs)
            unpack(deb, staging)
            os.remove(deb)  # nvidia-cuda-dev alone is 0.9 GB
    with open(os.path.join(staging, "bin", "nvcc.profile"), "w") as f:
        f.write(NVCC_PROFILE)
    release = nvcc_release(staging)
    if release != VERSION:
        raise SystemExit(f"the unpacked nvcc does not run or is not CUDA {VERSION}: {release}")
    os.rename(staging, dest)
    print(f"CUDA {release} toolkit at {dest}", flush=True)
    return dest


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", default=DEFAULT_DEST, help=f"where to put it (default {DEFAULT_DEST})")
    print(make_toolkit(parser.parse_args().dest))


if __name__ == "__main__":
    sys.exit(main())
