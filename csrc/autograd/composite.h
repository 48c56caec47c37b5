// The ops as compositions of differentiable ATen ops: the same math as the fused kernels
// (pooling and sigmoid in the accumulation dtype, one rounding at the end, the max routing its
// gradient to the first maximal channel as torch.max(dim) does). Autograd differentiates these
// where the fused backward is not enough: double backward and torch.func transforms.
#pragma once
#include <ATen/ATen.h>
#include <optional>
#include <string>

namespace sam_fused {

at::Tensor spatial_attention_composite(const at::Tensor& x, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias, const std::string& pool, bool return_map);

// dx = g * s, dy = g * x * s * (1 - s) with s = sigmoid(y), differentiable in g, x and y.
std::tuple<at::Tensor, at::Tensor> pointwise_attention_bwd_composite(const at::Tensor& grad, const at::Tensor& x,
                                                                     const at::Tensor& y);

// Whether a backward op must build a graph: create_graph is on and an operand requires grad.
bool needs_differentiable_backward(std::initializer_list<const at::Tensor*> operands);

}  // namespace sam_fused
