// Large outputs of the CPU ops (x-sized: out, dx) from a few blocks freed by earlier outputs.
//
// A forward+backward loop frees its two x-sized outputs together every step; glibc then often
// returns the top of its heap to the kernel (above its trim threshold), and the next step
// first-touches every page of the new outputs again: on a VM about 2 µs per 4 KiB page, several
// times the kernels' own time for that step. Blocks kept here keep their pages.
#pragma once
#include <ATen/core/Tensor.h>

namespace sam_fused::cpu {

// at::empty(sizes, options) in memory format fmt; outputs of at least 128 KiB take their storage
// from the cache (a freed block of the same byte size, else a new one), the rest from the
// default allocator. At most 8 freed blocks, 256 MiB together, are kept (the oldest go first).
// SAM_FUSED_CPU_OUTPUT_CACHE=0 turns it off.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options, at::MemoryFormat fmt);

}  // namespace sam_fused::cpu
