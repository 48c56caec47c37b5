// Point-wise spatial attention (Darknet sam_layer): CPU kernels (schema and checks: ../pointwise.cpp).
//   fwd: out = x * s,  s = sigmoid(y)
//   bwd: dx = g * s,   dy = g * x * s * (1 - s) (the slope s * (1 - s) from exp(-y) where y > 0)
// Every element is independent, so the kernels run over flat storage in the operands' common
// dense layout (see pointwise_operands). fp16/bf16 are staged through float buffers in chunks:
// the math runs in float and each result is rounded once.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include "../pointwise.h"
#include "../sam_math.h"

namespace sam_fused {

namespace {

constexpr int64_t kGrain = 32768;  // elements per task before splitting into threads
constexpr int64_t kChunk = 256;    // fp16/bf16 elements staged through float buffers at a time

using ::sam_fused::sigmoid;  // the scalar one (sam_math.h), beside the vector one below

template <typename A>
inline at::vec::Vectorized<A> sigmoid(const at::vec::Vectorized<A>& y) {
  using V = at::vec::Vectorized<A>;
  return V(A(1)) / (V(A(1)) + y.neg().exp());
}

// The math on float/double arrays.
template <typename A>
void fwd_math(const A* x, const A* y, A* out, int64_t n) {
  using V = at::vec::Vectorized<A>;
  int64_t i = 0;
  for (; i + V::size() <= n; i += V::size()) (V::loadu(x + i) * sigmoid(V::loadu(y + i))).store(out + i);
  for (; i < n; ++i) out[i] = x[i] * sigmoid(y[i]);
}

// The slope s * (1 - s) as sam_math.h's sigmoid_slope takes it (1 - s where y < 0, else
// exp(-y) * s: 1 - s of a rounded s near 1 is off by up to 1e-4 relative in fp32).
template <typename A>
void bwd_math(const A* g, const A* x, const A* y, A* dx, A* dy, int64_t n) {
  using V = at::vec::Vectorized<A>;
  int64_t i = 0;
  for (; i + V::size() <= n; i += V::size()) {
    const V yv = V::loadu(y + i), gv = V::loadu(g + i), e = yv.neg().exp(), s = V(A(1)) / (V(A(1)) + e);
    (gv * s).store(dx + i);
    (gv * V::loadu(x + i) * (s * V::blendv(e * s, V(A(1)) - s, yv < V(A(0))))).store(dy + i);
  }
  for (; i < n; ++i) {
    const SigmoidSlope<A> ss = sigmoid_slope(y[i]);
    dx[i] = g[i] * ss.s;
    dy[i] = g[i] * x[i] * ss.slope;
  }
}

// Runs `math` (on float/double arrays) over [begin, end) of `in` -> `out` element arrays of
// type T: directly for float/double, through float buffers of kChunk for fp16/bf16.
template <typename T, int kIn, int kOut, typename Math>
void run_staged(const T* const (&in)[kIn], T* const (&out)[kOut], int64_t begin, int64_t end, Math math) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    const T* a[kIn];
    T* b[kOut];
    for (int k = 0; k < kIn; ++k) a[k] = in[k] + begin;
    for (int k = 0; k < kOut; ++k) b[k] = out[k] + begin;
    math(a, b, end - begin);
  } else {
    float a[kIn][kChunk], b[kOut][kChunk];
    const float* ap[kIn];
    float* bp[kOut];
    for (int k = 0; k < kIn; ++k) ap[k] = a[k];
    for (int k = 0; k < kOut; ++k) bp[k] = b[k];
    for (int64_t c = begin; c < end; c += kChunk) {
      const int64_t n = std::min(kChunk, end - c);
      for (int k = 0; k < kIn; ++k)
        for (int64_t i = 0; i < n; ++i) a[k][i] = float(in[k][c + i]);
      math(ap, bp, n);
      for (int k = 0; k < kOut; ++k)
        for (int64_t i = 0; i < n; ++i) out[k][c + i] = T(b[k][i]);
    }
  }
}

}  // namespace

at::Tensor pointwise_attention_fwd_cpu(const at::Tensor& x_in, const at::Tensor& y_in) {
  const auto ops = pointwise_operands({x_in, y_in}, kFwdNames);
  const at::Tensor &x = ops[0], &y = ops[1];
  at::Tensor out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pointwise_attention_fwd_cpu", [&] {
    const scalar_t* const in[2] = {x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>()};
    scalar_t* const res[1] = {out.mutable_data_ptr<scalar_t>()};
    at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
      run_staged<scalar_t>(in, res, begin, end, [](auto a, auto b, int64_t n) { fwd_math(a[0], a[1], b[0], n); });
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> pointwise_attention_bwd_cpu(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                               const at::Tensor& y_in) {
  const auto ops = pointwise_operands({x_in, y_in, grad_in}, kBwdNames);
  const at::Tensor &x = ops[0], &y = ops[1], &g = ops[2];
  at::Tensor dx = at::empty_like(x), dy = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pointwise_attention_bwd_cpu", [&] {
    const scalar_t* const in[3] = {g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                   y.const_data_ptr<scalar_t>()};
    scalar_t* const res[2] = {dx.mutable_data_ptr<scalar_t>(), dy.mutable_data_ptr<scalar_t>()};
    at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
      run_staged<scalar_t>(in, res, begin, end,
                           [](auto a, auto b, int64_t n) { bwd_math(a[0], a[1], a[2], b[0], b[1], n); });
    });
  });
  return {dx, dy};
}

}  // namespace sam_fused

TORCH_LIBRARY_IMPL(sam_fused, CPU, m) {
  m.impl("pointwise_attention_fwd", &sam_fused::pointwise_attention_fwd_cpu);
  m.impl("pointwise_attention_bwd", &sam_fused::pointwise_attention_bwd_cpu);
}
