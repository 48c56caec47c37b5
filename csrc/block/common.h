// Pieces every block program shares: kernel arguments, the tile a block owns, the per-pixel
// reduction over channels and the vectorised walk over a tile of an x-shaped tensor.
// Include a context header (ctx_cuda.cuh or ctx_cpu.h) first: it defines SAM_FUSED_BLOCK.
#pragma once
#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "../sam_math.h"
#include "traits.h"

namespace sam_fused::block {

// A block buffer of E as the context hands it out (ctx.buffer): a raw pointer on the GPU, a
// checked view in the CPU context.
template <class Ctx, typename E> using BlockBuffer = decltype(std::declval<Ctx&>().buffer(static_cast<E*>(nullptr)));

// Kernel arguments (trivially copyable). T: element type of x; A: accumulation type.
template <typename T> struct Args {
  using A = acc_t<T>;
  const T* x = nullptr;
  const T* g = nullptr;            // grad_out (backward)
  T* out = nullptr;                // out / s map (forward), grad_x (backward)
  A* pooled = nullptr;             // [B,P,H,W] maps: written by the forward, read by the backward
  const T* weight = nullptr;       // [P*kh*kw]
  const T* bias = nullptr;         // [1] or null
  A* rho = nullptr;                // [B,H,W] rho (two-pass backward)
  int32_t* amax = nullptr;         // [B,H,W] argmax over C (two-pass backward with max pooling)
  A* sig = nullptr;                // [B,H,W] s (two-pass backward: BwdMaps -> main kernel)
  A* gamma = nullptr;              // [B,P,H,W] gamma per pooling slot, the mean slot's / C (likewise)
  A* dw_partial = nullptr;         // [taps + 1, p.partials] weight/bias gradient per block
  T* dw = nullptr;                 // [taps] weight gradient
  T* dbias = nullptr;              // [1] bias gradient
  unsigned char* scratch = nullptr;  // [blocks, p.spill_bytes] map buffers when p.spill
  unsigned char* map_scratch = nullptr;  // [p.maps.blocks, p.maps.spill_bytes] BwdMaps' buffers when p.maps.spill
  Geometry s;
  Plan p;
};

// The tile of block `blk`: rows [h0, h1) of sample b.
template <typename I> struct Tile {
  I b, h0, h1;
  SAM_FUSED_BLOCK I rows() const { return h1 - h0; }
  // Rows [above(r), below(r, H)): the tile and r rows of halo on each side, clipped to the map.
  SAM_FUSED_BLOCK I above(I r) const { return h0 - r > 0 ? h0 - r : I(0); }
  SAM_FUSED_BLOCK I below(I r, I H) const { return h1 + r < H ? h1 + r : H; }
};
// Block `blk` of a grid of `tiles` tiles of `rows` rows per sample.
template <typename I> SAM_FUSED_BLOCK Tile<I> tile_at(const Geometry& s, int64_t rows, int64_t tiles, int64_t blk) {
  const I b = I(blk / tiles), h0 = I(blk % tiles) * I(rows);
  return {b, h0, h0 + I(rows) < I(s.H) ? h0 + I(rows) : I(s.H)};
}
template <typename I> SAM_FUSED_BLOCK Tile<I> tile_of(const Geometry& s, const Plan& p, int64_t blk) {
  return tile_at<I>(s, p.rows, p.tiles, blk);
}

// Where a block's map buffers live (Plan::spill): shared memory or its scratch region. A
// template flag, so that the shared-memory kernels address them as shared (LDS/STS), not
// through generic loads.
template <bool Spill, typename T, class Ctx> SAM_FUSED_BLOCK unsigned char* map_buffers(Ctx& ctx, const Args<T>& a) {
  if constexpr (Spill) return a.scratch + ctx.block() * a.p.spill_bytes;
  else return ctx.smem();
}

// Offset of element (b, c, h, w) of an x-shaped tensor.
template <bool CL, typename I> SAM_FUSED_BLOCK I x_offset(const Geometry& s, I b, I c, I h, I w) {
  return CL ? ((b * I(s.H) + h) * I(s.W) + w) * I(s.C) + c : ((b * I(s.C) + c) * I(s.H) + h) * I(s.W) + w;
}

template <typename A> struct alignas(8) ChanPartial {
  A sum, max;
  int32_t idx;  // argmax channel; -1: no channel seen
};

// Argmax over channels with torch.max semantics: the first NaN wins, else the largest value,
// ties to the lowest channel. Associative, so any fixed merge order gives the same answer.
template <typename A> SAM_FUSED_BLOCK void argmax_visit(ChanPartial<A>& p, A v, int32_t c) {
  if (p.idx < 0) {
    p.max = v;
    p.idx = c;
  } else if (v > p.max || (is_nan(v) && !is_nan(p.max))) {
    p.max = v;
    p.idx = c;
  }
}
template <typename A> SAM_FUSED_BLOCK void merge(ChanPartial<A>& a, const ChanPartial<A>& o, bool argmax) {
  a.sum += o.sum;
  if (!argmax) {
    a.max = nan_max(a.max, o.max);
    return;
  }
  if (o.idx < 0) return;
  const bool an = is_nan(a.max), on = is_nan(o.max);
  const bool take = a.idx < 0 || (on && !an) || (on == an && (o.max > a.max || (!(o.max < a.max) && o.idx < a.idx)));
  if (take) {
    a.max = o.max;
    a.idx = o.idx;
  }
}

// Reduce over C every pixel of rows [r0, r1) of one sample. Thread t is (channel slot,
// pixel lane); a round covers p.px pixels, each thread visits channels slot, slot + cs, ...
// via visit(pixel, c0, cstep, partial); partials meet in shared memory and are merged in
// slot order by one thread per pixel, which calls emit(pixel, merged). Pixel i is
// (row r0 + i / W, column i % W). Ends with a barrier.
// NCHW: the first round starts `lead` lanes early so that lane 0 of every warp reads from a
// 32-byte sector boundary (see lead_lanes); those lanes idle.
// ready(last) runs at block scope before each round, with the round's last pixel: the staged
// tile's reductions wait there for the chunk that holds it (wait_chunk).
struct AllReady {
  SAM_FUSED_BLOCK void operator()(int64_t) const {}
};
template <bool CL, typename A, class Ctx, class Visit, class Emit, class Ready = AllReady>
SAM_FUSED_BLOCK void channel_reduce(Ctx& ctx, const Geometry& s, const Plan& p, int64_t npix, int64_t lead, bool argmax,
                                    ChanPartial<A>* part_raw, Visit&& visit, Emit&& emit, Ready&& ready = {}) {
  auto part = ctx.buffer(part_raw);
  for (int64_t base = -lead; base < npix; base += p.px) {
    ready(base + p.px - 1 < npix ? base + p.px - 1 : npix - 1);
    ctx.each_thread([&](int t) {
      const int lane = CL ? t / p.cs : t % p.px, slot = CL ? t % p.cs : t / p.px;
      ChanPartial<A> acc{A(0), -std::numeric_limits<A>::infinity(), -1};
      if (base + lane >= 0 && base + lane < npix) visit(base + lane, slot, p.cs, acc);
      part[slot * p.px + lane] = acc;
    });
    ctx.sync();
    ctx.each_thread([&](int t) {
      if (t >= p.px || base + t < 0 || base + t >= npix) return;
      ChanPartial<A> acc = part[t];
      for (int k = 1; k < p.cs; ++k) merge(acc, ChanPartial<A>(part[k * p.px + t]), argmax);
      emit(base + t, acc);
    });
    ctx.sync();
  }
}

// The pixels of rows [r0, r1) except rows [skip0, skip1), numbered row by row: a channel
// reduction over a tile's halo rows alone (skip = the tile) or over plain rows (skip empty).
template <typename I> struct RowSet {
  I r0, r1, skip0, skip1, W;
  SAM_FUSED_BLOCK I npix() const { return (r1 - r0 - (skip1 - skip0)) * W; }
  SAM_FUSED_BLOCK I row(I i) const {
    const I h = r0 + i / W;
    return h >= skip0 ? h + (skip1 - skip0) : h;
  }
};

// Whether the kh x kw window at (h, w) lies inside the H x W map: then the conv of that pixel
// needs no bounds check per tap (most pixels; the checked accessor serves the border).
SAM_FUSED_BLOCK bool window_inside(const Geometry& s, int64_t h, int64_t w) {
  return h >= s.kh / 2 && h + s.kh / 2 < s.H && w >= s.kw / 2 && w + s.kw / 2 < s.W;
}

// f(std::integral_constant<int, K>{}): K = kw when kw is one of Widths, so that the loops over a
// kernel row unroll fully, else K = 0 (kw at run time).
template <int... Widths, class F> SAM_FUSED_BLOCK void with_kernel_width(int kw, F&& f) {
  bool done = false;
  ((!done && kw == Widths ? (f(std::integral_constant<int, Widths>{}), done = true) : false), ...);
  if (!done) f(std::integral_constant<int, 0>{});
}

// out[e] = p[e] for e < N, read as whole 16-byte vectors from p (16-byte aligned): out holds N
// rounded up to them, and the memory past p + N up to that is readable.
template <int N, class Ctx, typename A> SAM_FUSED_BLOCK void load_vectors(Ctx& ctx, const A* p, A* out) {
  constexpr int kV = 16 / int(sizeof(A));
#pragma unroll
  for (int e = 0; e < N; e += kV) ctx.template load_vec<kV>(p + e, out + e);
}

// conv_pixel of the N pixels (h, w0 .. w0 + N - 1), all with their window inside the map, for
// a compile-time kernel width KW: each pooled value of a window row is loaded once for the N
// outputs and each weight once per kernel row, instead of once per tap and pixel (the conv was
// the issue-bound phase of 7x7 maps). Every output does conv_pixel's operations in its order.
// row(p, h, x0, qv) fills qv[j] with the pooled value (p, h, x0 + j), j < KW + N - 1: one value
// at a time (ScalarRowWindow) or by 16-byte vectors (VectorRowWindow).
template <int KW, int N, typename A, typename Wts, typename Row>
SAM_FUSED_BLOCK void conv_row_block(const Wts& w, A bias, int P, int kh, int64_t h, int64_t w0, Row&& row,
                                    A (&acc)[N]) {
  constexpr int rw = KW / 2;
  const int rh = kh / 2;
#pragma unroll
  for (int n = 0; n < N; ++n) acc[n] = bias;
  // One kernel row at a time (not unrolled), each weight loaded once and used for the N outputs
  // right away: a thread holds the row's KW + N - 1 pooled values, N sums and one weight, so the
  // blocked conv does not raise the kernel's registers (occupancy).
#pragma unroll 1
  for (int p = 0; p < P; ++p)
#pragma unroll 1
    for (int i = 0; i < kh; ++i) {
      A qv[KW + N - 1];
      row(p, h + i - rh, w0 - rw, qv);
#pragma unroll
      for (int j = 0; j < KW; ++j) {
        const A wt = A(w[(p * kh + i) * KW + j]);
#pragma unroll
        for (int n = 0; n < N; ++n) acc[n] += wt * qv[n + j];
      }
    }
}

// conv_row_block's window read through q(p, h, w), one value at a time.
template <class QIn> struct ScalarRowWindow {
  QIn& q;
  template <typename A, int M> SAM_FUSED_BLOCK void operator()(int p, int64_t h, int64_t x0, A (&out)[M]) const {
#pragma unroll
    for (int j = 0; j < M; ++j) out[j] = q(p, h, x0 + j);
  }
};

// conv_row_block's window read from the row pointer row_at(p, h) (column 0, 16-byte aligned) as
// 16-byte vectors, from the vector it starts in: x0 + S must be a multiple of a vector's values
// (the row's N pixels start on one), and the vectors that cover the window lie inside the row.
// For 7x7 fp32, 3 LDS.128 where 10 scalar loads at a 16-byte lane stride met 4 to a bank.
template <int S, class Ctx, class RowAt> struct VectorRowWindow {
  Ctx& ctx;
  RowAt& row_at;
  template <typename A, int M> SAM_FUSED_BLOCK void operator()(int p, int64_t h, int64_t x0, A (&out)[M]) const {
    constexpr int kV = 16 / int(sizeof(A)), kLen = (S + M + kV - 1) / kV * kV;
    A win[kLen];
    load_vectors<kLen>(ctx, row_at(p, h) + (x0 - S), win);
#pragma unroll
    for (int j = 0; j < M; ++j) out[j] = win[S + j];
  }
};

// conv_row_block's window of `row`, 0 on the rows outside the H-row map: the groups at the map's
// top and bottom whose columns lie inside it read the vectors the interior groups read, where
// their scalar bounds-tested loads at a 16-byte lane stride met two to four to a bank.
template <class Row> struct RowsInMap {
  Row row;
  int64_t H;
  template <typename A, int M> SAM_FUSED_BLOCK void operator()(int p, int64_t h, int64_t x0, A (&out)[M]) const {
    if (h >= 0 && h < H) return row(p, h, x0, out);
#pragma unroll
    for (int j = 0; j < M; ++j) out[j] = A(0);
  }
};

// conv_pixel of the N pixels (h0 .. h0 + N - 1, x) of one column, all with their window inside
// the map, for a KH x 1 kernel (kw = 1): the KH + N - 1 pooled values of the column and the KH
// weights of each slot are loaded once for the N outputs. Every output does conv_pixel's
// operations in its order (slot, then kernel row), so the results are bit for bit the same.
template <int KH, int N, typename A, typename Wts, typename QIn>
SAM_FUSED_BLOCK void conv_column_block(const Wts& w, A bias, int P, int64_t h0, int64_t x, QIn&& q, A (&acc)[N]) {
  constexpr int rh = KH / 2;
#pragma unroll
  for (int n = 0; n < N; ++n) acc[n] = bias;
#pragma unroll 1
  for (int p = 0; p < P; ++p) {
    A qv[KH + N - 1];
#pragma unroll
    for (int k = 0; k < KH + N - 1; ++k) qv[k] = q(p, h0 + k - rh, x);
#pragma unroll
    for (int i = 0; i < KH; ++i) {
      const A wt = A(w[p * KH + i]);
#pragma unroll
      for (int n = 0; n < N; ++n) acc[n] += wt * qv[n + i];
    }
  }
}

// Idle lanes before the first pixel (row r0, column 0) of a channel reduction: in NCHW a
// warp's lanes read consecutive pixels of one channel, which then start on a 32-byte sector.
template <typename T, bool CL> SAM_FUSED_BLOCK int64_t lead_lanes(const Geometry& s, int64_t r0) {
  return CL ? 0 : (r0 * s.W) % (32 / int64_t(sizeof(T)));
}

// Where vector v of a tile of an x-shaped tensor lies: k = index in tile order (the staged
// tile's layout), off = global offset of its first element, (pix, c) = tile pixel and channel
// of its first element. Elements are in memory order: NCHW = channel segments of rows*W
// pixels, NHWC = one run of pixels x C. Vectors are numbered within the pixels [first, first +
// Lc) of the tile (a chunk of its rows; the whole tile: 0 and L): NCHW walks each channel's
// run of them in turn.
template <typename I> struct TileVector {
  I k, off, pix, c;
};
template <int V, bool CL, typename I>
SAM_FUSED_BLOCK TileVector<I> tile_vector(const Geometry& s, const Tile<I>& tl, I L, I first, I Lc, I v) {
  if (CL) {
    const I k = first * I(s.C) + v * I(V);
    return {k, x_offset<true, I>(s, tl.b, 0, tl.h0, 0) + k, k / I(s.C), k % I(s.C)};
  }
  const I kc = v * I(V), c = kc / Lc, pix = first + kc - c * Lc;
  return {c * L + pix, x_offset<false, I>(s, tl.b, c, tl.h0, I(0)) + pix, pix, c};
}
template <int V, bool CL, typename I>
SAM_FUSED_BLOCK TileVector<I> tile_vector(const Geometry& s, const Tile<I>& tl, I L, I v) {
  return tile_vector<V, CL>(s, tl, L, I(0), L, v);
}

// Visit every element of the tile rows [r0, r1) (within [tl.h0, tl.h1)) of an x-shaped tensor,
// V elements at a time, threads striding over vectors (consecutive lanes, consecutive
// addresses): f(k, off, pix, c) as in TileVector.
template <int V, bool CL, typename I, class Ctx, class F>
SAM_FUSED_BLOCK void for_tile_vectors(Ctx& ctx, const Geometry& s, const Tile<I>& tl, I r0, I r1, F&& f) {
  const I L = tl.rows() * I(s.W), first = (r0 - tl.h0) * I(s.W), Lc = (r1 - r0) * I(s.W), nvec = Lc * I(s.C) / I(V);
  ctx.each_thread([&](int t) {
    for (I v = I(t); v < nvec; v += I(ctx.threads())) {
      const TileVector<I> at = tile_vector<V, CL>(s, tl, L, first, Lc, v);
      f(at.k, at.off, at.pix, at.c);
    }
  });
}

// Rows [r0, r1) of chunk k of a staged tile (Plan::chunks; empty past a short last tile).
template <typename I> SAM_FUSED_BLOCK Tile<I> chunk_of(const Plan& p, const Tile<I>& tl, int k) {
  const I r0 = tl.h0 + I(k) * I(p.chunk_rows), r1 = r0 + I(p.chunk_rows);
  return {tl.b, r0 < tl.h1 ? r0 : tl.h1, r1 < tl.h1 ? r1 : tl.h1};
}

// Stage a tile chunk by chunk: copy(k, off) for every vector of chunk k (k its index in the
// tile), then one commit per chunk, `p.chunks` groups even when the last chunks are empty, so
// that wait_chunk's group counts hold for every tile. A copy makes `accesses` context accesses
// (2 per copy_vec). NCHW chunks of a tile are C runs of the chunk's pixels, one per channel,
// each at its channel's place in the tile. A warp's 16-byte stores are served 8 lanes at a
// time, so each group of 8 lanes takes up to 8 vectors of one run (idle past its end): every
// group fills contiguous bytes (no bank conflicts), where consecutive vectors across a run's end
// would not. The groups step over (run, part) pairs without a division per vector. A tile of
// one chunk, and NHWC (chunks are contiguous ranges of the tile), take the plain walk.
template <int V, bool CL, typename I, class Ctx, class Copy>
SAM_FUSED_BLOCK void stage_tile_chunks(Ctx& ctx, const Geometry& s, const Plan& p, const Tile<I>& tl, int accesses,
                                       Copy&& copy) {
  if (CL || p.chunks == 1) {
    for (int k = 0; k < p.chunks; ++k) {
      const Tile<I> ch = chunk_of(p, tl, k);
      for_tile_vectors<V, CL>(ctx, s, tl, ch.h0, ch.h1, [&](I at, I off, I, I) { copy(at, off); });
      ctx.copy_commit();
    }
    return;
  }
  const I L = tl.rows() * I(s.W), HW = I(s.H) * I(s.W);
  const I x0 = x_offset<false, I>(s, tl.b, I(0), tl.h0, I(0));
#pragma unroll 1
  for (int k = 0; k < p.chunks; ++k) {
    const Tile<I> ch = chunk_of(p, tl, k);
    const I first = (ch.h0 - tl.h0) * I(s.W), nv = (ch.h1 - ch.h0) * I(s.W) / I(V);
    const I parts = nv > 0 ? (nv + 7) / 8 : I(1), groups = I(ctx.threads() / 8);  // 8-lane parts per run
    const I dc = groups / parts, dq = groups - dc * parts;  // a step of `groups` (run, part) pairs
    ctx.each_thread([&](int t) {
      if (nv == 0) return;  // a chunk past a short last tile: an empty group
      const I g = I(t / 8), j0 = I(t % 8);
      I c = g / parts, q = g - c * parts;
      // not unrolled: a copy is one LDGSTS that nothing waits on, and unrolling took registers
#pragma unroll 1
      while (c < I(s.C)) {
        const I j = q * 8 + j0, e = first + j * I(V);  // the vector's pixel in the tile
        if (j < nv) copy(c * L + e, x0 + c * HW + e);
        else
          for (int n = 0; n < accesses; ++n) ctx.skip_access();
        c += dc, q += dq;
        if (q >= parts) q -= parts, ++c;
      }
    });
    ctx.copy_commit();
  }
}

// Before reading chunk k of the staged tile: this thread's copies of chunks 0..k have landed
// (every later group may still be in flight), and the barrier makes every thread's visible.
template <class Ctx> SAM_FUSED_BLOCK void wait_chunk(Ctx& ctx, const Plan& p, int k) {
  ctx.copy_wait_prior(p.chunks - 1 - k);
  ctx.sync();
}

// The `ready` of a channel reduction over the rows of a staged tile (pixel i = tile pixel i):
// before a round, waits for the chunk holding its last pixel unless an earlier round did, so the
// first rounds run while the later chunks land. Block scope: every thread holds the same state.
template <class Ctx> struct ChunksReady {
  Ctx& ctx;
  const Plan& p;
  int64_t chunk_pixels;
  int waited = -1;
  SAM_FUSED_BLOCK void operator()(int64_t last) {
    const int64_t k = last < 0 ? 0 : last / chunk_pixels;
    const int need = int(k < p.chunks - 1 ? k : p.chunks - 1);
    if (need > waited) {
      wait_chunk(ctx, p, need);
      waited = need;
    }
  }
};

// The same walk, unrolled for memory-level parallelism: each thread first loads U vectors
// (load(at, vec): one access each), then finishes them in order (finish(at, vec):
// `finish_accesses` accesses each), so U loads are in flight per thread instead of one per
// round trip. Lanes past the end are predicated off (skip_access keeps the CPU context's
// instruction count aligned).
// `ahead` (NoAhead: none; ahead_in_registers(before)) overlaps a block's first DRAM round trip
// with block-wide work the finish needs, `before` (its own loops and barriers: the two-pass
// backward's main kernel stages its maps there): each thread issues its first kStreamAhead<T>
// loads (traits.h), `before` runs while they are in flight, then the walk goes on with them (in
// thread state: registers on the GPU; their places computed again). Ahead wraps `before` because,
// passed bare, the same logic compiled to other SASS (BwdMain 96 registers) than the build timed.
// (x copied ahead into shared memory made the CBAM forwards slower: docs/gpu-results.md, tenth session.)
struct NoAhead {};
template <class Before> struct Ahead {
  Before before;
};
template <class Before> SAM_FUSED_BLOCK Ahead<Before> ahead_in_registers(Before before) { return {before}; }
template <int V, int U, bool CL, typename T, typename I, class Ctx, class Load, class Finish, class AheadT = NoAhead>
SAM_FUSED_BLOCK void stream_tile_vectors(Ctx& ctx, const Geometry& s, const Tile<I>& tl, Load&& load, Finish&& finish,
                                         int finish_accesses = 1, AheadT&& ahead = {}) {
  const I L = tl.rows() * I(s.W), nvec = L * I(s.C) / I(V);
  I skip = 0;  // vectors of the walk done ahead: kStreamAhead<T> strides of the threads
  if constexpr (!std::is_same_v<std::decay_t<AheadT>, NoAhead>) {
    constexpr int UA = kStreamAhead<T>;
    struct Batch {
      T vec[UA][V];
    };
    auto st = ctx.template thread_state<Batch>();
    // each thread's first UA vectors: on(t, u, v), or off() for a lane past the end
    auto each_ahead = [&](auto&& on, auto&& off) {
      ctx.each_thread([&](int t) {
        const I stride = I(ctx.threads());
        if (I(t) >= nvec) return;
#pragma unroll
        for (int u = 0; u < UA; ++u) {
          const I v = I(t) + I(u) * stride;
          if (v >= nvec) off();
          else on(t, u, v);
        }
      });
    };
    each_ahead([&](int t, int u, I v) { load(tile_vector<V, CL>(s, tl, L, v), st[t].vec[u]); },
               [&] { ctx.skip_access(); });
    ahead.before();
    each_ahead([&](int t, int u, I v) { finish(tile_vector<V, CL>(s, tl, L, v), st[t].vec[u]); },
               [&] {
                 for (int n = 0; n < finish_accesses; ++n) ctx.skip_access();
               });
    skip = I(UA) * I(ctx.threads());
  }
  ctx.each_thread([&](int t) {
    const I stride = I(ctx.threads());
    for (I v0 = I(t) + skip; v0 < nvec; v0 += I(U) * stride) {
      T vec[U][V];
      TileVector<I> at[U];  // placed once, used by the load and the finish
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const I v = v0 + I(u) * stride;
        if (v < nvec) {
          at[u] = tile_vector<V, CL>(s, tl, L, v);
          load(at[u], vec[u]);
        } else ctx.skip_access();
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (v0 + I(u) * stride < nvec) finish(at[u], vec[u]);
        else
          for (int n = 0; n < finish_accesses; ++n) ctx.skip_access();
      }
    }
  });
}

