"""Sanitizers of the CPU execution context (csrc/block/sanitizer_cpu.h, docs/design.md §8): what
compute-sanitizer's racecheck, memcheck, initcheck and synccheck report on a GPU. Each check
fires on a tiny block program with that bug planted, and the real block programs run clean
(and still match the reference) over the emulation matrix: every pool, both layouts, one and
two passes, partial tiles, halos wider than the tile, fp64/fp32/fp16/bf16, bias and
return_map, 64-bit offsets, spilled map buffers, forward and backward."""
import pytest
import torch

from sam_fused.emulation import (ONE_PASS, ONE_PASS_STAGED_X, ONE_PASS_UNSTAGED_X, PLANTED_BUGS,
                                TWO_PASS, emulated_results, run_planted_bug)
from helpers import POOLS, make_grad, make_input, make_pair
from test_cuda_emulation import CASES, LAYOUTS, check

# bug -> (kind, what the message must say)
EXPECTED = {
    "missing_barrier": ("race", r"read after write in shared memory .*thread 0, other thread 1, barrier interval 0, "
                                r"shared offset 4\)"),
    "shared_write_write": ("race", r"write after write in shared memory .*thread 1, other thread 0, "
                                   r".*shared offset 0\)"),
    "global_blocks": ("race", r"write after write in global memory by block 0 and this block .*block 1, thread 0"),
    "global_threads": ("race", r"write after write in global memory by two threads "
                               r".*block 0, thread 1, other thread 0"),
    "shared_bounds": ("bounds", r"shared write of 4 bytes past the end of the 256-byte dynamic allocation .*"
                                r"thread 63, .*shared offset 256\)"),
    "global_bounds": ("bounds", r"global read of 4 bytes outside every tensor .*thread 63"),
    "uninit": ("init", r"shared-memory read of a byte no thread of the block wrote .*thread 31, barrier interval 1, "
                       r"shared offset 128\)"),
    "divergent_barrier": ("barrier", r"barrier inside divergent code: reached by 32 of 64 threads"),
    "barrier_in_phase": ("barrier", r"barrier inside a phase body"),
    "copy_not_waited": ("race", r"shared-memory read of a byte an asynchronous copy may still be writing "
                                r"\(copy_wait missing\) .*block 0, thread 0, other thread 0, barrier interval 1, "
                                r"shared offset 0\)"),
    # copy_wait_prior(1) lands the first of two groups of copies only (threads 32-63 copied later)
    "chunk_not_waited": ("race", r"shared-memory read of a byte an asynchronous copy may still be writing "
                                 r"\(copy_wait missing\) .*block 0, thread 0, other thread 63, .*shared offset 252\)"),
    # the GPU runs blocks at once: neither the order of the emulation nor compute-sanitizer's
    # racecheck (shared memory only) would show these two
    "global_uninit": ("init", r"global read of a byte of an output or workspace tensor that no launch of the call "
                              r"wrote .*block 0, thread 0, .*byte offset 0\)"),
    "global_cross_block": ("race", r"global read of a byte block 0 of this launch wrote .*block 1, thread 0, "
                                   r"other thread 0, .*byte offset 0\)"),
    # a vector access the GPU would fault on (raised with or without the sanitizer)
    "misaligned_vector": ("alignment", r"a 16-byte vector access at an address not a multiple of its size"),
}


def test_every_planted_bug_has_an_expectation():
    assert set(EXPECTED) == set(PLANTED_BUGS)


@pytest.mark.parametrize("bug", PLANTED_BUGS)
def test_planted_bug_is_reported(bug):
    kind, what = EXPECTED[bug]
    with pytest.raises(RuntimeError, match=rf"^block sanitizer: {kind}: {what}"):
        run_planted_bug(bug)


def test_planted_bug_program_runs_clean_without_its_bug():
    out = run_planted_bug("clean")
    buf = torch.arange(64, dtype=torch.float32)
    assert torch.equal(out, (buf + buf.roll(-1)).repeat(2))


def test_unknown_planted_bug_is_a_value_error():
    with pytest.raises(ValueError, match="bug must be one of clean, missing_barrier"):
        run_planted_bug("nope")


@pytest.mark.parametrize("variant", [ONE_PASS_UNSTAGED_X, ONE_PASS_STAGED_X, TWO_PASS],
                         ids=["one_pass", "one_pass_staged_x", "two_pass"])
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_kernels_run_clean_fp64(case, pool, variant):
    shape, kernel, rows, threads = CASES[case]
    x = make_input(shape, torch.float64, LAYOUTS[case % len(LAYOUTS)])
    check(x, pool, kernel, variant=variant, rows=rows, threads=threads, sanitize=True)


@pytest.mark.parametrize("variant", [ONE_PASS_UNSTAGED_X, ONE_PASS_STAGED_X, TWO_PASS],
                         ids=["one_pass", "one_pass_staged_x", "two_pass"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_kernels_run_clean_vectorised(dtype, layout, variant):
    for shape, rows in (((2, 16, 12, 8), 4), ((2, 5, 11, 4), 3)):  # 128-bit accesses; scalar, partial tile
        check(make_input(shape, dtype, layout), "mean+max", (3, 3), variant=variant, rows=rows, sanitize=True)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("bias,return_map", [(False, False), (True, True), (False, True)])
@pytest.mark.parametrize("pool", POOLS)
def test_kernels_run_clean_bias_and_return_map(pool, bias, return_map, layout):
    for variant in (ONE_PASS_UNSTAGED_X, ONE_PASS_STAGED_X, TWO_PASS):
        check(make_input((2, 6, 9, 5), torch.float64, layout), pool, (3, 3), bias, return_map, variant=variant,
              rows=2, threads=64, sanitize=True)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_kernels_run_clean_auto_plan_and_index64(layout):
    check(make_input((2, 9, 13, 9), torch.float32, layout), "mean+max", (3, 1), sanitize=True)
    check(make_input((2, 5, 11, 4), torch.float64, layout), "max+mean", (3, 3), rows=3, index64=True, sanitize=True)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_kernels_run_clean_with_spilled_maps(layout):
    # one row of maps is more than sm_86's shared memory per block: map buffers in global scratch
    # (the two-pass backward's main kernel holds 16 bytes per pixel: 7000 columns are too many;
    # its map kernel BwdMaps, second, holds 13 padded rows of pooled and rho maps)
    # (the weight and bias gradients sum 21000 pixels: eager fp32 is 3e-5 and 1.4e-4 from fp64 here)
    x = make_input((1, 2, 3, 7000), torch.float32, layout)
    tf, tb = check(x, "max+mean", (3, 3), many_pixels=True, arch="sm_86", sanitize=True)
    assert tf.spill and tb.spill and tb.two_pass and tb.launches[1].spill


def test_sanitizer_changes_neither_results_nor_traffic():
    x = make_input((2, 5, 11, 4), torch.float32, "channels_last")
    _, weight, bias = make_pair("mean+max", (3, 3), True, False, x.dtype)
    grad_out = make_grad(x.shape, x.dtype)
    kw = dict(variant=ONE_PASS, rows=3, threads=64)
    plain, pooled, tf, tb = emulated_results(x, weight, bias, "mean+max", False, grad_out, **kw)
    checked, pooled_s, tf_s, tb_s = emulated_results(x, weight, bias, "mean+max", False, grad_out, sanitize=True, **kw)
    assert all(torch.equal(plain[k], checked[k]) for k in plain) and torch.equal(pooled, pooled_s)
    assert tf.counts == tf_s.counts and tb.counts == tb_s.counts
