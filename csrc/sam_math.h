// Per-element math of the spatial-attention op, shared by the CPU kernels and the CUDA
// kernels (host and device). docs/design.md §2 has the formulas.
#pragma once
#include <cmath>
#include <cstdint>
#include <memory>
#include <type_traits>

#ifdef __CUDACC__
#define SAM_FUSED_HD __host__ __device__ __forceinline__
#else
#define SAM_FUSED_HD inline
#endif

namespace sam_fused {

// A pooled map is either the channel mean or the channel max.
enum PoolMap : int { kMean = 0, kMax = 1 };

// Up to two pooled maps, in concatenation order ("max+mean" -> {kMax, kMean}).
struct PoolSpec {
  int P = 1;
  int map[2] = {kMean, kMean};
  SAM_FUSED_HD int mean_slot() const { return map[0] == kMean ? 0 : (P > 1 && map[1] == kMean ? 1 : -1); }
  SAM_FUSED_HD int max_slot() const { return map[0] == kMax ? 0 : (P > 1 && map[1] == kMax ? 1 : -1); }
};

// Shape of one call, after the checks: what the op checks, the CPU kernels stream, the CUDA
// planner plans and the block programs read. Host and device share it (trivially copyable).
struct Geometry {
  int64_t B = 0, C = 0, H = 0, W = 0;
  int kh = 1, kw = 1;
  PoolSpec pool;
  bool channels_last = false;  // x is channels_last (else it is, or was copied to, contiguous)
  bool return_map = false;     // the op returns the map s [B,1,H,W] instead of x*s
  SAM_FUSED_HD int64_t taps() const { return int64_t(pool.P) * kh * kw; }  // weight-gradient entries (bias is one more)
};

// Accumulation type: fp32 for fp16/bf16/fp32, fp64 for fp64.
template <typename T> struct AccType {
  using type = float;
};
template <> struct AccType<double> {
  using type = double;
};
template <typename T> using acc_t = typename AccType<T>::type;

SAM_FUSED_HD float exp_(float v) { return expf(v); }
SAM_FUSED_HD double exp_(double v) { return exp(v); }

SAM_FUSED_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename A> SAM_FUSED_HD A sigmoid(A a) { return A(1) / (A(1) + exp_(-a)); }

template <typename A> SAM_FUSED_HD bool is_nan(A v) { return v != v; }

// max that propagates NaN, as torch.amax / torch.max do.
template <typename A> SAM_FUSED_HD A nan_max(A m, A v) { return (v > m || is_nan(v)) ? v : m; }

// Running max with its channel index: the first index wins ties, the first NaN wins over
// numbers (torch.max(dim) semantics, which route the max-pool gradient).
template <typename A, typename I> SAM_FUSED_HD void argmax_update(A v, int64_t c, A& m, I& idx) {
  if (v > m || (is_nan(v) && !is_nan(m))) {
    m = v;
    idx = I(c);
  }
}

// Pre-activation a[h,w] = bias + sum_{p,i,j} w[p,i,j] * q_p[h+i-rh, w+j-rw]; `q(p, hh, ww)`
// returns the pooled value, 0 outside the map ("same" zero padding).
// `w` is a pointer or a checked view of the CPU context's block buffers.
template <typename A, typename Wts, typename QAt>
SAM_FUSED_HD A conv_pixel(const Wts& w, A bias, int P, int kh, int kw, int64_t h, int64_t x, QAt&& q) {
  const int rh = kh / 2, rw = kw / 2;
  A acc = bias;
  for (int p = 0; p < P; ++p)
    for (int i = 0; i < kh; ++i)
      for (int j = 0; j < kw; ++j) acc += A(w[(p * kh + i) * kw + j]) * q(p, h + i - rh, x + j - rw);
  return acc;
}

// dL/dq_p[h,w] = sum_{i,j} w[p,i,j] * delta[h-i+rh, w-j+rw] (transposed conv); `d(hh, ww)`
// returns delta, 0 outside the map.
// `w` as in conv_pixel (a pointer, or a class with an element_type).
template <typename Wts, typename DAt, typename A = std::remove_cv_t<typename std::pointer_traits<Wts>::element_type>>
SAM_FUSED_HD A conv_transpose_pixel(const Wts& w, int p, int kh, int kw, int64_t h, int64_t x, DAt&& d) {
  const int rh = kh / 2, rw = kw / 2;
  A acc = 0;
  for (int i = 0; i < kh; ++i)
    for (int j = 0; j < kw; ++j) acc += A(w[(p * kh + i) * kw + j]) * d(h - i + rh, x - j + rw);
  return acc;
}

// delta = dL/da = rho * s * (1 - s), where rho = dL/ds, from a stored s (the CPU op's fp64
// path: its cancellation costs 1e-16 relative there). Where a is at hand, sigmoid_slope.
template <typename A> SAM_FUSED_HD A sigmoid_backward(A rho, A s) { return rho * s * (A(1) - s); }

// s = sigmoid(a) (the bits of sigmoid(a)) and its slope s * (1 - s), both to a few ulps: for
// a >= 0, 1 - s in fp32 loses the digits s lost to rounding (at s = 0.9997, a relative error of
// 2e-4, the same in every pixel when a is, so a weight gradient's sum keeps it); there the slope
// is e * s * s with e = exp(-a) <= 1. For a < 0, 1 - s is exact enough and e may overflow.
// a = +-inf gives slope 0, NaN gives NaN.
template <typename A> struct SigmoidSlope {
  A s, slope;
};
template <typename A> SAM_FUSED_HD SigmoidSlope<A> sigmoid_slope(A a) {
  const A e = exp_(-a), s = A(1) / (A(1) + e);
  return {s, s * (a < A(0) ? A(1) - s : e * s)};
}

}  // namespace sam_fused
