// Backward block programs (docs/design.md §2-3). One pass: a block owns rows [h0, h1) of one
// sample; it stages its grad_out tile in shared memory, computes rho = sum_c g*x on the tile
// plus rh halo rows (x read once, from global or, Plan::staged_x, staged beside grad_out;
// halo re-read from global/L2), s and delta from the saved
// pooled maps, gamma by the transposed conv, the per-block weight/bias gradient partials,
// and writes dx = g*s + gamma_mean/C (+ gamma_max at the first argmax) from the staged tile.
// Two pass: BwdRho writes rho and the argmax, BwdMaps (bwd_maps.h) s, gamma and the weight
// gradient partials, each pixel's once; BwdMain then streams grad_out again (4N) into dx, its
// first blocks summing the partials. One pass, DwReduce sums them. The sums run in a fixed
// order (bitwise deterministic).
#pragma once
#include "bwd_maps.h"
#include "fwd.h"

namespace sam_fused::block {

// x (and g) of one channel of one pixel, loaded together ahead of their use.
template <typename A> struct XgPair {
  A x, g;
};

// rho (g*x over channels c0, c0 + step, ...) and/or argmax over x of one pixel; on the tile rows
// g from `gtile` and x from `xtile` where they are staged (same layout), else from global memory.
template <bool CL, typename T, typename I, class Ctx>
SAM_FUSED_BLOCK void rho_visit(Ctx& ctx, const Args<T>& a, const Tile<I>& tl, const T* gtile, const T* xtile, I h, I w,
                               int c0, int step, bool want_rho, bool want_argmax, ChanPartial<acc_t<T>>& acc) {
  using A = acc_t<T>;
  const Geometry& s = a.s;
  const I pix = (h - tl.h0) * I(s.W) + w, L = tl.rows() * I(s.W);
  // One loop per source of x and g and per argmax (template arguments, not branches between the
  // unrolled loads: without the argmax, as in every mean-pooled layer, the loop issues none of
  // its compares), U channels ahead: 2U loads in flight, or U of x from global with g staged
  // (fp32: kRhoUnroll, twice as many, the loop otherwise latency bound).
  auto visit_with = [&](auto unroll, auto x_at, auto g_at) {
    constexpr int U = decltype(unroll)::value;
    auto run = [&](auto argmax) {
      for_channels<U>(
          I(c0), I(step), I(s.C),
          [&](I c) {
            const I off = x_offset<CL, I>(s, tl.b, c, h, w), k = CL ? pix * I(s.C) + c : c * L + pix;
            const A xv = A(ctx.load(x_at(k, off)));
            return XgPair<A>{xv, want_rho ? A(ctx.load(g_at(k, off))) : A(0)};
          },
          [&](I c, XgPair<A> v) {
            if (want_rho) acc.sum += v.g * v.x;
            if constexpr (decltype(argmax)::value) argmax_visit(acc, v.x, int32_t(c));
          });
    };
    if (want_argmax) run(std::true_type{});
    else run(std::false_type{});
  };
  auto global_x = [&](I, I off) { return a.x + off; };
  using Base = std::integral_constant<int, kChannelUnroll>;
  if (gtile && h >= tl.h0 && h < tl.h1) {
    auto tile_g = [&](I k, I) { return gtile + k; };
    if (xtile) visit_with(Base{}, [&](I k, I) { return xtile + k; }, tile_g);
    else visit_with(std::integral_constant<int, sizeof(T) == 4 ? kRhoUnroll : kChannelUnroll>{}, global_x, tile_g);
  } else visit_with(Base{}, global_x, [&](I, I off) { return a.g + off; });
}

// Two-pass, pass 1: rho and (max pooling) the argmax of the tile pixels to the workspace.
template <typename T, bool CL, typename I> struct BwdRho {
  template <class Ctx> static SAM_FUSED_BLOCK void run(Ctx& ctx, const Args<T>& a) {
    using A = acc_t<T>;
    const Geometry& s = a.s;
    const Tile<I> tl = tile_of<I>(s, a.p, ctx.block());
    auto* part = reinterpret_cast<ChanPartial<A>*>(ctx.smem());
    const I W = I(s.W);
    const bool argmax = s.pool.max_slot() >= 0;
    channel_reduce<CL, A>(
        ctx, s, a.p, int64_t(tl.rows() * W), lead_lanes<T, CL>(s, tl.h0), argmax, part,
        [&](int64_t i, int c0, int step, ChanPartial<A>& acc) {
          rho_visit<CL>(ctx, a, tl, static_cast<const T*>(nullptr), static_cast<const T*>(nullptr), tl.h0 + I(i) / W,
                        I(i) % W, c0, step, true, argmax, acc);
        },
        [&](int64_t i, const ChanPartial<A>& acc) {
          const I at = (tl.b * I(s.H) + tl.h0) * W + I(i);
          ctx.store(a.rho + at, acc.sum);
          if (argmax) ctx.store(a.amax + at, acc.idx);
        });
  }
};

// One-pass kernel, or (TwoPass, the plan's p.two_pass) the last pass of the two-pass variant: s,
// gamma and the argmax come from the workspace, grad_out is re-read rather than staged: a pure
// stream. Two kernels, not a runtime branch: with both paths in one, the two-pass path's
// batch of loads ahead (kStreamAhead) had the one-pass code scheduled anew, and an H100 timed
// the UCI-HAR fp32 backwards (one pass) 1-3% slower for it (docs/gpu-results.md, eleventh
// session). run is the sequence of phases and barriers; each phase is a force-inlined function
// over the block's View.
template <typename T, bool CL, typename I, bool Spill = false, bool TwoPass = false> struct BwdMain {
  using A = acc_t<T>;

  // What the phases of one block share: its tile, row ranges and buffers, computed once.
  template <class Ctx> struct View {
    using Buf = BlockBuffer<Ctx, A>;
    Tile<I> tl;
    I W, H, C, rh, rw;
    I qrows, qbase, dbase;  // pooled map row h is q row h - qbase, delta row h is d row h - dbase
    I e0, e1;               // delta rows (tile + rh halo, clipped to the map)
    I f0, f1;               // pooled rows (tile + 2rh halo, clipped to the map)
    I npix;                 // tile pixels
    int nw;                 // weight taps; entry nw is the bias
    bool has_max;
    Buf wts;
    Buf q;      // pooled maps
    Buf d;      // rho then delta
    Buf sig;    // s on the tile pixels
    Buf gmean;  // gamma of the mean map / C, tile pixels
    Buf gmax;   // gamma of the max map, tile pixels
    BlockBuffer<Ctx, int32_t> amax;
    ChanPartial<A>* part;
    T* gtile;  // staged grad_out tile, or null
    T* xtile;  // staged x tile (Plan::staged_x), or null

    SAM_FUSED_BLOCK bool in_map(int64_t h, int64_t w) const {
      return h >= 0 && h < int64_t(H) && w >= 0 && w < int64_t(W);
    }
    // Pooled map / delta at (h, w): unchecked (inside the map), or 0 outside it.
    SAM_FUSED_BLOCK A qin(int slot, int64_t h, int64_t w) const {
      return A(q[(I(slot) * qrows + I(h) - qbase) * W + I(w)]);
    }
    SAM_FUSED_BLOCK A din(int64_t h, int64_t w) const { return A(d[(I(h) - dbase) * W + I(w)]); }
    SAM_FUSED_BLOCK A qat(int slot, int64_t h, int64_t w) const { return in_map(h, w) ? qin(slot, h, w) : A(0); }
    SAM_FUSED_BLOCK A dat(int64_t h, int64_t w) const { return in_map(h, w) ? din(h, w) : A(0); }
  };

  template <class Ctx> static SAM_FUSED_BLOCK View<Ctx> view_of(Ctx& ctx, const Args<T>& a) {
    const Geometry& s = a.s;
    const Plan& p = a.p;
    unsigned char *sm = ctx.smem(), *mp = map_buffers<Spill>(ctx, a);
    const Tile<I> tl = tile_of<I>(s, p, ctx.block());
    const I H = I(s.H), rh = I(s.kh / 2);
    View<Ctx> v;
    v.tl = tl;
    v.W = I(s.W), v.H = H, v.C = I(s.C), v.rh = rh, v.rw = I(s.kw / 2);
    v.qrows = I(p.rows) + 4 * rh, v.qbase = tl.h0 - 2 * rh, v.dbase = tl.h0 - rh;
    v.e0 = tl.above(rh), v.e1 = tl.below(rh, H);
    v.f0 = tl.above(2 * rh), v.f1 = tl.below(2 * rh, H);
    v.npix = tl.rows() * v.W;
    v.nw = int(s.taps());
    v.has_max = s.pool.max_slot() >= 0;
    v.wts = ctx.buffer(reinterpret_cast<A*>(mp + p.off_w));
    v.q = ctx.buffer(reinterpret_cast<A*>(mp + p.off_q));
    v.d = ctx.buffer(reinterpret_cast<A*>(mp + p.off_d));
    v.sig = ctx.buffer(reinterpret_cast<A*>(mp + p.off_s));
    v.gmean = ctx.buffer(reinterpret_cast<A*>(mp + p.off_gmean));
    v.gmax = ctx.buffer(reinterpret_cast<A*>(mp + p.off_gmax));
    v.amax = ctx.buffer(reinterpret_cast<int32_t*>(mp + p.off_amax));
    v.part = reinterpret_cast<ChanPartial<A>*>(sm + p.off_part);
    v.gtile = p.staged ? reinterpret_cast<T*>(sm + p.off_tile) : nullptr;
    v.xtile = p.staged_x ? reinterpret_cast<T*>(sm + p.off_xtile) : nullptr;  // staged_x implies staged
    return v;
  }

  template <class Ctx> static SAM_FUSED_BLOCK void run(Ctx& ctx, const Args<T>& a) {
    const auto v = view_of(ctx, a);
    if constexpr (TwoPass) {
      // the weight and bias gradient from BwdMaps' partials: the first blocks, a warp an entry
      // (group g of entries by block g, g - blocks, ...: a grid smaller than the groups loops),
      // then the tile's maps, while grad_out's first vectors are in flight
      auto stage_maps = [&] {
        for (int64_t g = ctx.block(); g * (ctx.threads() / 32) <= a.s.taps(); g += a.p.blocks)
          reduce_weight_grad(ctx, a, g);
        stage_tile_maps(ctx, a, v);
        ctx.sync();
      };
      if constexpr (kStreamAhead<T> > 0) {
        write_dx_tile(ctx, a, v, ahead_in_registers(stage_maps));
      } else {
        stage_maps();
        write_dx_tile(ctx, a, v);
      }
    } else {
      stage_inputs(ctx, a, v);
      rho_halo_rows(ctx, a, v);    // while the grad_out tile lands; ends with a barrier when it runs
      rho_rows_from_x(ctx, a, v);  // chunk by chunk as they land; ends with a barrier
      sigmoid_delta_rows(ctx, a, v);
      ctx.sync();
      gamma_and_weight_grad(ctx, a, v);
      ctx.sync();
      write_dx_tile(ctx, a, v);
    }
  }

  // Two pass: the tile's s, gamma and argmax maps from the workspace (BwdMaps, BwdRho).
  template <class Ctx> static SAM_FUSED_BLOCK void stage_tile_maps(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    const Geometry& s = a.s;
    const I HW = v.H * v.W, at0 = v.tl.b * HW + v.tl.h0 * v.W;
    const A* gamma = a.gamma + (v.tl.b * I(s.pool.P) * v.H + v.tl.h0) * v.W;  // slot k, tile pixel i: k * HW + i
    const int mean = s.pool.mean_slot(), max = s.pool.max_slot();
    ctx.each_thread([&](int t) {
      for (I i = I(t); i < v.npix; i += I(ctx.threads())) {
        v.sig[i] = ctx.load(a.sig + at0 + i);
        v.gmean[i] = mean >= 0 ? ctx.load(gamma + I(mean) * HW + i) : A(0);
        if (max >= 0) {
          v.gmax[i] = ctx.load(gamma + I(max) * HW + i);
          v.amax[i] = ctx.load(a.amax + at0 + i);
        }
      }
    });
  }

  // One pass: weights, the grad_out tile (and the x tile), the pooled rows with their 2rh halo,
  // and (return_map) rho of the delta rows, the map's gradient.
  template <class Ctx> static SAM_FUSED_BLOCK void stage_inputs(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    const Geometry& s = a.s;
    const Plan& p = a.p;
    const Tile<I>& tl = v.tl;
    const I W = v.W, H = v.H, e0 = v.e0, e1 = v.e1, f0 = v.f0, f1 = v.f1;
    load_weights(ctx, a, v.wts);
    if (v.gtile)
      with_vec<T>(p, [&](auto vt) {
        constexpr int V = decltype(vt)::value;
        stage_tile_chunks<V, CL>(ctx, s, p, tl, v.xtile ? 4 : 2, [&](I k, I off) {
          ctx.template copy_vec<V>(a.g + off, v.gtile + k);
          if (v.xtile) ctx.template copy_vec<V>(a.x + off, v.xtile + k);
        });
      });
    ctx.each_thread([&](int t) {
      for (I i = I(t); i < I(s.pool.P) * (f1 - f0) * W; i += I(ctx.threads())) {
        const I slot = i / ((f1 - f0) * W), r = i % ((f1 - f0) * W), h = f0 + r / W;
        v.q[(slot * v.qrows + h - v.qbase) * W + r % W] =
            ctx.load(a.pooled + ((tl.b * s.pool.P + slot) * H + f0) * W + r);
      }
      if (s.return_map)
        for (I i = I(t); i < (e1 - e0) * W; i += I(ctx.threads()))
          v.d[(e0 - v.dbase) * W + i] = A(ctx.load(a.g + (tl.b * H + e0) * W + i));
    });
  }

  // rho = sum_c g*x (unless return_map) of the pixels of `rows` into d, and the argmax of
  // those on the tile rows (with max pooling); g from the staged tile on the tile rows.
  template <class Ctx, class Ready = AllReady>
  static SAM_FUSED_BLOCK void rho_row_set(Ctx& ctx, const Args<T>& a, const View<Ctx>& v, const RowSet<I>& rows,
                                          const T* gtile, const T* xtile, Ready&& ready = {}) {
    const Geometry& s = a.s;
    const Tile<I>& tl = v.tl;
    const I W = v.W;
    const bool has_max = v.has_max;
    channel_reduce<CL, A>(
        ctx, s, a.p, int64_t(rows.npix()), lead_lanes<T, CL>(s, rows.r0), has_max, v.part,
        [&](int64_t i, int c0, int step, ChanPartial<A>& acc) {
          const I h = rows.row(I(i));
          rho_visit<CL>(ctx, a, tl, gtile, xtile, h, I(i) % W, c0, step, !s.return_map,
                        has_max && h >= tl.h0 && h < tl.h1, acc);
        },
        [&](int64_t i, const ChanPartial<A>& acc) {
          const I h = rows.row(I(i)), w = I(i) % W;
          if (!s.return_map) v.d[(h - v.dbase) * W + w] = acc.sum;
          if (has_max && h >= tl.h0 && h < tl.h1) v.amax[(h - tl.h0) * W + w] = acc.idx;
        },
        ready);
  }

  // One pass with a staged grad_out tile: rho of the rh halo rows above and below it, x and g
  // from global/L2. They do not need the tile, so their round trips overlap its copies.
  template <class Ctx> static SAM_FUSED_BLOCK void rho_halo_rows(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    if (v.gtile)
      rho_row_set(ctx, a, v, RowSet<I>{v.e0, v.e1, v.tl.h0, v.tl.h1, v.W}, static_cast<const T*>(nullptr),
                  static_cast<const T*>(nullptr));
  }

  // One pass: rho of the tile rows (g from the staged tile, x too with Plan::staged_x; the halo
  // is done), each round of pixels as soon as its chunk has landed, and the argmax of the tile; with
  // return_map (nothing staged) rho is the map's gradient and only the argmax needs x.
  template <class Ctx> static SAM_FUSED_BLOCK void rho_rows_from_x(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    const Geometry& s = a.s;
    const Tile<I>& tl = v.tl;
    if (!v.gtile) {
      ctx.sync();  // the staged pooled rows and return_map's rho rows
      if (!s.return_map || v.has_max)
        rho_row_set(ctx, a, v, RowSet<I>{tl.h0, tl.h1, tl.h0, tl.h0, v.W}, static_cast<const T*>(nullptr),
                    static_cast<const T*>(nullptr));
      return;
    }
    if (a.p.sum_vectors()) rho_tile_vectors(ctx, a, v);
    else
      rho_row_set(ctx, a, v, RowSet<I>{tl.h0, tl.h1, tl.h0, tl.h0, v.W}, static_cast<const T*>(v.gtile),
                  static_cast<const T*>(v.xtile), ChunksReady<Ctx>{ctx, a.p, a.p.chunk_rows * s.W});
  }

  // rho of the tile rows by 16-byte vectors (Plan::sum_vectors(): NCHW, no argmax): g from the
  // staged tile, x from its staged tile or from global memory, chunk by chunk as they land.
  template <class Ctx> static SAM_FUSED_BLOCK void rho_tile_vectors(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    if constexpr (!CL)
      with_vec<T>(a.p, [&](auto vt) {
        constexpr int V = decltype(vt)::value;
        if constexpr (V > 1) {
          const I L = v.npix, HW = v.H * v.W, x0 = x_offset<false, I>(a.s, v.tl.b, I(0), v.tl.h0, I(0));
          const I drow0 = (v.tl.h0 - v.dbase) * v.W;
          struct Pair {
            T x[V], g[V];
          };
          // one loop per source of x (the tile's shared memory or global memory), so that each
          // load is a shared or a global one, not a generic load of either
          auto sum_with = [&](auto x_at) {
            channel_sum_vectors<V, kSumUnroll16<T>>(
                ctx, a.p, v.tl, v.W, v.C, reinterpret_cast<A*>(v.part),
                [&](I c, I pix) {
                  Pair r;
                  ctx.template load_vec<V>(x_at(c, pix), r.x);
                  ctx.template load_vec<V>(v.gtile + c * L + pix, r.g);
                  return r;
                },
                [&](const Pair& r, A(&acc)[V]) {
                  A xs[V], gs[V];
                  widen(r.x, xs);
                  widen(r.g, gs);
#pragma unroll
                  for (int e = 0; e < V; ++e) acc[e] += gs[e] * xs[e];
                },
                [&](I pix, A sum) { v.d[drow0 + pix] = sum; }, ChunksReady<Ctx>{ctx, a.p, a.p.chunk_rows * a.s.W});
          };
          if (v.xtile) sum_with([&](I c, I pix) -> const T* { return v.xtile + c * L + pix; });
          else sum_with([&](I c, I pix) { return a.x + x0 + c * HW + pix; });
        }
      });
  }

  // s = sigmoid(conv(pooled)) and delta = rho * s * (1 - s) (sigmoid_slope) on the delta rows; s kept for the
  // tile pixels.
  template <class Ctx> static SAM_FUSED_BLOCK void sigmoid_delta_rows(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    const Geometry& s = a.s;
    const I W = v.W;
    auto qin = [&](int slot, int64_t h, int64_t w) { return v.qin(slot, h, w); };
    auto qat = [&](int slot, int64_t h, int64_t w) { return v.qat(slot, h, w); };
    ctx.each_thread([&](int t) {
      for (I i = I(t); i < (v.e1 - v.e0) * W; i += I(ctx.threads())) {
        const I h = v.e0 + i / W, w = i % W;
        const A bias = A(v.wts[v.nw]);
        const SigmoidSlope<A> sv =
            sigmoid_slope(window_inside(s, h, w) ? conv_pixel(v.wts, bias, s.pool.P, s.kh, s.kw, h, w, qin)
                                                 : conv_pixel(v.wts, bias, s.pool.P, s.kh, s.kw, h, w, qat));
        auto&& dv = v.d[(h - v.dbase) * W + w];
        dv = A(dv) * sv.slope;
        if (h >= v.tl.h0 && h < v.tl.h1) v.sig[(h - v.tl.h0) * W + w] = sv.s;
      }
    });
  }

  // gamma (transposed conv of delta) on the tile, and the block's weight/bias gradient
  // partials to the workspace for DwReduce.
  template <class Ctx> static SAM_FUSED_BLOCK void gamma_and_weight_grad(Ctx& ctx, const Args<T>& a,
                                                                         const View<Ctx>& v) {
    const Geometry& s = a.s;
    const I W = v.W, npix = v.npix;
    auto din = [&](int64_t h, int64_t w) { return v.din(h, w); };
    auto dat = [&](int64_t h, int64_t w) { return v.dat(h, w); };
    ctx.each_thread([&](int t) {
      for (I i = I(t); i < npix; i += I(ctx.threads())) {
        const int64_t h = int64_t(v.tl.h0 + i / W), w = int64_t(i % W);
        const bool inside = window_inside(s, h, w);
        auto gamma = [&](int slot) {
          return inside ? conv_transpose_pixel(v.wts, slot, s.kh, s.kw, h, w, din)
                        : conv_transpose_pixel(v.wts, slot, s.kh, s.kw, h, w, dat);
        };
        v.gmean[i] = s.pool.mean_slot() >= 0 ? gamma(s.pool.mean_slot()) / A(v.C) : A(0);
        if (v.has_max) v.gmax[i] = gamma(s.pool.max_slot());
      }
    });
    weight_grad_partials(ctx, a, v);
  }

  // Entry k of the block's weight gradient sums delta * (pooled map shifted by tap k) over the
  // tile pixels; the last entry (the bias) sums delta (store_weight_grad_partials: a warp per
  // kernel row of the usual widths, else per kTapGroup taps of one, lanes striding the pixels).
  // A lane walks its pixels without divisions: tile pixel i is delta entry rh*W + i and pooled
  // entry (2rh)*W + i of its slot, shifted by the tap; only the row and column need tracking,
  // for the map's border.
  template <class Ctx> static SAM_FUSED_BLOCK void weight_grad_partials(Ctx& ctx, const Args<T>& a,
                                                                        const View<Ctx>& v) {
    with_kernel_width<1, 3, 5, 7>(a.s.kw, [&](auto kw) {
      constexpr int K = decltype(kw)::value, N = K > 0 ? K : kTapGroup;
      const I W = v.W, H = v.H, npix = v.npix;
      const I lane_step_rows = I(32) / W, lane_step_cols = I(32) % W;
      const I doff = v.rh * W;
      store_weight_grad_partials<N>(ctx, a, [&](const TapGroup& g, int lane, A* sums) {
        const I qoff = (I(g.slot) * v.qrows + v.tl.h0 - v.qbase + I(g.di)) * W + I(g.dj0);
        I h = v.tl.h0 + I(lane) / W, w = I(lane) % W;
        for (I i = I(lane); i < npix; i += 32) {
          const A dv = A(v.d[doff + i]);
          const bool row_inside = h + I(g.di) >= 0 && h + I(g.di) < H;
          if (g.bias) sums[0] += dv;
          else {
#pragma unroll
            for (int u = 0; u < N; ++u) {
              const I c = w + I(g.dj0 + u);
              if (K > 0 || u < g.n) sums[u] += dv * (row_inside && c >= 0 && c < W ? A(v.q[qoff + I(u) + i]) : A(0));
            }
          }
          h += lane_step_rows, w += lane_step_cols;
          if (w >= W) w -= W, ++h;
        }
      });
    });
  }

  // dx = g*s + gamma_mean/C, plus gamma_max on the first argmax channel (g from the staged tile
  // when there is one; no g*s term with return_map). `ahead`: stream_tile_vectors'.
  template <class Ctx, class AheadT = NoAhead>
  static SAM_FUSED_BLOCK void write_dx_tile(Ctx& ctx, const Args<T>& a, const View<Ctx>& v, AheadT&& ahead = {}) {
    const Geometry& s = a.s;
    with_vec<T>(a.p, [&](auto vt) {
      constexpr int V = decltype(vt)::value;
      stream_tile_vectors<V, kStreamUnroll, CL, T>(
          ctx, s, v.tl,
          [&](const TileVector<I>& at, T* vec) {
            if (v.gtile) ctx.template load_vec<V>(v.gtile + at.k, vec);
            else if (!s.return_map) ctx.template load_vec<V>(a.g + at.off, vec);
            else ctx.skip_access();  // nothing to load: keep one access per load
          },
          [&](const TileVector<I>& at, T* vec) {
            if constexpr (!reads_map_runs<CL, V>()) {  // V channels (of one or two pixels), or one pixel
              I pix = at.pix, c = at.c;
              for (int e = 0; e < V; ++e) {
                A r = (s.return_map ? A(0) : A(vec[e]) * A(v.sig[pix])) + A(v.gmean[pix]);
                if (v.has_max && c == I(int32_t(v.amax[pix]))) r += A(v.gmax[pix]);
                vec[e] = T(r);
                step_elem<CL>(s, pix, c);
              }
            } else {  // V pixels of one channel's run: their map values as 16-byte vectors,
              // one map at a time (fewer live registers: BwdMain stays within its 128)
              A r[V], m[V];
              if (!s.return_map) {
                load_map_run<V>(ctx, v.sig, at.pix, m);
                for (int e = 0; e < V; ++e) r[e] = A(vec[e]) * m[e];
              } else {
                skip_map_run<V, A>(ctx);
                for (int e = 0; e < V; ++e) r[e] = A(0);
              }
              load_map_run<V>(ctx, v.gmean, at.pix, m);
              for (int e = 0; e < V; ++e) r[e] += m[e];
              if (v.has_max) {
                int32_t am[V];
                load_map_run<V>(ctx, v.amax, at.pix, am);
                load_map_run<V>(ctx, v.gmax, at.pix, m);
                for (int e = 0; e < V; ++e)
                  if (at.c == I(am[e])) r[e] += m[e];
              } else {
                skip_map_run<V, int32_t>(ctx);
                skip_map_run<V, A>(ctx);
              }
              for (int e = 0; e < V; ++e) vec[e] = T(r[e]);
            }
            ctx.template store_vec<V>(a.out + at.off, vec);
          },
          1 + (!reads_map_runs<CL, V>() ? 0 : 3 * map_run_accesses<V, A>() + map_run_accesses<V, int32_t>()), ahead);
    });
  }
};

// Weight and bias gradient: warp w of block `blk` sums the partials of all blocks for entry
// k = blk * warps + w (lanes stride the p.partials blocks of BwdMaps or the one-pass main
// kernel, then a shuffle butterfly), in double, in an order fixed by the launch shape: each
// entry's sum is the same whatever the warps per block.
template <typename T, class Ctx> SAM_FUSED_BLOCK void reduce_weight_grad(Ctx& ctx, const Args<T>& a, int64_t blk) {
  const int64_t nw = a.s.taps(), warps = ctx.threads() / 32;
  auto st = ctx.template thread_state<double>();
  ctx.each_thread([&](int t) {
    const int64_t k = blk * warps + t / 32;
    double acc = 0;
    if (k <= nw)
      for (int64_t j = t % 32; j < a.p.partials; j += 32) acc += double(ctx.load(a.dw_partial + k * a.p.partials + j));
    st[t] = acc;
  });
  ctx.warp_reduce(st, [](double& v) -> double& { return v; }, [](double x, double y) { return x + y; });
  ctx.each_thread([&](int t) {
    const int64_t k = blk * warps + t / 32;
    if (t % 32 == 0 && k <= nw) ctx.store(k < nw ? a.dw + k : a.dbias, T(st[t]));
  });
}

// The one-pass backward's last launch (its main kernel writes the partials); the two-pass
// backward's main kernel does the same work in its first blocks (BwdMaps wrote the partials in
// the launch before), one launch fewer.
template <typename T> struct DwReduce {
  template <class Ctx> static SAM_FUSED_BLOCK void run(Ctx& ctx, const Args<T>& a) {
    reduce_weight_grad(ctx, a, ctx.block());
  }
};

}  // namespace sam_fused::block
