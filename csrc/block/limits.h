// The device limits the launch plan must respect. The CUDA launcher fills them from
// cudaDeviceProp; the CPU emulation takes them from the table below, so the one planner
// (traits.h) sees the same numbers either way.
#pragma once
#include <cstdint>
#include <cstring>

namespace sam_fused::block {

struct DeviceLimits {
  const char* name;                  // "sm_90" (the emulation's key) or cudaDeviceProp::name
  int64_t smem_per_block_optin;      // sharedMemPerBlockOptin: most dynamic smem one block may ask for
  int64_t smem_per_sm;               // sharedMemPerMultiprocessor
  int64_t smem_reserved_per_block;   // reservedSharedMemPerBlock: the runtime's share of each block
  int64_t regs_per_sm;               // regsPerMultiprocessor (32-bit registers)
  int64_t max_threads_per_sm;        // maxThreadsPerMultiProcessor
  int64_t max_threads_per_block;     // maxThreadsPerBlock
  int64_t sms;                       // multiProcessorCount
};

// Values of the CUDA C++ Programming Guide, "Technical Specifications per Compute Capability"
// (shared memory per SM and per block opt-in, registers and threads per SM), with the SM count
// of one representative part.
inline constexpr DeviceLimits kArchLimits[] = {
    {"sm_80", 163 * 1024, 164 * 1024, 1024, 65536, 2048, 1024, 108},   // A100
    {"sm_86", 99 * 1024, 100 * 1024, 1024, 65536, 1536, 1024, 84},    // A40
    {"sm_89", 99 * 1024, 100 * 1024, 1024, 65536, 1536, 1024, 142},   // L40S
    {"sm_90", 227 * 1024, 228 * 1024, 1024, 65536, 2048, 1024, 132},  // H100 SXM
    {"sm_100", 227 * 1024, 228 * 1024, 1024, 65536, 2048, 1024, 148}, // B200
    {"sm_120", 99 * 1024, 100 * 1024, 1024, 65536, 1536, 1024, 170},  // RTX 5090
};

// The table entry called `name`, or null.
inline const DeviceLimits* find_arch_limits(const char* name) {
  for (const auto& l : kArchLimits)
    if (std::strcmp(l.name, name) == 0) return &l;
  return nullptr;
}

}  // namespace sam_fused::block
