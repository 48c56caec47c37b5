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
def sass_text():
    tool, binary = sass_report.find_cuobjdump(), sass_report.default_binary()
    if tool is None:
        pytest.skip("cuobjdump not found (pip install nvidia-cuda-cuobjdump)")
    if binary is None:
        pytest.skip("sam_fused._C is not built")
    text = sass_report.sass(binary, tool)
    if not text:
        pytest.skip("sam_fused._C holds no CUDA code (a CPU-only build)")
    return text


@pytest.fixture(scope="module")
def counts(sass_text):
    return sass_report.count(sass_text)


def test_no_byte_wide_shared_accesses(counts):
    spatial = {k: c for k, c in counts.items() if sass_report.is_spatial(k[1])}
    assert spatial, "no spatial-attention kernels in the SASS"
    bad = {k: {cls: c[cls] for cls in sass_report.BYTE_WIDE_SHARED if c[cls]} for k, c in spatial.items()}
    assert not {k: v for k, v in bad.items() if v}


def test_staged_tile_uses_128_bit_shared_accesses(counts):
    # the main kernels stage their tile with 16-byte asynchronous copies (cp.async: global to
    # shared without registers, sm_80+) and read it back with 16-byte loads
    for (arch, kernel), c in counts.items():
        # (the two-pass backward's main kernel, ",2pass", stages no tile: a pure stream)
        if kernel.startswith(("FwdMain", "BwdMain")) and not kernel.endswith(",2pass>"):
            assert c["LDGSTS.128"] > 0 and c["LDS.128"] > 0, (arch, kernel, dict(c))


def test_dependent_launches_wait_before_touching_global_memory(sass_text):
    # A backward call's later kernels are launched as programmatic dependents of the one before
    # (sm_90+, CudaLauncher::launch): a block may start while the previous grid still writes
    # what it reads, so it must wait (griddepcontrol.wait: ACQBULK) before its first global
    # access. Every block program carries the wait (a no-op where launched as usual).
    order = sass_report.dependent_launch_order(sass_text)
    hopper = {k: v for k, v in order.items() if int(k[0][3:].rstrip("af")) >= 90}
    if not hopper:
        pytest.skip("no sm_90+ code in this build (TORCH_CUDA_ARCH_LIST)")
    for (arch, kernel), (launch, wait, first_access) in hopper.items():
        assert launch is not None and wait is not None, (arch, kernel, "no griddepcontrol")
        assert first_access is None or wait < first_access, (arch, kernel, wait, first_access)
    # below sm_90 there is no such instruction: the launcher does not ask for it there either
    assert all(v[1] is None for k, v in order.items() if k not in hopper)


def test_same_as_ignores_addresses_but_not_instructions():
    """--same-as (which kernels of a build are those a GPU timed in another) masks addresses
    and branch targets only."""
    def text(kernel_body):
        return ("\tcode for sm_90\n\t\tFunction : _ZN9sam_fused5block20block_program_kernelINS0_7BwdMainIfLb0EiLb0EEE\n"
                + "".join(f"        /*{i * 16:04x}*/  {op} ;\n" for i, op in enumerate(kernel_body)))
    old = text(["MOV R1, c[0x0][0x28]", "@P0 BRA 0x7f00", "EXIT"])
    moved = text(["MOV R1, c[0x0][0x30]", "@P0 BRA 0x9a10", "EXIT"])
    changed = text(["MOV R1, c[0x0][0x28]", "@!P0 BRA 0x7f00", "EXIT"])
    assert sass_report.same_as(moved, old) == {("sm_90", "BwdMain<f32,NCHW,i32>"): True}
    assert sass_report.same_as(changed, old) == {("sm_90", "BwdMain<f32,NCHW,i32>"): False}
    assert sass_report.same_as(old, "") == {("sm_90", "BwdMain<f32,NCHW,i32>"): None}


def test_kernel_names_tell_the_two_pass_main_kernel_apart():
    # BwdMain<T, CL, I, Spill, TwoPass>: the two-pass backward's main kernel is an instantiation
    # of its own (bwd.h), named apart in the SASS and resource reports
    import resource_report
    mangled = "_ZN9sam_fused5block20block_program_kernelINS0_7BwdMainIfLb0EiLb{}ELb{}EEENS0_4ArgsIfEEEEvT0_"
    assert sass_report.kernel_name(mangled.format(0, 0)) == "BwdMain<f32,NCHW,i32>"
    assert sass_report.kernel_name(mangled.format(0, 1)) == "BwdMain<f32,NCHW,i32,2pass>"
    assert sass_report.kernel_name(mangled.format(1, 1)) == "BwdMain<f32,NCHW,i32,spill,2pass>"
    demangled = ("void sam_fused::block::block_program_kernel<sam_fused::block::BwdMain<float, false, int, {}, {}>, "
                 "sam_fused::block::Args<float>>(sam_fused::block::Args<float>)")
    assert resource_report.short_name(demangled.format("false", "false")) == "BwdMain<float, NCHW, i32>"
    assert resource_report.short_name(demangled.format("false", "true")) == "BwdMain<float, NCHW, i32, 2pass>"
    assert resource_report.short_name(demangled.format("true", "true")) == "BwdMain<float, NCHW, i32, spill, 2pass>"
