"""benchmarks/phase_model.py: every loop of the block programs has an entry in its table, the bytes
of its phases are the DRAM bytes of the traffic model (and of the emulation), and its predictions
move the right way: more loads in flight never slower, more bytes never faster, a single wave in
lock step, several overlapping."""
import dataclasses
import math
import re
import sys
from pathlib import Path

import pytest
import torch

from sam_fused.emulation import ONE_PASS_CHUNKED, ONE_PASS_STAGED_X, emulate_bwd, emulate_fwd
from helpers import make_grad, make_input, make_pair

BENCH = Path(__file__).parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import model_report  # noqa: E402
import phase_model as pm  # noqa: E402
import time_model  # noqa: E402

BLOCK = Path(__file__).parents[1] / "csrc" / "block"
H100 = pm.CARDS["H100"]
# one-pass and two-pass plans of both directions, mean and mean+max, fp32 and bf16
CASES = [("har", (128, 64, 64, 9), torch.float32), ("har", (128, 64, 64, 9), torch.bfloat16),
         ("cbam", (32, 64, 56, 56), torch.float32), ("cbam", (32, 64, 56, 56), torch.bfloat16),
         ("cbam", (2, 12, 11, 9), torch.float32), ("cbam", (32, 256, 56, 56), torch.float32),  # two pass
         ("har", (128, 512, 8, 9), torch.float32),
         ("har", (128, 128, 32, 9), torch.bfloat16),
         ("har", (128, 512, 7, 9), torch.float32),  # H*W odd: scalar accesses, element-wise tile reductions
         # a one-pass mean+max forward with halo rows (7x7 forwards take one pass only for whole samples)
         (("mean+max", (3, 3)), (8, 64, 48, 48), torch.float32)]


# plans only a test variant makes (the planner neither stages the backward's x tile nor chunks a
# staged tile): (layer, shape, dtype, variant)
VARIANT_CASES = [("har", (128, 64, 64, 9), torch.bfloat16, ONE_PASS_STAGED_X),
                 ("har", (128, 64, 64, 9), torch.float32, ONE_PASS_STAGED_X),
                 (("mean+max", (3, 3)), (8, 64, 48, 48), torch.float32, ONE_PASS_STAGED_X),
                 ("har", (128, 128, 32, 9), torch.bfloat16, ONE_PASS_CHUNKED)]  # a one-wave grid: in chunks


def layer_of(layer):
    """(pool, kernel) of a CASES entry: a benchmark layer's name, or the pair itself."""
    return pm.LAYERS[layer] if isinstance(layer, str) else layer


def streams_of(layer, shape, dtype, backward, variant=0):
    pool, kernel = layer_of(layer)
    t = pm.plan_call(shape, dtype, pool, kernel, backward, H100.arch, variant)
    two_pass_maps = backward and t.two_pass  # BwdMaps, the second launch
    c = pm.Call(shape, dtype.itemsize, pool, kernel, t.rows, t.two_pass, t.vec, t.threads, t.px,
                t.launches[1].rows if two_pass_maps else 0, t.staged_x, t.chunk_rows, t.sum_slots)
    builds = {"FwdPool": pm.fwd_pool_phases, "FwdMain": pm.fwd_main_phases, "BwdRho": pm.bwd_rho_phases,
              "BwdMaps": pm.bwd_maps_phases, "BwdMain": pm.bwd_main_phases}
    kernels = [pm.KERNEL_OF[(backward, k)] for k in pm.launch_kinds(backward, t.two_pass)]
    tiles = {"BwdMaps": t.launches[1].tiles if two_pass_maps else 0}
    out = {(k, s.loop) for k in kernels if k in builds for j in range(tiles.get(k, c.tiles))
           for p in builds[k](c, j) for _, streams in p.segments + p.overlap for s in streams}
    if backward:  # the weight gradient's sums: DwReduce (one pass) or the two-pass BwdMain's first blocks
        out |= {("BwdMain" if t.two_pass else "DwReduce", s.loop)
                for p in pm.dw_reduce_phases(c, 0, t.launches[-1].grid, 128) for _, ss in p.segments for s in ss}
    return out


