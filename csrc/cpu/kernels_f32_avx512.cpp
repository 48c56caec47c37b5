// The fp32 hot loops built for AVX-512 (F, BW, DQ, VL), by a target pragma around kernels_f32_impl.h (no
// per-file compiler flags, so setup.py and CMakeLists.txt build this file like any other).
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
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")
#endif
#define SAM_FUSED_ISA_NS isa_avx512
#define SAM_FUSED_VEC VecAvx512
// GCC 12 takes the deliberately undefined vectors inside its own AVX-512 conversion
// intrinsics (_mm512_cvtps_pd, _mm512_extractf64x4_pd) for uninitialised uses.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "kernels_f32_impl.h"
#pragma GCC diagnostic pop
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace sam_fused::cpu {
const F32Kernels* f32_kernels_avx512() { return &isa_avx512::kTable; }
}  // namespace sam_fused::cpu
#else
namespace sam_fused::cpu {
const F32Kernels* f32_kernels_avx512() { return nullptr; }
}  // namespace sam_fused::cpu
#endif
