// BwdMaps, the per-pixel map kernel of the two-pass backward (docs/design.md §3): between BwdRho
// (rho, argmax) and the main kernel, it computes each pixel's maps once, so that the main
// kernel is a pure stream over grad_out. A block owns rows [h0, h1) of one sample's [H, W]
// maps (Plan::Maps). It stages the weights, the pooled rows with a 2rh halo and rho of the rows
// with an rh halo, zero-padded to W + 2rw (+ kMapRun - 1) columns and with zero rows outside the
// map (the conv's "same" padding: no tap is bounds-tested); computes s = sigmoid(conv(pooled)) and
// delta = rho s (1 - s) on the tile and halo rows (s of the tile rows to the workspace); then
// gamma, the transposed conv of delta, per pooling slot (the mean slot's / C) to the workspace,
// and the block's weight/bias gradient partials for DwReduce.
#pragma once
#include <type_traits>

#include "common.h"

namespace sam_fused::block {

// Up to N taps of one kernel row (slot, row di, columns dj0 .. dj0 + n - 1, offsets from the
// centre) whose weight-gradient entries k0 .. k0 + n - 1 a warp sums together (each pixel's
// delta loaded once for all of them), or (bias) the bias entry alone.
struct TapGroup {
  int slot, di, dj0, n, k0;
  bool bias;
};
template <typename A, int N> struct TapSums {
  A v[N];
};

// A block's weight/bias gradient partials: warp j takes tap groups j, j + warps, ... (kernel
// rows cut into groups of N taps, then the bias); lane_sums(group, lane, sums) adds a lane's
// share of the group's entries to sums, then a shuffle butterfly adds the lanes and lane 0
// stores the entries of this block (dw_partial[k, block]). Every thread works, and the order is
// fixed by the launch shape (bitwise deterministic; N only groups the entries, each entry's
// sum runs in the same order whatever N is).
template <int N, typename T, class Ctx, class LaneSums>
SAM_FUSED_BLOCK void store_weight_grad_partials(Ctx& ctx, const Args<T>& a, LaneSums&& lane_sums) {
  using A = acc_t<T>;
  using Sums = TapSums<A, N>;
  const Geometry& s = a.s;
  const int warps = ctx.threads() / 32, per_row = (s.kw + N - 1) / N;
  const int groups = s.pool.P * s.kh * per_row + 1, rw = s.kw / 2;
  // without integer divisions where a group is a whole kernel row (the usual widths; ncu counted
  // the divisions as a fifth of the weight-gradient phase), and with P <= 2 slots
  auto group_of = [&](int m) {
    const int row = per_row == 1 ? m : m / per_row, c0 = per_row == 1 ? 0 : m % per_row * N;
    const int n = s.kw - c0 < N ? s.kw - c0 : N, slot = row >= s.kh ? 1 : 0;
    return TapGroup{slot, row - slot * s.kh - s.kh / 2, c0 - rw, n, row * s.kw + c0, m == groups - 1};
  };
  auto st = ctx.template thread_state<Sums>();
  for (int m0 = 0; m0 < groups; m0 += warps) {
    ctx.each_thread([&](int t) {
      Sums sums{};
      if (m0 + t / 32 < groups) lane_sums(group_of(m0 + t / 32), t % 32, sums.v);
      st[t] = sums;
    });
    ctx.warp_reduce(
        st, [](Sums& x) -> Sums& { return x; },
        [](Sums x, const Sums& y) {
          for (int u = 0; u < N; ++u) x.v[u] += y.v[u];
          return x;
        });
    ctx.each_thread([&](int t) {
      if (t % 32 || m0 + t / 32 >= groups) return;
      const TapGroup g = group_of(m0 + t / 32);
      const Sums sums = st[t];
      if (g.bias) ctx.store(a.dw_partial + int64_t(s.taps()) * a.p.partials + ctx.block(), sums.v[0]);
      else
        for (int u = 0; u < g.n; ++u)
          ctx.store(a.dw_partial + int64_t(g.k0 + u) * a.p.partials + ctx.block(), sums.v[u]);
    });
  }
}

template <typename T, typename I, bool Spill = false> struct BwdMaps {
  using A = acc_t<T>;
  // Values per 16-byte shared access.
  static constexpr int kVec = 16 / int(sizeof(A));
  // Padded columns between a kernel row's first input and the 16-byte vector it lies in: the
  // left pad (rw rounded up to whole vectors, traits.h kMapVecAlign) less rw.
  static constexpr int shift_of(int K) { return (K / 2 + kMapVecAlign - 1) / kMapVecAlign * kMapVecAlign - K / 2; }

  // What the phases of one block share. Buffers are padded: map row h, column w of pooled slot
  // p is q[(p * qrows + h - h0 + 2rh) * Wp + w + lp], of delta d[(h - h0 + rh) * Wp + w + lp].
  // The left pad lp is rw rounded up to whole 16-byte vectors (Plan::Maps::left_pad), so a map
  // row starts on a vector: it is staged by vector copies.
  template <class Ctx> struct View {
    using Buf = BlockBuffer<Ctx, A>;
    Tile<I> tl;
    I H, W, Wp, rh, rw, lp;
    I qrows, drows;  // rows of a pooled slot's buffer (tile + 2rh above and below), of delta's (+ rh)
    int kwp;         // a kernel row's weights take kwp entries (kw rounded up to whole vectors)
    int nw;          // weight entries (P kh kwp); entry nw is the bias
    Buf wts, q, d;

    SAM_FUSED_BLOCK I qidx(int slot, int64_t h, int64_t w) const {
      return (I(slot) * qrows + I(h) - tl.h0 + 2 * rh) * Wp + I(w) + lp;
    }
    SAM_FUSED_BLOCK I didx(int64_t h, int64_t w) const { return (I(h) - tl.h0 + rh) * Wp + I(w) + lp; }
  };

  template <class Ctx> static SAM_FUSED_BLOCK View<Ctx> view_of(Ctx& ctx, const Args<T>& a) {
    const Geometry& s = a.s;
    const Plan::Maps& m = a.p.maps;
    unsigned char* mp;
    if constexpr (Spill) mp = a.map_scratch + ctx.block() * m.spill_bytes;
    else mp = ctx.smem();
    View<Ctx> v;
    v.tl = tile_at<I>(s, m.rows, m.tiles, ctx.block());
    v.H = I(s.H), v.W = I(s.W), v.Wp = I(m.width), v.rh = I(s.kh / 2), v.rw = I(s.kw / 2), v.lp = I(m.left_pad);
    v.qrows = v.tl.rows() + 4 * v.rh, v.drows = v.tl.rows() + 2 * v.rh;
    v.kwp = int(m.kw_padded);
    v.nw = s.pool.P * s.kh * v.kwp;
    v.wts = ctx.buffer(reinterpret_cast<A*>(mp + m.off_w));
    v.q = ctx.buffer(reinterpret_cast<A*>(mp + m.off_q));
    v.d = ctx.buffer(reinterpret_cast<A*>(mp + m.off_d));
    return v;
  }

  template <class Ctx> static SAM_FUSED_BLOCK void run(Ctx& ctx, const Args<T>& a) {
    const auto v = view_of(ctx, a);
    stage_padded_maps(ctx, a, v);
    ctx.copy_wait();
    ctx.sync();
    with_kernel_width<1, 3, 5, 7>(a.s.kw, [&](auto K) {
      sigmoid_delta_maps<decltype(K)::value>(ctx, a, v);
      ctx.sync();
      gamma_maps<decltype(K)::value>(ctx, a, v);
      weight_grad_maps<decltype(K)::value>(ctx, a, v);
    });
  }

  // buf = rows [h0 - r0, h0 - r0 + rows) of each of `planes` [H, W] planes at src, zero-padded
  // (lp columns left, Wp - W - lp right, zero rows outside the map), in units of V values: the
  // map's values copied asynchronously straight into shared memory (cp.async: nothing waits in
  // registers, so no unrolled batch of loads is needed), the padding stored as zeros. Threads
  // stride the units, stepping (plane, row, column) without divisions. V is a 16-byte vector
  // where W and src allow (Wp and lp are whole vectors), else 1. (One value at a time through
  // registers took 43 instructions per value in the sm_90 SASS, most of BwdMaps' staging.)
  template <int V, class Ctx, class Buf>
  static SAM_FUSED_BLOCK void fill_padded_units(Ctx& ctx, const View<Ctx>& v, const A* src, I planes, I rows, I r0,
                                                const Buf& buf) {
    const I Wu = v.Wp / I(V), Lu = v.lp / I(V), Du = v.W / I(V), n = planes * rows * Wu, stride = I(ctx.threads());
    const I step_rows = stride / Wu, step_cols = stride % Wu;
    const I first = v.tl.h0 - r0;            // the map row of buffer row 0
    const I lo = first < 0 ? -first : I(0);  // buffer rows [lo, hi) are map rows
    const I hi = v.H - first < rows ? v.H - first : rows;
    // a unit's source offset, (plane H + first + row) W + (col - lp / V) V, stepped with it:
    // recomputed per unit, with its 64-bit address, it took half of the loop's ~49 instructions
    const I d_step = step_rows * v.W + step_cols * I(V), d_col_wrap = v.W - Wu * I(V), d_plane = (v.H - rows) * v.W;
    A* const dst = raw_of(buf);
    ctx.each_thread([&](int t) {
      const A zeros[V] = {};
      I plane = 0, row = I(t) / Wu, col = I(t) % Wu;
      while (row >= rows) row -= rows, ++plane;
      I off = (plane * v.H + first + row) * v.W + (col - Lu) * I(V);
      for (I i = I(t); i < n; i += stride) {
        if (row >= lo && row < hi && col >= Lu && col < Lu + Du) {
          if constexpr (Spill) {  // global scratch: cp.async writes shared memory only
            A vals[V];
            ctx.template load_vec<V>(src + off, vals);
            ctx.template store_vec<V>(dst + i * I(V), vals);
          } else {
            ctx.template copy_vec<V>(src + off, dst + i * I(V));
          }
        } else {
          ctx.template store_vec<V>(dst + i * I(V), zeros);
        }
        col += step_cols, row += step_rows, off += d_step;
        if (col >= Wu) col -= Wu, ++row, off += d_col_wrap;
        while (row >= rows) row -= rows, off += d_plane;
      }
    });
  }
  template <class Ctx, class Buf>
  static SAM_FUSED_BLOCK void fill_padded(Ctx& ctx, const View<Ctx>& v, const A* src, I planes, I rows, I r0,
                                          const Buf& buf) {
    if (v.W % I(kVec) == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0)
      fill_padded_units<kVec>(ctx, v, src, planes, rows, r0, buf);
    else fill_padded_units<1>(ctx, v, src, planes, rows, r0, buf);
  }

  // Weights, pooled rows [h0 - 2rh, h1 + 2rh) and rho rows [h0 - rh, h1 + rh), padded.
  template <class Ctx> static SAM_FUSED_BLOCK void stage_padded_maps(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    const Geometry& s = a.s;
    const I HW = v.H * v.W;
    load_weights(ctx, a, v.wts, v.kwp);  // kernel rows of kwp entries: read as whole vectors
    fill_padded(ctx, v, a.pooled + v.tl.b * I(s.pool.P) * HW, I(s.pool.P), v.qrows, 2 * v.rh, v.q);
    fill_padded(ctx, v, a.rho + v.tl.b * HW, I(1), v.drows, v.rh, v.d);
  }

  // Runs of kMapRun pixels of one row [r0, r1) x [0, W): f(h, w0, n) for each, threads
  // striding them (the last run of a row has n < kMapRun pixels where W is not a multiple).
  template <class Ctx, class F> static SAM_FUSED_BLOCK void for_runs(Ctx& ctx, const View<Ctx>& v, I r0, I r1, F&& f) {
    const I per_row = (v.W + I(kMapRun - 1)) / I(kMapRun);
    ctx.each_thread([&](int t) {
      for (I r = I(t); r < (r1 - r0) * per_row; r += I(ctx.threads())) {
        const I w0 = r % per_row * I(kMapRun);
        f(r0 + r / per_row, w0, v.W - w0 < I(kMapRun) ? int(v.W - w0) : kMapRun);
      }
    });
  }

  // out[e] = buf[x0 + e] for e < N, read as whole 16-byte vectors (out holds N rounded up to
  // them). x0 must be a multiple of kVec: the padded width, the left pad, the runs' first
  // columns and the weights' rows are, and a padded row holds a window's overrun
  // (Plan::Maps::width).
  template <int N, class Ctx, class Buf>
  static SAM_FUSED_BLOCK void load_window(Ctx& ctx, const Buf& buf, I x0, A* out) {
    load_vectors<N>(ctx, raw_of(buf) + x0, out);
  }
  template <int N, class Ctx, class Buf>
  static SAM_FUSED_BLOCK void store_window(Ctx& ctx, const Buf& buf, I x0, const A* in) {
#pragma unroll
    for (int e = 0; e < N; e += kVec) ctx.template store_vec<kVec>(raw_of(buf) + x0 + I(e), in + e);
  }
  static constexpr int whole_vectors(int n) { return (n + kVec - 1) / kVec * kVec; }

  // A run's n map values to global memory: whole 16-byte vectors where the run is whole and
  // starts on one (W a multiple of kMapRun: one STG.128 where four STG took 4x the sectors), else
  // one at a time.
  template <class Ctx> static SAM_FUSED_BLOCK void store_run(Ctx& ctx, A* out, const A* vals, int n) {
    if (n == kMapRun && reinterpret_cast<uintptr_t>(out) % 16 == 0) {
#pragma unroll
      for (int e = 0; e < kMapRun; e += kVec) ctx.template store_vec<kVec>(out + e, vals + e);
    } else {
      for (int u = 0; u < n; ++u) ctx.store(out + u, vals[u]);
    }
  }

  // One kernel row of the conv for a run of kMapRun outputs: acc[u] += w[j] * x[u + step * j]
  // for j < kw, in j order (the order of conv_pixel / conv_transpose_pixel, so the sums are
  // theirs bit for bit). x[0] is buf[x0]: step = 1 is the forward conv walking right, step = -1
  // the transposed conv walking left. With K = kw known, the row's kMapRun + kw - 1 inputs (from
  // the vector they start in, shift_of(K) columns before the first) and its kw weights are read
  // as 16-byte vectors (3 + 2 loads for kw = 7, where one value at a time took 10 + 7);
  // otherwise the inputs slide along the row in registers, one load per tap.
  template <int Step, int K, class Ctx, class Buf>
  static SAM_FUSED_BLOCK void conv_run_row(Ctx& ctx, const Buf& wts, I wk, const Buf& buf, I x0, int kw,
                                           A (&acc)[kMapRun]) {
    constexpr int R = kMapRun;
    if constexpr (K > 0) {
      constexpr int S = shift_of(K);
      A win[whole_vectors(S + R + K - 1)], w[whole_vectors(K)];
      load_window<S + R + K - 1>(ctx, buf, (Step > 0 ? x0 : x0 - I(K - 1)) - I(S), win);
      load_window<K>(ctx, wts, wk, w);
#pragma unroll
      for (int j = 0; j < K; ++j)
#pragma unroll
        for (int u = 0; u < R; ++u) acc[u] += w[j] * win[S + (Step > 0 ? u + j : u + K - 1 - j)];
    } else {
      A win[R];
#pragma unroll
      for (int u = 0; u < R; ++u) win[u] = A(buf[x0 + I(u)]);
      for (int j = 0; j < kw; ++j) {
        if (j > 0) {
          if constexpr (Step > 0) {
#pragma unroll
            for (int u = 0; u < R - 1; ++u) win[u] = win[u + 1];
            win[R - 1] = A(buf[x0 + I(j + R - 1)]);
          } else {
#pragma unroll
            for (int u = R - 1; u > 0; --u) win[u] = win[u - 1];
            win[0] = A(buf[x0 - I(j)]);
          }
        }
        const A wv = A(wts[wk + I(j)]);
#pragma unroll
        for (int u = 0; u < R; ++u) acc[u] += wv * win[u];
      }
    }
  }

  // s and delta on the map rows [h0 - rh, h1 + rh); s of the tile rows to the workspace.
  template <int K, class Ctx>
  static SAM_FUSED_BLOCK void sigmoid_delta_maps(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    const Geometry& s = a.s;
    const Tile<I>& tl = v.tl;
    for_runs(ctx, v, tl.above(v.rh), tl.below(v.rh, v.H), [&](I h, I w0, int n) {
      A acc[kMapRun];
#pragma unroll
      for (int u = 0; u < kMapRun; ++u) acc[u] = A(v.wts[v.nw]);
      for (int p = 0; p < s.pool.P; ++p)
        for (int i = 0; i < s.kh; ++i)
          conv_run_row<1, K>(ctx, v.wts, I((p * s.kh + i) * v.kwp), v.q, v.qidx(p, h + i - v.rh, w0 - v.rw), s.kw, acc);
      // the run's rho, then delta, as whole vectors (pad columns past the row's end kept as they are)
      A sv[kMapRun], dv[kMapRun];
      const I at = v.didx(h, w0);
      load_window<kMapRun>(ctx, v.d, at, dv);
#pragma unroll
      for (int u = 0; u < kMapRun; ++u) {
        const SigmoidSlope<A> ss = sigmoid_slope(acc[u]);
        sv[u] = ss.s;
        if (u < n) dv[u] *= ss.slope;
      }
      store_window<kMapRun>(ctx, v.d, at, dv);
      if (h >= tl.h0 && h < tl.h1) store_run(ctx, a.sig + (tl.b * v.H + h) * v.W + w0, sv, n);
    });
  }

  // gamma of every pooling slot on the tile pixels to the workspace (the mean slot's / C).
  template <int K, class Ctx> static SAM_FUSED_BLOCK void gamma_maps(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    const Geometry& s = a.s;
    const Tile<I>& tl = v.tl;
    for_runs(ctx, v, tl.h0, tl.h1, [&](I h, I w0, int n) {
      for (int p = 0; p < s.pool.P; ++p) {
        A acc[kMapRun] = {};
        for (int i = 0; i < s.kh; ++i)
          conv_run_row<-1, K>(ctx, v.wts, I((p * s.kh + i) * v.kwp), v.d, v.didx(h - i + v.rh, w0 + v.rw), s.kw, acc);
        if (p == s.pool.mean_slot())
#pragma unroll
          for (int u = 0; u < kMapRun; ++u) acc[u] /= A(s.C);
        store_run(ctx, a.gamma + ((tl.b * I(s.pool.P) + I(p)) * v.H + h) * v.W + w0, acc, n);
      }
    });
  }

  // Entry k of the block's weight gradient sums delta * (pooled map shifted by tap k) over the
  // tile pixels, the bias entry sums delta. A lane takes every 32nd run of kMapRun pixels of a
  // tile row in padded coordinates (j: the run's offset from the tile's first padded pixel),
  // loads its deltas and the run's window of q once for all the group's taps (kMapRun + N - 1
  // values, not N per pixel) and tracks only the run's column to skip the pad columns. A run
  // past the row's end reads the zero pad columns of delta; the zero rows and columns of q stand
  // for the map's border. With K = kw known, a group is a whole kernel row.
  template <int K, class Ctx>
  static SAM_FUSED_BLOCK void weight_grad_maps(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    constexpr int N = K > 0 ? K : kTapGroup, R = kMapRun;
    const I per_row = (v.W + I(R - 1)) / I(R), row_cols = per_row * I(R), nruns = v.tl.rows() * per_row;
    const I col_step = I(32) % per_row * I(R), j_step = I(32) / per_row * v.Wp + col_step, wrap = v.Wp - row_cols;
    const I doff = v.didx(v.tl.h0, 0);
    store_weight_grad_partials<N>(ctx, a, [&](const TapGroup& g, int lane, A* sums) {
      auto for_lane_runs = [&](auto&& f) {
        I c = I(lane) % per_row * I(R), j = I(lane) / per_row * v.Wp + c;
        for (I r = I(lane); r < nruns; r += 32) {
          f(j);
          c += col_step, j += j_step;
          if (c >= row_cols) c -= row_cols, j += wrap;
        }
      };
      // the run's deltas (its first pixel starts a vector: lp is whole vectors)
      auto load_deltas = [&](I j, A(&dv)[R]) {
        if constexpr (K > 0) {
          load_window<R>(ctx, v.d, doff + j, dv);
        } else {
#pragma unroll
          for (int u = 0; u < R; ++u) dv[u] = A(v.d[doff + j + I(u)]);
        }
      };
      if (g.bias) {
        for_lane_runs([&](I j) {
          A dv[R];
          load_deltas(j, dv);
#pragma unroll
          for (int u = 0; u < R; ++u) sums[0] += dv[u];
        });
        return;
      }
      const I qoff = v.qidx(g.slot, v.tl.h0 + g.di, g.dj0);  // q of tile pixel j, first tap
      for_lane_runs([&](I j) {
        constexpr int S = K > 0 ? shift_of(K) : 0;
        A dv[R], win[whole_vectors(S + R + N - 1)];
        load_deltas(j, dv);
        if constexpr (K > 0) {
          load_window<S + R + N - 1>(ctx, v.q, qoff + j - I(S), win);
        } else {
#pragma unroll
          for (int e = 0; e < R + N - 1; ++e) win[e] = e < g.n + R - 1 ? A(v.q[qoff + j + I(e)]) : A(0);
        }
#pragma unroll
        for (int k = 0; k < N; ++k)
#pragma unroll
          for (int u = 0; u < R; ++u) sums[k] += dv[u] * win[S + u + k];
      });
    });
  }
};

}  // namespace sam_fused::block
