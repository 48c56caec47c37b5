// The fp32 hot loops for the baseline of the build target: SSE2 on x86-64, one lane elsewhere
// (the compiler may still vectorise). Always present: the fallback of the run-time choice.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>

#include "kernels_f32.h"
#include "simd.h"

#define SAM_FUSED_ISA_NS isa_default
#if defined(SAM_FUSED_X86_DISPATCH)
#define SAM_FUSED_VEC VecSse2
#else
#define SAM_FUSED_VEC VecScalar
#endif
#include "kernels_f32_impl.h"

namespace sam_fused::cpu {
const F32Kernels* f32_kernels_default() { return &isa_default::kTable; }
}  // namespace sam_fused::cpu
