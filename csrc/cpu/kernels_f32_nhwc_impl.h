// The hot loops of kernels_f32.h for channels_last (NHWC) bands (fp32, and fp16/bf16 storage
// converted at load and store as in the NCHW loops), where a pixel's C
// channels are contiguous: every loop walks one pixel at a time along its channels, so the
// pooling and rho are a vector reduction along C followed by one horizontal reduction
// (V::reduce_add / reduce_max_nan) per pixel, and the element loops broadcast the pixel's
// s (add, route) over its channel run. Included by kernels_f32_impl.h inside its namespace,
// after the helpers it uses (write_row, pool_op, kRhoRun).
//
// A pixel's run always starts at channel 0, so its result does not depend on where the band
// starts; lanes past C are masked (load_k) or, for the max, left to a scalar tail.

// out[i] = sum (or max) over c < C of x[i*C + c], i < n. Sums: two vector accumulators
// (even and odd vectors of channels), each lane a chain of C / (2N) channels.
template <bool kMax, class S> void pool_nhwc(const S* x, int64_t C, int64_t n, float* out) {
  const R init = kMax ? V::set1(-std::numeric_limits<float>::infinity()) : V::zero();
  const int64_t full = C / N * N;  // channels in whole vectors
  for (int64_t i = 0; i < n; ++i) {
    const S* p = x + i * C;
    R a = init, b = init;
    int64_t c = 0;
    for (; c + 2 * N <= full; c += 2 * N) {
      a = pool_op<kMax>(a, V::load(p + c));
      b = pool_op<kMax>(b, V::load(p + c + N));
    }
    if (c < full) {
      a = pool_op<kMax>(a, V::load(p + c));
      c += N;
    }
    if constexpr (kMax) {
      float m = V::reduce_max_nan(pool_op<kMax>(a, b));
      for (; c < C; ++c) m = VecScalar::max_nan(m, scalar_float(p[c]));
      out[i] = m;
    } else {
      if (c < C) b = V::add(b, V::load_k(p + c, C - c));  // masked lanes add 0
      out[i] = V::reduce_add(V::add(a, b));
    }
  }
}

template <class S> void pool_sum_nhwc(const S* x, int64_t C, int64_t n, float* out) { pool_nhwc<false>(x, C, n, out); }
template <class S> void pool_max_nhwc(const S* x, int64_t C, int64_t n, float* out) { pool_nhwc<true>(x, C, n, out); }

// Prefetches of the regions in pf[0, npf) (one run each in NHWC; at most two) spread over the
// n pixels of a band: due(i) says whether pixel i starts a group of about 1 KB of the band,
// before which issue() fetches each region's lines up to the group's end (in proportion).
struct NhwcPrefetch {
  const char* base[2] = {nullptr, nullptr};
  int64_t bytes[2] = {0, 0}, issued[2] = {0, 0};
  int64_t n = 0, group = 1, next = 0;  // pixels per group; first pixel of the next group
  NhwcPrefetch(const PrefetchRuns* pf, int npf, int64_t n_, int64_t C) : n(n_), group(std::max<int64_t>(1, 256 / C)) {
    for (int q = 0; q < std::min(npf, 2); ++q)
      if (pf[q].base) base[q] = pf[q].base, bytes[q] = pf[q].run_bytes;
    if (!base[0] && !base[1]) next = n;  // nothing to fetch
  }
  SAM_FUSED_SIMD_INLINE bool due(int64_t i) const { return i == next; }
  void issue() {
    next = std::min(n, next + group);
    for (int q = 0; q < 2; ++q) {
      const int64_t goal = bytes[q] * next / n;
      for (; issued[q] < goal; issued[q] += 64) __builtin_prefetch(base[q] + issued[q], 0, 2);
    }
  }
};

// out[i*C + c] = x[i*C + c] * s[i]: one write_row per pixel (whole 64-byte lines streamed
// when asked, as in the NCHW loops).
template <class S>
void scale_nhwc(S* out, const S* x, const float* s, int64_t C, int64_t n, bool stream, const PrefetchRuns* pf,
                int npf) {
  NhwcPrefetch ahead(pf, npf, n, C);
  for (int64_t i = 0; i < n; ++i) {
    if (ahead.due(i)) ahead.issue();
    const R si = V::set1(s[i]);
    const S* xi = x + i * C;
    write_row(out + i * C, C, stream,
              [&](int64_t c, int64_t k) __attribute__((always_inline)) { return V::mul(V::load_k(xi + c, k), si); });
  }
  if (stream) V::sfence();
}

// rho[i] = sum_c g*x over the pixel's channels: runs of kRhoRun vectors summed in float (two
// chains, even and odd vectors), each run reduced across lanes and added in double.
template <class S> void rho_nhwc(const S* g, const S* x, int64_t C, int64_t n, double* rho) {
  constexpr int64_t kRun = kRhoRun * N;
  for (int64_t i = 0; i < n; ++i) {
    const S* gp = g + i * C;
    const S* xp = x + i * C;
    double sum = 0.0;
    for (int64_t c0 = 0; c0 < C; c0 += kRun) {
      const int64_t c1 = std::min(C, c0 + kRun);
      R a = V::zero(), b = V::zero();
      int64_t c = c0;
      for (; c + 2 * N <= c1; c += 2 * N) {
        a = V::fmadd(V::load(gp + c), V::load(xp + c), a);
        b = V::fmadd(V::load(gp + c + N), V::load(xp + c + N), b);
      }
      for (; c < c1; c += N) {
        const int64_t k = std::min(N, c1 - c);
        a = V::fmadd(V::load_k(gp + c, k), V::load_k(xp + c, k), a);
      }
      sum += double(V::reduce_add(V::add(a, b)));
    }
    rho[i] = sum;
  }
}

