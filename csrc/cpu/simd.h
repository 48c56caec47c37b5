// fp32 vectors of one instruction set, the few operations the CPU hot loops need
// (docs/design.md §3). One struct per ISA with the same static interface:
//   R, RI               float and int32 vector; N lanes
//   load/store(p)       unaligned; load_k/store_k(p, k) the first k <= N lanes (rest 0 / kept)
//   stream(p, v)        non-temporal store, p aligned to the vector size
//   add, sub, mul, div, fmadd(a, b, c) = a*b + c (one rounding where the ISA has FMA), max_nan
//   min(k, x) / max(k, x) against a constant k, NaN x passing through
//   round(v) to the nearest integer; pow2(n) = 2^n for integer n in [-126, 127]
//   route(v, am, c, r)  v + (am == c ? r : 0), lanewise
//   add_to_double(d, v) d[0, N) += double(v); mul_to_double(d, a, b) d[0, N) += double(a) * double(b)
//                       (the product of two floats is exact in double: no FMA question)
//   Wide                N lanes in double (two halves); wide_set1(d), wide_fmadd(w, v, a) = a + w*v
//                       (v's lanes widened; w*v is exact in double, so one rounding on every ISA),
//                       narrow(a) to float
//   reduce_add(v), reduce_max_nan(v)  the lanes' sum / NaN-propagating max, halves first (a
//                       fixed tree: the same bits on every call)
// Every function is always-inline and carries its ISA's target attribute, so the loops that
// use them must be compiled for that ISA too (kernels_f32_<isa>.cpp), and none of this code can
// reach a caller built for a lower ISA. Tails use the same vector operations on partial
// vectors, so an element's result does not depend on where a loop's vector boundaries fall.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SAM_FUSED_X86_DISPATCH 1
#include <immintrin.h>
#endif

#define SAM_FUSED_SIMD_INLINE inline __attribute__((always_inline))

