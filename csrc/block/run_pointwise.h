// Host side of the point-wise block programs (pointwise.h), written once over a Launcher as
// run.h is for the spatial op: the CUDA op (csrc/cuda/pointwise_cuda.cu) and the CPU emulation
// (csrc/testing/emulate.cpp) check, allocate, plan and launch the same way. A Launcher provides
//   void track(int slot, const at::Tensor&, bool written = false);
//                                                       tensors the emulation records (PointwiseSlot)
//   template <class K, class Args> void launch(const Launch&, const Args&);
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <tuple>

#include "../pointwise.h"
#include "pointwise.h"

namespace sam_fused::block {

// Tensors of a point-wise call as the emulation records them.
enum PointwiseSlot : int { kPwX, kPwY, kPwGrad, kPwOut, kPwGradY, kPwSlots };  // out: out or grad_x

inline bool pointwise_aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

// Plans and launches Pointwise<Op> over a.n elements; `aligned`: every pointer 16-byte aligned.
template <class Op, class Launcher, typename T>
PointwisePlan launch_pointwise(Launcher& L, PointwiseArgs<T, Op::kIn, Op::kOut> a, bool aligned) {
  const PointwisePlan p = plan_pointwise(a.n, sizeof(T), aligned);
  TORCH_CHECK(p.grid < (int64_t(1) << 31), "sam_fused: grid of ", p.grid, " blocks is too large");
  a.block_elems = p.block_elems;
  const Launch l{Kernel::kMain, p.grid, p.threads, 0};
  if (p.vec > 1) L.template launch<Pointwise<Op, T, 16 / sizeof(T)>>(l, a);
  else L.template launch<Pointwise<Op, T, 1>>(l, a);
  return p;
}

// Tracks the operands and results for the emulation and launches the op over them, in the
// operands' common dense layout (pointwise_operands); returns what was planned (grid 0: empty).
template <class Op, class Launcher, size_t kIn, size_t kOut>
PointwisePlan run_pointwise(Launcher& L, const at::Tensor (&in)[kIn], const int (&in_slots)[kIn],
                            const at::Tensor (&out)[kOut], const int (&out_slots)[kOut]) {
  const int64_t n = in[0].numel();
  if (n == 0) return {};
  bool aligned = true;
  for (size_t k = 0; k < kIn; ++k) L.track(in_slots[k], in[k]), aligned = aligned && pointwise_aligned16(in[k]);
  for (size_t k = 0; k < kOut; ++k)
    L.track(out_slots[k], out[k], true), aligned = aligned && pointwise_aligned16(out[k]);
  PointwisePlan p;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in[0].scalar_type(), "sam_fused_pointwise_block", [&] {
    PointwiseArgs<scalar_t, Op::kIn, Op::kOut> a;
    for (size_t k = 0; k < kIn; ++k) a.in[k] = in[k].template const_data_ptr<scalar_t>();
    for (size_t k = 0; k < kOut; ++k) a.out[k] = out[k].template mutable_data_ptr<scalar_t>();
    a.n = n;
    p = launch_pointwise<Op>(L, a, aligned);
  });
  return p;
}

// out = x * sigmoid(y), and what was planned.
template <class Launcher>
std::tuple<at::Tensor, PointwisePlan> run_pointwise_forward(Launcher& L, const at::Tensor& x_in,
                                                            const at::Tensor& y_in) {
  const auto ops = pointwise_operands({x_in, y_in}, kFwdNames);
  at::Tensor out = at::empty_like(ops[0]);
  const PointwisePlan p = run_pointwise<PointwiseFwd>(L, {ops[0], ops[1]}, {kPwX, kPwY}, {out}, {kPwOut});
  return {out, p};
}

// (grad_x, grad_y) of out = x * sigmoid(y) for grad = dL/dout, and what was planned.
template <class Launcher>
std::tuple<at::Tensor, at::Tensor, PointwisePlan> run_pointwise_backward(Launcher& L, const at::Tensor& grad_in,
                                                                         const at::Tensor& x_in,
                                                                         const at::Tensor& y_in) {
  const auto ops = pointwise_operands({x_in, y_in, grad_in}, kBwdNames);
  const at::Tensor &x = ops[0], &y = ops[1], &g = ops[2];
  at::Tensor dx = at::empty_like(x), dy = at::empty_like(x);
  const PointwisePlan p =
      run_pointwise<PointwiseBwd>(L, {g, x, y}, {kPwGrad, kPwX, kPwY}, {dx, dy}, {kPwOut, kPwGradY});
  return {dx, dy, p};
}

}  // namespace sam_fused::block
