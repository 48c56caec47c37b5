"""The built CUDA code of the spatial-attention kernels (benchmarks/sass_report.py): no
byte-wide shared-memory accesses, and 128-bit shared stores and loads in the staged-tile
phases, for every architecture in the binary. Needs cuobjdump (pip install
nvidia-cuda-cuobjdump) and a CUDA build of sam_fused._C (SAM_FUSED_BUILD=cuda); skips
otherwise."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import sass_report  # noqa: E402


@pytest.fixture(scope="module")
def counts():
    tool, binary = sass_report.find_cuobjdump(), sass_report.default_binary()
    if tool is None:
        pytest.skip("cuobjdump not found (pip install nvidia-cuda-cuobjdump)")
    if binary is None:
        pytest.skip("sam_fused._C is not built")
    found = sass_report.count(sass_report.sass(binary, tool))
    if not found:
        pytest.skip("sam_fused._C holds no CUDA code (a CPU-only build)")
    return found


def test_no_byte_wide_shared_accesses(counts):
    spatial = {k: c for k, c in counts.items() if sass_report.is_spatial(k[1])}
    assert spatial, "no spatial-attention kernels in the SASS"
    bad = {k: {cls: c[cls] for cls in sass_report.BYTE_WIDE_SHARED if c[cls]} for k, c in spatial.items()}
    assert not {k: v for k, v in bad.items() if v}


def test_staged_tile_uses_128_bit_shared_accesses(counts):
    # the main kernels stage their tile with 16-byte asynchronous copies (cp.async: global to
    # shared without registers, sm_80+) and read it back with 16-byte loads
    for (arch, kernel), c in counts.items():
        if kernel.startswith(("FwdMain", "BwdMain")):
            assert c["LDGSTS.128"] > 0 and c["LDS.128"] > 0, (arch, kernel, dict(c))