namespace sam_fused::cpu {

// Portable fallback: one lane (GCC/clang vectorise nothing here, but every platform builds it).
struct VecScalar {
  using R = float;
  using RI = int32_t;
  static constexpr int64_t N = 1;
  static SAM_FUSED_SIMD_INLINE R load(const float* p) { return *p; }
  static SAM_FUSED_SIMD_INLINE RI loadi(const int32_t* p) { return *p; }
  static SAM_FUSED_SIMD_INLINE R load_k(const float* p, int64_t) { return *p; }
  static SAM_FUSED_SIMD_INLINE RI loadi_k(const int32_t* p, int64_t) { return *p; }
  static SAM_FUSED_SIMD_INLINE void store(float* p, R v) { *p = v; }
  static SAM_FUSED_SIMD_INLINE void store_k(float* p, R v, int64_t) { *p = v; }
  static SAM_FUSED_SIMD_INLINE void stream(float* p, R v) { *p = v; }
  static SAM_FUSED_SIMD_INLINE R set1(float v) { return v; }
  static SAM_FUSED_SIMD_INLINE R zero() { return 0.f; }
  static SAM_FUSED_SIMD_INLINE R add(R a, R b) { return a + b; }
  static SAM_FUSED_SIMD_INLINE R sub(R a, R b) { return a - b; }
  static SAM_FUSED_SIMD_INLINE R mul(R a, R b) { return a * b; }
  static SAM_FUSED_SIMD_INLINE R div(R a, R b) { return a / b; }
  static SAM_FUSED_SIMD_INLINE R fmadd(R a, R b, R c) { return a * b + c; }
  static SAM_FUSED_SIMD_INLINE R min(R k, R x) { return k < x ? k : x; }
  static SAM_FUSED_SIMD_INLINE R max(R k, R x) { return k > x ? k : x; }
  static SAM_FUSED_SIMD_INLINE R round(R v) { return std::nearbyint(v); }
  static SAM_FUSED_SIMD_INLINE R pow2(R n) { return n != n ? n : std::ldexp(1.f, int(n)); }
  static SAM_FUSED_SIMD_INLINE R max_nan(R m, R v) { return (v > m || v != v) ? v : m; }
  static SAM_FUSED_SIMD_INLINE R route(R v, RI am, int32_t c, R r) { return v + (am == c ? r : 0.f); }
  static SAM_FUSED_SIMD_INLINE void add_to_double(double* d, R v) { d[0] += double(v); }
  static SAM_FUSED_SIMD_INLINE void add_to_double_k(double* d, R v, int64_t) { d[0] += double(v); }
  static SAM_FUSED_SIMD_INLINE void mul_to_double(double* d, R a, R b) { d[0] += double(a) * double(b); }
  struct Wide {
    double lo, hi;
  };
  static SAM_FUSED_SIMD_INLINE Wide wide_set1(double d) { return {d, 0.0}; }
  static SAM_FUSED_SIMD_INLINE Wide wide_fmadd(double w, R v, Wide a) { return {a.lo + w * double(v), 0.0}; }
  static SAM_FUSED_SIMD_INLINE R narrow(Wide a) { return float(a.lo); }
  static SAM_FUSED_SIMD_INLINE float reduce_add(R v) { return v; }
  static SAM_FUSED_SIMD_INLINE float reduce_max_nan(R v) { return v; }
  static SAM_FUSED_SIMD_INLINE void sfence() {}
};

#if defined(SAM_FUSED_X86_DISPATCH)

#define SAM_FUSED_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define SAM_FUSED_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))

// Baseline x86-64 (SSE2): no FMA, so fmadd is a multiply then an add.
struct VecSse2 {
  using R = __m128;
  using RI = __m128i;
  static constexpr int64_t N = 4;
  static SAM_FUSED_SIMD_INLINE R load(const float* p) { return _mm_loadu_ps(p); }
  static SAM_FUSED_SIMD_INLINE RI loadi(const int32_t* p) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  }
  static SAM_FUSED_SIMD_INLINE R load_k(const float* p, int64_t k) {
    if (k == N) return load(p);
    alignas(16) float b[N] = {};
    std::memcpy(b, p, k * sizeof(float));
    return _mm_load_ps(b);
  }
  static SAM_FUSED_SIMD_INLINE RI loadi_k(const int32_t* p, int64_t k) {
    if (k == N) return loadi(p);
    alignas(16) int32_t b[N] = {};
    std::memcpy(b, p, k * sizeof(int32_t));
    return _mm_load_si128(reinterpret_cast<const __m128i*>(b));
  }
  static SAM_FUSED_SIMD_INLINE void store(float* p, R v) { _mm_storeu_ps(p, v); }
  static SAM_FUSED_SIMD_INLINE void store_k(float* p, R v, int64_t k) {
    if (k == N) return store(p, v);
    alignas(16) float b[N];
    _mm_store_ps(b, v);
    std::memcpy(p, b, k * sizeof(float));
  }
  static SAM_FUSED_SIMD_INLINE void stream(float* p, R v) { _mm_stream_ps(p, v); }
  static SAM_FUSED_SIMD_INLINE R set1(float v) { return _mm_set1_ps(v); }
  static SAM_FUSED_SIMD_INLINE R zero() { return _mm_setzero_ps(); }
  static SAM_FUSED_SIMD_INLINE R add(R a, R b) { return _mm_add_ps(a, b); }
  static SAM_FUSED_SIMD_INLINE R sub(R a, R b) { return _mm_sub_ps(a, b); }
  static SAM_FUSED_SIMD_INLINE R mul(R a, R b) { return _mm_mul_ps(a, b); }
  static SAM_FUSED_SIMD_INLINE R div(R a, R b) { return _mm_div_ps(a, b); }
  static SAM_FUSED_SIMD_INLINE R fmadd(R a, R b, R c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
  static SAM_FUSED_SIMD_INLINE R min(R k, R x) { return _mm_min_ps(k, x); }  // the second operand when NaN
  static SAM_FUSED_SIMD_INLINE R max(R k, R x) { return _mm_max_ps(k, x); }
  static SAM_FUSED_SIMD_INLINE R round(R v) { return _mm_cvtepi32_ps(_mm_cvtps_epi32(v)); }
  static SAM_FUSED_SIMD_INLINE R pow2(R n) {
    return _mm_castsi128_ps(_mm_slli_epi32(_mm_add_epi32(_mm_cvtps_epi32(n), _mm_set1_epi32(127)), 23));
  }
  static SAM_FUSED_SIMD_INLINE R max_nan(R m, R v) {
    const R take = _mm_or_ps(_mm_cmpgt_ps(v, m), _mm_cmpunord_ps(v, v));
    return _mm_or_ps(_mm_and_ps(take, v), _mm_andnot_ps(take, m));
  }
  static SAM_FUSED_SIMD_INLINE R route(R v, RI am, int32_t c, R r) {
    return _mm_add_ps(v, _mm_and_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(am, _mm_set1_epi32(c))), r));
  }
  static SAM_FUSED_SIMD_INLINE void add_to_double(double* d, R v) {
    _mm_storeu_pd(d, _mm_add_pd(_mm_loadu_pd(d), _mm_cvtps_pd(v)));
    _mm_storeu_pd(d + 2, _mm_add_pd(_mm_loadu_pd(d + 2), _mm_cvtps_pd(_mm_movehl_ps(v, v))));
  }
  static SAM_FUSED_SIMD_INLINE void mul_to_double(double* d, R a, R b) {
    _mm_storeu_pd(d, _mm_add_pd(_mm_loadu_pd(d), _mm_mul_pd(_mm_cvtps_pd(a), _mm_cvtps_pd(b))));
    const __m128d hi = _mm_mul_pd(_mm_cvtps_pd(_mm_movehl_ps(a, a)), _mm_cvtps_pd(_mm_movehl_ps(b, b)));
    _mm_storeu_pd(d + 2, _mm_add_pd(_mm_loadu_pd(d + 2), hi));
  }
  static SAM_FUSED_SIMD_INLINE void add_to_double_k(double* d, R v, int64_t k) {
    alignas(16) float b[N];
    _mm_store_ps(b, v);
    for (int64_t l = 0; l < k; ++l) d[l] += double(b[l]);
  }
  struct Wide {
    __m128d lo, hi;
  };
  static SAM_FUSED_SIMD_INLINE Wide wide_set1(double d) { return {_mm_set1_pd(d), _mm_set1_pd(d)}; }
  static SAM_FUSED_SIMD_INLINE Wide wide_fmadd(double w, R v, Wide a) {
    const __m128d wd = _mm_set1_pd(w);
    return {_mm_add_pd(_mm_mul_pd(wd, _mm_cvtps_pd(v)), a.lo),
            _mm_add_pd(_mm_mul_pd(wd, _mm_cvtps_pd(_mm_movehl_ps(v, v))), a.hi)};
  }
  static SAM_FUSED_SIMD_INLINE R narrow(Wide a) { return _mm_movelh_ps(_mm_cvtpd_ps(a.lo), _mm_cvtpd_ps(a.hi)); }
  static SAM_FUSED_SIMD_INLINE float reduce_add(R v) {
    v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    return _mm_cvtss_f32(_mm_add_ss(v, _mm_shuffle_ps(v, v, 1)));
  }
  static SAM_FUSED_SIMD_INLINE float reduce_max_nan(R v) {
    v = max_nan(v, _mm_movehl_ps(v, v));
    return _mm_cvtss_f32(max_nan(v, _mm_shuffle_ps(v, v, 1)));
  }
  static SAM_FUSED_SIMD_INLINE void sfence() { _mm_sfence(); }
};

