// Run-time choice of the instruction set of the CPU hot loops, as ATen chooses its own: the
// best the CPU supports, or the one SAM_FUSED_CPU_ISA=default|avx2|avx512 names (an error
// if the CPU lacks it). The variable is read at every call, so tests can switch it.
// Also the cache sizes the CPU reports, from which the kernels size their bands (SAM_FUSED_CPU_L2,
// read at the first call, replaces the L2's: 512K, 1M, or bytes).
#pragma once
#include <cstdint>

namespace sam_fused::cpu {

enum class Isa : int { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };

const char* isa_name(Isa isa);
bool cpu_supports(Isa isa);  // the CPU and this build (x86-64, GCC or clang) have it
Isa active_isa();            // throws a ValueError-class error for an unusable SAM_FUSED_CPU_ISA

struct CacheSizes {
  int64_t l1d, l2, l3;  // bytes; the fallback where the system does not say
  bool reported;        // l2 came from the system
};
const CacheSizes& cache_sizes();

}  // namespace sam_fused::cpu
