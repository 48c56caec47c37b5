// Backward block programs (docs/design.md §2-3). One pass: a block owns rows [h0, h1) of one
// sample; it stages its grad_out tile in shared memory, computes rho = sum_c g*x on the tile
// plus rh halo rows (x read once, halo re-read from global/L2), s and delta from the saved
// pooled maps, gamma by the transposed conv, the per-block weight/bias gradient partials,
// and writes dx = g*s + gamma_mean/C (+ gamma_max at the first argmax) from the staged tile.
// Two pass: BwdRho writes rho and the argmax first; BwdMain then re-reads grad_out (4N).
// DwReduce sums the per-block partials in a fixed order (bitwise deterministic).
#pragma once
#include "fwd.h"

namespace sam::block {

// rho (g*x over channels c0, c0 + step, ...) and/or argmax over x of one pixel.
template <bool CL, typename T, typename I, class Ctx>
SAM_BLOCK void rho_visit(Ctx& ctx, const Args<T>& a, const Tile<I>& tl, const T* gtile, I h, I w, int c0, int step,
                         bool want_rho, bool want_argmax, ChanPartial<acc_t<T>>& acc) {
  using A = acc_t<T>;
  const Shape& s = a.s;
  const bool from_tile = gtile && h >= tl.h0 && h < tl.h1;
  const I pix = (h - tl.h0) * I(s.W) + w, L = tl.rows() * I(s.W);
  for (I c = c0; c < I(s.C); c += step) {
    const I off = x_offset<CL, I>(s, tl.b, c, h, w);
    const A xv = A(ctx.load(a.x + off));
    if (want_rho)
      acc.sum += A(from_tile ? ctx.load(gtile + (CL ? pix * I(s.C) + c : c * L + pix)) : ctx.load(a.g + off)) * xv;
    if (want_argmax) argmax_visit(acc, xv, int32_t(c));
  }
}

// Two-pass, pass 1: rho and (max pooling) the argmax of the tile pixels to the workspace.
template <typename T, bool CL, typename I> struct BwdRho {
  template <class Ctx> static SAM_BLOCK void run(Ctx& ctx, const Args<T>& a) {
    using A = acc_t<T>;
    const Shape& s = a.s;
    const Tile<I> tl = tile_of<I>(s, a.p, ctx.block());
    auto* part = reinterpret_cast<ChanPartial<A>*>(ctx.smem());
    const I W = I(s.W);
    const bool argmax = s.max_slot >= 0;
    channel_reduce<CL, A>(
        ctx, s, a.p, int64_t(tl.rows() * W), lead_lanes<T, CL>(s, tl.h0), argmax, part,
        [&](int64_t i, int c0, int step, ChanPartial<A>& acc) {
          rho_visit<CL>(ctx, a, tl, static_cast<const T*>(nullptr), tl.h0 + I(i) / W, I(i) % W, c0, step, true, argmax,
                        acc);
        },
        [&](int64_t i, const ChanPartial<A>& acc) {
          const I at = (tl.b * I(s.H) + tl.h0) * W + I(i);
          ctx.store(a.rho + at, acc.sum);
          if (argmax) ctx.store(a.amax + at, acc.idx);
        });
  }
};

template <typename T, bool CL, typename I, bool Spill = false> struct BwdMain {
  template <class Ctx> static SAM_BLOCK void run(Ctx& ctx, const Args<T>& a) {
    using A = acc_t<T>;
    const Shape& s = a.s;
    const Plan& p = a.p;
    unsigned char *sm = ctx.smem(), *mp = map_buffers<Spill>(ctx, a);
    A* wts = reinterpret_cast<A*>(mp + p.off_w);
    A* q = reinterpret_cast<A*>(mp + p.off_q);       // pooled, map row h at q row h - qbase
    A* d = reinterpret_cast<A*>(mp + p.off_d);       // rho then delta, map row h at row h - dbase
    A* sig = reinterpret_cast<A*>(mp + p.off_s);     // s on the tile pixels
    A* gmean = reinterpret_cast<A*>(mp + p.off_gmean);
    A* gmax = reinterpret_cast<A*>(mp + p.off_gmax);
    int32_t* amax = reinterpret_cast<int32_t*>(mp + p.off_amax);
    auto* part = reinterpret_cast<ChanPartial<A>*>(sm + p.off_part);
    T* gtile = p.staged ? reinterpret_cast<T*>(sm + p.off_tile) : nullptr;
    const Tile<I> tl = tile_of<I>(s, p, ctx.block());
    const I W = I(s.W), H = I(s.H), C = I(s.C), rh = I(s.kh / 2), rw = I(s.kw / 2);
    const I qrows = I(p.rows) + 4 * rh, qbase = tl.h0 - 2 * rh, dbase = tl.h0 - rh;
    const I e0 = tl.h0 - rh > 0 ? tl.h0 - rh : I(0), e1 = tl.h1 + rh < H ? tl.h1 + rh : H;              // delta rows
    const I f0 = tl.h0 - 2 * rh > 0 ? tl.h0 - 2 * rh : I(0),
            f1 = tl.h1 + 2 * rh < H ? tl.h1 + 2 * rh : H;  // pooled rows
    const I npix = tl.rows() * W;
    const int nw = int(s.taps());
    const bool has_max = s.max_slot >= 0;
    auto in_map = [&](int64_t h, int64_t w) { return h >= 0 && h < int64_t(H) && w >= 0 && w < int64_t(W); };
    auto qat = [&](int slot, int64_t h, int64_t w) {
      return in_map(h, w) ? q[(I(slot) * qrows + I(h) - qbase) * W + I(w)] : A(0);
    };
    auto dat = [&](int64_t h, int64_t w) { return in_map(h, w) ? d[(I(h) - dbase) * W + I(w)] : A(0); };

    load_weights(ctx, a, wts);
    if (gtile)
      with_vec<T>(p, [&](auto vt) {
        constexpr int V = decltype(vt)::value;
        for_tile_vectors<V, CL>(ctx, s, tl, [&](I k, I off, I, I) { ctx.template copy_vec<V>(a.g + off, gtile + k); });
      });
    ctx.each_thread([&](int t) {
      for (I i = I(t); i < I(s.P) * (f1 - f0) * W; i += I(ctx.threads())) {
        const I slot = i / ((f1 - f0) * W), r = i % ((f1 - f0) * W), h = f0 + r / W;
        q[(slot * qrows + h - qbase) * W + r % W] = ctx.load(a.pooled + ((tl.b * s.P + slot) * H + f0) * W + r);
      }
      // rho of the delta rows (and argmax of the tile) that come from elsewhere than x
      for (I i = I(t); i < (e1 - e0) * W; i += I(ctx.threads())) {
        const I at = (tl.b * H + e0) * W + i, ti = i - (tl.h0 - e0) * W;
        if (s.return_map) d[(e0 - dbase) * W + i] = A(ctx.load(a.g + at));
        else if (p.two_pass) d[(e0 - dbase) * W + i] = ctx.load(a.rho + at);
        if (p.two_pass && has_max && ti >= 0 && ti < npix) amax[ti] = ctx.load(a.amax + at);
      }
    });
    ctx.sync();

    if (!p.two_pass && (!s.return_map || has_max)) {
      // return_map: rho is the map's gradient, only the argmax needs x (tile rows only)
      const I r0 = s.return_map ? tl.h0 : e0, r1 = s.return_map ? tl.h1 : e1;
      channel_reduce<CL, A>(
          ctx, s, p, int64_t((r1 - r0) * W), lead_lanes<T, CL>(s, r0), has_max, part,
          [&](int64_t i, int c0, int step, ChanPartial<A>& acc) {
            const I h = r0 + I(i) / W;
            rho_visit<CL>(ctx, a, tl, static_cast<const T*>(gtile), h, I(i) % W, c0, step, !s.return_map,
                          has_max && h >= tl.h0 && h < tl.h1, acc);
          },
          [&](int64_t i, const ChanPartial<A>& acc) {
            const I h = r0 + I(i) / W, w = I(i) % W;
            if (!s.return_map) d[(h - dbase) * W + w] = acc.sum;
            if (has_max && h >= tl.h0 && h < tl.h1) amax[(h - tl.h0) * W + w] = acc.idx;
          });
    }

    // s and delta = rho * s * (1 - s) on the delta rows
    ctx.each_thread([&](int t) {
      for (I i = I(t); i < (e1 - e0) * W; i += I(ctx.threads())) {
        const I h = e0 + i / W, w = i % W;
        const A sv = sigmoid(conv_pixel(wts, wts[nw], s.P, s.kh, s.kw, int64_t(h), int64_t(w), qat));
        A& dv = d[(h - dbase) * W + w];
        dv = sigmoid_backward(dv, sv);
        if (h >= tl.h0 && h < tl.h1) sig[(h - tl.h0) * W + w] = sv;
      }
    });
    ctx.sync();

    // gamma (transposed conv of delta) on the tile; weight/bias gradient partials of the tile
    ctx.each_thread([&](int t) {
      for (I i = I(t); i < npix; i += I(ctx.threads())) {
        const int64_t h = int64_t(tl.h0 + i / W), w = int64_t(i % W);
        gmean[i] = s.mean_slot >= 0 ? conv_transpose_pixel(wts, s.mean_slot, s.kh, s.kw, h, w, dat) / A(C) : A(0);
        if (has_max) gmax[i] = conv_transpose_pixel(wts, s.max_slot, s.kh, s.kw, h, w, dat);
      }
      for (int k = t; k <= nw; k += ctx.threads()) {
        const int slot = k / (s.kh * s.kw), di = (k / s.kw) % s.kh - int(rh), dj = k % s.kw - int(rw);
        A acc = 0;
        for (I i = 0; i < npix; ++i) {
          const int64_t h = int64_t(tl.h0 + i / W), w = int64_t(i % W);
          const A dv = d[(I(h) - dbase) * W + I(w)];
          acc += k == nw ? dv : dv * qat(slot, h + di, w + dj);
        }
        ctx.store(a.dw_partial + int64_t(k) * p.blocks + ctx.block(), acc);
      }
    });
    ctx.sync();

    // dx = g*s + gamma_mean/C, plus gamma_max on the first argmax channel
    with_vec<T>(p, [&](auto vt) {
      constexpr int V = decltype(vt)::value;
      for_tile_vectors<V, CL>(ctx, s, tl, [&](I k, I off, I pix, I c) {
        T v[V];
        if (gtile) ctx.template load_vec<V>(gtile + k, v);
        else if (!s.return_map) ctx.template load_vec<V>(a.g + off, v);
        for (int e = 0; e < V; ++e) {
          A r = (s.return_map ? A(0) : A(v[e]) * sig[pix]) + gmean[pix];
          if (has_max && c == I(amax[pix])) r += gmax[pix];
          v[e] = T(r);
          step_elem<CL>(s, pix, c);
        }
        ctx.template store_vec<V>(a.out + off, v);
      });
    });
  }
};

// Weight and bias gradient: warp k sums the partials of all blocks for entry k (lanes stride
// the blocks, then a shuffle butterfly), in double, in an order fixed by the launch shape.
template <typename T> struct DwReduce {
  template <class Ctx> static SAM_BLOCK void run(Ctx& ctx, const Args<T>& a) {
    const int64_t nw = a.s.taps(), warps = ctx.threads() / 32;
    auto st = ctx.template thread_state<double>();
    ctx.each_thread([&](int t) {
      const int64_t k = ctx.block() * warps + t / 32;
      double acc = 0;
      if (k <= nw)
        for (int64_t j = t % 32; j < a.p.blocks; j += 32) acc += double(ctx.load(a.dw_partial + k * a.p.blocks + j));
      st[t] = acc;
    });
    ctx.warp_reduce(st, [](double& v) -> double& { return v; }, [](double x, double y) { return x + y; });
    ctx.each_thread([&](int t) {
      const int64_t k = ctx.block() * warps + t / 32;
      if (t % 32 == 0 && k <= nw) ctx.store(k < nw ? a.dw + k : a.dbias, T(st[t]));
    });
  }
};

}  // namespace sam::block
