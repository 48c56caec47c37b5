// Forward block programs (docs/design.md §3). One pass: a block owns rows [h0, h1) of one sample
// across all C; it stages that x tile in shared memory, pools the tile plus rh halo rows
// (halo rows re-read from global/L2 instead of synchronising with the neighbour block),
// convolves, applies the sigmoid and writes x * s from the staged tile: x is read from DRAM
// once, out written once. Two pass (tile too large for shared memory): FwdPool writes the
// pooled maps, then FwdMain reads them (with halo) and streams x -> out (3N bytes).
#pragma once
#include <type_traits>

#include "common.h"

namespace sam_fused::block {

template <int V> using VecTag = std::integral_constant<int, V>;

// Runs f(VecTag<V>) with the plan's vector width.
template <typename T, class F> SAM_FUSED_BLOCK void with_vec(const Plan& p, F&& f) {
  if (p.vec > 1) f(VecTag<16 / int(sizeof(T))>{});
  else f(VecTag<1>{});
}

// Pool the x elements of one pixel over channels c0, c0 + step, ...; `tile` holds rows
// [tl.h0, tl.h1) when non-null.
template <bool CL, typename T, typename I, class Ctx>
SAM_FUSED_BLOCK void pool_visit(Ctx& ctx, const Args<T>& a, const Tile<I>& tl, const T* tile, I h, I w, int c0,
                                int step, ChanPartial<acc_t<T>>& acc) {
  using A = acc_t<T>;
  const Geometry& s = a.s;
  const bool want_sum = s.pool.mean_slot() >= 0, want_max = s.pool.max_slot() >= 0;
  const I pix = (h - tl.h0) * I(s.W) + w, L = tl.rows() * I(s.W);
  // One loop per source and per pool (template arguments, not branches between the unrolled
  // loads: a mean-only pool then issues no max instructions, half the loop's per channel).
  auto pool_from = [&](auto sum, auto max, auto x_at) {
    for_channels<kChannelUnroll>(
        I(c0), I(step), I(s.C), [&](I c) { return A(ctx.load(x_at(c))); },
        [&](I, A v) {
          if constexpr (decltype(sum)::value) acc.sum += v;
          if constexpr (decltype(max)::value) acc.max = nan_max(acc.max, v);
        });
  };
  auto with_pool = [&](auto x_at) {
    using Yes = std::true_type;
    using No = std::false_type;
    if (want_sum && want_max) pool_from(Yes{}, Yes{}, x_at);
    else if (want_sum) pool_from(Yes{}, No{}, x_at);
    else pool_from(No{}, Yes{}, x_at);
  };
  if (tile && h >= tl.h0 && h < tl.h1) with_pool([&](I c) { return tile + (CL ? pix * I(s.C) + c : c * L + pix); });
  else with_pool([&](I c) { return a.x + x_offset<CL, I>(s, tl.b, c, h, w); });
}

// Two-pass, pass 1: pooled maps of the block's tile rows, straight to `pooled`.
template <typename T, bool CL, typename I> struct FwdPool {
  template <class Ctx> static SAM_FUSED_BLOCK void run(Ctx& ctx, const Args<T>& a) {
    using A = acc_t<T>;
    const Geometry& s = a.s;
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
          if (s.pool.mean_slot() >= 0)
            ctx.store(a.pooled + ((tl.b * s.pool.P + s.pool.mean_slot()) * I(s.H) + h) * W + w, acc.sum / A(s.C));
          if (s.pool.max_slot() >= 0)
            ctx.store(a.pooled + ((tl.b * s.pool.P + s.pool.max_slot()) * I(s.H) + h) * W + w, acc.max);
        });
  }
};

