// CUDA backend of the spatial-attention op. The fused kernels land with issue 4; until then
// the backend is registered so the CUDA build path compiles and CUDA inputs fail clearly.
#include <torch/library.h>

#include "../spatial_attention.h"

namespace sam {

std::tuple<at::Tensor, at::Tensor> spatial_attention_fwd_cuda(const at::Tensor& x, const at::Tensor& weight,
                                                              const std::optional<at::Tensor>& bias,
                                                              const std::string& pool, bool return_map) {
  check_inputs(x, weight, bias, pool);
  TORCH_CHECK_NOT_IMPLEMENTED(false, "sam_fused: CUDA kernels are not in this build yet");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spatial_attention_bwd_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& pooled, const std::string& pool, bool return_map) {
  check_inputs(x, weight, bias, pool);
  TORCH_CHECK_NOT_IMPLEMENTED(false, "sam_fused: CUDA kernels are not in this build yet");
}

}  // namespace sam

TORCH_LIBRARY_IMPL(sam_fused, CUDA, m) {
  m.impl("spatial_attention_fwd", &sam::spatial_attention_fwd_cuda);
  m.impl("spatial_attention_bwd", &sam::spatial_attention_bwd_cuda);
}
