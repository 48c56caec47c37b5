"""Phase-level time model of the CUDA block programs (docs/design.md §3, "Predicting the time").

time_model.py gives the floor (DRAM bytes / copy bandwidth). This model predicts how far above
the floor the kernels land, from what the code does, without a GPU:

- the launches of a call come from the planner itself (`sam_fused::_emulate_plan`): grid,
  threads and dynamic shared memory of each kernel, for the card's architecture;
- resident blocks per SM follow from threads, shared memory and registers (registers from the
  built library's `cuobjdump -res-usage`, else the launch bound of 128), and waves from those;
- each block is a sequence of barrier-separated phases (csrc/block/fwd.h, bwd.h, common.h), each
  made of loops ("streams" of items per thread). A loop's time on its busiest thread is
      ceil(items / loads in flight) * latency of the level it reads  +  items * instructions * CPI / clock
  and a phase also cannot beat its DRAM bytes / copy bandwidth or the SM's issue rate. That is
  Little's law: bytes / (in-flight bytes per SM * SMs / latency) with in-flight bytes = resident
  blocks * threads * loads in flight * bytes per load;
- phases add up within a block. Blocks of one wave run in lock step (all in the same phase: a
  latency-bound phase idles DRAM); with >= 2 resident blocks per SM and more than one wave, blocks
  drift out of phase and their phases overlap: the launch then takes the largest of total bytes /
  bandwidth, total issue time, and (blocks per SM / resident) * one block's latency path.

The loads in flight and instructions per item of every loop live in ONE table, LOOPS in
benchmarks/phase_loops.py, read off the sm_90 SASS of the built library; edit it when a loop
changes. `python benchmarks/model_report.py` prints the predictions (also `predicted_report.py
--model`).
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import time_model  # noqa: E402
from phase_loops import KERNEL_LOOPS, LOOPS, Loop  # noqa: E402,F401  (LOOPS: read as phase_model.LOOPS)


# ----------------------------------------------------------------------------- the card

@dataclass(frozen=True)
class Card(time_model.Card):
    """time_model.Card plus what the phase model needs. Latencies, clock and CPI are typical
    published / microbenchmark figures, assumed, not measured here."""
    arch: str = "sm_90"              # the planner's limits (csrc/block/limits.h)
    sms: int = 132
    dram_latency: float = 0.7e-6     # s, a load that misses L2, under load
    l2_latency: float = 0.25e-6      # s, an L2 hit (halo rows, weights)
    smem_latency: float = 30 / 1.75e9
    clock_hz: float = 1.75e9         # sustained SM clock
    cpi: float = 2.0                 # cycles per instruction of one warp in a dependent loop
    issue_width: int = 4             # warp instructions an SM issues per cycle (4 schedulers)
    l2_bandwidth: float = 5.5e12     # B/s through L2 (DRAM traffic and L2 hits), microbenchmark figure
    stream_efficiency: float = 1.0   # fraction of copy bandwidth the kernels' DRAM phases reach; 1 when
    #                                  assumed, fitted by calibrate_model.py
    launch_gap: float = 0.0          # s of device time per launch in back-to-back calls (ramp-up, tail,
    #                                  gap between kernels); 0 when assumed, fitted by calibrate_model.py

    @property
    def stream_bandwidth(self) -> float:
        """B/s a DRAM-bound phase of the kernels moves."""
        return self.copy_bandwidth * self.stream_efficiency


CARDS = {
    "H100": Card("H100 SXM (assumed 3.0 TB/s copy)", 3.0e12),
    # fitted by `benchmarks/calibrate_model.py --bandwidth 3.3` on the 708 plans the two H100 sweeps
    # of docs/gpu-data timed (each plan's fastest; x.clone() reached 3.2-3.4 TB/s there): effective
    # figures, not physical ones. Fits on half the cases move them a lot (docs/gpu-model.md): only
    # their combination predicts, to about +-30% (rms log error 0.26 against 0.75 as assumed)
    "H100-fit": Card("H100 SXM (fitted on 708 timed plans, 3.3 TB/s copy)", 3.3e12, dram_latency=0.44e-6,
                     l2_latency=0.69e-6, smem_latency=215e-9, cpi=6.04, stream_efficiency=0.53),
    # device time alone: fitted on the plan sweeps replayed from CUDA graphs (68460bd, 3f28ae8), where
    # H100-fit's sweeps timed calls back to back, the UCI-HAR ones at the host's pace (docs/gpu-model.md)
    "H100-graph": Card("H100 SXM (fitted on 710 plans replayed from CUDA graphs, 3.3 TB/s copy)", 3.3e12,
                       dram_latency=0.20e-6, l2_latency=0.61e-6, smem_latency=95e-9, cpi=5.69,
                       stream_efficiency=0.59),
    "H200": Card("H200 (assumed 4.0 TB/s copy)", 4.0e12),
    "A100": Card("A100 80GB SXM (assumed 1.75 TB/s copy)", 1.75e12, arch="sm_80", sms=108, dram_latency=0.6e-6,
                 l2_latency=0.2e-6, smem_latency=30 / 1.41e9, clock_hz=1.41e9, l2_bandwidth=3.8e12),
}


FITTED = {"H100": "H100-fit"}  # a card's figures fitted on its measurements, where there are some


def card_named(name: str, copy_bandwidth: float | None = None, how: str = "measured") -> Card:
    """The card whose key appears in `name` (a device name such as "NVIDIA H100 80GB HBM3"), with
    the figures fitted on its measurements where FITTED has them; the assumed H100 when no key
    appears; a measured (or given) copy bandwidth replaces the card's."""
    key = next((k for k in CARDS if k.lower() in name.lower()), None)
    card = CARDS[FITTED.get(key, key)] if key else CARDS["H100"]
    return with_copy_bandwidth(card, copy_bandwidth, how, name.split(" (")[0])


def with_copy_bandwidth(card: Card, copy_bandwidth: float | None, how: str = "given", label: str = "") -> Card:
    """The card with a measured (or given) copy bandwidth in place of its own, when there is one."""
    if not copy_bandwidth:
        return card
    label = label or card.name.split(" (")[0]
    return dataclasses.replace(card, name=f"{label} ({how} {copy_bandwidth / 1e12:.2f} TB/s copy)",
                               copy_bandwidth=copy_bandwidth)


