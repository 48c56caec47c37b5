// Autograd kernels of the point-wise ops, the same way as the spatial ones
// (spatial_attention_autograd.cpp): the fused backward op as the derivative of the forward, and
// the backward differentiable through its composite under create_graph.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "composite.h"

namespace sam_fused {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

auto fwd_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sam_fused::pointwise_attention_fwd", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return op;
}

auto bwd_op() {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("sam_fused::pointwise_attention_bwd", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  return op;
}

class PointwiseAttentionFunction : public torch::autograd::Function<PointwiseAttentionFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& y) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, y});
    return {fwd_op().call(x, y)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor()};
    const auto saved = ctx->get_saved_variables();
    auto [gx, gy] = bwd_op().call(grads[0], saved[0], saved[1]);
    return {gx, gy};
  }
};

at::Tensor pointwise_attention_fwd_autograd(const at::Tensor& x, const at::Tensor& y) {
  if (has_tangent({&x, &y})) return pointwise_attention_composite(x, y);  // forward-mode AD
  if (!needs_graph({&x, &y})) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return fwd_op().call(x, y);
  }
  return PointwiseAttentionFunction::apply(x, y)[0];
}

std::tuple<at::Tensor, at::Tensor> pointwise_attention_bwd_autograd(const at::Tensor& grad, const at::Tensor& x,
                                                                    const at::Tensor& y) {
  TORCH_CHECK(!has_tangent({&grad, &x, &y}), kNoTangentsThroughBackward);
  if (needs_graph({&grad, &x, &y})) return pointwise_attention_bwd_composite(grad, x, y);
  at::AutoDispatchBelowADInplaceOrView guard;
  return bwd_op().call(grad, x, y);
}

}  // namespace
}  // namespace sam_fused

TORCH_LIBRARY_IMPL(sam_fused, Autograd, m) {
  m.impl("pointwise_attention_fwd", &sam_fused::pointwise_attention_fwd_autograd);
  m.impl("pointwise_attention_bwd", &sam_fused::pointwise_attention_bwd_autograd);
}
