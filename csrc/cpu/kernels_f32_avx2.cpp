// The fp32-arithmetic hot loops built for AVX2 + FMA (+ F16C, fp16's conversions), by a target pragma around
// kernels_f32_impl.h (no per-file compiler flags, so setup.py and CMakeLists.txt build this file like any other).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>

#include "kernels_f32.h"
#include "simd.h"

#if defined(SAM_FUSED_X86_DISPATCH)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
#define SAM_FUSED_ISA_NS isa_avx2
#define SAM_FUSED_VEC VecAvx2
#include "kernels_f32_impl.h"
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace sam_fused::cpu {
const F32Kernels* f32_kernels_avx2() { return &isa_avx2::kTable; }
}  // namespace sam_fused::cpu
#else
namespace sam_fused::cpu {
const F32Kernels* f32_kernels_avx2() { return nullptr; }
}  // namespace sam_fused::cpu
#endif