// channel[c] = c for c < count + N: a vector of channel indices loads from any c < count.
inline std::unique_ptr<int32_t[]> channel_indices(int64_t count) {
  std::unique_ptr<int32_t[]> channel(new int32_t[count + N]);
  for (int64_t c = 0; c < count + N; ++c) channel[c] = int32_t(c);
  return channel;
}

// am[i] = the first channel of pixel i's run where x is largest, a NaN winning over numbers
// (argmax_update of sam_math.h). Lane l keeps the first argmax of the channels l, l + N, ... of
// the whole vectors; the lanes are merged by the same rule (a NaN lane first, else the largest
// value; ties to the lower channel), then the channels past the whole vectors follow in order.
template <class S> void argmax_nhwc(const S* x, int64_t C, int64_t n, int32_t* am) {
  using RI = typename V::RI;
  const int64_t full = C / N * N;
  const auto channel = channel_indices(full);
  alignas(64) float lane_max[N];
  alignas(64) int32_t lane_idx[N];
  for (int64_t i = 0; i < n; ++i) {
    const S* p = x + i * C;
    float m = -std::numeric_limits<float>::infinity();
    int32_t idx = 0;
    if (full > 0) {
      R mv = V::load(p);
      RI iv = V::loadi(channel.get());
      for (int64_t c = N; c < full; c += N) V::argmax_step(mv, iv, V::load(p + c), V::loadi(channel.get() + c));
      V::store(lane_max, mv);
      V::storei_k(lane_idx, iv, N);
      m = lane_max[0];
      idx = lane_idx[0];
      for (int64_t l = 1; l < N; ++l) {
        const float v = lane_max[l];
        const bool take = v != v ? (m == m || lane_idx[l] < idx) : (m == m && (v > m || (v == m && lane_idx[l] < idx)));
        if (take) m = v, idx = lane_idx[l];
      }
    }
    for (int64_t c = full; c < C; ++c) VecScalar::argmax_step(m, idx, scalar_float(p[c]), int32_t(c));
    am[i] = idx;
  }
}

// dx[i*C + c] = g*s[i] + add[i] + (am[i] == c ? route[i] : 0), each term only when present
// (a template argument, so no per-element tests).
template <bool kG, bool kAdd, bool kRoute, class S>
void dx_nhwc_terms(S* dx, const S* g, const float* s, const float* add, const int32_t* am, const float* route,
                   int64_t C, int64_t n, bool stream, const PrefetchRuns* pf, int npf) {
  const auto channel = kRoute ? channel_indices(C) : nullptr;
  NhwcPrefetch ahead(pf, npf, n, C);
  for (int64_t i = 0; i < n; ++i) {
    if (ahead.due(i)) ahead.issue();
    const R si = V::set1(kG ? s[i] : 0.f), ai = V::set1(kAdd ? add[i] : 0.f), ri = V::set1(kRoute ? route[i] : 0.f);
    const int32_t target = kRoute ? am[i] : 0;
    const S* gi = g ? g + i * C : nullptr;
    write_row(dx + i * C, C, stream, [&](int64_t c, int64_t k) __attribute__((always_inline)) {
      R v;
      if constexpr (kG && kAdd) v = V::fmadd(V::load_k(gi + c, k), si, ai);
      else if constexpr (kG) v = V::mul(V::load_k(gi + c, k), si);
      else if constexpr (kAdd) v = ai;
      else v = V::zero();
      if constexpr (kRoute) v = V::route(v, V::loadi_k(channel.get() + c, k), target, ri);
      return v;
    });
  }
  if (stream) V::sfence();
}

template <class S>
void dx_nhwc(S* out, const S* g, const float* s, const float* add, const int32_t* am, const float* route, int64_t C,
             int64_t n, bool stream, const PrefetchRuns* pf, int npf) {
  using Fn = decltype(&dx_nhwc_terms<true, true, true, S>);
  static constexpr Fn kByTerms[8] = {dx_nhwc_terms<false, false, false, S>, dx_nhwc_terms<false, false, true, S>,
                                     dx_nhwc_terms<false, true, false, S>,  dx_nhwc_terms<false, true, true, S>,
                                     dx_nhwc_terms<true, false, false, S>,  dx_nhwc_terms<true, false, true, S>,
                                     dx_nhwc_terms<true, true, false, S>,   dx_nhwc_terms<true, true, true, S>};
  kByTerms[(g ? 4 : 0) + (add ? 2 : 0) + (am ? 1 : 0)](out, g, s, add, am, route, C, n, stream, pf, npf);
}
