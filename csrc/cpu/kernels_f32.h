// The fp32 hot loops of the CPU spatial-attention kernels (NCHW), built once per instruction
// set (kernels_f32_<isa>.cpp from kernels_f32_impl.h) and chosen at run time (isa.h).
// Every NCHW loop covers one band: channels c < C, `stride` elements apart, and pixels i < n
// of each channel's row run; the _nhwc loops cover a channels_last band of n pixels. fp16 and
// bf16 take the same loops over their storage (NchwKernels, NhwcKernels: converted at load and
// store, fp32 arithmetic); fp64 keeps the portable templates of spatial_attention_cpu.cpp.
#pragma once
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

#include "isa.h"

namespace sam_fused::cpu {

// A region of rows that a later band reads, fetched into L2 a few lines at a time while the
// current band is written (SpreadPrefetch): run c is [base + c * stride, + run_bytes). base null: none.
struct PrefetchRuns {
  const char* base = nullptr;
  int64_t run_bytes = 0, stride = 0;
};

// The NCHW element loops of F32Kernels (pool_sum ... argmax, same contracts) over storage S: each
// element converted to float where it is loaded and rounded once where it is stored.
template <typename S> struct NchwKernels {
  void (*pool_sum)(const S* x, int64_t C, int64_t stride, int64_t n, float* out, bool from_memory);
  void (*pool_max)(const S* x, int64_t C, int64_t stride, int64_t n, float* out, bool from_memory);
  void (*scale)(S* out, const S* x, const float* s, int64_t C, int64_t stride, int64_t n, bool stream,
                const PrefetchRuns* pf, int npf);
  void (*rho)(const S* g, const S* x, int64_t C, int64_t stride, int64_t n, double* rho, bool from_memory,
              const PrefetchRuns* pf, int npf);
  void (*dx)(S* dx, const S* g, const float* s, const float* add, const int32_t* am, const float* route, int64_t C,
             int64_t stride, int64_t n, bool stream, const PrefetchRuns* pf, int npf);
  void (*argmax)(const S* x, int64_t C, int64_t stride, int64_t n, int32_t* am);
};

// The channels_last loops of F32Kernels (pool_sum_nhwc ... argmax_nhwc, same contracts) over storage S.
template <typename S> struct NhwcKernels {
  void (*pool_sum)(const S* x, int64_t C, int64_t n, float* out);
  void (*pool_max)(const S* x, int64_t C, int64_t n, float* out);
  void (*scale)(S* out, const S* x, const float* s, int64_t C, int64_t n, bool stream, const PrefetchRuns* pf, int npf);
  void (*rho)(const S* g, const S* x, int64_t C, int64_t n, double* rho);
  void (*dx)(S* dx, const S* g, const float* s, const float* add, const int32_t* am, const float* route, int64_t C,
             int64_t n, bool stream, const PrefetchRuns* pf, int npf);
  void (*argmax)(const S* x, int64_t C, int64_t n, int32_t* am);
};

// The point-wise op over n elements of storage S (pointwise_cpu.cpp), in float arithmetic (double
// for double storage), each result rounded once: out = x * s with s = sigmoid(y); dx = g * s and
// dy = g * x * s(1 - s), the slope s * (e * s) from e = exp(-y), not from 1 - s.
template <typename S> struct PointwiseKernels {
  void (*fwd)(const S* x, const S* y, S* out, int64_t n);
  void (*bwd)(const S* g, const S* x, const S* y, S* dx, S* dy, int64_t n);
};

struct F32Kernels {
  // out[i] = sum_c x[c*stride + i] in channel order (pool = sum), or the NaN-propagating max.
  // from_memory: x comes from memory (not a cache), so channel runs of 512 bytes or more are
  // read one at a time in memory order; from a cache, blocks of channels at once take fewer
  // instructions. The same bits either way.
  void (*pool_sum)(const float* x, int64_t C, int64_t stride, int64_t n, float* out, bool from_memory);
  void (*pool_max)(const float* x, int64_t C, int64_t stride, int64_t n, float* out, bool from_memory);
  // out[c*stride + i] = x[c*stride + i] * s[i]; stream: whole 64-byte lines bypass the cache.
  void (*scale)(float* out, const float* x, const float* s, int64_t C, int64_t stride, int64_t n, bool stream,
                const PrefetchRuns* pf, int npf);
  // s[r*W + w] = sigmoid(bias + sum_{p,i,j} w[(p*kh + i)*kw + j] * q[p*plane + (r+i)*row + j + w])
  // for r < rows, w < W: the conv of the pooled maps (q: padded rows, the first one rh above
  // output row 0, column 0 at -kw/2) in the order of sam_fused::conv_pixel, summed in
  // double and rounded to float once, then the sigmoid; e (unless null) gets exp(-a) of the
  // same pixels (the backward's s(1-s) = e / (1 + e)^2, precise where s is near 0 or 1).
  void (*conv_sigmoid)(const float* w, float bias, int64_t P, int64_t kh, int64_t kw, const float* q, int64_t plane,
                       int64_t row, int64_t rows, int64_t W, float* s, float* e);
  // The backward of the conv over one band of rows r < rows (W wide):
  //   gamma[p][r*W + w] = sum_{i,j} w[(p*kh + i)*kw + j] * delta[(r + rh - i)*drow + rw - j + w]
  //   dw[(p*kh + i)*kw + j] += sum_{r,w} delta[r*drow + w] * q[p*qplane + (r + i - rh)*qrow + j - rw + w]
  //   dw[P*kh*kw] += sum_{r,w} delta[r*drow + w]  (the bias)
  // delta and q point at row 0, column 0 of padded buffers; the dw sums are in double.
  void (*conv_backward)(const float* w, int64_t P, int64_t kh, int64_t kw, const float* delta, int64_t drow,
                        const float* q, int64_t qplane, int64_t qrow, int64_t rows, int64_t W, float* const* gamma,
                        double* dw);
  // rho[i] = sum_c g*x: runs of 16 channels summed in float (even and odd channels in two
  // chains), the runs' sums in double; from_memory as in pool_sum; pf[0, npf) fetched into L2
  // as it reads.
  void (*rho)(const float* g, const float* x, int64_t C, int64_t stride, int64_t n, double* rho, bool from_memory,
              const PrefetchRuns* pf, int npf);
  // dx[c*stride + i] = g*s[i] + add[i] + (am[i] == c ? route[i] : 0); a null g, add or am
  // drops its term (checked once per call, not per element).
  void (*dx)(float* dx, const float* g, const float* s, const float* add, const int32_t* am, const float* route,
             int64_t C, int64_t stride, int64_t n, bool stream, const PrefetchRuns* pf, int npf);
  // am[i] = the first channel c < C where x[c*stride + i] is largest, a NaN winning over
  // numbers (argmax_update of sam_math.h: the channel that the max pool's gradient goes to).
  void (*argmax)(const float* x, int64_t C, int64_t stride, int64_t n, int32_t* am);

