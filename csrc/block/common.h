// Pieces every block program shares: kernel arguments, the tile a block owns, the per-pixel
// reduction over channels and the vectorised walk over a tile of an x-shaped tensor.
// Include a context header (ctx_cuda.cuh or ctx_cpu.h) first: it defines SAM_FUSED_BLOCK.
#pragma once
#include <cstdint>
#include <limits>

#include "../sam_math.h"
#include "traits.h"

namespace sam_fused::block {

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
  A* dw_partial = nullptr;         // [blocks, taps + 1] weight/bias gradient per block
  T* dw = nullptr;                 // [taps] weight gradient
  T* dbias = nullptr;              // [1] bias gradient
  unsigned char* scratch = nullptr;  // [blocks, p.spill_bytes] map buffers when p.spill
  Geometry s;
  Plan p;
};

// The tile of block `blk`: rows [h0, h1) of sample b.
template <typename I> struct Tile {
  I b, h0, h1;
  SAM_FUSED_BLOCK I rows() const { return h1 - h0; }
};
template <typename I> SAM_FUSED_BLOCK Tile<I> tile_of(const Geometry& s, const Plan& p, int64_t blk) {
  const I b = I(blk / p.tiles), h0 = I(blk % p.tiles) * I(p.rows);
  return {b, h0, h0 + I(p.rows) < I(s.H) ? h0 + I(p.rows) : I(s.H)};
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
template <bool CL, typename A, class Ctx, class Visit, class Emit>
SAM_FUSED_BLOCK void channel_reduce(Ctx& ctx, const Geometry& s, const Plan& p, int64_t npix, int64_t lead, bool argmax,
                                    ChanPartial<A>* part_raw, Visit&& visit, Emit&& emit) {
  auto part = ctx.buffer(part_raw);
  for (int64_t base = -lead; base < npix; base += p.px) {
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

// Idle lanes before the first pixel (row r0, column 0) of a channel reduction: in NCHW a
// warp's lanes read consecutive pixels of one channel, which then start on a 32-byte sector.
template <typename T, bool CL> SAM_FUSED_BLOCK int64_t lead_lanes(const Geometry& s, int64_t r0) {
  return CL ? 0 : (r0 * s.W) % (32 / int64_t(sizeof(T)));
}

// Visit every element of the tile rows [h0, h1) of an x-shaped tensor, V elements at a time,
// threads striding over vectors (consecutive lanes, consecutive addresses). Elements are in
// memory order: NCHW = channel segments of rows*W pixels, NHWC = one run of pixels x C.
// f(k, off, pix, c): k = index in tile order (the staged tile's layout), off = global offset
// of the first element, (pix, c) = tile pixel and channel of the first element.
template <int V, bool CL, typename I, class Ctx, class F>
SAM_FUSED_BLOCK void for_tile_vectors(Ctx& ctx, const Geometry& s, const Tile<I>& tl, F&& f) {
  const I L = tl.rows() * I(s.W), C = I(s.C), nvec = L * C / I(V), seg_vecs = L / I(V);
  const I start = CL ? x_offset<true, I>(s, tl.b, 0, tl.h0, 0) : 0;
  ctx.each_thread([&](int t) {
    for (I v = I(t); v < nvec; v += I(ctx.threads())) {
      const I k = v * I(V);
      if (CL) f(k, start + k, k / C, k % C);
      else {
        const I c = v / seg_vecs, pix = k - c * L;
        f(k, x_offset<false, I>(s, tl.b, c, tl.h0, I(0)) + pix, pix, c);
      }
    }
  });
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

// Weights (and bias, last) to shared memory as A.
template <typename T, class Ctx> SAM_FUSED_BLOCK void load_weights(Ctx& ctx, const Args<T>& a, acc_t<T>* w_raw) {
  using A = acc_t<T>;
  auto w = ctx.buffer(w_raw);
  const int nw = int(a.s.taps());
  ctx.each_thread([&](int t) {
    for (int k = t; k <= nw; k += ctx.threads())
      w[k] = k < nw ? A(ctx.load(a.weight + k)) : (a.bias ? A(ctx.load(a.bias)) : A(0));
  });
}

}  // namespace sam_fused::block