def test_every_loop_has_one_table_entry_pointing_at_the_code():
    listed = {(k, loop) for k, loops in pm.KERNEL_LOOPS.items() for loop in loops}
    assert set(pm.LOOPS) == listed
    cases = [(*case, 0) for case in CASES] + VARIANT_CASES
    used = set().union(*(streams_of(*case[:3], b, case[3]) for case in cases for b in (False, True)))
    assert used == listed  # the phase builders use exactly the listed loops
    for key, entry in pm.LOOPS.items():
        assert all(n >= 1 for n in entry.flight) and all(i > 0 for i in entry.instr) and entry.why, key
        file, function = entry.where.split(":")
        name = function.split()[0]
        assert re.search(rf"\b{name}\b", (BLOCK / file).read_text()), f"{key}: no {name} in csrc/block/{file}"


@pytest.mark.parametrize("kernel,file", [("FwdMain", "fwd.h"), ("BwdMain", "bwd.h"), ("BwdMaps", "bwd_maps.h")])
def test_every_phase_function_of_the_main_kernels_is_in_the_table(kernel, file):
    # the phases FwdMain::run / BwdMain::run call, as written in the source
    text = (BLOCK / file).read_text()
    body = text[text.index(f"struct {kernel} {{"):]
    run = body[body.index("static SAM_FUSED_BLOCK void run("):]
    run = run[:run.index("\n  }\n")]
    called = set(re.findall(r"^\s+(\w+)\(ctx, a, v\);", run, re.M))
    assert called, run
    covered = {e.where.split(":")[1].split()[0] for (k, _), e in pm.LOOPS.items() if k == kernel}
    covered |= {loop.split(".")[0] for k, loop in pm.LOOPS if k == kernel}
    assert called <= covered, f"phases of {kernel}::run without a LOOPS entry: {sorted(called - covered)}"


@pytest.mark.parametrize("layer,shape,dtype", CASES)
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "bwd"])
def test_phase_bytes_are_the_traffic_model_bytes(layer, shape, dtype, backward):
    pool, kernel = layer_of(layer)
    t = pm.plan_call(shape, dtype, pool, kernel, backward, H100.arch)
    launches = pm.launches_of_call(shape, dtype, pool, kernel, backward, H100, {})
    P, e, taps = len(pool.split("+")), dtype.itemsize, len(pool.split("+")) * kernel[0] * kernel[1]
    if backward:
        partial_blocks = t.launches[1].grid if t.two_pass else t.blocks  # BwdMaps' blocks, or BwdMain's
        want = time_model.backward_traffic(shape, e, P, t.two_pass, has_max="max" in pool, blocks=partial_blocks,
                                           taps=taps).bytes + (taps + 1) * e  # + the weight gradient written
    else:
        want = time_model.forward_traffic(shape, e, P, t.two_pass).bytes
    assert sum(lt.dram_bytes for lt in launches) == want
    assert [lt.grid for lt in launches] == [lc.grid for lc in t.launches]


@pytest.mark.parametrize("pool", ["mean", "mean+max"])
def test_phase_bytes_are_the_emulated_dram_bytes(pool):
    shape, kernel, dtype = (2, 12, 11, 9), (3, 3), torch.float32
    _, weight, bias = make_pair(pool, kernel, False, False, dtype)
    x = make_input(shape, dtype, "contiguous")
    out, pooled, tf = emulate_fwd(x, weight, bias, pool, False)
    *_, tb = emulate_bwd(make_grad(out.shape, dtype), x, weight, bias, pooled, pool, False)
    slots = ("x", "grad_out", "out", "pooled", "workspace")
    for t, backward in ((tf, False), (tb, True)):
        emulated = sum(t[s]["read_unique"] + t[s]["written_unique"] for s in slots)
        modelled = sum(lt.dram_bytes for lt in pm.launches_of_call(shape, dtype, pool, kernel, backward, H100, {}))
        assert modelled - (weight.numel() + 1) * 4 * backward == emulated  # the emulation leaves out dw, dbias


