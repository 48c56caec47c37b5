// CUDA backend of the point-wise spatial attention (Darknet sam_layer): the block programs of
// csrc/block/pointwise.h run by CudaCtx, planned and launched by csrc/block/run_pointwise.h
// (the same code the CPU emulation runs) on the caller's current stream and device.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../block/ctx_cuda.cuh"
#include "../block/run_pointwise.h"

namespace sam_fused {
namespace block {

// No shared memory, no limits to raise: one launch per call.
struct PointwiseCudaLauncher {
  void track(int, const at::Tensor&, bool = false) {}
  template <class K, class A> void launch(const Launch& l, const A& a) {
    block_program_kernel<K, A><<<unsigned(l.grid), l.threads, 0, at::cuda::getCurrentCUDAStream()>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace block

at::Tensor pointwise_attention_fwd_cuda(const at::Tensor& x, const at::Tensor& y) {
  const c10::cuda::CUDAGuard guard(x.device());
  block::PointwiseCudaLauncher launcher;
  return std::get<0>(block::run_pointwise_forward(launcher, x, y));
}

std::tuple<at::Tensor, at::Tensor> pointwise_attention_bwd_cuda(const at::Tensor& grad, const at::Tensor& x,
                                                                const at::Tensor& y) {
  const c10::cuda::CUDAGuard guard(x.device());
  block::PointwiseCudaLauncher launcher;
  auto [dx, dy, plan] = block::run_pointwise_backward(launcher, grad, x, y);
  return {dx, dy};
}

}  // namespace sam_fused

TORCH_LIBRARY_IMPL(sam_fused, CUDA, m) {
  m.impl("pointwise_attention_fwd", &sam_fused::pointwise_attention_fwd_cuda);
  m.impl("pointwise_attention_bwd", &sam_fused::pointwise_attention_bwd_cuda);
}
