// fp32 vectors of one instruction set, the few operations the CPU hot loops need
// (docs/design.md §3). One struct per ISA with the same static interface:
//   R, RI               float and int32 vector; N lanes
//   load/store(p)       unaligned; load_k/store_k(p, k) the first k <= N lanes (rest 0 / kept)
//   stream(p, v)        non-temporal store, p aligned to the vector size
//   add, sub, mul, div, fmadd(a, b, c) = a*b + c (one rounding where the ISA has FMA), max_nan
//   min(k, x) / max(k, x) against a constant k, NaN x passing through
//   round(v) to the nearest integer; pow2(n) = 2^n for integer n in [-126, 127]
//   route(v, am, c, r)  v + (am == c ? r : 0), lanewise
//   argmax_step(m, idx, v, c)  m, idx = v, c (an int32 vector) where v > m or v is the first NaN
//                       (argmax_update of sam_math.h, lanewise); set1i(c) c in every int32 lane;
//                       storei_k(p, idx, k) the first k int32 lanes
//   add_to_double(d, v) d[0, N) += double(v); mul_to_double(d, a, b) d[0, N) += double(a) * double(b)
//                       (the product of two floats is exact in double: no FMA question)
//   Wide                N lanes in double (two halves); wide_set1(d), wide_fmadd(w, v, a) = a + w*v
//                       (v's lanes widened; w*v is exact in double, so one rounding on every ISA),
//                       narrow(a) to float
//   reduce_add(v), reduce_max_nan(v)  the lanes' sum / NaN-propagating max, halves first (a
//                       fixed tree: the same bits on every call)
//   load/load_k/store/store_k/stream also take c10::Half and c10::BFloat16 storage (kStorage16),
//                       converted to and from float lanes: bf16 widened by a 16-bit shift and
//                       narrowed as c10::BFloat16 rounds (nearest even, every NaN 0x7FC0); fp16
//                       by F16C (nearest even) on AVX2/AVX-512, else by half_convert.h's
//                       bit-exact versions of c10's conversions.
// Every function is always-inline and carries its ISA's target attribute, so the loops that
// use them must be compiled for that ISA too (kernels_f32_<isa>.cpp), and none of this code can
// reach a caller built for a lower ISA. Tails use the same vector operations on partial
// vectors, so an element's result does not depend on where a loop's vector boundaries fall.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include <c10/util/BFloat16.h>
#include "half_convert.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SAM_FUSED_X86_DISPATCH 1
#include <immintrin.h>
#endif

#define SAM_FUSED_SIMD_INLINE inline __attribute__((always_inline))

namespace sam_fused::cpu {

// 16-bit storage types (C++17: an enable_if, so the header builds with the C++17 extensions
// of older torch releases too).
template <class S>
inline constexpr bool kStorage16 = std::is_same_v<S, c10::Half> || std::is_same_v<S, c10::BFloat16>;
#define SAM_FUSED_STORAGE16 class S, std::enable_if_t<kStorage16<S>, int> = 0

// One value of 16-bit storage to float and back, as the portable loops convert it.
template <SAM_FUSED_STORAGE16> SAM_FUSED_SIMD_INLINE float widen1(S v) {
  if constexpr (std::is_same_v<S, c10::Half>) return half_to_float(v);
  else return float(v);
}
template <SAM_FUSED_STORAGE16> SAM_FUSED_SIMD_INLINE S narrow1(float v) {
  if constexpr (std::is_same_v<S, c10::Half>) return float_to_half(v);
  else return S(v);
}

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
  static SAM_FUSED_SIMD_INLINE void storei_k(int32_t* p, RI v, int64_t) { *p = v; }
  static SAM_FUSED_SIMD_INLINE RI set1i(int32_t v) { return v; }
  static SAM_FUSED_SIMD_INLINE void argmax_step(R& m, RI& idx, R v, RI c) {
    if (v > m || (v != v && m == m)) m = v, idx = c;
  }
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
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_SIMD_INLINE R load(const S* p) { return widen1(*p); }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_SIMD_INLINE R load_k(const S* p, int64_t) { return widen1(*p); }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_SIMD_INLINE void store(S* p, R v) { *p = narrow1<S>(v); }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_SIMD_INLINE void store_k(S* p, R v, int64_t) { *p = narrow1<S>(v); }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_SIMD_INLINE void stream(S* p, R v) { *p = narrow1<S>(v); }
};