// The raw pointer of a block buffer (ctx.buffer): the pointer itself on the GPU.
template <class T> SAM_FUSED_BLOCK T* raw_of(T* p) { return p; }

// Map values (A: s, gamma, argmax, one per tile pixel, in a block buffer) of the V > 1
// elements of an NCHW tile vector: V consecutive pixels of one channel's run, the first a
// multiple of V (choose_vec), so the run is 16-byte aligned. Read as 16-byte vectors, a warp's lanes take
// 16 contiguous bytes each, 4 wavefronts per 512 bytes; read one value at a time, at a
// 16-byte lane stride, each of the V reads took 4 wavefronts (an H100's Nsight Compute source
// counters: the write phases' map reads at 4x the ideal wavefronts). map_run_accesses: the
// context accesses one run takes.
// Whether a tile vector's map values are read as runs (load_map_run): NCHW vectors of V > 1
// pixels. NHWC vectors (channels of one or two pixels) and scalar tiles read them one at a time.
template <bool CL, int V> constexpr bool reads_map_runs() { return !CL && V > 1; }
template <int V, class M> constexpr int map_run_width() { return V * int(sizeof(M)) >= 16 ? 16 / int(sizeof(M)) : V; }
template <int V, class M> constexpr int map_run_accesses() { return V / map_run_width<V, M>(); }
template <int V, class M, class Ctx> SAM_FUSED_BLOCK void skip_map_run(Ctx& ctx) {
  for (int n = 0; n < map_run_accesses<V, M>(); ++n) ctx.skip_access();
}
// A run of 32 bytes (16-bit data: 8 fp32 values) takes two 16-byte loads. Served 8 lanes at a
// time, the lanes' first halves alone (a 32-byte lane stride) would meet in pairs on the banks,
// so lanes whose vector index has bit 2 set read their second half first: every 8 consecutive
// vectors then fill 128 distinct bytes per load (the index is the lane's up to a constant).
template <int V, class M, class Ctx, class Buf, typename I>
SAM_FUSED_BLOCK void load_map_run(Ctx& ctx, const Buf& map, I pix, M* out) {
  constexpr int kW = map_run_width<V, M>();
  static_assert(V == kW || V == 2 * kW, "a map run is one or two 16-byte vectors");
  const M* p = raw_of(map) + pix;
  if constexpr (V == kW) {
    ctx.template load_vec<kW>(p, out);
  } else {
    const int h = int((pix / I(V)) >> 2) & 1;
    M first[kW], second[kW];
    ctx.template load_vec<kW>(p + h * kW, first);
    ctx.template load_vec<kW>(p + (h ^ 1) * kW, second);
#pragma unroll
    for (int e = 0; e < kW; ++e) {
      out[e] = h ? second[e] : first[e];
      out[kW + e] = h ? first[e] : second[e];
    }
  }
}

