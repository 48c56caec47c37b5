// Point-wise spatial attention (Darknet sam_layer): CPU kernels (schema and checks: ../pointwise.cpp).
//   fwd: out = x * s,  s = sigmoid(y)
//   bwd: dx = g * s,   dy = g * x * s * (1 - s) (the slope from exp(-y), not 1 - s: kernels_f32_impl.h
//   sigmoid_slope_of_exp)
// Every element is independent, so the kernels run over flat storage in the operands' common
// dense layout (see pointwise_operands). Every dtype runs the ISA's loops (cpu/kernels_f32.h
// PointwiseKernels: a vectorised exp, 16-bit storage converted where it is loaded and stored,
// float arithmetic, double for fp64, each result rounded once).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../pointwise.h"
#include "kernels_f32.h"

namespace sam_fused {

namespace {

constexpr int64_t kGrain = 32768;  // elements per task before splitting into threads

// The loops for storage T, chosen once per call.
template <typename T> cpu::PointwiseKernels<T> loops() { return cpu::pointwise_kernels<T>(cpu::f32_kernels()); }

}  // namespace

at::Tensor pointwise_attention_fwd_cpu(const at::Tensor& x_in, const at::Tensor& y_in) {
  const auto ops = pointwise_operands({x_in, y_in}, kFwdNames);
  const at::Tensor &x = ops[0], &y = ops[1];
  at::Tensor out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pointwise_attention_fwd_cpu", [&] {
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *yp = y.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    const auto fwd = loops<scalar_t>().fwd;
    at::parallel_for(0, x.numel(), kGrain, [&](int64_t b, int64_t e) { fwd(xp + b, yp + b, op + b, e - b); });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> pointwise_attention_bwd_cpu(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                               const at::Tensor& y_in) {
  const auto ops = pointwise_operands({x_in, y_in, grad_in}, kBwdNames);
  const at::Tensor &x = ops[0], &y = ops[1], &g = ops[2];
  at::Tensor dx = at::empty_like(x), dy = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pointwise_attention_bwd_cpu", [&] {
    const scalar_t *gp = g.const_data_ptr<scalar_t>(), *xp = x.const_data_ptr<scalar_t>(),
                   *yp = y.const_data_ptr<scalar_t>();
    scalar_t *dxp = dx.mutable_data_ptr<scalar_t>(), *dyp = dy.mutable_data_ptr<scalar_t>();
    const auto bwd = loops<scalar_t>().bwd;
    at::parallel_for(0, x.numel(), kGrain,
                     [&](int64_t b, int64_t e) { bwd(gp + b, xp + b, yp + b, dxp + b, dyp + b, e - b); });
  });
  return {dx, dy};
}

}  // namespace sam_fused

TORCH_LIBRARY_IMPL(sam_fused, CPU, m) {
  m.impl("pointwise_attention_fwd", &sam_fused::pointwise_attention_fwd_cpu);
  m.impl("pointwise_attention_bwd", &sam_fused::pointwise_attention_bwd_cpu);
}
