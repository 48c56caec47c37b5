// Autograd kernel of sam_fused::spatial_attention_fwd: the hand-written fused backward op as
// its derivative, in C++ so a call costs one dispatch (a Python autograd formula added tens of
// microseconds per call: the whole budget of a batch-1 layer). Double backward is not supported.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

namespace sam {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

auto fwd_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sam_fused::spatial_attention_fwd", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                 const std::optional<at::Tensor>&, const std::string&,
                                                                 bool)>();
  return op;
}

auto bwd_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sam_fused::spatial_attention_bwd", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                           const at::Tensor&, const std::string&, bool)>();
  return op;
}

class SpatialAttentionFunction : public torch::autograd::Function<SpatialAttentionFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, const std::string& pool, bool return_map) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, pooled] = fwd_op().call(x, weight, bias, pool, return_map);
    ctx->save_for_backward({x, weight, bias.value_or(at::Tensor()), pooled});
    ctx->saved_data["pool"] = pool;
    ctx->saved_data["return_map"] = return_map;
    ctx->mark_non_differentiable({pooled});
    return {out, pooled};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const std::optional<at::Tensor> bias = saved[2].defined() ? std::optional<at::Tensor>(saved[2]) : std::nullopt;
    auto [gx, gw, gb] = bwd_op().call(grads[0], saved[0], saved[1], bias, saved[3],
                                      ctx->saved_data["pool"].toStringRef(), ctx->saved_data["return_map"].toBool());
    return {gx, gw, bias ? gb : at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> spatial_attention_fwd_autograd(const at::Tensor& x, const at::Tensor& weight,
                                                                  const std::optional<at::Tensor>& bias,
                                                                  const std::string& pool, bool return_map) {
  auto r = SpatialAttentionFunction::apply(x, weight, bias, pool, return_map);
  return {r[0], r[1]};
}

}  // namespace
}  // namespace sam

TORCH_LIBRARY_IMPL(sam_fused, Autograd, m) {
  m.impl("spatial_attention_fwd", &sam::spatial_attention_fwd_autograd);
}