def arch_limits(arch: str) -> dict:
    """The kArchLimits row of csrc/block/limits.h for `arch`."""
    with open(os.path.join(ROOT, "csrc", "block", "limits.h")) as f:
        text = f.read()
    fields = ("optin", "smem_per_sm", "reserved", "regs_per_sm", "threads_per_sm", "threads_per_block", "sms")
    for name, values in re.findall(r'\{"(sm_\d+)",([^}]*)\}', text):
        if name == arch:
            return dict(zip(fields, (math.prod(int(v) for v in x.split("*")) for x in values.split(","))))
    raise ValueError(f"arch {arch!r} is not in csrc/block/limits.h")


MAX_BLOCKS_PER_SM = 32   # every arch of limits.h
LAUNCH_BOUND_REGS = 128  # __launch_bounds__(256, 2): what a kernel may use when nothing else is known


def resident_blocks(arch: str, threads: int, smem: int, registers: int = LAUNCH_BOUND_REGS) -> int:
    """Blocks of one kernel resident on an SM: threads, registers (allocated per warp in units of
    256) and shared memory (plus the runtime's reserve per block)."""
    lim = arch_limits(arch)
    warps = math.ceil(threads / 32)
    by_regs = lim["regs_per_sm"] // (warps * math.ceil(registers * 32 / 256) * 256)
    by_smem = lim["smem_per_sm"] // (smem + lim["reserved"])
    return max(1, min(MAX_BLOCKS_PER_SM, lim["threads_per_sm"] // threads, by_regs, by_smem))


def built_registers(arch: str = "sm_90", binary: str | None = None) -> dict:
    """{kernel short name ("BwdMain<bf16,NCHW,i32>"): registers} from `cuobjdump -res-usage` of the
    built library; empty without cuobjdump or device code for `arch`."""
    import sass_report

    tool, binary = sass_report.find_cuobjdump(), binary or sass_report.default_binary()
    if not tool or not binary:
        return {}
    done = subprocess.run([tool, "-res-usage", "-arch", arch, binary], capture_output=True, text=True)
    regs, name = {}, None
    for line in done.stdout.splitlines():
        if m := re.search(r"Function (\S+):", line):
            name = sass_report.kernel_name(m[1])
        elif (m := re.search(r"REG:(\d+)", line)) and name:
            regs[name] = int(m[1])
            name = None
    return regs


# ----------------------------------------------------------------------------- phases of a block

@dataclass
class Stream:
    """One loop as its busiest thread runs it."""
    loop: str      # LOOPS key part ("stage_x_tile", "pool_rows.merge", ...)
    threads: int   # threads of the block in the loop
    items: float   # items of the busiest thread
    level: str     # what it waits on: "dram", "l2", "smem" or "alu"
    rows: float = 0.0    # conv loops: kernel rows (slot, kernel row) of its pixels, each LOOPS row instructions
    pixels: float = 0.0  # conv loops: pixels, each LOOPS pixel instructions (index, window test, sigmoid, stores)


def strided(loop: str, total: int, threads: int, level: str, per_item: int = 1) -> Stream:
    """A loop whose threads stride over `total` items (i = t, t + threads, ...), each worth
    `per_item` table items (conv taps per pixel)."""
    return Stream(loop, min(threads, total), math.ceil(total / threads) * per_item, level)


@dataclass
class Phase:
    """Barrier-separated work of one block: segments run in turn, each `repeat` times, and in a
    segment the streams run side by side (different threads)."""
    name: str
    dram_read: float = 0.0   # bytes of one block
    dram_write: float = 0.0
    l2_read: float = 0.0
    segments: list = field(default_factory=list)  # [(repeat, [Stream])]
    # Work the same threads do after issuing the asynchronous copies of the LAST segment and
    # before waiting for them (copy_wait): that segment takes the larger of its copies' round
    # trip and its issue plus this work.
    overlap: list = field(default_factory=list)   # [(repeat, [Stream])]


@dataclass(frozen=True)
class Call:
    """What the phases depend on: shape, layer and the plan of one kernel launch."""
    shape: tuple
    elem: int        # bytes of an element of x
    pool: str
    kernel: tuple    # (kh, kw)
    rows: int
    two_pass: bool
    vec: int
    threads: int
    px: int          # pixels per channel-reduction round, from the plan (traits.h plan_reduction)
    map_rows: int = 0  # two-pass backward: map rows per BwdMaps block (traits.h plan_maps)
    staged_x: bool = False  # one-pass backward: x tile staged beside grad_out's (traits.h Plan::staged_x)
    chunk_rows: int = 0     # rows per chunk of the staged tile (traits.h Plan::chunk_rows; 0: one chunk)
    sum_slots: int = 0      # channel slots of the vector sums of the tile rows (traits.h Plan::sum_slots; 0: none)

    @property
    def sum_vectors(self) -> bool:
        return self.sum_slots > 0

    @property
    def acc(self) -> int:
        return time_model.acc_bytes(self.elem)

    @property
    def P(self) -> int:
        return len(self.pool.split("+"))

    @property
    def has_max(self) -> bool:
        return "max" in self.pool

    @property
    def taps(self) -> int:
        return self.P * self.kernel[0] * self.kernel[1]

    @property
    def tiles(self) -> int:
        return math.ceil(self.shape[2] / self.rows)

    @property
    def split(self) -> tuple[int, int]:
        """(pixels per round, channel slots) of channel_reduce in NCHW: the plan's, fixed for the
        launch, the same for every reduction of a block."""
        return self.px, self.threads // self.px


def _reduce_segments(c: Call, loop: str, npix: int, level: str, path: str = "") -> list:
    """channel_reduce over npix pixels: rounds of px pixels, cs channel slots (the plan's split),
    each thread over its slot's channels (LOOPS[loop + path]: a path of the loop with its own
    instructions), then the merge by one thread per pixel, every round."""
    px, cs = c.split
    rounds = math.ceil(npix / px)
    per_thread = math.ceil(c.shape[1] / cs)
    return [(rounds, [Stream(loop + path, c.threads, per_thread, level)]),
            (rounds, [Stream(f"{loop}.merge", px, cs, "alu")])]


MAP_RUN = 4  # traits.h kMapRun
MAP_VEC_ALIGN = 4  # traits.h kMapVecAlign: BwdMaps' padded rows are whole 16-byte fp32 vectors
CONV_BLOCK = 4                  # traits.h kConvBlock: pixels a thread convolves together
BLOCKED_CONV_WIDTH = 7          # traits.h kBlockedConvWidth: the kernel width with a blocked conv
BLOCKED_COLUMN_HEIGHT = 3       # traits.h kBlockedColumnHeight: the kh x 1 kernel blocked down a column


def _conv_segments(c: Call, loop: str, h0: int, h1: int, slots: int, block: int = 1) -> list:
    """A conv loop over the pixels of rows [h0, h1) (threads striding them): pixels whose window
    lies inside the map take the unchecked path (LOOPS[loop]), the border ones the checked path
    (LOOPS[loop + ".border"]); the busiest thread gets the average mix. slots x kh kernel rows
    of kw taps per pixel. block > 1 (fwd.h sigmoid_tile) and a kw with a blocked conv: groups of
    `block` adjacent pixels of a row with every window inside take the register-blocked conv
    (LOOPS[loop + ".block"], item = one kernel row of the group), the other pixels their own."""
    H, W = c.shape[2], c.shape[3]
    kh, kw = c.kernel
    rh, rw = kh // 2, kw // 2
    npix = (h1 - h0) * W
    inside_rows = max(0, min(h1, H - rh) - max(h0, rh))
    inside = inside_rows * max(0, W - 2 * rw)
    rows, taps = slots * kh, slots * kh * kw
    if block > 1 and kw == 1 and kh == BLOCKED_COLUMN_HEIGHT and c.rows * W > c.threads:  # Plan::column_conv
        return _column_segments(c, loop, h0, h1, slots, block, inside)
    if block == 1 or kw != BLOCKED_CONV_WIDTH:
        per = math.ceil(npix / c.threads)
        threads = min(c.threads, npix)
        mid, edge = per * inside / npix, per * (npix - inside) / npix
        return [(1, [Stream(loop, threads, mid * taps, "alu", rows=mid * rows, pixels=per)]),
                (1, [Stream(f"{loop}.border", threads, edge * taps, "alu", rows=edge * rows)])]
    # fwd.h sigmoid_tile: loop 1 strides the whole groups of every row, convolving those with
    # every window inside, loop 2 the same groups, convolving the others (bounds-tested windows,
    # LOOPS[loop + ".block_border"]); loop 3 strides the pixels, each paying its index, test and
    # saves (LOOPS[loop + ".pixels"]), and those of no whole group (W % block columns) their own conv
    groups_per_row = W // block
    blocked_per_row = sum(1 for g in range(groups_per_row) if g * block >= rw and g * block + block - 1 + rw < W)
    groups, blocked = (h1 - h0) * groups_per_row, inside_rows * blocked_per_row
    per_g, threads_g = math.ceil(groups / c.threads), min(c.threads, groups)
    fb = blocked / groups if groups else 0.0
    return [(1, [Stream(f"{loop}.block", threads_g, per_g * fb * rows, "alu", pixels=per_g * fb * block)]),
            (1, [Stream(f"{loop}.block_border", threads_g, per_g * (1 - fb) * rows, "alu",
                        pixels=per_g * (1 - fb) * block)])] + \
        _pixel_loop_segments(c, loop, npix, inside, groups * block, rows, taps, grouped_inside=blocked * block)


def _column_segments(c: Call, loop: str, h0: int, h1: int, slots: int, block: int, inside: int) -> list:
    """fwd.h sigmoid_tile with a BLOCKED_COLUMN_HEIGHT x 1 kernel: groups of `block` rows of one
    column, whole and with every window inside the map (tile row groups [g0, g1)), take the
    column-blocked conv (LOOPS[loop + ".column"], item = one group, row = one slot of it); then
    the pixel loop (_pixel_loop_segments). Only where the plan's tiles have more pixels than
    threads (traits.h Plan::column_conv)."""
    H, W = c.shape[2], c.shape[3]
    rh, R, npix = c.kernel[0] // 2, h1 - h0, (h1 - h0) * W
    g0 = 0 if h0 >= rh else math.ceil((rh - h0) / block)
    last_start = H - rh - block - h0
    g1 = max(g0, min(R // block, last_start // block + 1) if last_start >= 0 else 0)
    groups = (g1 - g0) * W
    per_g = math.ceil(groups / c.threads)
    rows = slots * c.kernel[0]  # kw = 1: one tap per kernel row
    return [(1, [Stream(f"{loop}.column", min(c.threads, groups), per_g, "alu", rows=per_g * slots)])] + \
        _pixel_loop_segments(c, loop, npix, inside, groups * block, rows, rows)


def _pixel_loop_segments(c: Call, loop: str, npix: int, inside: int, grouped: int, rows: int, taps: int,
                         grouped_inside: int | None = None) -> list:
    """The pixel loop of fwd.h sigmoid_tile after its groups: threads stride every pixel, each
    paying its index, test and saves (LOOPS[loop + ".pixels"]), and convolve the pixels no group
    took (`grouped` pixels, of which `grouped_inside` lie inside the map: all of them by default);
    the busiest thread gets the average mix of the unchecked (LOOPS[loop]) and border
    (LOOPS[loop + ".border"]) paths."""
    grouped_inside = grouped if grouped_inside is None else grouped_inside
    single, single_inside = npix - grouped, inside - grouped_inside
    per_p, threads_p = math.ceil(npix / c.threads), min(c.threads, npix)
    mid, edge = per_p * single_inside / npix, per_p * (single - single_inside) / npix
    return [(1, [Stream(f"{loop}.pixels", threads_p, per_p, "alu")]),
            (1, [Stream(loop, threads_p, mid * taps, "alu", rows=mid * rows, pixels=mid)]),
            (1, [Stream(f"{loop}.border", threads_p, edge * taps, "alu", rows=edge * rows)])]


def _tile(c: Call, j: int, rows: int = 0) -> tuple[int, int]:
    H, rows = c.shape[2], rows or c.rows
    return j * rows, min(H, (j + 1) * rows)


def _chunk_pixels(c: Call, h0: int, h1: int) -> list[int]:
    """Pixels of each chunk of the staged tile rows [h0, h1) (common.h chunk_of)."""
    step = c.chunk_rows or (h1 - h0)
    return [(min(h1, r + step) - r) * c.shape[3] for r in range(h0, h1, step)] or [0]


def _stage_stream(c: Call, loop: str, h0: int, h1: int) -> Stream:
    """The copies of the staged tile rows [h0, h1) (common.h stage_tile_chunks): one chunk, threads
    striding the tile's vectors (LOOPS[loop]); several (NCHW), groups of 8 lanes striding the
    (channel run, part of up to 8 vectors) pairs of each chunk, lanes past a run's end idle
    (LOOPS[loop + ".runs"], item = one pair)."""
    C, W = c.shape[1], c.shape[3]
    pixels = _chunk_pixels(c, h0, h1)
    if len(pixels) == 1:
        return strided(loop, (h1 - h0) * W * C // c.vec, c.threads, "dram")
    groups = c.threads // 8
    items = sum(math.ceil(C * math.ceil(n // c.vec / 8) / groups) for n in pixels)
    return Stream(f"{loop}.runs", c.threads, items, "dram")


def _vector_sum_segments(c: Call, loop: str, npix: int, level: str) -> list:
    """common.h channel_sum_vectors over npix pixels of one chunk: blocks of up to vl vectors of
    each channel's run (vl = threads // sum_slots, whole groups of 8 lanes), sum_slots
    channel slots, each thread over its slot's channels (LOOPS[loop + ".vectors"]: item = one
    channel's vector, from each source); then threads stride the block's V * vl sums, each adding
    the slots (LOOPS[... ".merge"]: item = one slot, pixel = the index and emit)."""
    T, V, C, slots = c.threads, c.vec, c.shape[1], c.sum_slots
    vl = T // slots
    per = math.ceil(V * vl / T)  # sums a thread merges per block of vectors
    segments = []
    nv = npix // V
    for j0 in range(0, nv, vl):
        n = min(vl, nv - j0)
        segments += [(1, [Stream(f"{loop}.vectors", n * slots, math.ceil(C / slots), level)]),
                     (1, [Stream(f"{loop}.vectors.merge", min(T, V * vl), per * slots, "alu", pixels=per)])]
    return segments


def _chunked_reduce(c: Call, loop: str, h0: int, h1: int, path: str = "") -> tuple[list, list]:
    """(segments reduced while later chunks land, segments after the staging): the channel
    reduction over the staged tile rows [h0, h1) (fwd.h pool_rows, bwd.h rho_rows_from_x) waits
    before each round for the chunk holding the round's last pixel (common.h ChunksReady), so the
    rounds that end before the last chunk overlap the staging. With vector sums (Plan::sum_vectors)
    the rounds are the chunks."""
    if c.sum_vectors:
        parts = [_vector_sum_segments(c, loop, n, "smem") for n in _chunk_pixels(c, h0, h1) if n]
        return [seg for part in parts[:-1] for seg in part], parts[-1]
    npix = (h1 - h0) * c.shape[3]
    last_chunk_start = npix - _chunk_pixels(c, h0, h1)[-1]
    rounds = math.ceil(npix / c.px)
    early = min(rounds, last_chunk_start // c.px)

    def with_rounds(n: int) -> list:
        return [(n, streams) for _, streams in _reduce_segments(c, loop, npix, "smem", path)] if n else []
    return with_rounds(early), with_rounds(rounds - early)


def _halo(c: Call, h0: int, h1: int, r: int) -> tuple[int, int]:
    """Rows above and below [h0, h1) within r rows, clipped to the map."""
    return h0 - max(0, h0 - r), min(c.shape[2], h1 + r) - h1


def fwd_main_phases(c: Call, j: int) -> list[Phase]:
    _, C, _, W = c.shape
    e, a, T, V = c.elem, c.acc, c.threads, c.vec
    h0, h1 = _tile(c, j)
    R, rh = h1 - h0, c.kernel[0] // 2
    top, bottom = _halo(c, h0, h1, rh)
    npix, tile_bytes = R * W, R * W * C * e
    weights = strided("stage_x_tile.weights", c.taps + 1, T, "l2")
    mean_only = ".mean" if c.pool == "mean" else ""  # fwd.h pool_visit: the pool is a template argument
    if not c.two_pass:
        # fwd.h FwdMain::run: the tile's asynchronous copies (in chunks of rows), then
        # pool_halo_rows (halo rows from L2) and the pooling of every chunk but the last while
        # they land; pool_rows then reduces the last chunk
        halo = (top + bottom) * W
        early, last = _chunked_reduce(c, "pool_rows", h0, h1, mean_only)
        stage = Phase("stage_x_tile", dram_read=tile_bytes, l2_read=halo * C * e, segments=[
            (1, [weights]), (1, [_stage_stream(c, "stage_x_tile", h0, h1)])],
            overlap=(_reduce_segments(c, "pool_halo_rows", halo, "l2", mean_only) if halo else []) + early)
        pool = Phase("pool_rows", segments=last)
        maps_written = c.P * npix * a
        write = Phase("write_out_tile", dram_write=tile_bytes,
                      segments=[(1, [strided("write_out_tile", R * W * C // V, T, "smem")])])
    else:
        stage = Phase("stage_x_tile", segments=[(1, [weights])])
        pool = Phase("pool_rows_two_pass", dram_read=c.P * npix * a, l2_read=c.P * (top + bottom) * W * a,
                     segments=[(1, [strided("pool_rows_two_pass", c.P * (R + top + bottom) * W, T, "dram")])])
        maps_written = 0
        write = Phase("write_out_tile", dram_read=tile_bytes, dram_write=tile_bytes,
                      segments=[(1, [strided("write_out_tile.global", R * W * C // V, T, "dram")])])
    sig = Phase("sigmoid_tile", dram_write=maps_written,
                segments=_conv_segments(c, "sigmoid_tile", h0, h1, c.P, CONV_BLOCK))
    if c.two_pass and c.chunk_rows:
        # Variant kTwoPassStaged: the x tile's copies go out first; the pooled maps' loads and the
        # conv run while they land (copy_wait before the write's barrier); the write reads the tile
        stage = Phase("stage_x_tile", dram_read=tile_bytes + pool.dram_read, l2_read=pool.l2_read,
                      segments=[(1, [weights]), (1, [_stage_stream(c, "stage_x_tile", h0, h1)])],
                      overlap=pool.segments + sig.segments)
        write = Phase("write_out_tile", dram_write=tile_bytes,
                      segments=[(1, [strided("write_out_tile", R * W * C // V, T, "smem")])])
        return [stage, write]
    return [stage, pool, sig, write]


def fwd_pool_phases(c: Call, j: int) -> list[Phase]:
    _, C, _, W = c.shape
    h0, h1 = _tile(c, j)
    npix = (h1 - h0) * W
    return [Phase("pool_visit", dram_read=npix * C * c.elem, dram_write=c.P * npix * c.acc,
                  segments=_reduce_segments(c, "pool_visit", npix, "dram"))]


def bwd_main_phases(c: Call, j: int) -> list[Phase]:
    _, C, _, W = c.shape
    e, a, T, V = c.elem, c.acc, c.threads, c.vec
    h0, h1 = _tile(c, j)
    R, rh = h1 - h0, c.kernel[0] // 2
    top, bottom = _halo(c, h0, h1, rh)        # delta rows
    ftop, fbottom = _halo(c, h0, h1, 2 * rh)  # pooled rows
    npix, tile_bytes = R * W, R * W * C * e
    weights = strided("stage_inputs.weights", c.taps + 1, T, "l2")
    pooled = strided("stage_inputs.pooled", c.P * (R + ftop + fbottom) * W, T, "dram")
    stage = Phase("stage_inputs", dram_read=c.P * npix * a, l2_read=c.P * (ftop + fbottom) * W * a)
    phases = [stage]
    if not c.two_pass:
        # bwd.h BwdMain::run: the grad_out tile's (staged_x: and the x tile's) asynchronous
        # copies, then the pooled rows and rho_halo_rows (x and g of the halo rows from L2) while
        # they land, then copy_wait; rho_rows_from_x reduces the tile rows alone (g staged, x from
        # DRAM, or staged too)
        halo = (top + bottom) * W
        tiles_staged = 2 if c.staged_x else 1
        stage.dram_read += tiles_staged * tile_bytes
        stage.l2_read += 2 * halo * C * e
        stage.segments = [(1, [weights]), (1, [_stage_stream(c, "stage_inputs", h0, h1)])]
        stage.overlap = [(1, [pooled])] + (_reduce_segments(c, "rho_halo_rows", halo, "l2") if halo else [])
        if c.staged_x:  # chunk by chunk as they land, like the forward's pool
            early, last = _chunked_reduce(c, "rho_rows_staged", h0, h1)
            stage.overlap += early
            phases.append(Phase("rho_rows_from_x", segments=last))
        else:  # x from DRAM: counted after the staging (its early rounds' overlap is not modelled)
            reduce = (_vector_sum_segments(c, "rho_rows_from_x", npix, "dram") if c.sum_vectors
                      else _reduce_segments(c, "rho_rows_from_x", npix, "dram"))
            phases.append(Phase("rho_rows_from_x", dram_read=tile_bytes, segments=reduce))
        write = Phase("write_dx_tile", dram_write=tile_bytes,
                      segments=[(1, [strided("write_dx_tile", R * W * C // V, T, "smem")])])
    else:
        # bwd.h BwdMain::run, two pass: the tile's s, gamma and argmax maps (BwdMaps, BwdRho),
        # then the stream over grad_out
        per_pixel = (1 + c.P) * a + (4 if c.has_max else 0)
        return [Phase("stage_tile_maps", dram_read=npix * per_pixel,
                      segments=[(1, [strided("stage_tile_maps", npix, T, "dram")])]),
                Phase("write_dx_tile", dram_read=tile_bytes, dram_write=tile_bytes,
                      segments=[(1, [strided("write_dx_tile.global", R * W * C // V, T, "dram")])])]
    phases += [
        Phase("sigmoid_delta_rows", segments=_conv_segments(c, "sigmoid_delta_rows", h0 - top, h1 + bottom, c.P)),
        Phase("gamma_and_weight_grad", dram_write=(c.taps + 1) * a,
              segments=_conv_segments(c, "gamma", h0, h1, c.P) + _weight_grad_segments(c, npix)),
        write,
    ]
    return phases


TAP_GROUP = 8  # traits.h kTapGroup


def tap_groups(c: Call) -> int:
    """Work items of store_weight_grad_partials: each kernel row's taps in groups of TAP_GROUP,
    then the bias."""
    return c.P * c.kernel[0] * math.ceil(c.kernel[1] / TAP_GROUP) + 1


def _weight_grad_segments(c: Call, npix: int, loop: str = "weight_grad_partials") -> list:
    """bwd_maps.h store_weight_grad_partials: rounds of one tap group per warp (the last round may
    have fewer), each lane over every 32nd tile pixel, then every warp's 5-step shuffle butterfly
    (of a group's sums)."""
    warps = c.threads // 32
    full, last = divmod(tap_groups(c), warps)
    stripes = [(n, [Stream(loop, 32 * w, math.ceil(npix / 32), "smem")])
               for n, w in ((full, warps), (1 if last else 0, last)) if n]
    return stripes + [(full + bool(last), [Stream(f"{loop}.tree", c.threads, 5, "smem")])]


def _whole_vectors(n: int) -> int:
    return -(-n // MAP_VEC_ALIGN) * MAP_VEC_ALIGN


def _run_conv_segments(c: Call, loop: str, h0: int, h1: int, slots: int) -> list:
    """bwd_maps.h conv loops over padded buffers (no bounds tests): threads stride runs of MAP_RUN
    pixels of a row; an item is one tap of a run (a weight, an input, MAP_RUN FMAs), LOOPS row
    per kernel row of a run, pixel per run (its index, the sigmoid or the division, the stores)."""
    runs = (h1 - h0) * math.ceil(c.shape[3] / MAP_RUN)
    per = math.ceil(runs / c.threads)
    kh, kw = c.kernel
    return [(1, [Stream(loop, min(c.threads, runs), per * slots * kh * kw, "alu", rows=per * slots * kh,
                        pixels=per)])]


def bwd_maps_phases(c: Call, j: int) -> list[Phase]:
    """bwd_maps.h BwdMaps::run, block j of map rows [h0, h1): the padded pooled rows (2rh halo)
    and rho rows (rh halo), halo rows from L2; s and delta on the tile and rh halo rows (s of
    the tile written), gamma per slot on the tile (written), the weight-gradient partials."""
    W, a, T = c.shape[3], c.acc, c.threads
    h0, h1 = _tile(c, j, c.map_rows)
    R, rh = h1 - h0, c.kernel[0] // 2
    rw = c.kernel[1] // 2
    Wp = _whole_vectors(W + _whole_vectors(rw) + rw + MAP_RUN + 2)
    per_vec, run_granules = 16 // a, -(-W // MAP_RUN) * MAP_RUN // (16 // a)
    Wp += (run_granules - Wp // per_vec) % 8 * per_vec  # traits.h place_map_buffers: rows spread over the banks
    qtop, qbottom = _halo(c, h0, h1, 2 * rh)
    top, bottom = _halo(c, h0, h1, rh)
    npix = R * W
    stage = Phase("stage_padded_maps", dram_read=(c.P + 1) * npix * a,
                  l2_read=(c.P * (qtop + qbottom) + top + bottom) * W * a,
                  segments=[(1, [strided("stage_padded_maps.weights", c.taps + 1, T, "l2")]),
                            (1, [strided("stage_padded_maps", c.P * (R + 4 * rh) * Wp, T, "dram")]),
                            (1, [strided("stage_padded_maps", (R + 2 * rh) * Wp, T, "dram")])])
    return [stage,
            Phase("sigmoid_delta_maps", dram_write=npix * a,
                  segments=_run_conv_segments(c, "sigmoid_delta_maps", h0 - top, h1 + bottom, c.P)),
            Phase("gamma_maps", dram_write=c.P * npix * a,
                  segments=_run_conv_segments(c, "gamma_maps", h0, h1, c.P)),
            Phase("weight_grad_maps", dram_write=(c.taps + 1) * a,
                  segments=_weight_grad_segments(c, npix, "weight_grad_maps"))]


def bwd_rho_phases(c: Call, j: int) -> list[Phase]:
    _, C, _, W = c.shape
    h0, h1 = _tile(c, j)
    npix = (h1 - h0) * W
    return [Phase("rho_visit", dram_read=2 * npix * C * c.elem, dram_write=npix * (c.acc + (4 if c.has_max else 0)),
                  segments=_reduce_segments(c, "rho_visit", npix, "dram"))]


def dw_reduce_phases(c: Call, j: int, blocks: int, threads: int) -> list[Phase]:
    """Block j sums entries 4j .. 4j+3 (a warp each) over the main kernel's `blocks` partials."""
    warps = threads // 32
    entries = min(warps, c.taps + 1 - j * warps)
    return [Phase("sum_partials", dram_read=entries * blocks * c.acc, dram_write=entries * c.elem,
                  segments=[(1, [Stream("sum_partials", entries * 32, math.ceil(blocks / 32), "dram")])])]


def two_pass_main_blocks(c: Call, partial_blocks: int, threads: int) -> list:
    """[(count, phases)] of the two-pass BwdMain: block b * tiles + j has tile j's phases, and
    the first blocks first sum the weight-gradient entries, a group of `warps` per block (bwd.h
    reduce_weight_grad, DwReduce's loop: LOOPS[("BwdMain", "sum_partials")]; groups beyond the
    grid go round again)."""
    B, warps = c.shape[0], threads // 32
    groups, grid = math.ceil((c.taps + 1) / warps), B * c.tiles
    out = []
    for j in range(c.tiles):
        red = [b * c.tiles + j for b in range(B) if b * c.tiles + j < groups]
        out += [(1, [ph for k in range(blk, groups, grid) for ph in dw_reduce_phases(c, k, partial_blocks, threads)]
                 + bwd_main_phases(c, j)) for blk in red]
        if B - len(red):
            out.append((B - len(red), bwd_main_phases(c, j)))
    return out


# ----------------------------------------------------------------------------- timing

def _loop(kernel: str, loop: str, elem: int) -> tuple[int, float]:
    entry = LOOPS[(kernel, loop)]
    i = 1 if elem == 2 else 0
    return entry.flight[i], entry.instr[i]


def stream_instructions(kernel: str, s: Stream, elem: int) -> float:
    """Instructions of the busiest thread in one loop (items, plus the kernel rows and pixels of a
    conv loop)."""
    entry, i = LOOPS[(kernel, s.loop)], 1 if elem == 2 else 0
    return s.items * entry.instr[i] + s.rows * entry.row[i] + s.pixels * entry.pixel[i]


def stream_seconds(kernel: str, s: Stream, elem: int, card: Card) -> float:
    """The busiest thread's time in one loop: round trips plus its instructions."""
    flight, _ = _loop(kernel, s.loop, elem)
    latency = {"dram": card.dram_latency, "l2": card.l2_latency, "smem": card.smem_latency, "alu": 0.0}[s.level]
    return math.ceil(s.items / flight) * latency + stream_instructions(kernel, s, elem) * card.cpi / card.clock_hz


def _segments_path(kernel: str, segments: list, elem: int, card: Card) -> float:
    return sum(rep * max(stream_seconds(kernel, s, elem, card) for s in streams) for rep, streams in segments)


def phase_path(kernel: str, p: Phase, elem: int, card: Card) -> float:
    """One block's latency path through a phase (its segments in turn; side-by-side streams wait
    for the slowest). With overlap work, the last segment (asynchronous copies) takes the larger
    of its round trip and its issue time plus the overlap work's path."""
    if not p.overlap:
        return _segments_path(kernel, p.segments, elem, card)
    *head, (rep, copies) = p.segments
    issue = rep * max(stream_instructions(kernel, s, elem) for s in copies) * card.cpi / card.clock_hz
    landed = max(_segments_path(kernel, [(rep, copies)], elem, card),
                 issue + _segments_path(kernel, p.overlap, elem, card))
    return _segments_path(kernel, head, elem, card) + landed


def phase_warp_instructions(kernel: str, p: Phase, elem: int) -> float:
    return sum(rep * math.ceil(s.threads / 32) * stream_instructions(kernel, s, elem)
               for rep, streams in p.segments + p.overlap for s in streams)


@dataclass
class PhaseTime:
    name: str
    seconds: float
    bound: str  # "bandwidth", "latency" or "issue"


@dataclass
class LaunchTime:
    kernel: str
    grid: int
    threads: int
    smem: int
    registers: int
    resident: int
    waves: float
    overlapped: bool
    seconds: float
    dram_bytes: float
    phases: list  # [PhaseTime], lock-step view (seconds summed over the waves)
    bound: str    # what limits the launch

    @property
    def limiting(self) -> PhaseTime:
        return max(self.phases, key=lambda p: p.seconds)


def time_launch(kernel: str, blocks_of: list, grid: int, threads: int, smem: int, elem: int, card: Card,
                registers: int = LAUNCH_BOUND_REGS) -> LaunchTime:
    """Time of one launch. blocks_of: [(count, [Phase])], the distinct blocks and how many of each."""
    R = resident_blocks(card.arch, threads, smem, registers)
    S = card.sms
    slots = R * S
    waves = grid / slots
    total_bytes = sum(n * sum(p.dram_read + p.dram_write for p in ph) for n, ph in blocks_of)
    # the slowest block sets each wave's pace
    slow = max((ph for _, ph in blocks_of), key=lambda ph: sum(phase_path(kernel, p, elem, card) for p in ph))
    names = [p.name for p in slow]
    per_sm_blocks = math.ceil(grid / S)
    mean_bytes = {nm: sum(n * p.dram_read + n * p.dram_write for n, ph in blocks_of for p in ph if p.name == nm) / grid
                  for nm in names}
    # every byte passes through L2: the DRAM traffic plus the L2 hits (halo rows, weights)
    mean_l2 = {nm: mean_bytes[nm] + sum(n * p.l2_read for n, ph in blocks_of for p in ph if p.name == nm) / grid
               for nm in names}
    mean_instr = {nm: sum(n * phase_warp_instructions(kernel, p, elem) for n, ph in blocks_of for p in ph
                          if p.name == nm) / grid for nm in names}
    # lock step: every wave runs phase by phase, each phase as slow as its worst limit
    phases = []
    full, last = divmod(grid, slots)
    wave_sizes = [slots] * full + ([last] if last else [])
    for p in slow:
        path = phase_path(kernel, p, elem, card)
        t_total, bounds = 0.0, {}
        for n in wave_sizes:
            per_sm = min(R, math.ceil(n / S))
            options = {"bandwidth": n * mean_bytes[p.name] / card.stream_bandwidth,
                       "L2 bandwidth": n * mean_l2[p.name] / card.l2_bandwidth, "latency": path,
                       "issue": per_sm * mean_instr[p.name] / (card.issue_width * card.clock_hz)}
            bound = max(options, key=options.get)
            t_total += options[bound]
            bounds[bound] = bounds.get(bound, 0) + options[bound]
        phases.append(PhaseTime(p.name, t_total, max(bounds, key=bounds.get)))
    lock_step = sum(p.seconds for p in phases)
    overlapped = R >= 2 and grid > slots
    if overlapped:
        options = {"bandwidth": total_bytes / card.stream_bandwidth,
                   "L2 bandwidth": grid * sum(mean_l2.values()) / card.l2_bandwidth,
                   "latency": math.ceil(per_sm_blocks / R) * sum(phase_path(kernel, p, elem, card) for p in slow),
                   "issue": per_sm_blocks * sum(mean_instr.values()) / (card.issue_width * card.clock_hz)}
        bound = max(options, key=options.get)
        seconds = min(lock_step, options[bound])
    else:
        seconds, bound = lock_step, None
    if bound is None or bound == "latency":
        lim = max(phases, key=lambda p: p.seconds)
        bound = f"{lim.name} ({lim.bound})"
    else:
        bound = f"all phases ({bound}, overlapped)"
    return LaunchTime(kernel, grid, threads, smem, registers, R, waves, overlapped, seconds, total_bytes, phases,
                      bound)


# ----------------------------------------------------------------------------- a call

LAYERS = {"har": ("mean", (3, 1)), "cbam": ("mean+max", (7, 7))}  # benchmarks/conftest.py Workload.layer
KERNEL_OF = {(False, 0): "FwdPool", (False, 1): "FwdMain", (True, 0): "BwdRho", (True, 1): "BwdMain",
             (True, 2): "DwReduce", (True, 3): "BwdMaps"}  # traits.h Kernel


def launch_kinds(backward: bool, two_pass: bool) -> list[int]:
    """traits.h Kernel of each launch of a call, in launch order (plan_call)."""
    if not backward:
        return [0, 1] if two_pass else [1]
    return [0, 3, 1] if two_pass else [1, 2]  # two pass: BwdMain's first blocks sum the weight gradient


def plan_call(shape, dtype, pool: str, kernel: tuple, backward: bool, arch: str, variant: int = 0, rows: int = 0,
              threads: int = 0):
    """The launches of one call as the CUDA op plans them (sam_fused.emulation.plan), or as a
    test variant (sam_fused.emulation's ONE_PASS_* constants) and the rows / threads overrides of
    the `_cuda_*_planned` ops force them."""
    from sam_fused import emulation

    t, _ = emulation.plan(shape, dtype, pool, kernel, backward, arch=arch, variant=variant, rows=rows, threads=threads)
    return t


@dataclass(frozen=True)
class Launch:
    """One launch of a call as the model sees it before any card timing: the kernel, its distinct
    blocks [(count, [Phase])], grid, threads, dynamic shared memory, element bytes, registers."""
    kernel: str
    blocks_of: list
    grid: int
    threads: int
    smem: int
    elem: int
    registers: int

    def time(self, card: Card) -> LaunchTime:
        return time_launch(self.kernel, self.blocks_of, self.grid, self.threads, self.smem, self.elem, card,
                           self.registers)


def call_launches(shape, dtype, pool: str, kernel: tuple, backward: bool, arch: str, registers: dict | None = None,
                  variant: int = 0, rows: int = 0, threads: int = 0):
    """(plan, [Launch]) of one call, planned by plan_call (tools/gpu_plan_sweep.py times the plans
    its overrides give)."""
    t = plan_call(shape, dtype, pool, kernel, backward, arch, variant, rows, threads)
    elem = dtype.itemsize
    kinds = launch_kinds(backward, t.two_pass)
    maps = t.launches[kinds.index(3)] if 3 in kinds else None
    c = Call(tuple(shape), elem, pool, tuple(kernel), t.rows, t.two_pass, t.vec, t.threads, t.px,
             maps.rows if maps else 0, t.staged_x, t.chunk_rows, t.sum_slots)
    B = shape[0]
    partial_blocks = maps.grid if maps else t.blocks  # blocks writing weight-gradient partials
    short = {4: "f32", 2: {"torch.bfloat16": "bf16"}.get(str(dtype), "f16"), 8: "f64"}[elem]
    out = []
    for kind, launch in zip(kinds, t.launches):
        name = KERNEL_OF[(backward, kind)]
        if name == "DwReduce":
            blocks_of = [(1, dw_reduce_phases(c, j, partial_blocks, launch.threads)) for j in range(launch.grid)]
            reg_key = f"DwReduce<{short}>"
        elif name == "BwdMaps":
            blocks_of = [(B, bwd_maps_phases(c, j)) for j in range(launch.tiles)]
            reg_key = f"BwdMaps<{short},i32>"
        else:
            build = {"FwdMain": fwd_main_phases, "FwdPool": fwd_pool_phases, "BwdMain": bwd_main_phases,
                     "BwdRho": bwd_rho_phases}[name]
            if name == "BwdMain" and c.two_pass:  # its first blocks also sum the weight gradient
                blocks_of = two_pass_main_blocks(c, partial_blocks, launch.threads)
            else:
                blocks_of = [(B, build(c, j)) for j in range(c.tiles)]
            # the two-pass main kernel is its own instantiation (bwd.h BwdMain<..., TwoPass>)
            reg_key = f"{name}<{short},NCHW,i32{',2pass' if name == 'BwdMain' and c.two_pass else ''}>"
        regs = (registers or {}).get(reg_key, LAUNCH_BOUND_REGS)
        out.append(Launch(name, blocks_of, launch.grid, launch.threads, launch.smem, elem, regs))
    return t, out


def launches_of_call(shape, dtype, pool: str, kernel: tuple, backward: bool, card: Card,
                     registers: dict | None = None, **plan_args) -> list[LaunchTime]:
    _, launches = call_launches(shape, dtype, pool, kernel, backward, card.arch, registers, **plan_args)
    return [launch.time(card) for launch in launches]


def device_seconds(launch_times: list[LaunchTime], card: Card) -> float:
    """Device time of a call's launches run back to back: theirs plus the card's gap per launch."""
    return sum(lt.seconds for lt in launch_times) + len(launch_times) * card.launch_gap


@dataclass
class Prediction:
    label: str
    case: str
    shape: tuple
    dtype: str
    plan: str
    launches: list  # [LaunchTime]
    device_seconds: float
    seconds: float           # device + launch overheads
    floor_fraction: float    # floor bytes / copy bandwidth / device seconds
    compile_seconds: float
    limiting: str


# torch.compile: Triton kernels at ~85% of copy bandwidth on ~3N e forward (a reduction kernel and
# a point-wise one) and ~5N e backward (reductions over C, then the point-wise gradient): an
# assumption (docs/design.md §3), not a measurement.
COMPILE_EFFICIENCY = 0.85
COMPILE_BYTES = {"fwd": 3, "bwd": 5, "fwdbwd": 8}      # x N e
COMPILE_LAUNCHES = {"fwd": 2, "bwd": 3, "fwdbwd": 5}
FLOOR = {"fwd": 2, "bwd": 3, "fwdbwd": 5}


def compile_seconds(case: str, numel: int, elem: int, card: Card) -> float:
    return (COMPILE_BYTES[case] * numel * elem / (COMPILE_EFFICIENCY * card.copy_bandwidth)
            + COMPILE_LAUNCHES[case] * card.launch_overhead)


def predict(label: str, layer: str, case: str, shape, dtype, card: Card, registers: dict | None = None) -> Prediction:
    pool, kernel = LAYERS[layer]
    launches = []
    plans = []
    for backward in {"fwd": (False,), "bwd": (True,), "fwdbwd": (False, True)}[case]:
        ls = launches_of_call(shape, dtype, pool, kernel, backward, card, registers)
        plans.append("2-pass" if len(ls) > 1 + backward else "1-pass")
        launches += ls
    device = device_seconds(launches, card)
    numel, elem = math.prod(shape), dtype.itemsize
    floor = FLOOR[case] * numel * elem / card.copy_bandwidth
    main = max(launches, key=lambda lt: lt.seconds)
    return Prediction(label, case, tuple(shape), str(dtype).removeprefix("torch."), "+".join(plans), launches, device,
                      device + len(launches) * card.launch_overhead, floor / device,
                      compile_seconds(case, numel, elem, card), f"{main.kernel}: {main.bound}")


def at_least_in_flight(n: int) -> dict:
    """LOOPS with every memory loop keeping at least n loads in flight (a what-if for rewrites)."""
    return {k: dataclasses.replace(v, flight=(max(n, v.flight[0]), max(n, v.flight[1]))) for k, v in LOOPS.items()}
