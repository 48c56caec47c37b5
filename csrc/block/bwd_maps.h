// BwdMaps, the per-pixel map kernel of the two-pass backward (docs/design.md §3): between BwdRho
// (rho, argmax) and the main kernel, it computes each pixel's maps once, so that the main
// kernel is a pure stream over grad_out. A block owns rows [h0, h1) of one sample's [H, W]
// maps (Plan::Maps). It stages the weights, the pooled rows with a 2rh halo and rho of the rows
// with an rh halo, zero-padded to W + 2rw columns and with zero rows outside the map (the conv's
// "same" padding: no tap is bounds-tested); computes s = sigmoid(conv(pooled)) and
// delta = rho s (1 - s) on the tile and halo rows (s of the tile rows to the workspace); then
// gamma, the transposed conv of delta, per pooling slot (the mean slot's / C) to the workspace,
// and the block's weight/bias gradient partials for DwReduce.
#pragma once
#include "common.h"

namespace sam_fused::block {

// A block's weight/bias gradient partials: warp j takes entries j, j + warps, ... of the nw + 1
// (entry nw is the bias); lane_sum(k, lane) is a lane's share of entry k, then a shuffle
// butterfly adds the lanes and lane 0 stores entry k of this block (dw_partial[k, block]).
// Every thread works, and the order is fixed by the launch shape (bitwise deterministic).
template <typename T, class Ctx, class LaneSum>
SAM_FUSED_BLOCK void store_weight_grad_partials(Ctx& ctx, const Args<T>& a, int nw, LaneSum&& lane_sum) {
  using A = acc_t<T>;
  const int warps = ctx.threads() / 32;
  auto st = ctx.template thread_state<A>();
  for (int k0 = 0; k0 <= nw; k0 += warps) {
    ctx.each_thread([&](int t) { st[t] = k0 + t / 32 <= nw ? lane_sum(k0 + t / 32, t % 32) : A(0); });
    ctx.warp_reduce(st, [](A& x) -> A& { return x; }, [](A x, A y) { return x + y; });
    ctx.each_thread([&](int t) {
      const int k = k0 + t / 32;
      if (t % 32 == 0 && k <= nw) ctx.store(a.dw_partial + int64_t(k) * a.p.partials + ctx.block(), st[t]);
    });
  }
}

template <typename T, typename I, bool Spill = false> struct BwdMaps {
  using A = acc_t<T>;

  // What the phases of one block share. Buffers are padded: map row h, column w of pooled slot
  // p is q[(p * qrows + h - h0 + 2rh) * Wp + w + rw], of delta d[(h - h0 + rh) * Wp + w + rw].
  template <class Ctx> struct View {
    using Buf = BlockBuffer<Ctx, A>;
    Tile<I> tl;
    I H, W, Wp, rh, rw;
    I qrows, drows;  // rows of a pooled slot's buffer (tile + 2rh above and below), of delta's (+ rh)
    int nw;          // weight taps; entry nw is the bias
    Buf wts, q, d;

    SAM_FUSED_BLOCK I qidx(int slot, int64_t h, int64_t w) const {
      return (I(slot) * qrows + I(h) - tl.h0 + 2 * rh) * Wp + I(w) + rw;
    }
    SAM_FUSED_BLOCK I didx(int64_t h, int64_t w) const { return (I(h) - tl.h0 + rh) * Wp + I(w) + rw; }
  };

  template <class Ctx> static SAM_FUSED_BLOCK View<Ctx> view_of(Ctx& ctx, const Args<T>& a) {
    const Geometry& s = a.s;
    const Plan::Maps& m = a.p.maps;
    unsigned char* mp;
    if constexpr (Spill) mp = a.map_scratch + ctx.block() * m.spill_bytes;
    else mp = ctx.smem();
    View<Ctx> v;
    v.tl = tile_at<I>(s, m.rows, m.tiles, ctx.block());
    v.H = I(s.H), v.W = I(s.W), v.Wp = I(m.width), v.rh = I(s.kh / 2), v.rw = I(s.kw / 2);
    v.qrows = v.tl.rows() + 4 * v.rh, v.drows = v.tl.rows() + 2 * v.rh;
    v.nw = int(s.taps());
    v.wts = ctx.buffer(reinterpret_cast<A*>(mp + m.off_w));
    v.q = ctx.buffer(reinterpret_cast<A*>(mp + m.off_q));
    v.d = ctx.buffer(reinterpret_cast<A*>(mp + m.off_d));
    return v;
  }

  template <class Ctx> static SAM_FUSED_BLOCK void run(Ctx& ctx, const Args<T>& a) {
    const auto v = view_of(ctx, a);
    stage_padded_maps(ctx, a, v);
    ctx.sync();
    sigmoid_delta_maps(ctx, a, v);
    ctx.sync();
    gamma_maps(ctx, a, v);
    weight_grad_maps(ctx, a, v);
  }

  // buf[i] = value(i) for i < n, threads striding, kStageUnroll values loaded before the first
  // is stored (value loads, or returns 0 after ctx.skip_access() for the padding).
  template <class Ctx, class Buf, class Value>
  static SAM_FUSED_BLOCK void fill_strided(Ctx& ctx, I n, const Buf& buf, Value&& value) {
    constexpr int U = kStageUnroll;
    ctx.each_thread([&](int t) {
      const I stride = I(ctx.threads());
      for (I i0 = I(t); i0 < n; i0 += I(U) * stride) {
        A vals[U];
#pragma unroll
        for (int u = 0; u < U; ++u) vals[u] = i0 + I(u) * stride < n ? value(i0 + I(u) * stride) : A(0);
#pragma unroll
        for (int u = 0; u < U; ++u)
          if (i0 + I(u) * stride < n) buf[i0 + I(u) * stride] = vals[u];
      }
    });
  }

  // Weights, pooled rows [h0 - 2rh, h1 + 2rh) and rho rows [h0 - rh, h1 + rh), padded.
  template <class Ctx> static SAM_FUSED_BLOCK void stage_padded_maps(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    const Geometry& s = a.s;
    const Tile<I>& tl = v.tl;
    const I H = v.H, W = v.W, Wp = v.Wp;
    load_weights(ctx, a, v.wts);
    // map row h0 - r0 + (i / Wp) % rows, column i % Wp - rw of map `map` (its [H, W] plane at `src`)
    auto padded = [&](const A* src, I r0, I rows) {
      return [&, src, r0, rows](I i) {
        const I plane = i / (rows * Wp), h = tl.h0 - r0 + (i / Wp) % rows, w = i % Wp - v.rw;
        if (h < 0 || h >= H || w < 0 || w >= W) {
          ctx.skip_access();
          return A(0);
        }
        return A(ctx.load(src + (plane * H + h) * W + w));
      };
    };
    fill_strided(ctx, I(s.pool.P) * v.qrows * Wp, v.q, padded(a.pooled + tl.b * I(s.pool.P) * H * W, 2 * v.rh, v.qrows));
    fill_strided(ctx, v.drows * Wp, v.d, padded(a.rho + tl.b * H * W, v.rh, v.drows));
  }

  // s and delta on the map rows [h0 - rh, h1 + rh); s of the tile rows to the workspace.
  template <class Ctx> static SAM_FUSED_BLOCK void sigmoid_delta_maps(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    const Geometry& s = a.s;
    const Tile<I>& tl = v.tl;
    const I W = v.W, e0 = tl.above(v.rh), e1 = tl.below(v.rh, v.H);
    auto qin = [&](int slot, int64_t h, int64_t w) { return A(v.q[v.qidx(slot, h, w)]); };
    ctx.each_thread([&](int t) {
      for (I i = I(t); i < (e1 - e0) * W; i += I(ctx.threads())) {
        const I h = e0 + i / W, w = i % W;
        const A sv = sigmoid(conv_pixel(v.wts, A(v.wts[v.nw]), s.pool.P, s.kh, s.kw, h, w, qin));
        auto&& dv = v.d[v.didx(h, w)];
        dv = sigmoid_backward(A(dv), sv);
        if (h >= tl.h0 && h < tl.h1) ctx.store(a.sig + (tl.b * v.H + h) * W + w, sv);
      }
    });
  }

  // gamma of every pooling slot on the tile pixels to the workspace (the mean slot's / C).
  template <class Ctx> static SAM_FUSED_BLOCK void gamma_maps(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    const Geometry& s = a.s;
    const Tile<I>& tl = v.tl;
    const I W = v.W, H = v.H;
    auto din = [&](int64_t h, int64_t w) { return A(v.d[v.didx(h, w)]); };
    ctx.each_thread([&](int t) {
      for (I i = I(t); i < tl.rows() * W; i += I(ctx.threads())) {
        const I h = tl.h0 + i / W, w = i % W;
        for (int slot = 0; slot < s.pool.P; ++slot) {
          const A g = conv_transpose_pixel(v.wts, slot, s.kh, s.kw, h, w, din);
          ctx.store(a.gamma + ((tl.b * I(s.pool.P) + I(slot)) * H + h) * W + w,
                    slot == s.pool.mean_slot() ? g / A(s.C) : g);
        }
      }
    });
  }

  // Entry k of the block's weight gradient sums delta * (pooled map shifted by tap k) over the
  // tile pixels, the bias entry sums delta. A lane walks every 32nd tile pixel in padded
  // coordinates (j: its offset from the tile's first padded pixel), tracking only the column to
  // skip the pad columns; the zero rows and columns of q stand for the map's border.
  template <class Ctx> static SAM_FUSED_BLOCK void weight_grad_maps(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    const Geometry& s = a.s;
    const I W = v.W, npix = v.tl.rows() * W, col_step = I(32) % W, j_step = I(32) / W * v.Wp + col_step;
    const I doff = v.didx(v.tl.h0, 0), pad = v.Wp - W;
    store_weight_grad_partials(ctx, a, v.nw, [&](int k, int lane) {
      const bool bias = k == v.nw;
      const int slot = k / (s.kh * s.kw), di = (k / s.kw) % s.kh - int(v.rh), dj = k % s.kw - int(v.rw);
      const I qoff = bias ? I(0) : v.qidx(slot, v.tl.h0 + di, dj);  // q of tile pixel j under tap k
      I w = I(lane) % W, j = I(lane) / W * v.Wp + w;
      A acc = 0;
      for (I i = I(lane); i < npix; i += 32) {
        const A dv = A(v.d[doff + j]);
        acc += bias ? dv : dv * A(v.q[qoff + j]);
        w += col_step, j += j_step;
        if (w >= W) w -= W, j += pad;
      }
      return acc;
    });
  }
};

}  // namespace sam_fused::block
