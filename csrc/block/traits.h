// Launch configuration of the block programs, shared by the CUDA dispatcher and the CPU
// emulation so both run the same grid, tiles and shared-memory layout (flash-attention style
// "kernel traits": every tunable number and per-arch choice lives here).
#pragma once
#include <algorithm>
#include <cstdint>
#include <numeric>

#include "../sam_math.h"
#include "limits.h"

namespace sam_fused::block {

// Tunables of the plan. Occupancy: kBlocksPerSm resident blocks (one block's loads overlap
// another's compute), fewer where threads or registers do not allow it. The kernels are
// compiled with __launch_bounds__(kMaxThreads, kBlocksPerSm), which caps their registers at
// kRegsPerThread (65536 / (256 * 2)) and their blocks at kMaxThreads threads.
constexpr int kThreads = 256;                 // threads per block (power of two, >= 64)
constexpr int kMaxThreads = 256;              // most threads a block may be launched with
// The two-pass forward (FwdPool, FwdMain) runs blocks of half as many threads over tiles of half
// as many elements: on an H100 its CBAM plans ran 1.05-1.34x faster than at 256 threads, rows
// chosen alike (tools/gpu_plan_sweep.py, docs/gpu-results.md).
constexpr int kTwoPassForwardThreads = 128;
// Elements of x per block worth one block's fixed costs. The two-pass backward takes half the
// forward's (its CBAM plans were the fastest timed on an H100); the one-pass backward takes the
// forward's in one wave (choose_rows' one_wave): on an H100, as CUDA-graph replays, UCI-HAR
// backwards at two 256-thread tiles per sample (256 blocks, 18432 elements each) were the
// fastest plans timed at (128, 64, 64, 9), (128, 128, 32, 9) and (128, 256, 16, 9), fp32 and
// bf16, and beat the former half-target two-wave plans by 1.12-1.25x (docs/gpu-results.md,
// 68460bd). The forward's 7x7 tiles would be halo-bound at half.
constexpr int64_t kTargetBlockElems = 16384, kTargetBlockElemsBackward = 8192;
constexpr int64_t kBlocksPerSm = 2;
constexpr int64_t kRegsPerThread = 128;
constexpr int kReduceThreads = 128;           // DwReduce: one warp per weight-gradient entry
// Memory-level parallelism (docs/design.md §3): a thread must keep several loads in flight to
// cover DRAM latency. The channel reductions load this many channels before using the first,
// the streaming write phases this many vectors before writing the first.
constexpr int kChannelUnroll = 8;
// The one-pass backward's rho over its tile rows with x read from global memory (g staged):
// only x is in flight, so fp32 takes twice the channels ahead (BwdMain 72 -> 96 registers, 87 now, still
// two blocks per SM). 16-bit data keeps kChannelUnroll: the registers would cost the PAMAP2 /
// USC-HAD bf16 backward a resident block (phase model: 85% -> 68% at (128,64,256,6)).
constexpr int kRhoUnroll = 16;
constexpr int kStreamUnroll = 4;
// The two-pass backward's main kernel: the grad_out vectors per thread in flight while it stages
// its maps (stream_tile_vectors' `ahead`; 0: none), for elements of T. An H100 timed its CBAM
// (32,64,56,56) fp32 kernel at 26.5 us with none ahead, 26.5 with 4 and 24.5 with 8 (Nsight
// Compute), the backward 1.03x faster at 64 and 256 channels (CUDA graphs); bf16 with 8 ran
// 1.7-2.5% slower in the same single round, so 16-bit data takes none (docs/gpu-results.md,
// tenth session). Registers with 8: BwdMain fp32 95 -> 94 (bf16 87 -> 94), two resident blocks.
template <typename T> constexpr int kStreamAhead = sizeof(T) >= 4 ? 8 : 0;
// Channel sums over a staged NCHW tile by 16-byte vectors (channel_sum_vectors): channels a
// thread loads before it adds the first, a vector from each source (x and g: two). 16-bit data
// takes 2: with 4, BwdMain bf16 needed 85 registers, 2 resident blocks instead of 3 (80 now).
constexpr int kSumUnroll = 4;
template <typename T> constexpr int kSumUnroll16 = sizeof(T) == 2 ? 2 : kSumUnroll;
// plan_sum_slots' costs, SASS instructions (sm_90, benchmarks/phase_loops.py): about 2 per
// element of a channel's vector, 6 per slot merged, 22-35 per pixel merged (index, emit).
constexpr int64_t kSumElemCost = 2, kSumSlotCost = 6, kSumPixelCost = 30;
// A staged tile can arrive in up to this many chunks of rows (Plan::chunks), each its own group
// of asynchronous copies: the channel reduction of chunk k runs while the later chunks land.
// Bounded by the groups cp.async.wait_group can name (an immediate) and by one wait and barrier
// per chunk. The planner stages one chunk: on an H100 the chunked UCI-HAR tiles ran 1.05-1.38x
// slower than the same tiles as one chunk (docs/gpu-results.md); Variant::kOnePassChunked keeps
// the chunks for tests and tuning.
constexpr int kStageChunks = 4;
// Horizontally adjacent pixels one thread convolves together (conv_row_block): each pooled value
// of a window row is loaded once for all of them.
constexpr int kConvBlock = 4;
// The kernel width whose forward conv is blocked (CBAM's 7x7): with each further width compiled
// in, ptxas gave FwdMain more than 64 registers, and so fewer blocks per SM (UCI-HAR's 3x1 conv
// is a small phase anyway).
constexpr int kBlockedConvWidth = 7;
// The kernel height whose kh x 1 forward conv is blocked down a column (the HAR layer's 3 x 1):
// kConvBlock vertically adjacent pixels of one column per thread (conv_column_block), each
// pooled value and weight loaded once for them, where one pixel at a time paid the tap loop's
// setup per kernel row (its conv and sigmoid phase was issue bound in a one-wave grid).
constexpr int kBlockedColumnHeight = 3;
// BwdMaps: pixels of a row a thread convolves together (one window and one weight row loaded
// for all of them); weight-gradient entries (taps of one kernel row) a warp sums at once
// (BwdMaps: the whole row for kw of 1 to 7).
constexpr int kMapRun = 4;
// BwdMaps' rows and weight rows are padded to a multiple of kMapVecAlign values: 16 bytes of
// fp32 (two 16-byte vectors of fp64).
constexpr int kMapVecAlign = 4;
static_assert(kMapRun % kMapVecAlign == 0, "a run starts on a whole vector");
constexpr int kTapGroup = 8;
// BwdMaps' map tiles (plan_maps): relative issue cost per pixel of the s conv (done on the tile
// and its halo rows) and of gamma plus the weight-gradient partials (tile only), from the
// instructions of their loops in the sm_90 SASS (benchmarks/phase_loops.py: 7x7 mean+max, about
// 240 and 670 per pixel).
constexpr int64_t kMapHaloCost = 1, kMapTileCost = 3;

// How a call is cut into blocks and how a block's buffers are laid out (byte offsets). The
// map buffers (weights, pooled rows q, s, rho/delta d, gamma maps, argmax) live in shared
// memory, or with `spill` in the block's region of a global scratch buffer (rows so wide that
// not even one row's maps fit); the channel-reduction partials and the staged tile are always
// in shared memory.
struct Plan {
  int threads = kThreads;
  int64_t rows = 1;        // rows of one sample per block (the tile); the last tile may be shorter
  int64_t tiles = 1;       // tiles per sample
  int64_t blocks = 0;      // blocks of the main kernel = B * tiles
  bool two_pass = false;   // a separate channel-reduction kernel runs first
  bool staged = false;     // the main kernel keeps its x (fwd) / grad_out (bwd) tile in shared memory
  bool staged_x = false;   // one-pass backward: its x tile too (rho then reads both tiles from shared memory)
  bool spill = false;      // map buffers in global scratch (spill_bytes per block), not shared memory
  int vec = 1;             // elements per vector access of x-shaped tensors (1 or 16 / elem_size)
  // Staged one-pass tiles: copied in `chunks` groups of chunk_rows rows (the last may be shorter;
  // a short last tile leaves later groups empty), each a whole number of vectors per channel.
  int chunks = 1;
  int64_t chunk_rows = 1;
  // Forward, a kBlockedColumnHeight x 1 kernel: convolve column groups (conv_column_block), chosen
  // where a tile has more pixels than threads (else blocking cannot shorten any thread's path).
  bool column_conv = false;
  // NCHW, staged, vector accesses, a reduction of sums only (a mean pool; rho without the
  // argmax): the tile rows' channel reduction reads 16-byte vectors (channel_sum_vectors) with
  // sum_slots channel slots (plan_sum_slots); 0: element by element (channel_reduce).
  int sum_slots = 0;
  SAM_FUSED_HD bool sum_vectors() const { return sum_slots > 0; }
  int px = 32, cs = 1;     // channel reduction: pixels per round x channel slots = threads
  int64_t off_w = 0, off_q = 0, off_s = 0, off_d = 0, off_gmean = 0, off_gmax = 0, off_amax = 0, off_part = 0,
          off_tile = 0, off_xtile = 0, smem_bytes = 0, spill_bytes = 0;
  int64_t partials = 0;    // backward: blocks that write weight-gradient partials (BwdMaps' or the main kernel's)
  // Two-pass backward: BwdMaps, the per-pixel map kernel between pass 1 and the main kernel.
  // A block owns `rows` rows of one sample's maps; its buffers (weights, pooled rows with a 2rh
  // halo, delta rows with an rh halo) are zero-padded, left_pad columns on the left (rw rounded up
  // to whole 16-byte vectors of fp32, kMapVecAlign: a map row starts on a vector) and `width` in
  // all, so its conv loops need no bounds tests. The loops read a run's window as whole vectors
  // from the one it starts in: width = W + left_pad + rw + kMapRun + 2, rounded up to whole
  // vectors, keeps the overrun in the row, then widened to spread a warp's rows over the banks
  // (place_map_buffers). A kernel row's weights take kw_padded entries.
  struct Maps {
    int64_t rows = 0, tiles = 0, blocks = 0, width = 0, left_pad = 0, kw_padded = 0;
    bool spill = false;  // buffers in global scratch (spill_bytes per block)
    int64_t off_w = 0, off_q = 0, off_d = 0, smem_bytes = 0, spill_bytes = 0;
  } maps;
};

// kOnePass: one pass, planned as plan_launch plans it (x tile not staged, one chunk);
// kOnePassStagedX stages the backward's x tile too (where it fits the opt-in maximum),
// kOnePassUnstagedX does not (as the planner);
// kOnePassChunked: one pass, the staged tile copied in chunks (plan_chunks) where the planner
// copies it as one;
// kTwoPassStaged: two passes, the forward's second pass staging its x tile by asynchronous copies
// first, so that its DRAM reads overlap the pooled-map loads and the conv, which otherwise run
// while DRAM idles in a one-wave grid (the backward: as kTwoPass). Untimed on a GPU: the plan sweep
// (tools/gpu_plan_sweep.py) times it beside the others.
enum class Variant : int {
  kAuto = 0,
  kOnePass = 1,
  kTwoPass = 2,
  kOnePassStagedX = 3,
  kOnePassUnstagedX = 4,
  kOnePassChunked = 5,
  kTwoPassStaged = 6
};

// Test/tuning overrides (the CUDA op always passes the defaults).
struct Overrides {
  Variant variant = Variant::kAuto;
  int64_t rows = 0;  // 0: choose
  int threads = 0;   // 0: kThreads
};

namespace detail {
using ::sam_fused::ceil_div;
inline int64_t pow2_at_least(int64_t v) {
  int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}
inline int64_t align16(int64_t v) { return (v + 15) / 16 * 16; }
}  // namespace detail

// Pixels per round and channel slots of the channel reduction: NCHW puts consecutive pixels
// on consecutive lanes (a channel's row is contiguous), NHWC puts consecutive channels there.
// NCHW: px pixels per round, cs = threads / px channel slots. Each thread's channels cost
// ceil(C / (cs * kChannelUnroll)) dependent round trips per round, so the split with the fewest
// round trips over the block's reductions wins: the tile rows, then (halo_apart: the halo is
// reduced on its own, while the tile lands) the halo rows. On a tie, the most pixels per round
// (fewer merges and barriers).
inline void plan_reduction(Plan& p, const Geometry& s, int64_t tile_pixels, int64_t halo_pixels, bool halo_apart) {
  using namespace detail;
  if (s.channels_last) {
    p.cs = int(std::min<int64_t>(32, pow2_at_least(s.C)));
    p.px = p.threads / p.cs;
    return;
  }
  int64_t best = -1;
  for (int px = p.threads; px >= 32; px /= 2) {
    const int64_t trips = ceil_div(s.C, int64_t(p.threads / px) * kChannelUnroll);
    const int64_t rounds = halo_apart ? ceil_div(tile_pixels, int64_t(px)) + ceil_div(halo_pixels, int64_t(px))
                                      : ceil_div(tile_pixels + halo_pixels, int64_t(px));
    if (best < 0 || rounds * trips < best) best = rounds * trips, p.px = px;
  }
  p.cs = p.threads / p.px;
}

// Whether a plan's tile reductions may read 16-byte vectors (Plan::sum_vectors(), once the vector
// width is chosen): a staged NCHW tile whose reduction needs only sums (the forward's mean pool;
// the backward's rho without an argmax: no max pool).
inline bool may_sum_vectors(const Plan& p, const Geometry& s) {
  return p.staged && !p.two_pass && !s.channels_last && s.pool.max_slot() < 0;
}

// Bytes of one block's channel-reduction partials: ChanPartial<A> (sum, max, index) per thread,
// or with vector sums the 16 / elem_bytes sums of each thread's vector (16-bit data: twice as
// many bytes).
inline int64_t partial_bytes(int threads, int64_t acc_bytes, int64_t elem_bytes, bool vector_sums) {
  const int64_t per_thread = std::max<int64_t>(2 * acc_bytes + 8, vector_sums ? 16 / elem_bytes * acc_bytes : 0);
  return detail::align16(threads * per_thread);
}

// Lays out the buffers of a main-kernel block of R rows (16-byte aligned pieces); sets the
// offsets, smem_bytes and spill_bytes.
inline void place_buffers(Plan& p, const Geometry& s, int64_t R, int64_t elem_bytes, int64_t acc_bytes, bool backward) {
  using namespace detail;
  const int64_t W = s.W, rh = s.kh / 2, nw = s.taps() + 1;
  int64_t smem = 0, scratch = 0;
  auto take = [&](int64_t bytes, bool map) {
    int64_t& at = map && p.spill ? scratch : smem;
    const int64_t o = at;
    at += align16(bytes);
    return o;
  };
  p.off_w = take(nw * acc_bytes, true);
  if (!backward) {
    p.off_q = take(s.pool.P * (R + 2 * rh) * W * acc_bytes, true);  // pooled rows incl. halo
    p.off_s = take(R * W * acc_bytes, true);
  } else {
    // two pass: BwdMaps computed the maps, the main kernel stages the tile's s, gamma, argmax
    const bool conv = !p.two_pass;
    p.off_q =
        take(conv ? s.pool.P * (R + 4 * rh) * W * acc_bytes : 0, true);  // pooled rows feeding s on the delta rows
    p.off_d = take(conv ? (R + 2 * rh) * W * acc_bytes : 0, true);  // rho, then delta, on tile + halo rows
    p.off_s = take(R * W * acc_bytes, true);
    p.off_gmean = take(R * W * acc_bytes, true);
    p.off_gmax = take(R * W * acc_bytes, true);
    p.off_amax = take(R * W * 4, true);
  }
  p.off_part =
      take(backward && p.two_pass ? 0 : partial_bytes(p.threads, acc_bytes, elem_bytes, may_sum_vectors(p, s)), false);
  p.off_tile = take(p.staged ? R * s.C * W * elem_bytes : 0, false);
  p.off_xtile = take(p.staged_x ? R * s.C * W * elem_bytes : 0, false);
  p.smem_bytes = smem;
  p.spill_bytes = p.spill ? scratch : 0;
}

// Most rows (<= H) whose main-kernel shared memory fits `budget` bytes (buffers grow with
// the rows), 0 when not even one row does.
inline int64_t rows_within(Plan p, const Geometry& s, int64_t elem_bytes, int64_t acc_bytes, bool backward,
                           int64_t budget) {
  int64_t lo = 0, hi = std::max<int64_t>(1, s.H);
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    place_buffers(p, s, mid, elem_bytes, acc_bytes, backward);
    if (p.smem_bytes <= budget) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// Rows per tile: enough work per block (the target elements scale with the block's threads),
// enough blocks, and within `fit_rows`; at least
// `min_rows` (a staged one-pass tile: the rows its halo needs). Rounded so a tile of NCHW rows
// is a whole number of vectors where possible. `one_wave` (the one-pass backward): the
// forward's target, and no more tiles per sample than one wave of `min_blocks` holds.
inline int64_t choose_rows(const Geometry& s, int64_t min_blocks, int64_t elem_bytes, int64_t fit_rows,
                           int64_t min_rows, bool backward, int threads, bool one_wave = false,
                           int64_t optin_rows = 0) {
  using namespace detail;
  const int64_t row_elems = std::max<int64_t>(1, s.C * s.W);
  const int64_t target = (backward && !one_wave ? kTargetBlockElemsBackward : kTargetBlockElems) * threads / kThreads;
  int64_t rows = std::max<int64_t>(1, target / row_elems);
  const int64_t B = std::max<int64_t>(1, s.B);
  const int64_t tiles_wanted = one_wave ? std::max<int64_t>(1, min_blocks / B) : ceil_div(min_blocks, B);
  const int64_t wave_rows = std::max<int64_t>(1, ceil_div(s.H, tiles_wanted));
  rows = std::min(rows, wave_rows);
  rows = std::max(rows, min_rows);
  rows = std::min({rows, fit_rows, s.H});
  // NCHW: a tile is one run of rows*W elements per channel. Runs of whole 32-byte sectors
  // (else whole 16-byte vectors) keep warp accesses coalesced: round up if that fits (up to the
  // whole sample: all its channels then form one run), else down. A whole sample that rounding
  // up reaches but only the opt-in maximum holds (`optin_rows`, the one-pass tiles; one block per
  // SM) is taken too: on an H100, as CUDA-graph replays in two sessions, UCI-HAR (128, 512, 8, 9)
  // fp32 ran 1.23-1.31x faster forward and 1.07-1.09x backward at 8 rows than at the two 4-row
  // tiles that two blocks per SM allow (docs/design.md §8, UCI-HAR block 4).
  // One wave: first the coarsest unit whose rounding up keeps the wave (bf16 (128,256,16,9):
  // 16-byte runs of 8 rows, not 32-byte ones of 16 rows in half the blocks).
  if (!s.channels_last && rows < s.H) {
    auto rounded = [&](int64_t unit, int64_t* up, int64_t* down) {
      const int64_t step = unit / std::gcd<int64_t>(unit, std::max<int64_t>(1, s.W));
      *up = std::min(ceil_div(rows, step) * step, s.H), *down = rows / step * step;
    };
    int64_t up, down;
    rounded(32 / elem_bytes, &up, &down);
    if (up == s.H && fit_rows < s.H && s.H <= optin_rows) return s.H;
    if (one_wave)
      for (const int64_t unit : {32 / elem_bytes, 16 / elem_bytes}) {
        rounded(unit, &up, &down);
        if (up <= std::min(fit_rows, wave_rows)) return up;
      }
    for (const int64_t unit : {32 / elem_bytes, 16 / elem_bytes}) {
      rounded(unit, &up, &down);
      if (up <= fit_rows) return up;
      if (down >= 1) return down;
    }
  }
  return std::max<int64_t>(1, rows);
}

// The vector width for x-shaped tensors: 128-bit when every segment a block touches starts and
// ends on a 16-byte boundary (pointers are checked by the caller), else scalar. The staged
// tile then holds whole 16-byte vectors at 16-byte aligned offsets (off_tile is aligned).
inline int choose_vec(const Geometry& s, int64_t rows, int64_t elem_bytes, bool pointers_aligned) {
  const int64_t v = 16 / elem_bytes;
  const bool ok = s.channels_last ? (s.W * s.C) % v == 0 : (s.H * s.W) % v == 0 && (rows * s.W) % v == 0;
  return pointers_aligned && ok ? int(v) : 1;
}

// The fewest rows of a one-pass tile (its halo is re-read from L2 by the neighbouring tiles'
// blocks): below it, two passes over x win. The backward re-reads 2 rh halo rows of x and
// grad_out and recomputes s, delta over them: rows >= 4 rh (re-reads <= 50%). The forward pools
// its rh halo rows from global memory, in dependent rounds while the block waits. The phase
// model put the crossover at rows >= 2 rh / 3 (re-reads <= 3x the tile); the first GPU run
// (H100, docs/gpu-results.md) measured otherwise: the one-pass 7x7 forwards, tiles of 2 and 4
// rows, reached 21-25% of copy bandwidth at CBAM (32,64,56,56) fp32 and bf16 and (32,256,56,56)
// bf16, where the two-pass 7x7 forward at (32,256,56,56) fp32 reached 45% (67% of its own 3N
// bytes) and the one-pass 3x1 forwards (halo 2 rows) 53-62%. So a forward with a kernel taller
// than 3 rows takes one pass only for a whole sample (no halo), else two; a 3x1 forward any
// tile. The second GPU session's plan sweep confirmed it: every one-pass 7x7 forward plan was
// slower than the two-pass ones (CBAM (32,64,56,56) fp32 86.8 -> 56.0 us).
inline int64_t one_pass_min_rows(int64_t rh, int64_t H, bool backward) {
  if (backward) return std::max<int64_t>(1, 4 * rh);
  return rh > 1 ? std::max<int64_t>(1, H) : 1;
}

// Blocks of `threads` threads that can be resident on one SM of `dev` (at most kBlocksPerSm).
inline int64_t resident_blocks(const DeviceLimits& dev, int threads) {
  const int64_t by_threads = dev.max_threads_per_sm / threads, by_regs = dev.regs_per_sm / (threads * kRegsPerThread);
  return std::max<int64_t>(1, std::min({kBlocksPerSm, by_threads, by_regs}));
}

// Chunks of a staged tile (Plan::chunks, chunk_rows): up to kStageChunks groups of rows, each
// a whole number of vectors in every channel's run (NCHW: chunk_rows * W a multiple of vec), so
// each chunk's copies are the same 16-byte copies as the whole tile's. NCHW tiles of scalar
// accesses (vec 1, the unaligned fallback) stay one chunk: stage_tile_chunks gives each run's
// part 8 lanes, the lanes of one shared-memory pass of 16-byte accesses, where narrower ones
// are served a whole warp at a time and parts of different runs would share its banks. A
// backward grid of more than one wave (at the resident blocks the plan assumes) stays one
// chunk too: its tiles are sized for blocks that overlap their phases anyway
// (kTargetBlockElemsBackward), and chunks would only add copy issue and barriers (the phase
// model, docs/design.md §3: UCI-HAR (128, 64, 64, 9) bf16 80% -> 79%, PAMAP2 88% -> 85%).
// Returns the rows per chunk that chunking would give (chunked or not): plan_sum_slots' unit.
inline int64_t plan_chunks(Plan& p, const Geometry& s, const DeviceLimits& dev, bool backward, bool chunked) {
  using namespace detail;
  const int64_t step = s.channels_last ? 1 : p.vec / std::gcd<int64_t>(p.vec, std::max<int64_t>(1, s.W));
  const bool one_wave = p.blocks <= std::max<int64_t>(1, dev.sms) * resident_blocks(dev, p.threads);
  int64_t rows = p.rows;
  if (p.staged && (s.channels_last || p.vec > 1) && (!backward || one_wave))
    rows = std::min(p.rows, ceil_div(ceil_div(p.rows, int64_t(kStageChunks)), step) * step);
  p.chunk_rows = chunked ? rows : p.rows;
  p.chunks = int(ceil_div(p.rows, p.chunk_rows));
  return rows;
}

// Channel slots of the vector sums (channel_sum_vectors: threads / sum_slots lanes per slot take
// up to that many vectors of each channel's run at a time; a power of two, at most threads / 8,
// so the lanes are whole 8-lane groups): the count with the least work for the busiest thread
// over a chunk, per block of vectors its channels (a vector each) and then its share of the
// merge (the slots of each pixel it adds; more slots, shorter channel chains but longer merges).
// From the chunk rows chunking gives, whatever the variant: a pixel then sums its channels in
// the same order however its tile is chunked (the results do not depend on the chunks).
inline int plan_sum_slots(const Plan& p, const Geometry& s, int64_t chunk_rows) {
  using namespace detail;
  const int64_t V = std::max(1, p.vec), T = p.threads;
  const int64_t nv = std::max<int64_t>(1, chunk_rows * s.W / V);
  int64_t best = -1;
  int slots = 1;
  for (int64_t q = 1; q <= T / 8; q *= 2) {
    const int64_t vl = T / q;
    const int64_t cost = ceil_div(nv, vl) * (ceil_div(s.C, q) * kSumElemCost * V +
                                             ceil_div(V * vl, T) * (kSumSlotCost * q + kSumPixelCost));
    if (best < 0 || cost < best) best = cost, slots = int(q);
  }
  return slots;
}

// Shared memory one block may use so that the resident blocks of `threads` threads share an SM,
// never above the opt-in maximum.
inline int64_t block_budget(const DeviceLimits& dev, int threads) {
  return std::min(dev.smem_per_block_optin,
                  dev.smem_per_sm / resident_blocks(dev, threads) - dev.smem_reserved_per_block);
}

// One-pass backward: stage the x tile beside grad_out's? rho over the tile rows then reads both
// from shared memory (the x tile by asynchronous copies, all of a thread's in flight at once).
// Only where asked (Variant::kOnePassStagedX) and where it fits the opt-in maximum: on an H100
// the planner's staged UCI-HAR backward plans ran 1.03-1.29x slower than the same tiles with x
// read by the reduction in 5 of 6 cases (one, bf16 (128, 256, 16, 9), 1.11x faster;
// docs/gpu-results.md).
inline bool stage_x_tile(const Plan& p, const Geometry& s, const DeviceLimits& dev, int64_t elem_bytes,
                         int64_t acc_bytes, Variant v) {
  if (v != Variant::kOnePassStagedX) return false;
  Plan q = p;
  q.staged_x = true;
  place_buffers(q, s, p.rows, elem_bytes, acc_bytes, true);
  return q.smem_bytes <= dev.smem_per_block_optin;
}

// The launch plan of one call on `dev` (docs/design.md §3). Shared memory per block is held to
// what lets the resident blocks share an SM (`budget`), and never above the opt-in maximum:
// one pass when a staged tile of one_pass_min_rows rows (or the whole sample)
// fits the budget with all its buffers; otherwise two passes over x (3N bytes fwd, 4N bwd)
// with as many rows as fit (no halo minimum), else as many as fit the opt-in maximum, else
// the map buffers in global scratch. return_map never stages anything (the forward does not
// re-read x; the backward reads no grad_out tile).
inline Plan plan_launch(const Geometry& s, const DeviceLimits& dev, int64_t elem_bytes, int64_t acc_bytes,
                        bool backward, bool pointers_aligned, const Overrides& o) {
  using namespace detail;
  Plan p;
  p.threads = o.threads ? o.threads : kThreads;
  const int64_t optin = dev.smem_per_block_optin;
  int64_t budget = block_budget(dev, p.threads);
  const int64_t rows_needed = std::min<int64_t>(s.H, one_pass_min_rows(s.kh / 2, s.H, backward));
  auto fit = [&](bool staged, int64_t limit) {
    Plan q = p;
    q.staged = staged;
    return rows_within(q, s, elem_bytes, acc_bytes, backward, limit);
  };
  if (s.return_map) p.two_pass = false;
  else if (o.variant != Variant::kAuto)
    p.two_pass = o.variant == Variant::kTwoPass || o.variant == Variant::kTwoPassStaged;
  else p.two_pass = fit(true, budget) < rows_needed;
  if (p.two_pass && !backward && !o.threads) {
    p.threads = kTwoPassForwardThreads;
    budget = block_budget(dev, p.threads);
  }
  const int64_t resident = resident_blocks(dev, p.threads);
  // a staged two-pass forward tile needs no halo rows, but at least one row within the opt-in maximum
  const bool staged_two_pass = p.two_pass && !backward && o.variant == Variant::kTwoPassStaged && fit(true, optin) >= 1;
  p.staged = !s.return_map && (!p.two_pass || staged_two_pass);
  const int64_t min_rows = p.staged && !p.two_pass ? rows_needed : 1;
  int64_t fit_rows = fit(p.staged, budget);
  const int64_t optin_rows = fit(p.staged, optin);
  if (fit_rows < min_rows) fit_rows = std::max(fit_rows, optin_rows);
  if (fit_rows < min_rows && !p.staged) fit_rows = s.H;  // maps spill to global scratch below
  p.rows = o.rows ? std::min(o.rows, std::max<int64_t>(1, s.H))
                  : choose_rows(s, dev.sms * resident, elem_bytes, std::max<int64_t>(1, fit_rows), min_rows, backward,
                                p.threads, backward && !p.two_pass, p.staged && !p.two_pass ? optin_rows : 0);
  p.tiles = ceil_div(std::max<int64_t>(1, s.H), p.rows);
  p.blocks = s.B * p.tiles;
  p.vec = choose_vec(s, p.rows, elem_bytes, pointers_aligned);
  // The channel reductions of a block: its tile rows and, in the one-pass kernels, the halo
  // rows (none for the backward with return_map; the two-pass kernels reduce the tile in pass 1).
  const int64_t halo = p.two_pass || (s.return_map && backward) ? 0 : s.kh / 2;
  plan_reduction(p, s, p.rows * s.W, 2 * halo * s.W, p.staged);
  const int64_t natural_chunk_rows = plan_chunks(p, s, dev, backward, o.variant == Variant::kOnePassChunked);
  p.column_conv = !backward && s.kw == 1 && s.kh == kBlockedColumnHeight && p.rows * s.W > p.threads;
  p.sum_slots = may_sum_vectors(p, s) && p.vec > 1 ? plan_sum_slots(p, s, natural_chunk_rows) : 0;
  if (backward && p.staged) p.staged_x = stage_x_tile(p, s, dev, elem_bytes, acc_bytes, o.variant);
  place_buffers(p, s, p.rows, elem_bytes, acc_bytes, backward);
  if (p.smem_bytes > optin) {
    p.spill = true;
    place_buffers(p, s, p.rows, elem_bytes, acc_bytes, backward);
  }
  return p;
}

// Bytes of a BwdMaps block of R map rows (Plan::Maps): its buffers, 16-byte aligned, in shared
// memory or (spill) in the block's scratch region.
inline int64_t place_map_buffers(Plan::Maps& m, const Geometry& s, int64_t R, int64_t acc_bytes) {
  using namespace detail;
  const auto whole_vectors = [](int64_t n) { return (n + kMapVecAlign - 1) / kMapVecAlign * kMapVecAlign; };
  m.kw_padded = whole_vectors(s.kw);
  const int64_t rh = s.kh / 2, nw = s.pool.P * s.kh * m.kw_padded + 1;
  m.left_pad = whole_vectors(s.kw / 2);
  m.width = whole_vectors(s.W + m.left_pad + s.kw / 2 + kMapRun + 2);  // see Plan::Maps
  // Lanes take consecutive runs, a row's runs then the next row's: with a row of width
  // granules (16 bytes) congruent mod 8 to its runs' granules, any 8 lanes' 16-byte accesses at
  // one offset fall on distinct banks, as in an unpadded layout (an H100 counted 27% excess
  // shared wavefronts in BwdMaps' window loads at CBAM's 56 columns, 72 padded).
  // The fewest granules that make it so (fp64: an even number, whole kMapVecAlign steps).
  const int64_t per_vec = 16 / acc_bytes, run_granules = ceil_div(s.W, kMapRun) * kMapRun / per_vec;
  m.width += ((run_granules - m.width / per_vec) % 8 + 8) % 8 * per_vec;
  m.off_w = 0;
  m.off_q = align16(nw * acc_bytes);
  m.off_d = m.off_q + align16(s.pool.P * (R + 4 * rh) * m.width * acc_bytes);  // pooled rows, 2rh halo
  return m.off_d + align16((R + 2 * rh) * m.width * acc_bytes);  // rho, then delta, rh halo
}

// BwdMaps' plan (two-pass backward). A block's work is kMapTileCost per tile pixel plus
// kMapHaloCost per pixel of the rows s is computed on (the tile and its rh halo rows: the halo
// is computed twice). Its blocks are latency bound, not issue bound: on an H100 the CBAM
// (32,64,56,56) fp32 plan of 14-row tiles (128 blocks: one 8-warp block per SM) took 24.4 us
// where issue alone predicted 8.2, at 12% achieved occupancy (docs/gpu-results.md). So the
// blocks an SM holds at once (resident: registers, threads, shared memory) take about as long
// as one, and the rows minimise ceil(blocks per SM / resident) * one block's work (ties: the
// busiest SM's total work). Tiles whose buffers fit the budget of a resident block, else the
// opt-in maximum, else the buffers spill to global scratch. A test override of the rows
// (Overrides::rows) sets the map rows too.
inline void plan_maps(Plan& p, const Geometry& s, const DeviceLimits& dev, int64_t acc_bytes, int64_t budget,
                      int64_t forced_rows) {
  using namespace detail;
  Plan::Maps& m = p.maps;
  const int64_t H = std::max<int64_t>(1, s.H), rh = s.kh / 2, sms = std::max<int64_t>(1, dev.sms);
  const int64_t one_row = place_map_buffers(m, s, 1, acc_bytes);
  m.spill = one_row > dev.smem_per_block_optin;
  const int64_t limit = one_row <= budget ? budget : dev.smem_per_block_optin;
  int64_t best = -1, best_work = -1;
  for (int64_t r = 1; r <= H; ++r) {
    const int64_t bytes = place_map_buffers(m, s, r, acc_bytes);
    if (!m.spill && bytes > limit) break;
    const int64_t per_sm = ceil_div(s.B * ceil_div(H, r), sms);
    const int64_t by_smem = m.spill ? kBlocksPerSm : dev.smem_per_sm / (bytes + dev.smem_reserved_per_block);
    const int64_t resident = std::max<int64_t>(1, std::min(resident_blocks(dev, p.threads), by_smem));
    const int64_t block = kMapHaloCost * std::min(H, r + 2 * rh) + kMapTileCost * r;
    const int64_t cost = ceil_div(per_sm, resident) * block, work = per_sm * block;
    if (best < 0 || cost < best || (cost == best && work < best_work)) best = cost, best_work = work, m.rows = r;
  }
  if (forced_rows) m.rows = std::min(forced_rows, H);
  m.tiles = ceil_div(H, m.rows);
  m.blocks = s.B * m.tiles;
  const int64_t bytes = place_map_buffers(m, s, m.rows, acc_bytes);
  m.spill = m.spill || bytes > dev.smem_per_block_optin;
  m.smem_bytes = m.spill ? 0 : bytes;
  m.spill_bytes = m.spill ? bytes : 0;
}

// The kernels of one call, in launch order, with their grid, block and dynamic shared memory.
enum class Kernel : int { kPass1 = 0, kMain = 1, kReduce = 2, kMaps = 3 };
struct Launch {
  Kernel kernel;
  int64_t grid;
  int threads;
  int64_t smem_bytes;
};

// Global workspace of one call (byte offsets): the backward's weight-gradient partials
// [taps + 1, partial blocks] and, two pass, rho and argmax maps [B, H, W] (pass 1), the s map
// [B, H, W] and gamma maps [B, P, H, W] (BwdMaps); the spilled map buffers of the main kernel
// and of BwdMaps.
struct Workspace {
  int64_t partials = 0, rho = 0, amax = 0, sig = 0, gamma = 0, scratch = 0, map_scratch = 0, bytes = 0;
};

struct CallPlan {
  Plan p;
  Launch launches[4];
  int n_launches = 0;
  Workspace ws;
  bool index64 = false;
};

// 32-bit offsets unless a tensor or buffer some kernel indexes comes near 2^31 elements
// (loops step past the end by up to a block of vectors, hence the margin).
inline bool needs_index64(int64_t largest_elems) { return largest_elems >= (int64_t(1) << 31) - (int64_t(1) << 20); }

// Everything the host decides for one call, for the CUDA launcher and the emulation alike.
// Backward, two pass: BwdRho (rho, argmax), BwdMaps (s, gamma, weight-gradient partials: each
// pixel's maps once), the main kernel (a pure stream over grad_out; its first blocks sum the
// partials); one pass: the main kernel, DwReduce.
inline CallPlan plan_call(const Geometry& s, const DeviceLimits& dev, int64_t elem_bytes, int64_t acc_bytes,
                          bool backward, bool pointers_aligned, const Overrides& o, bool force_index64) {
  using namespace detail;
  CallPlan c;
  Plan& p = c.p;
  p = plan_launch(s, dev, elem_bytes, acc_bytes, backward, pointers_aligned, o);
  const bool maps_kernel = backward && p.two_pass;
  if (maps_kernel) plan_maps(p, s, dev, acc_bytes, block_budget(dev, p.threads), o.rows);
  p.partials = maps_kernel ? p.maps.blocks : p.blocks;
  const int64_t maps = s.B * s.H * s.W, nw = s.taps();
  int64_t at = 0;
  auto take = [&](int64_t bytes) {
    const int64_t o2 = at;
    at += align16(bytes);
    return o2;
  };
  if (backward) {
    c.ws.partials = take((nw + 1) * p.partials * acc_bytes);
    c.ws.rho = take(p.two_pass ? maps * acc_bytes : 0);
    c.ws.amax = take(p.two_pass ? maps * 4 : 0);
    c.ws.sig = take(maps_kernel ? maps * acc_bytes : 0);
    c.ws.gamma = take(maps_kernel ? s.pool.P * maps * acc_bytes : 0);
  }
  c.ws.scratch = take(p.blocks * p.spill_bytes);
  c.ws.map_scratch = take(p.maps.blocks * p.maps.spill_bytes);
  c.ws.bytes = at;
  if (p.two_pass)
    c.launches[c.n_launches++] = {Kernel::kPass1, p.blocks, p.threads,
                                  partial_bytes(p.threads, acc_bytes, elem_bytes, false)};
  if (maps_kernel) c.launches[c.n_launches++] = {Kernel::kMaps, p.maps.blocks, p.threads, p.maps.smem_bytes};
  c.launches[c.n_launches++] = {Kernel::kMain, p.blocks, p.threads, p.smem_bytes};
  // the two-pass main kernel sums BwdMaps' partials itself (its first blocks): one launch fewer
  if (backward && !p.two_pass)
    c.launches[c.n_launches++] = {Kernel::kReduce, ceil_div(nw + 1, kReduceThreads / 32), kReduceThreads, 0};
  // Largest index any kernel forms: x-shaped tensors, the pooled and gamma maps (P > C is
  // possible), the workspace maps, the weight-gradient partials and one block's spilled buffers.
  const int64_t largest = std::max({s.B * s.C * s.H * s.W, s.B * s.pool.P * s.H * s.W, maps, (nw + 1) * p.partials,
                                    p.spill_bytes / 4, p.maps.spill_bytes / 4});
  c.index64 = force_index64 || needs_index64(largest);
  return c;
}

}  // namespace sam_fused::block