struct VecAvx2 {
  using R = __m256;
  using RI = __m256i;
  static constexpr int64_t N = 8;
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE RI mask(int64_t k) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(k)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE R load(const float* p) { return _mm256_loadu_ps(p); }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE RI loadi(const int32_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE R load_k(const float* p, int64_t k) {
    return k == N ? load(p) : _mm256_maskload_ps(p, mask(k));
  }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE RI loadi_k(const int32_t* p, int64_t k) {
    return k == N ? loadi(p) : _mm256_maskload_epi32(reinterpret_cast<const int*>(p), mask(k));
  }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE void store_k(float* p, R v, int64_t k) {
    if (k == N) store(p, v);
    else _mm256_maskstore_ps(p, mask(k), v);
  }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE void stream(float* p, R v) { _mm256_stream_ps(p, v); }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE R set1(float v) { return _mm256_set1_ps(v); }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE R zero() { return _mm256_setzero_ps(); }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE R add(R a, R b) { return _mm256_add_ps(a, b); }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE R div(R a, R b) { return _mm256_div_ps(a, b); }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE R fmadd(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE R min(R k, R x) { return _mm256_min_ps(k, x); }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE R max(R k, R x) { return _mm256_max_ps(k, x); }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE R round(R v) { return _mm256_cvtepi32_ps(_mm256_cvtps_epi32(v)); }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE R pow2(R n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
  }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE R max_nan(R m, R v) {
    const R take = _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    return _mm256_blendv_ps(m, v, take);
  }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE R route(R v, RI am, int32_t c, R r) {
    return _mm256_add_ps(v, _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(am, _mm256_set1_epi32(c))), r));
  }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE void add_to_double(double* d, R v) {
    _mm256_storeu_pd(d, _mm256_add_pd(_mm256_loadu_pd(d), _mm256_cvtps_pd(_mm256_castps256_ps128(v))));
    _mm256_storeu_pd(d + 4, _mm256_add_pd(_mm256_loadu_pd(d + 4), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
  }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE void mul_to_double(double* d, R a, R b) {
    const __m256d lo =
        _mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(a)), _mm256_cvtps_pd(_mm256_castps256_ps128(b)));
    const __m256d hi =
        _mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1)));
    _mm256_storeu_pd(d, _mm256_add_pd(_mm256_loadu_pd(d), lo));
    _mm256_storeu_pd(d + 4, _mm256_add_pd(_mm256_loadu_pd(d + 4), hi));
  }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE void add_to_double_k(double* d, R v, int64_t k) {
    alignas(32) float b[N];
    _mm256_store_ps(b, v);
    for (int64_t l = 0; l < k; ++l) d[l] += double(b[l]);
  }
  struct Wide {
    __m256d lo, hi;
  };
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE Wide wide_set1(double d) {
    return {_mm256_set1_pd(d), _mm256_set1_pd(d)};
  }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE Wide wide_fmadd(double w, R v, Wide a) {
    const __m256d wd = _mm256_set1_pd(w);
    return {_mm256_fmadd_pd(wd, _mm256_cvtps_pd(_mm256_castps256_ps128(v)), a.lo),
            _mm256_fmadd_pd(wd, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), a.hi)};
  }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE R narrow(Wide a) {
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(a.lo)), _mm256_cvtpd_ps(a.hi), 1);
  }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE float reduce_add(R v) {
    return VecSse2::reduce_add(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)));
  }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE float reduce_max_nan(R v) {
    return VecSse2::reduce_max_nan(VecSse2::max_nan(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)));
  }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE void sfence() { _mm_sfence(); }
};