  // The same passes over a channels_last band of n pixels, pixel i's channels at [i*C, i*C + C)
  // (kernels_f32_nhwc_impl.h); a prefetch region is one run of run_bytes.
  void (*pool_sum_nhwc)(const float* x, int64_t C, int64_t n, float* out);
  void (*pool_max_nhwc)(const float* x, int64_t C, int64_t n, float* out);
  void (*scale_nhwc)(float* out, const float* x, const float* s, int64_t C, int64_t n, bool stream,
                     const PrefetchRuns* pf, int npf);
  void (*rho_nhwc)(const float* g, const float* x, int64_t C, int64_t n, double* rho);
  void (*dx_nhwc)(float* dx, const float* g, const float* s, const float* add, const int32_t* am, const float* route,
                  int64_t C, int64_t n, bool stream, const PrefetchRuns* pf, int npf);
  void (*argmax_nhwc)(const float* x, int64_t C, int64_t n, int32_t* am);

  NchwKernels<c10::Half> f16;
  NchwKernels<c10::BFloat16> bf16;
  NhwcKernels<c10::Half> f16_nhwc;
  NhwcKernels<c10::BFloat16> bf16_nhwc;
  PointwiseKernels<float> pointwise;
  PointwiseKernels<c10::Half> pointwise_f16;
  PointwiseKernels<c10::BFloat16> pointwise_bf16;
  PointwiseKernels<double> pointwise_f64;
};

// The point-wise loops of K over storage S.
template <typename S> PointwiseKernels<S> pointwise_kernels(const F32Kernels& K) {
  if constexpr (std::is_same_v<S, c10::Half>) return K.pointwise_f16;
  else if constexpr (std::is_same_v<S, c10::BFloat16>) return K.pointwise_bf16;
  else if constexpr (std::is_same_v<S, double>) return K.pointwise_f64;
  else return K.pointwise;
}

// The NCHW loops of K over storage S: float, c10::Half or c10::BFloat16.
template <typename S> NchwKernels<S> nchw_kernels(const F32Kernels& K) {
  if constexpr (std::is_same_v<S, c10::Half>) return K.f16;
  else if constexpr (std::is_same_v<S, c10::BFloat16>) return K.bf16;
  else return {K.pool_sum, K.pool_max, K.scale, K.rho, K.dx, K.argmax};
}

// The channels_last loops of K over storage S.
template <typename S> NhwcKernels<S> nhwc_kernels(const F32Kernels& K) {
  if constexpr (std::is_same_v<S, c10::Half>) return K.f16_nhwc;
  else if constexpr (std::is_same_v<S, c10::BFloat16>) return K.bf16_nhwc;
  else return {K.pool_sum_nhwc, K.pool_max_nhwc, K.scale_nhwc, K.rho_nhwc, K.dx_nhwc, K.argmax_nhwc};
}

// The table of one ISA; null where this build or platform has none.
const F32Kernels* f32_kernels_default();
const F32Kernels* f32_kernels_avx2();
const F32Kernels* f32_kernels_avx512();

// The table of active_isa().
const F32Kernels& f32_kernels();

}  // namespace sam_fused::cpu