def predicted(layer, shape, dtype, case, card=H100):
    return pm.predict("t", layer, case, shape, dtype, card, {})


@pytest.mark.parametrize("layer,shape,dtype", CASES[:4])
@pytest.mark.parametrize("case", ["fwd", "bwd"])
def test_more_loads_in_flight_never_predict_slower(layer, shape, dtype, case, monkeypatch):
    before = predicted(layer, shape, dtype, case)
    more = {k: dataclasses.replace(v, flight=(2 * v.flight[0], 2 * v.flight[1])) for k, v in pm.LOOPS.items()}
    monkeypatch.setattr(pm, "LOOPS", more)
    after = predicted(layer, shape, dtype, case)
    assert after.seconds <= before.seconds
    assert after.floor_fraction >= before.floor_fraction


@pytest.mark.parametrize("layer,shape,dtype", CASES[:4])
@pytest.mark.parametrize("case", ["fwd", "bwd"])
def test_more_bytes_never_predict_faster(layer, shape, dtype, case):
    small = predicted(layer, shape, dtype, case)
    big = predicted(layer, (2 * shape[0], *shape[1:]), dtype, case)
    assert big.seconds >= small.seconds
    slow = predicted(layer, shape, dtype, case, dataclasses.replace(H100, copy_bandwidth=H100.copy_bandwidth / 2))
    assert slow.seconds >= small.seconds


def synthetic(dram_latency_bound: bool):
    """Two phases of one block: one waiting on DRAM round trips, one streaming many bytes."""
    latency = pm.Phase("pool_rows", dram_read=1024, segments=[(1, [pm.Stream("pool_rows", 256, 64, "dram")])])
    stream = pm.Phase("write_out_tile", dram_write=256 * 1024,
                      segments=[(1, [pm.Stream("write_out_tile", 256, 16, "smem")])])
    return [latency, stream] if dram_latency_bound else [stream]


def test_a_single_wave_runs_its_phases_in_lock_step():
    card, threads, smem = H100, 256, 100 * 1024  # 2 blocks per SM
    resident = pm.resident_blocks(card.arch, threads, smem)
    assert resident == 2
    grid = resident * card.sms
    one = pm.time_launch("FwdMain", [(grid, synthetic(True))], grid, threads, smem, 4, card)
    assert not one.overlapped and one.waves == 1
    # phases add: the latency-bound one idles DRAM, the streaming one is bandwidth bound
    path = pm.phase_path("FwdMain", synthetic(True)[0], 4, card)
    stream_bytes = grid * 256 * 1024 / card.copy_bandwidth
    assert one.phases[0].bound == "latency" and one.phases[1].bound == "bandwidth"
    assert one.seconds == pytest.approx(path + stream_bytes, rel=1e-3)
    # many waves of >= 2 resident blocks overlap: DRAM stays busy during the other blocks' waits
    many = pm.time_launch("FwdMain", [(8 * grid, synthetic(True))], 8 * grid, threads, smem, 4, card)
    assert many.overlapped and many.waves == 8
    assert 8 * grid * (1024 + 256 * 1024) / card.copy_bandwidth <= many.seconds < 8 * one.seconds
    # one resident block per SM: no partner to overlap with, every wave in lock step
    big = 200 * 1024
    solo = pm.time_launch("FwdMain", [(4 * card.sms, synthetic(True))], 4 * card.sms, threads, big, 4, card)
    assert solo.resident == 1 and not solo.overlapped
    assert solo.seconds == pytest.approx(4 * (path + card.sms * 256 * 1024 / card.copy_bandwidth), rel=1e-3)


def test_resident_blocks_follow_registers_shared_memory_and_threads():
    assert pm.resident_blocks("sm_90", 256, 61216, registers=61) == 3   # shared memory: 228 KB / 61 KB
    assert pm.resident_blocks("sm_90", 256, 61216) == 2                 # the launch bound's 128 registers
    assert pm.resident_blocks("sm_90", 256, 0, registers=32) == 8       # threads: 2048 per SM
    assert pm.resident_blocks("sm_86", 256, 0, registers=32) == 6       # 1536 threads per SM
    assert pm.resident_blocks("sm_90", 256, 300 * 1024) == 1            # never below one
    with pytest.raises(ValueError, match="sm_75"):
        pm.arch_limits("sm_75")