// Visit channels c0, c0 + step, ... < C of one pixel: the loads of U channels are issued
// before the first is used (U loads in flight per thread), then used in channel order, so
// the result is bit for bit the one-channel-at-a-time loop's.
template <int U, typename I, class Load, class Use>
SAM_FUSED_BLOCK void for_channels(I c0, I step, I C, Load&& load, Use&& use) {
  I c = c0;
  for (; c + I(U - 1) * step < C; c += I(U) * step) {
    decltype(load(c)) v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = load(c + I(u) * step);
#pragma unroll
    for (int u = 0; u < U; ++u) use(c + I(u) * step, v[u]);
  }
  for (; c < C; c += step) use(c, load(c));
}

// The elements of a loaded vector as A. bf16 pairs are widened from their 32-bit word (the low
// element shifted up, the high one masked: exactly A(bf16) of each), where converting element by
// element took 1.5 SASS instructions per element (PRMT, IMAD.U32, SHF).
template <int V, typename T, typename A> SAM_FUSED_BLOCK void widen(const T (&v)[V], A (&out)[V]) {
  if constexpr (std::is_same_v<T, c10::BFloat16> && std::is_same_v<A, float> && V % 2 == 0) {
#pragma unroll
    for (int e = 0; e < V; e += 2) {
      uint32_t w;
      memcpy(&w, &v[e], sizeof(w));
      const uint32_t lo = w << 16, hi = w & 0xffff0000u;
      memcpy(&out[e], &lo, sizeof(lo));
      memcpy(&out[e + 1], &hi, sizeof(hi));
    }
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) out[e] = A(v[e]);
  }
}

