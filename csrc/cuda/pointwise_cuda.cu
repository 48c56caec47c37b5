// CUDA kernels of the point-wise spatial attention (Darknet sam_layer), see pointwise_cpu.cpp:
//   fwd: out = x * s,  s = sigmoid(y);   bwd: dx = g * s,  dy = g * x * s * (1 - s)
// Grid-stride elementwise loops over flat storage in the operands' common dense layout, with
// 16-byte vector loads/stores when every pointer is aligned, math in float (double for fp64).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "../pointwise.h"
#include "../sam_math.h"

namespace sam_fused {
namespace {

constexpr int kThreads = 256;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// One element of each op: reads `in`, writes `out` (both in opmath type A).
struct Fwd {
  static constexpr int kIn = 2, kOut = 1;
  template <typename A>
  __device__ __forceinline__ static void apply(const A (&in)[kIn], A (&out)[kOut]) {
    out[0] = in[0] * sigmoid(in[1]);  // x * s
  }
};

struct Bwd {
  static constexpr int kIn = 3, kOut = 2;
  template <typename A>
  __device__ __forceinline__ static void apply(const A (&in)[kIn], A (&out)[kOut]) {
    const A s = sigmoid(in[2]), gs = in[0] * s;  // in = g, x, y
    out[0] = gs;
    out[1] = gs * in[1] * (A(1) - s);
  }
};

template <typename Op, typename T>
struct Args {
  const T* in[Op::kIn];
  T* out[Op::kOut];
};

// Packs of N elements (one vector load per operand) while whole packs remain, then the
// remaining elements one at a time. N = 1 when a pointer is not 16-byte aligned.
template <typename Op, typename T, int N>
__global__ void elementwise_kernel(Args<Op, T> args, int64_t n) {
  using A = at::opmath_type<T>;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t packs = N > 1 ? n / N : 0;
  for (int64_t p = first; p < packs; p += stride) {
    Pack<T, N> in[Op::kIn], out[Op::kOut];
#pragma unroll
    for (int k = 0; k < Op::kIn; ++k) in[k] = reinterpret_cast<const Pack<T, N>*>(args.in[k])[p];
#pragma unroll
    for (int j = 0; j < N; ++j) {
      A a[Op::kIn], b[Op::kOut];
#pragma unroll
      for (int k = 0; k < Op::kIn; ++k) a[k] = A(in[k].v[j]);
      Op::apply(a, b);
#pragma unroll
      for (int k = 0; k < Op::kOut; ++k) out[k].v[j] = T(b[k]);
    }
#pragma unroll
    for (int k = 0; k < Op::kOut; ++k) reinterpret_cast<Pack<T, N>*>(args.out[k])[p] = out[k];
  }
  for (int64_t i = packs * N + first; i < n; i += stride) {
    A a[Op::kIn], b[Op::kOut];
#pragma unroll
    for (int k = 0; k < Op::kIn; ++k) a[k] = A(args.in[k][i]);
    Op::apply(a, b);
#pragma unroll
    for (int k = 0; k < Op::kOut; ++k) args.out[k][i] = T(b[k]);
  }
}

template <typename Op, typename T>
void launch(const Args<Op, T>& args, int64_t n) {
  if (n == 0) return;
  constexpr int kVec = 16 / sizeof(T);
  bool aligned = true;
  for (auto p : args.in) aligned = aligned && reinterpret_cast<uintptr_t>(p) % 16 == 0;
  for (auto p : args.out) aligned = aligned && reinterpret_cast<uintptr_t>(p) % 16 == 0;
  const int per_thread = aligned ? kVec : 1;
  const int64_t wanted = (n + int64_t(kThreads) * per_thread - 1) / (int64_t(kThreads) * per_thread);
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int blocks = int(std::min<int64_t>(wanted, int64_t(sms) * 32));  // grid-stride beyond that
  const auto stream = at::cuda::getCurrentCUDAStream();
  if (aligned) elementwise_kernel<Op, T, kVec><<<blocks, kThreads, 0, stream>>>(args, n);
  else elementwise_kernel<Op, T, 1><<<blocks, kThreads, 0, stream>>>(args, n);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

at::Tensor pointwise_attention_fwd_cuda(const at::Tensor& x_in, const at::Tensor& y_in) {
  const auto ops = pointwise_operands({x_in, y_in}, kFwdNames);
  const at::Tensor &x = ops[0], &y = ops[1];
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pointwise_attention_fwd_cuda", [&] {
    Args<Fwd, scalar_t> args{{x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>()},
                             {out.mutable_data_ptr<scalar_t>()}};
    launch(args, x.numel());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> pointwise_attention_bwd_cuda(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                                const at::Tensor& y_in) {
  const auto ops = pointwise_operands({x_in, y_in, grad_in}, kBwdNames);
  const at::Tensor &x = ops[0], &y = ops[1], &g = ops[2];
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor dx = at::empty_like(x), dy = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pointwise_attention_bwd_cuda", [&] {
    Args<Bwd, scalar_t> args{{g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>()},
                             {dx.mutable_data_ptr<scalar_t>(), dy.mutable_data_ptr<scalar_t>()}};
    launch(args, x.numel());
  });
  return {dx, dy};
}

}  // namespace sam_fused

TORCH_LIBRARY_IMPL(sam_fused, CUDA, m) {
  m.impl("pointwise_attention_fwd", &sam_fused::pointwise_attention_fwd_cuda);
  m.impl("pointwise_attention_bwd", &sam_fused::pointwise_attention_bwd_cuda);
}