def test_cards_and_compile_assumption():
    h200 = pm.card_named("NVIDIA H200", 4.3e12)
    assert h200.copy_bandwidth == 4.3e12 and "measured 4.30" in h200.name and h200.sms == 132
    assert pm.card_named("NVIDIA A100-SXM4-80GB").arch == "sm_80"
    assert pm.card_named("some other GPU") == H100
    N, e = 128 * 64 * 64 * 9, 4
    assert pm.compile_seconds("fwd", N, e, H100) == pytest.approx(3 * N * e / (0.85 * 3e12) + 2 * 5e-6)
    p = predicted("har", (128, 64, 64, 9), torch.float32, "fwd")
    floor = 2 * N * e / H100.copy_bandwidth
    assert p.floor_fraction == pytest.approx(floor / p.device_seconds)
    assert p.seconds == pytest.approx(p.device_seconds + H100.launch_overhead * len(p.launches))
    assert 0 < p.floor_fraction <= 1


def test_reports_run(capsys):
    import predicted_report

    assert model_report.main(["--launch-bound"]) == 0
    text = capsys.readouterr().out
    cases = model_report.benchmark_cases()
    assert text.count("\n| fwd |") + text.count("\n| bwd |") == len(cases)
    assert "| fwd | CBAM 64ch | 32x64x56x56 | bfloat16 |" in text
    loops = pm.LOOPS
    assert model_report.main(["--launch-bound", "--flight", "8", "--detail"]) == 0
    text = capsys.readouterr().out
    assert pm.LOOPS is loops and "at least 8 loads in flight" in text and "rho_rows_from_x" in text
    for key in (("BwdMain", "rho_rows_from_x"), ("BwdMain", "stage_inputs.pooled")):  # raised to 8, never lowered
        assert pm.at_least_in_flight(8)[key].flight == tuple(max(8, f) for f in pm.LOOPS[key].flight)
    assert pm.at_least_in_flight(8)[("BwdMain", "stage_inputs.pooled")].flight == (8, 8)
    assert predicted_report.main(["--model", "--bandwidth", "3.0"]) == 0
    assert "given 3.00 TB/s copy" in capsys.readouterr().out
    info = dict(case="bwd", label="CBAM s1", layer="cbam", shape=[32, 256, 56, 56], dtype="float32", device="cuda")
    data = {"benchmarks": [{"extra_info": {**info, "impl": "fused"}, "stats": {"median": 400e-6}},
                           {"extra_info": {**info, "impl": "clone"}, "stats": {"median": 100e-6}}]}
    fused, clone = predicted_report.rows(data, H100, {})
    model = pm.predict("CBAM s1", "cbam", "bwd", (32, 256, 56, 56), torch.float32, H100, {})
    assert fused.split("|")[-3].strip() == f"{model.seconds * 1e6:.1f}" and clone.endswith(" - | - |")
    assert math.isfinite(model.seconds)


