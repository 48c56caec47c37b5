// Block programs of the point-wise spatial attention (Darknet sam_layer, docs/design.md §8):
//   fwd: out = x * s,  s = sigmoid(y);   bwd: dx = g * s,  dy = g * x * s * (1 - s)
// over flat storage in the operands' common dense layout (pointwise_operands), math in acc_t
// (float; double for fp64), each result rounded once. Block b owns elements
// [b * E, (b + 1) * E), E = threads * V * kPointwiseUnroll; thread t takes the V-element
// vectors t, t + threads, ... of that range (a warp's access is 32 consecutive vectors: whole
// sectors) and issues all its loads before the first store, so kPointwiseUnroll loads per
// operand are in flight (stores may alias loads as far as the compiler knows: interleaving
// would serialise them). The elements after the last whole vector (fewer than V, in the last
// block) go one per thread. Include a context header first (ctx_cuda.cuh or ctx_cpu.h).
#pragma once
#include <cstdint>

#include "../sam_math.h"
#include "traits.h"

namespace sam_fused::block {

constexpr int kPointwiseUnroll = 4;  // vectors per thread and operand, loaded back to back

// Kernel arguments (trivially copyable): kIn input and kOut output arrays of n elements.
template <typename T, int kIn, int kOut> struct PointwiseArgs {
  const T* in[kIn];
  T* out[kOut];
  int64_t n = 0;
  int64_t block_elems = 0;  // elements per block: threads * vector width * kPointwiseUnroll
};

// The math of one element; in/out in the order of the op's arguments / results.
struct PointwiseFwd {
  static constexpr int kIn = 2, kOut = 1;  // in: x, y; out: out
  template <typename A> static SAM_FUSED_HD void apply(const A (&in)[kIn], A (&out)[kOut]) {
    out[0] = in[0] * sigmoid(in[1]);
  }
};
struct PointwiseBwd {
  static constexpr int kIn = 3, kOut = 2;  // in: grad, x, y; out: grad_x, grad_y
  template <typename A> static SAM_FUSED_HD void apply(const A (&in)[kIn], A (&out)[kOut]) {
    const SigmoidSlope<A> ss = sigmoid_slope(in[2]);  // not s * (1 - s): see sigmoid_slope
    out[0] = in[0] * ss.s;
    out[1] = in[0] * in[1] * ss.slope;
  }
};

// Op::apply on every element, V elements per vector access (V = 1: scalar accesses, for
// pointers not 16-byte aligned).
template <class Op, typename T, int V> struct Pointwise {
  using Args = PointwiseArgs<T, Op::kIn, Op::kOut>;

  template <class Ctx> static SAM_FUSED_BLOCK void run(Ctx& ctx, const Args& a) {
    const int64_t first = ctx.block() * a.block_elems;
    const int count = int(a.n - first < a.block_elems ? a.n - first : a.block_elems);
    const int nvec = count / V, tail = count - nvec * V;
    ctx.each_thread([&](int t) {
      T in[kPointwiseUnroll][Op::kIn][V];
      for (int u = 0; u < kPointwiseUnroll; ++u) {
        const int v = t + u * ctx.threads();
        if (v < nvec)
          for (int k = 0; k < Op::kIn; ++k) ctx.template load_vec<V>(a.in[k] + first + v * V, in[u][k]);
      }
      for (int u = 0; u < kPointwiseUnroll; ++u) {
        const int v = t + u * ctx.threads();
        if (v >= nvec) break;
        T out[Op::kOut][V];
        for (int e = 0; e < V; ++e) apply(in[u], out, e);
        for (int k = 0; k < Op::kOut; ++k) ctx.template store_vec<V>(a.out[k] + first + v * V, out[k]);
      }
      if (t < tail) {
        const int64_t i = first + nvec * V + t;
        T one[Op::kIn][1], res[Op::kOut][1];
        for (int k = 0; k < Op::kIn; ++k) one[k][0] = ctx.load(a.in[k] + i);
        apply(one, res, 0);
        for (int k = 0; k < Op::kOut; ++k) ctx.store(a.out[k] + i, res[k][0]);
      }
    });
  }

  // Element e of the operand vectors (in[k][e]) -> element e of the result vectors.
  template <int N> static SAM_FUSED_BLOCK void apply(const T (&in)[Op::kIn][N], T (&out)[Op::kOut][N], int e) {
    using A = acc_t<T>;
    A x[Op::kIn], r[Op::kOut];
    for (int k = 0; k < Op::kIn; ++k) x[k] = A(in[k][e]);
    Op::apply(x, r);
    for (int k = 0; k < Op::kOut; ++k) out[k][e] = T(r[k]);
  }
};

// Launch of one point-wise call: the vector width and the block size.
struct PointwisePlan {
  int vec = 1;
  int threads = kThreads;
  int64_t block_elems = 0, grid = 0;
};

// 128-bit accesses when every pointer is 16-byte aligned (a tail of fewer than V elements is
// scalar), else scalar; one block per threads * vec * kPointwiseUnroll elements.
inline PointwisePlan plan_pointwise(int64_t n, int64_t elem_bytes, bool pointers_aligned) {
  PointwisePlan p;
  p.vec = pointers_aligned ? int(16 / elem_bytes) : 1;
  p.block_elems = int64_t(p.threads) * p.vec * kPointwiseUnroll;
  p.grid = ceil_div(n, p.block_elems);
  return p;
}

}  // namespace sam_fused::block