// Per-pixel sums over C of the rows of a staged NCHW tile (Plan::sum_vectors()), a 16-byte vector
// of V pixels of one channel per thread and step, where channel_reduce reads one element: a
// fraction of the instructions per element. Chunk by chunk (ready(last pixel) first, so a chunk
// is summed while the later ones land), in blocks of up to vl vectors of each channel's run
// (vl: threads / p.sum_slots, whole groups of 8 lanes, so every group reads 128 contiguous bytes
// of one run, no bank conflicts; lanes past the run idle): thread t takes vector
// j = t % vl of the block over channels slot, slot + slots, ... (slot = t / vl, slots =
// p.sum_slots, the same for every chunk, so the chunks change no bits). load(c, pix) loads
// channel c's vector at tile pixel pix (U channels ahead), add(loaded, sums) adds it to the V
// sums. The sums meet in shared memory (each thread's V sums together, rotated by their 128-byte
// line: no bank conflicts), then one thread per pixel adds the slots in order and calls
// emit(pixel, sum): a fixed order, bitwise deterministic. Ends with a barrier.
template <int V, int U, typename A, typename I, class Ctx, class Load, class Add, class Emit, class Ready>
SAM_FUSED_BLOCK void channel_sum_vectors(Ctx& ctx, const Plan& p, const Tile<I>& tl, I W, I C, A* sums_raw, Load&& load,
                                         Add&& add, Emit&& emit, Ready&& ready) {
  auto sums = ctx.buffer(sums_raw);
  // slots and threads are powers of two (plan_sum_slots, kThreads), so is vl
  const I T = I(ctx.threads()), slots = I(p.sum_slots), vl = T / slots;
  static_assert(V == 2 || V == 4 || V == 8, "16-byte vectors of 8-, 4- or 2-byte elements");
  constexpr int kVShift = V == 8 ? 3 : V == 4 ? 2 : 1;        // log2(V)
  constexpr int kLineShift = sizeof(A) == 8 ? 4 : 5;           // log2(A values in 128 bytes)
  // Thread L = slot * vl + j keeps its V sums at words L * V + (e rotated by the 128-byte line
  // the run starts in). The lanes of a warp whose runs start at the same bank are in different
  // lines, so they store to different banks (unrotated, 16-bit data's two slots of 16 lanes hit
  // the same ones); and the merge below, one pixel a lane, reads 32 consecutive words permuted.
  auto at = [](I L, I e) { return L * I(V) + ((e + ((L * I(V)) >> kLineShift)) & I(V - 1)); };
#pragma unroll 1
  for (int k = 0; k < p.chunks; ++k) {
    const Tile<I> ch = chunk_of(p, tl, k);
    const I first = (ch.h0 - tl.h0) * W, nv = (ch.h1 - ch.h0) * W / I(V);
#pragma unroll 1
    for (I j0 = 0; j0 < nv; j0 += vl) {
      const I n = nv - j0 < vl ? nv - j0 : vl, base = first + j0 * I(V);
      ready(int64_t(base + n * I(V) - 1));
      ctx.each_thread([&](int t) {
        const I j = I(t) % vl, slot = I(t) / vl;
        if (j >= n) return;  // slot < slots: vl * slots = threads
        const I pix = base + j * I(V);
        A acc[V] = {};
        // for_channels' order, the loop kept rolled: unrolled further, it held more vectors
        // live than the kernel's other phases need registers for
        I c = slot;
#pragma unroll 1
        for (; c + I(U - 1) * slots < C; c += I(U) * slots) {
          decltype(load(c, pix)) v[U];
#pragma unroll
          for (int u = 0; u < U; ++u) v[u] = load(c + I(u) * slots, pix);
#pragma unroll
          for (int u = 0; u < U; ++u) add(v[u], acc);
        }
#pragma unroll 1
        for (; c < C; c += slots) add(load(c, pix), acc);
#pragma unroll
        for (int e = 0; e < V; ++e) sums[at(I(t), I(e))] = acc[e];
      });
      ctx.sync();
      // pixel m of the block (its vector j, element e) to a lane: consecutive lanes emit
      // consecutive pixels (V words apart, the emit's writes were 2-4-way bank conflicts)
      ctx.each_thread([&](int t) {
#pragma unroll 1
        for (I m = I(t); m < I(V) * vl; m += T) {
          const I j = m >> kVShift, e = m & I(V - 1);
          if (j >= n) continue;
          I run = j * I(V);  // at(q * vl + j, e) = run + rotated e, stepping run by a slot's lanes
          A sum = sums[run + ((e + (run >> kLineShift)) & I(V - 1))];
#pragma unroll 1
          for (I q = 1; q < slots; ++q) {
            run += vl * I(V);
            sum += A(sums[run + ((e + (run >> kLineShift)) & I(V - 1))]);
          }
          emit(base + m, sum);
        }
      });
      ctx.sync();
    }
  }
}

