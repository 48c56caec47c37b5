// CUDA backend of the spatial-attention op: the block programs of csrc/block/ run by CudaCtx,
// launched with the plan of csrc/block/traits.h on the caller's current stream and device.
// No host syncs: bias and weights are read by the kernels from device memory.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../block/ctx_cuda.cuh"
#include "../block/run.h"

namespace sam {
namespace block {

template <class K, class A> __global__ void block_program_kernel(const A a) {
  CudaCtx ctx;
  K::run(ctx, a);
}

struct CudaLauncher {
  Plan last_plan;
  ArchTraits arch() const { return arch_traits(at::cuda::getCurrentDeviceProperties()->major); }
  void track(int, const at::Tensor&) {}
  template <class K, class A> void launch(int64_t grid, int threads, int64_t smem_bytes, const A& a) {
    if (grid == 0) return;
    TORCH_CHECK(grid < (int64_t(1) << 31), "sam_fused: grid of ", grid, " blocks is too large");
    auto kernel = &block_program_kernel<K, A>;
    const int64_t smem_limit = int64_t(at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin);
    TORCH_CHECK(smem_bytes <= smem_limit, "sam_fused: this shape needs ", smem_bytes,
                " bytes of shared memory per block, more than the GPU's ", smem_limit,
                " (rows too wide: W or C*W too large for one tile)");
    if (smem_bytes > 48 * 1024)
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_bytes)));
    kernel<<<unsigned(grid), threads, smem_bytes, at::cuda::getCurrentCUDAStream()>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace block

std::tuple<at::Tensor, at::Tensor> spatial_attention_fwd_cuda(const at::Tensor& x, const at::Tensor& weight,
                                                              const std::optional<at::Tensor>& bias,
                                                              const std::string& pool, bool return_map) {
  const c10::cuda::CUDAGuard guard(x.device());
  block::CudaLauncher launcher;
  return block::run_forward(launcher, x, weight, bias, pool, return_map);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spatial_attention_bwd_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& pooled, const std::string& pool, bool return_map) {
  const c10::cuda::CUDAGuard guard(x.device());
  block::CudaLauncher launcher;
  return block::run_backward(launcher, grad_out, x, weight, bias, pooled, pool, return_map);
}

}  // namespace sam

TORCH_LIBRARY_IMPL(sam_fused, CUDA, m) {
  m.impl("spatial_attention_fwd", &sam::spatial_attention_fwd_cuda);
  m.impl("spatial_attention_bwd", &sam::spatial_attention_bwd_cuda);
}
