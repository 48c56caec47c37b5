// Launch configuration of the block programs, shared by the CUDA dispatcher and the CPU
// emulation so both run the same grid, tiles and shared-memory layout (flash-attention style
// "kernel traits": every tunable number and per-arch choice lives here).
#pragma once
#include <algorithm>
#include <cstdint>
#include <numeric>

#include "../sam_math.h"

namespace sam::block {

// Per-architecture choices. The staged tile budget leaves room for two blocks per SM, so one
// block's loads overlap another's compute.
struct ArchTraits {
  int threads;                // threads per block (power of two, >= 64)
  int64_t tile_smem_bytes;    // budget for the staged x (forward) or grad_out (backward) tile
  int64_t target_block_elems; // elements of x per block worth one block's fixed costs
  int64_t min_blocks;         // blocks wanted to fill the device
};

inline ArchTraits arch_traits(int sm_major) {
  if (sm_major >= 9) return {256, 96 * 1024, 16384, 264};  // H100: 228 KB smem / SM, 132 SMs
  if (sm_major == 8) return {256, 80 * 1024, 16384, 216};  // A100: 164 KB smem / SM, 108 SMs
  return {256, 40 * 1024, 8192, 160};                      // older: 96 KB smem / SM
}

// Shape of one call as the kernels see it.
struct Shape {
  int64_t B, C, H, W;
  int kh, kw, P, mean_slot, max_slot;
  bool channels_last, return_map;
  SAM_HD int64_t taps() const { return int64_t(P) * kh * kw; }  // weight gradient entries (bias is one more)
};

// How a call is cut into blocks and how a block's shared memory is laid out (byte offsets).
struct Plan {
  int threads = 256;
  int64_t rows = 1;        // rows of one sample per block (the tile); the last tile may be shorter
  int64_t tiles = 1;       // tiles per sample
  int64_t blocks = 0;      // blocks of the main kernel = B * tiles
  bool two_pass = false;   // a separate channel-reduction kernel runs first
  bool staged = false;     // the main kernel keeps its x (fwd) / grad_out (bwd) tile in shared memory
  int vec = 1;             // elements per vector access of x-shaped tensors (1 or 16 / elem_size)
  int px = 32, cs = 1;     // channel reduction: pixels per round x channel slots = threads
  int64_t off_w = 0, off_q = 0, off_s = 0, off_d = 0, off_gmean = 0, off_gmax = 0, off_amax = 0, off_part = 0,
          off_tile = 0, smem_bytes = 0;
};

enum class Variant : int { kAuto = 0, kOnePass = 1, kTwoPass = 2 };

// Test/tuning overrides (the CUDA op always passes the defaults).
struct Overrides {
  Variant variant = Variant::kAuto;
  int64_t rows = 0;  // 0: choose
  int threads = 0;   // 0: arch default
};

namespace detail {
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t pow2_at_least(int64_t v) { int64_t p = 1; while (p < v) p *= 2; return p; }
inline int64_t align16(int64_t v) { return (v + 15) / 16 * 16; }
}  // namespace detail

// Pixels per round and channel slots of the channel reduction: NCHW puts consecutive pixels
// on consecutive lanes (a channel's row is contiguous), NHWC puts consecutive channels there.
inline void plan_reduction(Plan& p, const Shape& s, int64_t max_pixels) {
  using namespace detail;
  if (s.channels_last) {
    p.cs = int(std::min<int64_t>(32, pow2_at_least(s.C)));
    p.px = p.threads / p.cs;
  } else {
    p.px = int(std::min<int64_t>(p.threads, std::max<int64_t>(32, pow2_at_least(max_pixels))));
    p.cs = p.threads / p.px;
  }
}

// Rows per tile: enough work per block, enough blocks, and (when staged) within the smem
// budget; rounded so a tile of NCHW rows is a whole number of vectors where possible.
inline int64_t choose_rows(const Shape& s, const ArchTraits& a, int64_t elem_bytes, int64_t fit_rows) {
  using namespace detail;
  const int64_t row_elems = std::max<int64_t>(1, s.C * s.W);
  int64_t rows = std::max<int64_t>(1, a.target_block_elems / row_elems);
  const int64_t tiles_wanted = ceil_div(a.min_blocks, std::max<int64_t>(1, s.B));
  rows = std::min(rows, std::max<int64_t>(1, ceil_div(s.H, tiles_wanted)));
  rows = std::max(rows, std::min<int64_t>(s.H, std::max(1, 4 * (s.kh / 2))));  // halo re-reads <= 50%
  rows = std::min({rows, fit_rows, s.H});
  // NCHW: a tile is one run of rows*W elements per channel. Runs of whole 32-byte sectors
  // (else whole 16-byte vectors) keep warp accesses coalesced: round up if that fits, else down.
  if (!s.channels_last && rows < s.H)
    for (const int64_t unit : {32 / elem_bytes, 16 / elem_bytes}) {
      const int64_t step = unit / std::gcd<int64_t>(unit, std::max<int64_t>(1, s.W));
      const int64_t up = ceil_div(rows, step) * step, down = rows / step * step;
      if (up <= std::min(fit_rows, s.H)) return up;
      if (down >= 1) return down;
    }
  return std::max<int64_t>(1, rows);
}

// The vector width for x-shaped tensors: 128-bit when every segment a block touches starts and
// ends on a 16-byte boundary (pointers are checked by the caller), else scalar.
inline int choose_vec(const Shape& s, int64_t rows, int64_t elem_bytes, bool pointers_aligned) {
  const int64_t v = 16 / elem_bytes;
  const bool ok = s.channels_last ? (s.W * s.C) % v == 0 : (s.H * s.W) % v == 0 && (rows * s.W) % v == 0;
  return pointers_aligned && ok ? int(v) : 1;
}

// One-pass when a tile of the rows the halo needs (>= 4 * rh, or the whole sample) fits the
// staged-tile budget; otherwise two passes over x (3N bytes fwd, 4N bwd). return_map never
// stages anything (the forward does not re-read x; the backward reads no grad_out tile).
inline Plan plan_launch(const Shape& s, const ArchTraits& a, int64_t elem_bytes, int64_t acc_bytes, bool backward,
                        bool pointers_aligned, const Overrides& o) {
  using namespace detail;
  Plan p;
  p.threads = o.threads ? o.threads : a.threads;
  const int64_t rh = s.kh / 2, row_bytes = std::max<int64_t>(1, s.C * s.W * elem_bytes);
  const int64_t fit_rows = std::max<int64_t>(1, a.tile_smem_bytes / row_bytes);
  const int64_t rows_needed = std::min<int64_t>(s.H, std::max<int64_t>(1, 4 * rh));
  if (s.return_map) p.two_pass = false;
  else if (o.variant != Variant::kAuto) p.two_pass = o.variant == Variant::kTwoPass;
  else p.two_pass = fit_rows < rows_needed;
  p.staged = !s.return_map && !p.two_pass;
  p.rows = o.rows ? std::min(o.rows, std::max<int64_t>(1, s.H))
                  : choose_rows(s, a, elem_bytes, p.staged ? std::max(fit_rows, rows_needed) : s.H);
  p.tiles = ceil_div(std::max<int64_t>(1, s.H), p.rows);
  p.blocks = s.B * p.tiles;
  p.vec = choose_vec(s, p.rows, elem_bytes, pointers_aligned);
  // Rows whose channel reduction a main-kernel block computes (tile + halo).
  const int64_t halo = s.return_map && backward ? 0 : rh;
  plan_reduction(p, s, (p.rows + 2 * halo) * s.W);

  // Shared memory, 16-byte aligned pieces.
  const int64_t W = s.W, R = p.rows, T = p.threads, nw = s.taps() + 1;
  const int64_t part_bytes = T * (2 * acc_bytes + 8);
  int64_t at = 0;
  auto take = [&](int64_t bytes) { const int64_t o = at; at += align16(bytes); return o; };
  p.off_w = take(nw * acc_bytes);
  if (!backward) {
    p.off_q = take(s.P * (R + 2 * rh) * W * acc_bytes);  // pooled rows incl. halo
    p.off_s = take(R * W * acc_bytes);
  } else {
    p.off_q = take(s.P * (R + 4 * rh) * W * acc_bytes);  // pooled rows feeding s on the delta rows
    p.off_d = take((R + 2 * rh) * W * acc_bytes);        // rho, then delta, on tile + halo rows
    p.off_s = take(R * W * acc_bytes);
    p.off_gmean = take(R * W * acc_bytes);
    p.off_gmax = take(R * W * acc_bytes);
    p.off_amax = take(R * W * 4);
  }
  p.off_part = take(part_bytes);
  p.off_tile = take(p.staged ? R * s.C * W * elem_bytes : 0);
  p.smem_bytes = at;
  return p;
}

// Smem of the channel-reduction kernel of the two-pass variants (partials only).
inline int64_t reduction_smem_bytes(const Plan& p, int64_t acc_bytes) {
  return detail::align16(p.threads * (2 * acc_bytes + 8));
}

}  // namespace sam::block