#if defined(SAM_FUSED_X86_DISPATCH)

#define SAM_FUSED_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define SAM_FUSED_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")))

// Baseline x86-64 (SSE2): no FMA, so fmadd is a multiply then an add.
struct VecSse2 {
  using R = __m128;
  using RI = __m128i;
  static constexpr int64_t N = 4;
  static SAM_FUSED_SIMD_INLINE R load(const float* p) { return _mm_loadu_ps(p); }
  static SAM_FUSED_SIMD_INLINE RI loadi(const int32_t* p) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  }
  // Partial vectors (k < N lanes of 32 bits) by one 32- or 64-bit access or both: a memcpy call
  // per partial vector showed in the counts of short rows.
  static SAM_FUSED_SIMD_INLINE __m128i load32_k(const void* p, int64_t k) {
    if (k == N) return _mm_loadu_si128(static_cast<const __m128i*>(p));
    if (k == 1) return _mm_cvtsi32_si128(load32(p));
    const __m128i lo = _mm_loadl_epi64(static_cast<const __m128i*>(p));
    return k == 2 ? lo : _mm_unpacklo_epi64(lo, _mm_cvtsi32_si128(load32(static_cast<const char*>(p) + 8)));
  }
  static SAM_FUSED_SIMD_INLINE void store32_k(void* p, __m128i v, int64_t k) {
    if (k == N) return _mm_storeu_si128(static_cast<__m128i*>(p), v);
    if (k == 1) return store32(p, _mm_cvtsi128_si32(v));
    _mm_storel_epi64(static_cast<__m128i*>(p), v);
    if (k == 3) store32(static_cast<char*>(p) + 8, _mm_cvtsi128_si32(_mm_unpackhi_epi64(v, v)));
  }
  static SAM_FUSED_SIMD_INLINE int32_t load32(const void* p) {
    int32_t v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  static SAM_FUSED_SIMD_INLINE void store32(void* p, int32_t v) { std::memcpy(p, &v, sizeof(v)); }
  static SAM_FUSED_SIMD_INLINE R load_k(const float* p, int64_t k) { return _mm_castsi128_ps(load32_k(p, k)); }
  static SAM_FUSED_SIMD_INLINE RI loadi_k(const int32_t* p, int64_t k) { return load32_k(p, k); }
  static SAM_FUSED_SIMD_INLINE void store(float* p, R v) { _mm_storeu_ps(p, v); }
  static SAM_FUSED_SIMD_INLINE void store_k(float* p, R v, int64_t k) { store32_k(p, _mm_castps_si128(v), k); }
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
  static SAM_FUSED_SIMD_INLINE void storei_k(int32_t* p, RI v, int64_t k) { store32_k(p, v, k); }
  static SAM_FUSED_SIMD_INLINE RI set1i(int32_t v) { return _mm_set1_epi32(v); }
  static SAM_FUSED_SIMD_INLINE void argmax_step(R& m, RI& idx, R v, RI c) {
    const R take = _mm_or_ps(_mm_cmpgt_ps(v, m), _mm_andnot_ps(_mm_cmpunord_ps(m, m), _mm_cmpunord_ps(v, v)));
    const RI ti = _mm_castps_si128(take);
    m = _mm_or_ps(_mm_and_ps(take, v), _mm_andnot_ps(take, m));
    idx = _mm_or_si128(_mm_and_si128(ti, c), _mm_andnot_si128(ti, idx));
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
  // 16-bit storage: bf16 by shifts; fp16 (baseline x86-64 has no F16C) by half_convert.h's
  // branch-free versions of c10's conversions, the same steps on 4 lanes (bit-exact). Unsigned
  // compares are signed ones on operands with the top bit flipped.
  static SAM_FUSED_SIMD_INLINE __m128i i32(uint32_t v) { return _mm_set1_epi32(int32_t(v)); }
  static SAM_FUSED_SIMD_INLINE __m128i select(__m128i m, __m128i a, __m128i b) {
    return _mm_or_si128(_mm_and_si128(m, a), _mm_andnot_si128(m, b));
  }
  // 32-bit lanes holding 16-bit values (zero-extended) into the low 4 halves, exactly.
  static SAM_FUSED_SIMD_INLINE __m128i pack16(__m128i r) {
    return _mm_packs_epi32(_mm_srai_epi32(_mm_slli_epi32(r, 16), 16), _mm_setzero_si128());
  }
  static SAM_FUSED_SIMD_INLINE R half_widen(__m128i h) {
    const __m128i w = _mm_unpacklo_epi16(_mm_setzero_si128(), h), two_w = _mm_add_epi32(w, w);
    const __m128 normal = _mm_mul_ps(_mm_castsi128_ps(_mm_add_epi32(_mm_srli_epi32(two_w, 4), i32(0xE0u << 23))),
                                     _mm_castsi128_ps(i32(15u << 23)));
    const __m128 denormal =
        _mm_sub_ps(_mm_castsi128_ps(_mm_or_si128(_mm_srli_epi32(two_w, 17), i32(126u << 23))), _mm_set1_ps(0.5f));
    const __m128i is_denormal = _mm_cmpeq_epi32(_mm_srli_epi32(two_w, 27), _mm_setzero_si128());
    return _mm_castsi128_ps(_mm_or_si128(_mm_and_si128(w, i32(0x80000000u)),
                                         select(is_denormal, _mm_castps_si128(denormal), _mm_castps_si128(normal))));
  }
  static SAM_FUSED_SIMD_INLINE __m128i half_narrow(R f) {
    const __m128i w = _mm_castps_si128(f), shl1_w = _mm_add_epi32(w, w), flip = i32(0x80000000u);
    const R abs = _mm_and_ps(f, _mm_castsi128_ps(i32(0x7FFFFFFFu)));
    R base = _mm_mul_ps(_mm_mul_ps(abs, _mm_castsi128_ps(i32(239u << 23))), _mm_castsi128_ps(i32(17u << 23)));
    const __m128i e = _mm_and_si128(shl1_w, i32(0xFF000000u)), lo = i32(0x71000000u);
    const __m128i bias = select(_mm_cmplt_epi32(_mm_xor_si128(e, flip), _mm_xor_si128(lo, flip)), lo, e);
    base = _mm_add_ps(_mm_castsi128_ps(_mm_add_epi32(_mm_srli_epi32(bias, 1), i32(0x07800000u))), base);
    const __m128i bits = _mm_castps_si128(base);
    const __m128i nonsign =
        _mm_add_epi32(_mm_and_si128(_mm_srli_epi32(bits, 13), i32(0x7C00u)), _mm_and_si128(bits, i32(0x0FFFu)));
    const __m128i is_nan = _mm_cmpgt_epi32(_mm_xor_si128(shl1_w, flip), i32(0xFF000000u ^ 0x80000000u));
    return pack16(_mm_or_si128(_mm_srli_epi32(_mm_and_si128(w, flip), 16), select(is_nan, i32(0x7E00u), nonsign)));
  }
  // The rounded bf16 of each lane in the low 4 halves (c10::BFloat16's round_to_nearest_even).
  static SAM_FUSED_SIMD_INLINE __m128i bf16_narrow(R v) {
    const __m128i u = _mm_castps_si128(v);
    const __m128i bias = _mm_add_epi32(_mm_and_si128(_mm_srli_epi32(u, 16), i32(1)), i32(0x7FFF));
    // arithmetic shift: each lane a signed 16-bit value, which the saturating pack keeps exactly
    // (u + bias does not wrap: only NaNs lie above -inf's bits, and those are replaced)
    const __m128i r = _mm_srai_epi32(_mm_add_epi32(u, bias), 16);
    return _mm_packs_epi32(select(_mm_castps_si128(_mm_cmpunord_ps(v, v)), i32(0x7FC0), r), _mm_setzero_si128());
  }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_SIMD_INLINE R load(const S* p) {
    const __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    if constexpr (std::is_same_v<S, c10::BFloat16>) return _mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), h));
    else return half_widen(h);
  }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_SIMD_INLINE __m128i narrow(R v) {
    if constexpr (std::is_same_v<S, c10::BFloat16>) return bf16_narrow(v);
    else return half_narrow(v);
  }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_SIMD_INLINE R load_k(const S* p, int64_t k) {
    if (k == N) return load(p);
    S b[N] = {};
    std::memcpy(b, p, k * sizeof(S));
    return load(b);
  }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_SIMD_INLINE void store(S* p, R v) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), narrow<S>(v));
  }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_SIMD_INLINE void store_k(S* p, R v, int64_t k) {
    if (k == N) return store(p, v);
    S b[N];
    store(b, v);
    std::memcpy(p, b, k * sizeof(S));
  }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_SIMD_INLINE void stream(S* p, R v) {
    _mm_stream_si64(reinterpret_cast<long long*>(p), _mm_cvtsi128_si64(narrow<S>(v)));
  }
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
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE void storei_k(int32_t* p, RI v, int64_t k) {
    if (k == N) _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
    else _mm256_maskstore_epi32(reinterpret_cast<int*>(p), mask(k), v);
  }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE RI set1i(int32_t v) { return _mm256_set1_epi32(v); }
  static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE void argmax_step(R& m, RI& idx, R v, RI c) {
    const R take = _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ),
                                _mm256_andnot_ps(_mm256_cmp_ps(m, m, _CMP_UNORD_Q), _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
    m = _mm256_blendv_ps(m, v, take);
    idx = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(idx), _mm256_castsi256_ps(c), take));
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
  // 16-bit storage: fp16 by F16C, bf16 by shifts; N halves are one 128-bit vector.
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE R widen(__m128i h) {
    if constexpr (std::is_same_v<S, c10::Half>) return _mm256_cvtph_ps(h);
    else return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE __m128i narrow(R v) {
    if constexpr (std::is_same_v<S, c10::Half>) {
      return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
    } else {  // c10::BFloat16's round_to_nearest_even
      const __m256i u = _mm256_castps_si256(v);
      const __m256i bias =
          _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1)), _mm256_set1_epi32(0x7FFF));
      const __m256i r = _mm256_blendv_epi8(_mm256_srli_epi32(_mm256_add_epi32(u, bias), 16), _mm256_set1_epi32(0x7FC0),
                                           _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
      return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));  // lanes <= 0xFFFF: exact
    }
  }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE R load(const S* p) {
    return widen<S>(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE R load_k(const S* p, int64_t k) {
    if (k == N) return load(p);
    alignas(16) S b[N] = {};
    std::memcpy(b, p, k * sizeof(S));
    return load(b);
  }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE void store(S* p, R v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), narrow<S>(v));
  }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE void store_k(S* p, R v, int64_t k) {
    if (k == N) return store(p, v);
    alignas(16) S b[N];
    store(b, v);
    std::memcpy(p, b, k * sizeof(S));
  }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_TARGET_AVX2 SAM_FUSED_SIMD_INLINE void stream(S* p, R v) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(p), narrow<S>(v));
  }
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
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE void storei_k(int32_t* p, RI v, int64_t k) {
    _mm512_mask_storeu_epi32(p, mask(k), v);
  }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE RI set1i(int32_t v) { return _mm512_set1_epi32(v); }
  static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE void argmax_step(R& m, RI& idx, R v, RI c) {
    const __mmask16 take = _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ) |
                           (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) & ~_mm512_cmp_ps_mask(m, m, _CMP_UNORD_Q));
    m = _mm512_mask_blend_ps(take, m, v);
    idx = _mm512_mask_blend_epi32(take, idx, c);
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
  // 16-bit storage: fp16 by the AVX-512F conversions, bf16 by shifts; N halves are 256 bits.
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE R widen(__m256i h) {
    if constexpr (std::is_same_v<S, c10::Half>) return _mm512_cvtph_ps(h);
    else return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE __m256i narrow(R v) {
    if constexpr (std::is_same_v<S, c10::Half>) {
      return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
    } else {  // c10::BFloat16's round_to_nearest_even
      const __m512i u = _mm512_castps_si512(v);
      const __m512i bias =
          _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)), _mm512_set1_epi32(0x7FFF));
      const __m512i r = _mm512_mask_mov_epi32(_mm512_srli_epi32(_mm512_add_epi32(u, bias), 16),
                                              _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
      return _mm512_cvtepi32_epi16(r);
    }
  }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE R load(const S* p) {
    return widen<S>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE R load_k(const S* p, int64_t k) {
    return k == N ? load(p) : widen<S>(_mm256_maskz_loadu_epi16(mask(k), p));
  }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE void store(S* p, R v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), narrow<S>(v));
  }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE void store_k(S* p, R v,
                                                                                                   int64_t k) {
    if (k == N) store(p, v);
    else _mm256_mask_storeu_epi16(p, mask(k), narrow<S>(v));
  }
  template <SAM_FUSED_STORAGE16> static SAM_FUSED_TARGET_AVX512 SAM_FUSED_SIMD_INLINE void stream(S* p, R v) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), narrow<S>(v));
  }
};

#endif  // SAM_FUSED_X86_DISPATCH

}  // namespace sam_fused::cpu
