// CUDA backend of the spatial-attention op: the block programs of csrc/block/ run by CudaCtx,
// launched with the plan of csrc/block/traits.h on the caller's current stream and device.
// No host syncs: bias and weights are read by the kernels from device memory.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "../block/ctx_cuda.cuh"
#include "../block/run.h"

namespace sam_fused {
namespace block {

// Static shared memory of block program K's kernel as the runtime counts it against the opt-in
// maximum (the block programs declare none; where a toolchain reports some, e.g. a reserved
// slice, the dynamic budget shrinks by it). Queried once per kernel and device. Keyed on
// <K, A>, not on the kernel's pointer type: every block program over the same arguments has
// the same pointer type, and a once-flag shared between them served only the first.
template <class K, class A> int64_t static_smem_bytes() {
  static std::once_flag once[C10_COMPILE_TIME_MAX_GPUS];
  static int64_t bytes[C10_COMPILE_TIME_MAX_GPUS];
  const int device = at::cuda::current_device();
  std::call_once(once[device], [&] {
    cudaFuncAttributes attr;
    C10_CUDA_CHECK(cudaFuncGetAttributes(&attr, &block_program_kernel<K, A>));
    bytes[device] = int64_t(attr.sharedSizeBytes);
  });
  return bytes[device];
}

// The current device's limits, from its properties (dynamic shared memory per block: the
// opt-in maximum less the kernels' static shared memory).
inline DeviceLimits device_limits() {
  const cudaDeviceProp* d = at::cuda::getCurrentDeviceProperties();
  const int64_t static_smem = static_smem_bytes<DwReduce<float>, Args<float>>();
  return {d->name,
          int64_t(d->sharedMemPerBlockOptin) - static_smem,
          int64_t(d->sharedMemPerMultiprocessor),
          int64_t(d->reservedSharedMemPerBlock) + static_smem,
          int64_t(d->regsPerMultiprocessor),
          int64_t(d->maxThreadsPerMultiProcessor),
          int64_t(d->maxThreadsPerBlock),
          int64_t(d->multiProcessorCount)};
}

// Raises block program K's dynamic shared-memory ceiling to the most the device allows it, once
// per kernel and device (call_once: thread-safe; the plan never asks for more). Without it a
// launch above 48 KB fails with "invalid argument".
template <class K, class A> void allow_max_dynamic_smem() {
  static std::once_flag once[C10_COMPILE_TIME_MAX_GPUS];
  const int device = at::cuda::current_device();
  std::call_once(once[device], [&] {
    const int64_t most =
        int64_t(at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin) - static_smem_bytes<K, A>();
    C10_CUDA_CHECK(
        cudaFuncSetAttribute(&block_program_kernel<K, A>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(most)));
  });
}

// Whether a backward call's kernels after its first are launched as programmatic dependents of
// the one before (sm_90 and later; SAM_FUSED_CUDA_PDL=0 turns it off, e.g. to time the
// difference). The forward's are not: on an H100 that made the two-pass forward (FwdPool, then
// FwdMain) 4-5% slower at CBAM (32,64,56,56), while the backward gains 0.5-4.5% in CUDA-graph
// replays (docs/gpu-results.md, seventh session).
inline bool overlap_launches() {
  if (at::cuda::getCurrentDeviceProperties()->major < 9) return false;
  const char* v = std::getenv("SAM_FUSED_CUDA_PDL");
  return !(v && std::string(v) == "0");
}

struct CudaLauncher {
  CallPlan last_call;
  int launched = 0;  // kernels of this call launched so far
  const bool overlap;
  explicit CudaLauncher(bool dependent_launches) : overlap(dependent_launches && overlap_launches()) {}
  DeviceLimits limits() const { return device_limits(); }
  void track(int, const at::Tensor&, bool = false) {}
  // With overlap (the backward), a call's second and later kernels are launched while the one
  // before may still run (programmatic dependent launch): their blocks take the SM slots that
  // the previous grid's last wave frees and wait at their start until that grid has finished
  // and its writes are visible (block_program_kernel), so the launch gap and the previous
  // grid's tail overlap. The first kernel waits for the work before the call as any launch does.
  template <class K, class A> void launch(const Launch& l, const A& a) {
    if (l.grid == 0) return;
    allow_max_dynamic_smem<K, A>();
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(unsigned(l.grid));
    config.blockDim = dim3(unsigned(l.threads));
    config.dynamicSmemBytes = size_t(l.smem_bytes);
    config.stream = at::cuda::getCurrentCUDAStream();
    cudaLaunchAttribute dependent;
    dependent.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    dependent.val.programmaticStreamSerializationAllowed = 1;
    config.attrs = &dependent;
    config.numAttrs = overlap && launched > 0 ? 1 : 0;
    C10_CUDA_CHECK(cudaLaunchKernelEx(&config, &block_program_kernel<K, A>, a));
    ++launched;
  }
};

}  // namespace block

std::tuple<at::Tensor, at::Tensor> spatial_attention_fwd_cuda(const at::Tensor& x, const at::Tensor& weight,
                                                              const std::optional<at::Tensor>& bias,
                                                              const std::string& pool, bool return_map) {
  const c10::cuda::CUDAGuard guard(x.device());
  block::CudaLauncher launcher(false);
  return block::run_forward(launcher, x, weight, bias, pool, return_map);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spatial_attention_bwd_cuda(const at::Tensor& grad_out,
                                                                          const at::Tensor& x, const at::Tensor& weight,
                                                                          const std::optional<at::Tensor>& bias,
                                                                          const at::Tensor& pooled,
                                                                          const std::string& pool, bool return_map) {
  const c10::cuda::CUDAGuard guard(x.device());
  block::CudaLauncher launcher(true);
  return block::run_backward(launcher, grad_out, x, weight, bias, pooled, pool, return_map);
}

#ifdef SAM_FUSED_TEST_OPS
// Test-only (tools/gpu_plan_sweep.py): the kernels with a forced plan (variant, rows, threads
// as the _emulate_* ops take them), to time and check every plan on a GPU.
std::tuple<at::Tensor, at::Tensor> spatial_attention_fwd_planned_cuda(const at::Tensor& x, const at::Tensor& weight,
                                                                      const std::optional<at::Tensor>& bias,
                                                                      const std::string& pool, bool return_map,
                                                                      int64_t variant, int64_t rows, int64_t threads) {
  const c10::cuda::CUDAGuard guard(x.device());
  block::CudaLauncher launcher(false);
  return block::run_forward(launcher, x, weight, bias, pool, return_map,
                            block::checked_overrides(variant, rows, threads));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spatial_attention_bwd_planned_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& pooled, const std::string& pool, bool return_map, int64_t variant, int64_t rows,
    int64_t threads) {
  const c10::cuda::CUDAGuard guard(x.device());
  block::CudaLauncher launcher(true);
  return block::run_backward(launcher, grad_out, x, weight, bias, pooled, pool, return_map,
                             block::checked_overrides(variant, rows, threads));
}
#endif

}  // namespace sam_fused

TORCH_LIBRARY_IMPL(sam_fused, CUDA, m) {
  m.impl("spatial_attention_fwd", &sam_fused::spatial_attention_fwd_cuda);
  m.impl("spatial_attention_bwd", &sam_fused::spatial_attention_bwd_cuda);
}

#ifdef SAM_FUSED_TEST_OPS
TORCH_LIBRARY_FRAGMENT(sam_fused, m) {
  m.def("_cuda_fwd_planned(Tensor x, Tensor weight, Tensor? bias, str pool, bool return_map, int variant=0, "
        "int rows=0, int threads=0) -> (Tensor, Tensor)");
  m.def("_cuda_bwd_planned(Tensor grad_out, Tensor x, Tensor weight, Tensor? bias, Tensor pooled, str pool, "
        "bool return_map, int variant=0, int rows=0, int threads=0) -> (Tensor, Tensor, Tensor)");
  m.impl("_cuda_fwd_planned", c10::DispatchKey::CUDA, &sam_fused::spatial_attention_fwd_planned_cuda);
  m.impl("_cuda_bwd_planned", c10::DispatchKey::CUDA, &sam_fused::spatial_attention_bwd_planned_cuda);
}
#endif