// Pixel/channel of element e of a vector starting at (pix, c): NCHW steps pixels, NHWC
// channels (wrapping to the next pixel).
template <bool CL, typename I> SAM_FUSED_BLOCK void step_elem(const Geometry& s, I& pix, I& c) {
  if (!CL) {
    ++pix;
    return;
  }
  if (++c == I(s.C)) {
    c = 0;
    ++pix;
  }
}

// Weights (and bias, last) to the block buffer w (ctx.buffer of the weights' place) as A. With
// a row stride above kw (BwdMaps: kernel rows padded to whole 16-byte vectors), kernel row r
// takes entries [r stride, r stride + stride), zeros after its kw weights, and the bias follows
// the P kh rows.
template <typename T, class Ctx, class Buf>
SAM_FUSED_BLOCK void load_weights(Ctx& ctx, const Args<T>& a, const Buf& w, int stride = 0) {
  using A = acc_t<T>;
  const int kw = a.s.kw, row = stride > kw ? stride : kw, nw = a.s.pool.P * a.s.kh * row;
  ctx.each_thread([&](int t) {
    for (int k = t; k <= nw; k += ctx.threads()) {
      if (k == nw) {
        w[k] = a.bias ? A(ctx.load(a.bias)) : A(0);
      } else if (row == kw) {
        w[k] = A(ctx.load(a.weight + k));
      } else {
        const int r = k / row, j = k - r * row;
        w[k] = j < kw ? A(ctx.load(a.weight + r * kw + j)) : A(0);
      }
    }
  });
}

}  // namespace sam_fused::block
