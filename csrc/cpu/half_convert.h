// Conversions between a storage type S and the accumulation type A in the CPU kernels.
//
// For c10::Half they are c10's algorithms (bit-exact, round to nearest even) written without
// branches: c10's own versions (baseline x86-64 has no F16C) branch on denormals, which kept
// every loop touching fp16 scalar; fp16 then ran 5-9x slower than bf16. Branch-free, GCC
// vectorises those loops with SSE2.
#pragma once
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <type_traits>

namespace sam_fused {

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

[[gnu::always_inline]] inline float half_to_float(c10::Half h) {
  const uint32_t w = uint32_t(h.x) << 16;
  const uint32_t sign = w & 0x80000000u, two_w = w + w;
  const uint32_t normal = float_to_bits(bits_to_float((two_w >> 4) + (0xE0u << 23)) * bits_to_float(15u << 23));
  const uint32_t denormal = float_to_bits(bits_to_float((two_w >> 17) | (126u << 23)) - 0.5f);
  const uint32_t is_denormal = 0u - uint32_t(two_w < (1u << 27));  // all ones or zero
  return bits_to_float(sign | (denormal & is_denormal) | (normal & ~is_denormal));
}

[[gnu::always_inline]] inline c10::Half float_to_half(float f) {
  float base = (std::fabs(f) * bits_to_float(239u << 23)) * bits_to_float(17u << 23);
  const uint32_t w = float_to_bits(f), shl1_w = w + w, sign = w & 0x80000000u;
  const uint32_t bias = std::max(shl1_w & 0xFF000000u, 0x71000000u);
  base = bits_to_float((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = float_to_bits(base);
  const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  const uint32_t is_nan = 0u - uint32_t(shl1_w > 0xFF000000u);
  return c10::Half(uint16_t((sign >> 16) | (0x7E00u & is_nan) | (nonsign & ~is_nan)), c10::Half::from_bits());
}

template <typename A, typename S> [[gnu::always_inline]] inline A to_acc(S v) {
  if constexpr (std::is_same_v<S, c10::Half>) return A(half_to_float(v));
  else return A(v);
}

template <typename S, typename A> [[gnu::always_inline]] inline S from_acc(A v) {
  if constexpr (std::is_same_v<S, c10::Half>) return float_to_half(float(v));
  else return S(v);
}

}  // namespace sam_fused

// x86-64 with F16C (every x86 CPU since 2012-13): the fp16 loops with hardware conversions
// (write_plain_f16c in spatial_attention_cpu.cpp, internal linkage, so no AVX2 copy of a shared
// inline function can leak to baseline callers), chosen at run time, so the library still runs
// on baseline x86-64. Results are bitwise those of the portable loops: the conversions are
// exact / round to nearest even alike, and "fma" stays out of the target so no multiply-add is
// contracted.
#if defined(__x86_64__) && defined(__GNUC__)
#define SAM_FUSED_HAVE_F16C_PATH 1
#include <immintrin.h>
#define SAM_FUSED_F16C_TARGET __attribute__((target("avx2,f16c")))
namespace sam_fused {
// SAM_FUSED_NO_F16C=1 forces the portable loops (tests compare the two paths).
inline bool cpu_has_f16c() {
  static const bool has = [] {
    const char* off = std::getenv("SAM_FUSED_NO_F16C");
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") && !(off && std::string_view(off) == "1");
  }();
  return has;
}
}  // namespace sam_fused
#endif