struct VecAvx512 {
  using R = __m512;
  using RI = __m512i;
  static constexpr int64_t N = 16;
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE __mmask16 mask(int64_t k) { return __mmask16((1u << k) - 1u); }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE R load(const float* p) { return _mm512_loadu_ps(p); }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE RI loadi(const int32_t* p) { return _mm512_loadu_si512(p); }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE R load_k(const float* p, int64_t k) {
    return k == N ? load(p) : _mm512_maskz_loadu_ps(mask(k), p);
  }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE RI loadi_k(const int32_t* p, int64_t k) {
    return k == N ? loadi(p) : _mm512_maskz_loadu_epi32(mask(k), p);
  }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE void store(float* p, R v) { _mm512_storeu_ps(p, v); }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE void store_k(float* p, R v, int64_t k) {
    if (k == N) store(p, v);
    else _mm512_mask_storeu_ps(p, mask(k), v);
  }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE void stream(float* p, R v) { _mm512_stream_ps(p, v); }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE R set1(float v) { return _mm512_set1_ps(v); }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE R zero() { return _mm512_setzero_ps(); }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE R add(R a, R b) { return _mm512_add_ps(a, b); }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE R div(R a, R b) { return _mm512_div_ps(a, b); }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE R fmadd(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE R min(R k, R x) { return _mm512_min_ps(k, x); }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE R max(R k, R x) { return _mm512_max_ps(k, x); }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE R round(R v) {
    return _mm512_cvtepi32_ps(_mm512_cvtps_epi32(v));
  }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE R pow2(R n) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
  }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE R max_nan(R m, R v) {
    const __mmask16 take = _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    return _mm512_mask_blend_ps(take, m, v);
  }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE R route(R v, RI am, int32_t c, R r) {
    return _mm512_mask_add_ps(v, _mm512_cmpeq_epi32_mask(am, _mm512_set1_epi32(c)), v, r);
  }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE void add_to_double(double* d, R v) {
    _mm512_storeu_pd(d, _mm512_add_pd(_mm512_loadu_pd(d), _mm512_cvtps_pd(_mm512_castps512_ps256(v))));
    _mm512_storeu_pd(d + 8, _mm512_add_pd(_mm512_loadu_pd(d + 8), _mm512_cvtps_pd(high_half(v))));
  }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE __m256 high_half(R v) {
    return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE void mul_to_double(double* d, R a, R b) {
    const __m512d lo =
        _mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(a)), _mm512_cvtps_pd(_mm512_castps512_ps256(b)));
    const __m512d hi = _mm512_mul_pd(_mm512_cvtps_pd(high_half(a)), _mm512_cvtps_pd(high_half(b)));
    _mm512_storeu_pd(d, _mm512_add_pd(_mm512_loadu_pd(d), lo));
    _mm512_storeu_pd(d + 8, _mm512_add_pd(_mm512_loadu_pd(d + 8), hi));
  }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE void add_to_double_k(double* d, R v, int64_t k) {
    alignas(64) float b[N];
    _mm512_store_ps(b, v);
    for (int64_t l = 0; l < k; ++l) d[l] += double(b[l]);
  }
  struct Wide {
    __m512d lo, hi;
  };
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE Wide wide_set1(double d) {
    return {_mm512_set1_pd(d), _mm512_set1_pd(d)};
  }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE Wide wide_fmadd(double w, R v, Wide a) {
    const __m512d wd = _mm512_set1_pd(w);
    return {_mm512_fmadd_pd(wd, _mm512_cvtps_pd(_mm512_castps512_ps256(v)), a.lo),
            _mm512_fmadd_pd(wd, _mm512_cvtps_pd(high_half(v)), a.hi)};
  }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE R narrow(Wide a) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(a.lo)), _mm512_cvtpd_ps(a.hi), 1);
  }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE float reduce_add(R v) {
    return VecAvx2::reduce_add(_mm256_add_ps(_mm512_castps512_ps256(v), high_half(v)));
  }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE float reduce_max_nan(R v) {
    return VecAvx2::reduce_max_nan(VecAvx2::max_nan(_mm512_castps512_ps256(v), high_half(v)));
  }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE void sfence() { _mm_sfence(); }
};

#endif  // SAM_FUSED_X86_DISPATCH

}  // namespace sam_fused::cpu
