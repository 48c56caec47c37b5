// Forward block programs (docs/design.md §3). One pass: a block owns rows [h0, h1) of one sample
// across all C; it stages that x tile in shared memory, pools the tile plus rh halo rows
// (halo rows re-read from global/L2 instead of synchronising with the neighbour block),
// convolves, applies the sigmoid and writes x * s from the staged tile: x is read from DRAM
// once, out written once. Two pass (tile too large for shared memory): FwdPool writes the
// pooled maps, then FwdMain reads them (with halo) and streams x -> out (3N bytes).
#pragma once
#include <type_traits>

#include "common.h"

namespace sam::block {

template <int V> using VecTag = std::integral_constant<int, V>;

// Runs f(VecTag<V>) with the plan's vector width.
template <typename T, class F> SAM_BLOCK void with_vec(const Plan& p, F&& f) {
  if (p.vec > 1) f(VecTag<16 / int(sizeof(T))>{});
  else f(VecTag<1>{});
}

// Pool the x elements of one pixel over channels c0, c0 + step, ...; `tile` holds rows
// [tl.h0, tl.h1) when non-null.
template <bool CL, typename T, typename I, class Ctx>
SAM_BLOCK void pool_visit(Ctx& ctx, const Args<T>& a, const Tile<I>& tl, const T* tile, I h, I w, int c0, int step,
                          ChanPartial<acc_t<T>>& acc) {
  using A = acc_t<T>;
  const Shape& s = a.s;
  const bool want_sum = s.mean_slot >= 0, want_max = s.max_slot >= 0;
  const bool from_tile = tile && h >= tl.h0 && h < tl.h1;
  const I pix = (h - tl.h0) * I(s.W) + w, L = tl.rows() * I(s.W);
  for (I c = c0; c < I(s.C); c += step) {
    const A v = from_tile ? A(ctx.load(tile + (CL ? pix * I(s.C) + c : c * L + pix)))
                          : A(ctx.load(a.x + x_offset<CL, I>(s, tl.b, c, h, w)));
    if (want_sum) acc.sum += v;
    if (want_max) acc.max = nan_max(acc.max, v);
  }
}

// Two-pass, pass 1: pooled maps of the block's tile rows, straight to `pooled`.
template <typename T, bool CL, typename I> struct FwdPool {
  template <class Ctx> static SAM_BLOCK void run(Ctx& ctx, const Args<T>& a) {
    using A = acc_t<T>;
    const Shape& s = a.s;
    const Tile<I> tl = tile_of<I>(s, a.p, ctx.block());
    auto* part = reinterpret_cast<ChanPartial<A>*>(ctx.smem());
    const I W = I(s.W);
    channel_reduce<CL, A>(
        ctx, s, a.p, int64_t(tl.rows() * W), lead_lanes<T, CL>(s, tl.h0), false, part,
        [&](int64_t i, int c0, int step, ChanPartial<A>& acc) {
          pool_visit<CL>(ctx, a, tl, static_cast<const T*>(nullptr), tl.h0 + I(i) / W, I(i) % W, c0, step, acc);
        },
        [&](int64_t i, const ChanPartial<A>& acc) {
          const I h = tl.h0 + I(i) / W, w = I(i) % W;
          if (s.mean_slot >= 0)
            ctx.store(a.pooled + ((tl.b * s.P + s.mean_slot) * I(s.H) + h) * W + w, acc.sum / A(s.C));
          if (s.max_slot >= 0) ctx.store(a.pooled + ((tl.b * s.P + s.max_slot) * I(s.H) + h) * W + w, acc.max);
        });
  }
};

// One-pass kernel, or pass 2 of the two-pass variant (p.two_pass: pooled maps come from
// global memory, x is streamed rather than staged).
template <typename T, bool CL, typename I, bool Spill = false> struct FwdMain {
  template <class Ctx> static SAM_BLOCK void run(Ctx& ctx, const Args<T>& a) {
    using A = acc_t<T>;
    const Shape& s = a.s;
    const Plan& p = a.p;
    unsigned char *sm = ctx.smem(), *mp = map_buffers<Spill>(ctx, a);
    A* wts_raw = reinterpret_cast<A*>(mp + p.off_w);
    auto q = ctx.buffer(reinterpret_cast<A*>(mp + p.off_q));    // map row h at q row h - qbase
    auto sig = ctx.buffer(reinterpret_cast<A*>(mp + p.off_s));  // s of the tile pixels
    auto wts = ctx.buffer(wts_raw);
    auto* part = reinterpret_cast<ChanPartial<A>*>(sm + p.off_part);
    T* tile = p.staged ? reinterpret_cast<T*>(sm + p.off_tile) : nullptr;
    const Tile<I> tl = tile_of<I>(s, p, ctx.block());
    const I W = I(s.W), H = I(s.H), rh = I(s.kh / 2), qrows = I(p.rows) + 2 * rh, qbase = tl.h0 - rh;
    const I e0 = tl.h0 - rh > 0 ? tl.h0 - rh : I(0), e1 = tl.h1 + rh < H ? tl.h1 + rh : H;
    const int nw = int(s.taps());

    load_weights(ctx, a, wts_raw);
    if (tile)
      with_vec<T>(p, [&](auto vt) {
        constexpr int V = decltype(vt)::value;
        for_tile_vectors<V, CL>(ctx, s, tl, [&](I k, I off, I, I) { ctx.template copy_vec<V>(a.x + off, tile + k); });
      });
    ctx.sync();

    auto qslot = [&](int slot, I h, I w) -> decltype(auto) { return q[(I(slot) * qrows + h - qbase) * W + w]; };
    if (!p.two_pass) {
      channel_reduce<CL, A>(
          ctx, s, p, int64_t((e1 - e0) * W), lead_lanes<T, CL>(s, e0), false, part,
          [&](int64_t i, int c0, int step, ChanPartial<A>& acc) {
            pool_visit<CL>(ctx, a, tl, static_cast<const T*>(tile), e0 + I(i) / W, I(i) % W, c0, step, acc);
          },
          [&](int64_t i, const ChanPartial<A>& acc) {
            const I h = e0 + I(i) / W, w = I(i) % W;
            if (s.mean_slot >= 0) qslot(s.mean_slot, h, w) = acc.sum / A(s.C);
            if (s.max_slot >= 0) qslot(s.max_slot, h, w) = acc.max;
          });
    } else {
      ctx.each_thread([&](int t) {
        for (I i = I(t); i < I(s.P) * (e1 - e0) * W; i += I(ctx.threads())) {
          const I slot = i / ((e1 - e0) * W), r = i % ((e1 - e0) * W), h = e0 + r / W, w = r % W;
          qslot(int(slot), h, w) = ctx.load(a.pooled + ((tl.b * s.P + slot) * H + h) * W + w);
        }
      });
      ctx.sync();
    }

    // s = sigmoid(conv(pooled)) on the tile pixels; the one-pass kernel also saves the maps.
    ctx.each_thread([&](int t) {
      auto qat = [&](int slot, int64_t h, int64_t w) {
        return (h < 0 || h >= H || w < 0 || w >= W) ? A(0) : A(qslot(slot, I(h), I(w)));
      };
      for (I i = I(t); i < tl.rows() * W; i += I(ctx.threads())) {
        const I h = tl.h0 + i / W, w = i % W;
        const A sv = sigmoid(conv_pixel(wts, A(wts[nw]), s.P, s.kh, s.kw, int64_t(h), int64_t(w), qat));
        if (!p.two_pass)
          for (int slot = 0; slot < s.P; ++slot)
            ctx.store(a.pooled + ((tl.b * s.P + slot) * H + h) * W + w, A(qslot(slot, h, w)));
        if (s.return_map) ctx.store(a.out + (tl.b * H + h) * W + w, T(sv));
        else sig[i] = sv;
      }
    });
    if (s.return_map) return;
    ctx.sync();

    with_vec<T>(p, [&](auto vt) {
      constexpr int V = decltype(vt)::value;
      for_tile_vectors<V, CL>(ctx, s, tl, [&](I k, I off, I pix, I c) {
        T v[V];
        if (tile) ctx.template load_vec<V>(tile + k, v);
        else ctx.template load_vec<V>(a.x + off, v);
        for (int e = 0; e < V; ++e) {
          v[e] = T(A(v[e]) * A(sig[pix]));
          step_elem<CL>(s, pix, c);
        }
        ctx.template store_vec<V>(a.out + off, v);
      });
    });
  }
};

}  // namespace sam::block
