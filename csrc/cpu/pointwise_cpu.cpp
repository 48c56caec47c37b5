// Point-wise spatial attention (Darknet sam_layer): CPU kernels (schema and checks: ../pointwise.cpp).
//   fwd: out = x * s,  s = sigmoid(y)
//   bwd: dx = g * s,   dy = g * x * s * (1 - s) (the slope from exp(-y), not 1 - s: sam_math.h sigmoid_slope)
// Every element is independent, so the kernels run over flat storage in the operands' common
// dense layout (see pointwise_operands). fp32, fp16 and bf16 run the ISA's loops
// (cpu/kernels_f32.h PointwiseKernels: a vectorised exp, 16-bit storage converted where it is
// loaded and stored, float arithmetic, each result rounded once). fp64 runs at::vec, which this
// extension builds without an ISA: its exp runs element by element.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <type_traits>

#include "../pointwise.h"
#include "../sam_math.h"
#include "kernels_f32.h"

namespace sam_fused {

namespace {

constexpr int64_t kGrain = 32768;  // elements per task before splitting into threads

using Vd = at::vec::Vectorized<double>;

Vd sigmoid(const Vd& y) { return Vd(1.0) / (Vd(1.0) + y.neg().exp()); }

void fwd_double(const double* x, const double* y, double* out, int64_t n) {
  int64_t i = 0;
  for (; i + Vd::size() <= n; i += Vd::size()) (Vd::loadu(x + i) * sigmoid(Vd::loadu(y + i))).store(out + i);
  for (; i < n; ++i) out[i] = x[i] * ::sam_fused::sigmoid(y[i]);
}

// The slope as sigmoid_slope takes it: 1 - s where y < 0, else exp(-y) * s.
void bwd_double(const double* g, const double* x, const double* y, double* dx, double* dy, int64_t n) {
  int64_t i = 0;
  for (; i + Vd::size() <= n; i += Vd::size()) {
    const Vd yv = Vd::loadu(y + i), gv = Vd::loadu(g + i), e = yv.neg().exp(), s = Vd(1.0) / (Vd(1.0) + e);
    (gv * s).store(dx + i);
    (gv * Vd::loadu(x + i) * (s * Vd::blendv(e * s, Vd(1.0) - s, yv < Vd(0.0)))).store(dy + i);
  }
  for (; i < n; ++i) {
    const SigmoidSlope<double> ss = sigmoid_slope(y[i]);
    dx[i] = g[i] * ss.s;
    dy[i] = g[i] * x[i] * ss.slope;
  }
}

// The loops for storage T, chosen once per call.
template <typename T> cpu::PointwiseKernels<T> loops() {
  if constexpr (std::is_same_v<T, double>) return {fwd_double, bwd_double};
  else return cpu::pointwise_kernels<T>(cpu::f32_kernels());
}

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