// One-pass kernel, or pass 2 of the two-pass variant (p.two_pass: pooled maps come from
// global memory, x is streamed, or staged under Variant::kTwoPassStaged). run is the sequence of
// phases and barriers; each phase is a force-inlined function over the block's View.
template <typename T, bool CL, typename I, bool Spill = false> struct FwdMain {
  using A = acc_t<T>;
  // 16-bit, 32-bit offsets, buffers in shared memory: registers for four resident blocks (64 a
  // thread), as nvcc gave them before the vector pool, whose added code made it take 67 around
  // the per-pixel conv; the CBAM bf16 forward's 448-block grid fits one wave only with four
  // (phase model: 64% -> 56% with three). The other variants take more and keep kBlocksPerSm.
  static constexpr int kMinBlocksPerSm = sizeof(T) == 2 && sizeof(I) == 4 && !Spill ? 4 : int(kBlocksPerSm);

  // What the phases of one block share: its tile, row ranges and buffers, computed once.
  template <class Ctx> struct View {
    using Buf = BlockBuffer<Ctx, A>;
    Tile<I> tl;
    I W, H, qrows, qbase;  // pooled map row h is q row h - qbase
    I e0, e1;              // pooled rows (tile + rh halo, clipped to the map)
    int nw;                // weight taps; entry nw is the bias
    Buf wts;
    Buf q;    // pooled maps
    Buf sig;  // s of the tile pixels
    ChanPartial<A>* part;
    T* tile;  // staged x tile, or null

    SAM_FUSED_BLOCK decltype(auto) qslot(int slot, I h, I w) const { return q[(I(slot) * qrows + h - qbase) * W + w]; }
  };

  template <class Ctx> static SAM_FUSED_BLOCK View<Ctx> view_of(Ctx& ctx, const Args<T>& a) {
    const Geometry& s = a.s;
    const Plan& p = a.p;
    unsigned char *sm = ctx.smem(), *mp = map_buffers<Spill>(ctx, a);
    View<Ctx> v;
    v.tl = tile_of<I>(s, p, ctx.block());
    const I rh = I(s.kh / 2);
    v.W = I(s.W), v.H = I(s.H), v.qrows = I(p.rows) + 2 * rh, v.qbase = v.tl.h0 - rh;
    v.e0 = v.tl.above(rh), v.e1 = v.tl.below(rh, v.H);
    v.nw = int(s.taps());
    v.wts = ctx.buffer(reinterpret_cast<A*>(mp + p.off_w));
    v.q = ctx.buffer(reinterpret_cast<A*>(mp + p.off_q));
    v.sig = ctx.buffer(reinterpret_cast<A*>(mp + p.off_s));
    v.part = reinterpret_cast<ChanPartial<A>*>(sm + p.off_part);
    v.tile = p.staged ? reinterpret_cast<T*>(sm + p.off_tile) : nullptr;
    return v;
  }

  template <class Ctx> static SAM_FUSED_BLOCK void run(Ctx& ctx, const Args<T>& a) {
    const auto v = view_of(ctx, a);
    stage_x_tile(ctx, a, v);
    pool_halo_rows(ctx, a, v);  // while the tile lands; ends with a barrier when it runs
    pool_rows(ctx, a, v);       // chunk by chunk as they land; ends with a barrier
    sigmoid_tile(ctx, a, v);
    if (v.tile && a.p.two_pass) ctx.copy_wait();  // a staged two-pass tile: landed during the maps' work
    ctx.sync();
    write_out_tile(ctx, a, v);
  }

  // Weights to shared memory and, one pass, the x tile (read from DRAM once, here) by
  // asynchronous copies in Plan::chunks groups of rows: they land while pool_halo_rows runs,
  // and each chunk's pooling while the later ones land (a staged two-pass tile: while the pooled
  // maps load and the conv runs).
  template <class Ctx> static SAM_FUSED_BLOCK void stage_x_tile(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    load_weights(ctx, a, v.wts);
    if (v.tile)
      with_vec<T>(a.p, [&](auto vt) {
        constexpr int V = decltype(vt)::value;
        stage_tile_chunks<V, CL>(ctx, a.s, a.p, v.tl, 2,
                                 [&](I k, I off) { ctx.template copy_vec<V>(a.x + off, v.tile + k); });
      });
  }

  // Channel reduction of the pixels of `rows` into the pooled maps; x from `tile` on the tile
  // rows when non-null, else from global memory.
  template <class Ctx, class Ready = AllReady>
  static SAM_FUSED_BLOCK void pool_row_set(Ctx& ctx, const Args<T>& a, const View<Ctx>& v, const RowSet<I>& rows,
                                           const T* tile, Ready&& ready = {}) {
    const Geometry& s = a.s;
    const I W = v.W;
    channel_reduce<CL, A>(
        ctx, s, a.p, int64_t(rows.npix()), lead_lanes<T, CL>(s, rows.r0), false, v.part,
        [&](int64_t i, int c0, int step, ChanPartial<A>& acc) {
          pool_visit<CL>(ctx, a, v.tl, tile, rows.row(I(i)), I(i) % W, c0, step, acc);
        },
        [&](int64_t i, const ChanPartial<A>& acc) {
          const I h = rows.row(I(i)), w = I(i) % W;
          if (s.pool.mean_slot() >= 0) v.qslot(s.pool.mean_slot(), h, w) = acc.sum / A(s.C);
          if (s.pool.max_slot() >= 0) v.qslot(s.pool.max_slot(), h, w) = acc.max;
        },
        ready);
  }

  // One pass with a staged tile: the rh halo rows above and below it, from global/L2. They do
  // not need the tile, so their round trips overlap its copies instead of following them.
  template <class Ctx> static SAM_FUSED_BLOCK void pool_halo_rows(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    if (v.tile && !a.p.two_pass)
      pool_row_set(ctx, a, v, RowSet<I>{v.e0, v.e1, v.tl.h0, v.tl.h1, v.W}, static_cast<const T*>(nullptr));
  }

  // The pooled maps the sigmoid needs: one pass, the tile rows from the staged tile, each round
  // of pixels as soon as its chunk has landed (the halo is done), or, unstaged, all rows from
  // global memory; two pass, loaded from pass 1's output. Each pixel's channels are summed in
  // the same order however the copies are grouped, so the chunks change no bits.
  template <class Ctx> static SAM_FUSED_BLOCK void pool_rows(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    const Geometry& s = a.s;
    const Tile<I>& tl = v.tl;
    const I W = v.W, H = v.H, e0 = v.e0, e1 = v.e1;
    if (!a.p.two_pass) {
      if (v.tile && a.p.sum_vectors()) pool_tile_vectors(ctx, a, v);
      else if (v.tile)
        pool_row_set(ctx, a, v, RowSet<I>{tl.h0, tl.h1, tl.h0, tl.h0, W}, static_cast<const T*>(v.tile),
                     ChunksReady<Ctx>{ctx, a.p, a.p.chunk_rows * a.s.W});
      else pool_row_set(ctx, a, v, RowSet<I>{e0, e1, e0, e0, W}, static_cast<const T*>(nullptr));
    } else {
      ctx.each_thread([&](int t) {
        for (I i = I(t); i < I(s.pool.P) * (e1 - e0) * W; i += I(ctx.threads())) {
          const I slot = i / ((e1 - e0) * W), r = i % ((e1 - e0) * W), h = e0 + r / W, w = r % W;
          v.qslot(int(slot), h, w) = ctx.load(a.pooled + ((tl.b * s.pool.P + slot) * H + h) * W + w);
        }
      });
      ctx.sync();
    }
  }

  // The mean pool of the staged tile rows by 16-byte vectors (Plan::sum_vectors(): NCHW, no max
  // pool), chunk by chunk as they land: each pixel's channels in channel_sum_vectors' order.
  template <class Ctx> static SAM_FUSED_BLOCK void pool_tile_vectors(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    if constexpr (!CL)
      with_vec<T>(a.p, [&](auto vt) {
        constexpr int V = decltype(vt)::value;
        if constexpr (V > 1) {
          const I L = v.tl.rows() * v.W, qrow0 = (I(a.s.pool.mean_slot()) * v.qrows + v.tl.h0 - v.qbase) * v.W;
          struct Vec {
            T x[V];
          };
          channel_sum_vectors<V, kSumUnroll16<T>>(
              ctx, a.p, v.tl, v.W, I(a.s.C), reinterpret_cast<A*>(v.part),
              [&](I c, I pix) {
                Vec r;
                ctx.template load_vec<V>(v.tile + c * L + pix, r.x);
                return r;
              },
              [&](const Vec& r, A(&acc)[V]) {
                A xs[V];
                widen(r.x, xs);
#pragma unroll
                for (int e = 0; e < V; ++e) acc[e] += xs[e];
              },
              [&](I pix, A sum) { v.q[qrow0 + pix] = sum / A(a.s.C); },
              ChunksReady<Ctx>{ctx, a.p, a.p.chunk_rows * a.s.W});
        }
      });
  }

  // s = sigmoid(conv(pooled)) on the tile pixels, into the s buffer; the one-pass kernel also
  // saves the pooled maps for the backward. Groups of kConvBlock horizontally adjacent pixels
  // (kw = kBlockedConvWidth: conv_row_block, every whole group of a row, bounds-tested at the
  // map's border) or vertically adjacent ones (a kBlockedColumnHeight x 1 kernel:
  // conv_column_block, the groups whose windows all lie inside the map) are convolved together
  // by one thread; then the other pixels one per thread.
  template <class Ctx> static SAM_FUSED_BLOCK void sigmoid_tile(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    constexpr int N = kConvBlock;
    const Geometry& s = a.s;
    const Tile<I>& tl = v.tl;
    const I W = v.W, H = v.H, groups = W / I(N);  // whole groups of a row
    const bool has_block = s.kw == kBlockedConvWidth;
    // A group's pooled windows and s values as 16-byte vectors where every row of q and s starts
    // on one: a warp's lanes take consecutive groups, 16 bytes apart, whose scalar accesses met
    // four to a bank (an H100 counted 33 K excess wavefronts on each window load at CBAM 56x56).
    constexpr int KV = 16 / int(sizeof(A));
    static_assert(N % KV == 0, "a group's pixels start on a vector");
    const bool vec_rows = W % I(KV) == 0 && reinterpret_cast<uintptr_t>(raw_of(v.q)) % 16 == 0 &&
                          reinterpret_cast<uintptr_t>(raw_of(v.sig)) % 16 == 0;
    // Whole groups of a row (w0 = k * N, k < groups): those whose windows' columns lie inside
    // the map, k in [k0, k1), take the loop below (kernel rows outside the map read as 0), the
    // others (at its left and right border) the bounds-tested one after it. Each loop numbers
    // its own groups only, so that a warp's lanes all have one: at CBAM 56x56, 2 of a row's 14
    // groups are at the border, and one loop over all groups ran the bounds-tested conv for
    // about 5 of a warp's 32 lanes.
    auto grouped = [&](I w0) { return has_block && w0 + I(N) <= groups * I(N); };
    constexpr int rw = kBlockedConvWidth / 2;
    const I k0 = groups < I((rw + N - 1) / N) ? groups : I((rw + N - 1) / N);
    const I last = W - I(N + rw);  // the largest w0 whose window's columns lie inside
    I k1 = last < 0 ? I(0) : last / I(N) + 1;
    k1 = k1 < groups ? k1 : groups;
    k1 = k1 > k0 ? k1 : k0;
    const I inner = k1 - k0, outer = groups - inner;  // groups of a row in each loop
    // Column groups: whole groups of N tile rows [g * N, g * N + N) whose windows all lie inside
    // the map, g in [g0, g1) (a contiguous range: pixels i in [g0 * N * W, g1 * N * W) of the
    // tile), where the plan chose them (Plan::column_conv: tiles of more pixels than threads).
    const I rh = I(s.kh / 2);
    I g0 = 0, g1 = 0;
    if (a.p.column_conv) {
      g0 = tl.h0 >= rh ? I(0) : (rh - tl.h0 + I(N) - 1) / I(N);
      const I last_start = H - rh - I(N) - tl.h0;  // the last group's first tile row, at most
      g1 = last_start < 0 ? I(0) : last_start / I(N) + 1;
      g1 = g1 < tl.rows() / I(N) ? g1 : tl.rows() / I(N);
      g1 = g1 > g0 ? g1 : g0;
    }
    auto qin = [&](int slot, int64_t h, int64_t w) { return A(v.qslot(slot, I(h), I(w))); };
    auto qat = [&](int slot, int64_t h, int64_t w) {
      return (h < 0 || h >= H || w < 0 || w >= W) ? A(0) : qin(slot, h, w);
    };
    auto q_row = [&](int slot, int64_t h) { return raw_of(v.q) + (I(slot) * v.qrows + I(h) - v.qbase) * W; };
    // Four loops, each its own each_thread (on the GPU one after the other in the same thread, no
    // barrier between them): the bank audit then pairs a warp's accesses within a loop only.
    if (has_block)
      ctx.each_thread([&](int t) {
        const A bias = A(v.wts[v.nw]);
        for (I g = I(t); g < tl.rows() * inner; g += I(ctx.threads())) {
          const I r = g / inner, w0 = (k0 + g % inner) * I(N), h = tl.h0 + r;
          A acc[N];
          if (vec_rows) {
            // the window from the vector w0 - rw starts in: w0 >= rw and W - w0 >= N + rw are
            // multiples of KV, so the vectors lie inside the row
            constexpr int S = (rw + KV - 1) / KV * KV - rw;
            using Window = VectorRowWindow<S, Ctx, decltype(q_row)>;
            conv_row_block<kBlockedConvWidth, N>(v.wts, bias, s.pool.P, s.kh, h, w0,
                                                 RowsInMap<Window>{Window{ctx, q_row}, H}, acc);
            A sv[N];
            for (int k = 0; k < N; ++k) sv[k] = sigmoid(acc[k]);
#pragma unroll
            for (int e = 0; e < N; e += KV) ctx.template store_vec<KV>(raw_of(v.sig) + r * W + w0 + I(e), sv + e);
          } else {
            using Window = ScalarRowWindow<decltype(qin)>;
            conv_row_block<kBlockedConvWidth, N>(v.wts, bias, s.pool.P, s.kh, h, w0, RowsInMap<Window>{Window{qin}, H},
                                                 acc);
            for (int k = 0; k < N; ++k) v.sig[r * W + w0 + I(k)] = sigmoid(acc[k]);
          }
        }
      });
    // The groups at the map's left and right border (at CBAM 56x56 the first and last of each
    // row's 14), their windows 0 outside the map:
    // conv_pixel(qat)'s operations, each pooled value and weight loaded once for the group's N
    // pixels, where each pixel's own conv_pixel paid a bounds test per tap (the SASS: about 5x the
    // instructions a pixel). The tests in I, the row's once: through qat's 64-bit ones the fp32
    // kernel took 79 registers (69 before the loop; 71 now) and 105 instructions a kernel row (91).
    auto border_row = [&](int slot, int64_t h, int64_t x0, auto& out) {
      constexpr int M = int(sizeof(out) / sizeof(out[0]));
      const I hh = I(h), xx = I(x0);
      const bool row_inside = hh >= 0 && hh < H;
#pragma unroll
      for (int j = 0; j < M; ++j)
        out[j] = row_inside && xx + I(j) >= 0 && xx + I(j) < W ? qin(slot, hh, xx + I(j)) : A(0);
    };
    if (has_block)
      ctx.each_thread([&](int t) {
        const A bias = A(v.wts[v.nw]);
        for (I g = I(t); g < tl.rows() * outer; g += I(ctx.threads())) {
          const I r = g / outer, j = g % outer, w0 = (j < k0 ? j : j - k0 + k1) * I(N), h = tl.h0 + r;
          A acc[N];
          conv_row_block<kBlockedConvWidth, N>(v.wts, bias, s.pool.P, s.kh, h, w0, border_row, acc);
          for (int k = 0; k < N; ++k) v.sig[r * W + w0 + I(k)] = sigmoid(acc[k]);
        }
      });
    // counted from the last thread down (consecutive threads, consecutive columns of the same
    // rows): the pixel loop below gives the first threads one pixel more than the last
    if (g1 > g0)
      ctx.each_thread([&](int t) {
        const A bias = A(v.wts[v.nw]);
#pragma unroll 1
        for (I g = g0 * W + I(ctx.threads() - 1 - t); g < g1 * W; g += I(ctx.threads())) {
          const I r = g / W * I(N), w = g % W;
          A acc[N];
          conv_column_block<kBlockedColumnHeight, N>(v.wts, bias, s.pool.P, tl.h0 + r, w, qin, acc);
          for (int k = 0; k < N; ++k) v.sig[(r + I(k)) * W + w] = sigmoid(acc[k]);
        }
      });
    ctx.each_thread([&](int t) {
      const A bias = A(v.wts[v.nw]);
      const I c0 = g0 * I(N) * W, c1 = g1 * I(N) * W;  // the tile pixels the column groups did
      for (I i = I(t); i < tl.rows() * W; i += I(ctx.threads())) {
        const I h = tl.h0 + i / W, w = i % W;
        if (!grouped(w / I(N) * I(N)) && (i < c0 || i >= c1))
          v.sig[i] = sigmoid(window_inside(s, h, w) ? conv_pixel(v.wts, bias, s.pool.P, s.kh, s.kw, h, w, qin)
                                                    : conv_pixel(v.wts, bias, s.pool.P, s.kh, s.kw, h, w, qat));
        if (!a.p.two_pass)
        // not unrolled (P is 1 or 2): nvcc unrolled it 16 and 4 deep, which set the kernel's registers
#pragma unroll 1
          for (int slot = 0; slot < s.pool.P; ++slot)
            ctx.store(a.pooled + ((tl.b * s.pool.P + slot) * H + h) * W + w, A(v.qslot(slot, h, w)));
      }
    });
  }

  // out = x * s, x from the staged tile when there is one; return_map: the s map instead.
  template <class Ctx> static SAM_FUSED_BLOCK void write_out_tile(Ctx& ctx, const Args<T>& a, const View<Ctx>& v) {
    if (a.s.return_map) {
      const Tile<I>& tl = v.tl;
      ctx.each_thread([&](int t) {
        for (I i = I(t); i < tl.rows() * v.W; i += I(ctx.threads()))
          ctx.store(a.out + (tl.b * v.H + tl.h0) * v.W + i, T(v.sig[i]));
      });
      return;
    }
    with_vec<T>(a.p, [&](auto vt) {
      constexpr int V = decltype(vt)::value;
      stream_tile_vectors<V, kStreamUnroll, CL, T>(
          ctx, a.s, v.tl,
          [&](const TileVector<I>& at, T* vec) {
            if (v.tile) ctx.template load_vec<V>(v.tile + at.k, vec);
            else ctx.template load_vec<V>(a.x + at.off, vec);
          },
          [&](const TileVector<I>& at, T* vec) {
            if constexpr (!reads_map_runs<CL, V>()) {  // V channels (of one or two pixels), or one pixel
              I pix = at.pix, c = at.c;
              for (int e = 0; e < V; ++e) {
                vec[e] = T(A(vec[e]) * A(v.sig[pix]));
                step_elem<CL>(a.s, pix, c);
              }
            } else {  // V pixels of one channel's run: their s values as 16-byte vectors
              A sv[V];
              load_map_run<V>(ctx, v.sig, at.pix, sv);
              for (int e = 0; e < V; ++e) vec[e] = T(A(vec[e]) * sv[e]);
            }
            ctx.template store_vec<V>(a.out + at.off, vec);
          },
          1 + (!reads_map_runs<CL, V>() ? 0 : map_run_accesses<V, A>()));
    });
  }
};

}  // namespace sam_fused::block
