// Point-wise spatial attention (Darknet sam_layer): op schema and the operand checks every
// backend shares (csrc/cpu/pointwise_cpu.cpp, csrc/cuda/pointwise_cuda.cu).
#include "pointwise.h"

#include <torch/library.h>

namespace sam_fused {

std::vector<at::Tensor> pointwise_operands(std::vector<at::Tensor> operands, const char* const* names) {
  const at::Tensor& x = operands[0];
  const auto dtype = x.scalar_type();
  TORCH_CHECK_VALUE(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
                    names[0], " must be float32, float64, float16 or bfloat16, got ", dtype);
  bool same_strides = x.is_non_overlapping_and_dense();
  for (size_t i = 1; i < operands.size(); ++i) {
    const at::Tensor& t = operands[i];
    TORCH_CHECK_VALUE(t.sizes() == x.sizes(), names[i], " must have the shape of ", names[0], " ", x.sizes(), ", got ",
                      t.sizes());
    TORCH_CHECK_VALUE(t.scalar_type() == x.scalar_type(), names[i], " must have the dtype of ", names[0], " (",
                      x.scalar_type(), "), got ", t.scalar_type());
    TORCH_CHECK_VALUE(t.device() == x.device(), names[i], " must be on the device of ", names[0], " (", x.device(),
                      "), got ", t.device());
    same_strides = same_strides && t.strides() == x.strides();
  }
  if (!same_strides)
    for (auto& t : operands) t = t.contiguous();
  return operands;
}

}  // namespace sam_fused

TORCH_LIBRARY_FRAGMENT(sam_fused, m) {
  m.def("pointwise_attention_fwd(Tensor x, Tensor y) -> Tensor");
  m.def("pointwise_attention_bwd(Tensor grad, Tensor x, Tensor y) -> (Tensor, Tensor)");
}
