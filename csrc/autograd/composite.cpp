// Composite (differentiable ATen) forms of the ops; see composite.h.
#include "composite.h"

#include <torch/library.h>

#include <vector>

#include "../pointwise.h"
#include "../spatial_attention.h"

namespace sam_fused {

at::Tensor spatial_attention_composite(const at::Tensor& x, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias, const std::string& pool,
                                       bool return_map) {
  const Geometry g = check_inputs(x, weight, bias, pool);
  const auto acc = acc_dtype(x.scalar_type());
  const at::Tensor xa = x.to(acc);
  std::vector<at::Tensor> maps;
  for (int p = 0; p < g.pool.P; ++p)
    maps.push_back(g.pool.map[p] == kMean ? xa.mean(1, /*keepdim=*/true) : std::get<0>(xa.max(1, /*keepdim=*/true)));
  const at::Tensor q = maps.size() > 1 ? at::cat(maps, 1) : maps[0];
  const std::optional<at::Tensor> bias_acc = bias ? std::optional<at::Tensor>(bias->to(acc)) : std::nullopt;
  const at::Tensor s = at::sigmoid(at::conv2d(q, weight.to(acc), bias_acc, {1, 1}, {g.kh / 2, g.kw / 2}));
  return (return_map ? s : xa * s).to(x.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> pointwise_attention_bwd_composite(const at::Tensor& grad, const at::Tensor& x,
                                                                     const at::Tensor& y) {
  pointwise_operands({x, y, grad}, kBwdNames);  // the kernels' checks, for the same errors
  const auto acc = acc_dtype(x.scalar_type());
  const at::Tensor s = at::sigmoid(y.to(acc)), ga = grad.to(acc);
  return {(ga * s).to(x.scalar_type()), (ga * x.to(acc) * s * (1 - s)).to(y.scalar_type())};
}

namespace {
GilReleaser gil_releaser = nullptr;
}  // namespace

void set_gil_releaser(GilReleaser releaser) { gil_releaser = releaser; }

void without_gil(c10::function_ref<void()> f) {
  if (gil_releaser) gil_releaser(f);
  else f();
}

at::Tensor pointwise_attention_composite(const at::Tensor& x, const at::Tensor& y) {
  pointwise_operands({x, y}, kFwdNames);  // the kernels' checks, for the same errors
  const auto acc = acc_dtype(x.scalar_type());
  return (x.to(acc) * at::sigmoid(y.to(acc))).to(x.scalar_type());
}

bool needs_graph(std::initializer_list<const at::Tensor*> operands) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor* t : operands)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool has_tangent(std::initializer_list<const at::Tensor*> operands) {
  for (const at::Tensor* t : operands)
    if (t && t->defined() && t->_fw_grad(/*level=*/0).defined()) return true;
  return false;
}

}  // namespace sam_fused

TORCH_LIBRARY_IMPL(sam_fused, CompositeImplicitAutograd, m) {
  m.impl("spatial_attention_composite", &sam_fused::spatial_attention_composite);
}