@pytest.mark.parametrize("layer,shape,dtype", CASES)
def test_weight_grad_partials_give_every_tap_group_one_warp_over_pixel_stripes(layer, shape, dtype):
    # bwd_maps.h store_weight_grad_partials: warp j takes tap groups j, j + warps, ...; its lanes
    # stride the tile pixels; every warp then runs the 5-step butterfly once per round of groups.
    # One pass in BwdMain's tiles, two pass in BwdMaps' map tiles (the second launch).
    pool, kernel = layer_of(layer)
    t = pm.plan_call(shape, dtype, pool, kernel, True, H100.arch)
    rows, tiles = (t.launches[1].rows, t.launches[1].tiles) if t.two_pass else (t.rows, t.tiles)
    c = pm.Call(shape, dtype.itemsize, pool, kernel, t.rows, t.two_pass, t.vec, t.threads, t.px, rows)
    build, name, loop = ((pm.bwd_maps_phases, "weight_grad_maps", "weight_grad_maps") if t.two_pass else
                         (pm.bwd_main_phases, "gamma_and_weight_grad", "weight_grad_partials"))
    entries, warps = pm.tap_groups(c), t.threads // 32  # a group: one kernel row's taps (7x7, 3x1: one), or the bias
    assert entries == c.P * kernel[0] + 1
    for j in range(tiles):
        h0, h1 = j * rows, min(shape[2], (j + 1) * rows)
        phase = next(p for p in build(c, j) if p.name == name)
        stripes = [(rep, s) for rep, ss in phase.segments for s in ss if s.loop == loop]
        trees = [(rep, s) for rep, ss in phase.segments for s in ss if s.loop == f"{loop}.tree"]
        assert sum(rep * s.threads // 32 for rep, s in stripes) == entries
        assert all(s.items == -(-(h1 - h0) * shape[3] // 32) and s.threads <= t.threads for _, s in stripes)
        assert [(rep, s.threads, s.items) for rep, s in trees] == [(-(-entries // warps), t.threads, 5)]


def test_asynchronous_tile_copies_wait_one_round_trip():
    # cp.async (LDGSTS): a thread's copies are all in flight, however many it has
    for key in (("FwdMain", "stage_x_tile"), ("BwdMain", "stage_inputs")):
        for items in (1, 14, 64):
            s = pm.Stream(key[1], 256, items, "dram")
            instr = pm.LOOPS[key].instr[0]
            assert pm.stream_seconds(key[0], s, 4, H100) == pytest.approx(
                H100.dram_latency + items * instr * H100.cpi / H100.clock_hz)


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "bwd"])
def test_halo_reduction_overlaps_the_tile_copies(backward):
    # fwd.h / bwd.h run: the halo rows are reduced (from L2) between the tile's asynchronous
    # copies and copy_wait; the tile-row reduction that follows has no halo rounds
    layer, shape, dtype = CASES[0]
    pool, kernel = layer_of(layer)
    t = pm.plan_call(shape, dtype, pool, kernel, backward, H100.arch)
    assert not t.two_pass
    c = pm.Call(shape, dtype.itemsize, pool, kernel, t.rows, t.two_pass, t.vec, t.threads, t.px)
    kname, halo_loop, rows_loop = ("BwdMain", "rho_halo_rows", "rho_rows_from_x") if backward else \
        ("FwdMain", "pool_halo_rows", "pool_rows")
    phases = (pm.bwd_main_phases if backward else pm.fwd_main_phases)(c, 1)  # an inner tile: halo both sides
    stage, rows = phases[0], next(p for p in phases if p.name == rows_loop)
    px = t.px  # the plan's pixels per round, for the halo and the tile rows alike
    paths = ("", ".mean")  # the forward's mean-only pool has its own loop (fwd.h pool_visit)
    halo_rounds = [rep for rep, ss in stage.overlap for s in ss if s.loop in (halo_loop + p for p in paths)]
    assert halo_rounds == [-(-2 * (kernel[0] // 2) * shape[3] // px)]
    assert [rep for rep, ss in rows.segments for s in ss if s.loop in (rows_loop + p for p in paths)] == [
        -(-t.rows * shape[3] // px)]
    # the phase takes the larger of the copies' round trip and their issue plus the halo work
    *head, (rep, copies) = stage.segments
    without = dataclasses.replace(stage, overlap=[])
    issue = max(pm.stream_instructions(kname, s, 4) for s in copies) * H100.cpi / H100.clock_hz
    want = pm.phase_path(kname, dataclasses.replace(stage, segments=head, overlap=[]), 4, H100) + max(
        pm.phase_path(kname, dataclasses.replace(stage, segments=[(rep, copies)], overlap=[]), 4, H100),
        issue + pm._segments_path(kname, stage.overlap, 4, H100))
    assert pm.phase_path(kname, stage, 4, H100) == pytest.approx(want)
    assert pm.phase_path(kname, stage, 4, H100) >= pm.phase_path(kname, without, 4, H100)
