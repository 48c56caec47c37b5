// Host side of the block-program kernels: checks, layout, planning, allocation and the launch
// sequence, written once over a Launcher so the CUDA op and the CPU emulation make exactly the
// same choices. A Launcher provides:
//   ArchTraits arch();                                  per-arch traits (traits.h)
//   void track(int slot, const at::Tensor&);            tensors the emulation records (TensorSlot)
//   template <class K, class Args> void launch(int64_t grid, int threads, int64_t smem, const Args&);
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <vector>

#include "../spatial_attention.h"
#include "bwd.h"

namespace sam::block {

enum TensorSlot : int { kSlotX, kSlotGrad, kSlotOut, kSlotPooled, kSlotWeight, kSlotBias, kSlotWorkspace, kSlots };

inline Shape shape_of(const Geometry& g, bool return_map) {
  return {g.B, g.C, g.H, g.W, g.kh, g.kw, g.pool.P, g.pool.mean_slot(), g.pool.max_slot(), g.channels_last,
          return_map};
}

inline bool aligned16(const at::Tensor& t) { return !t.defined() || reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

// 32-bit offsets unless an x-shaped tensor comes near 2^31 elements (loops step past the
// end by up to a block of vectors, hence the margin).
inline bool needs_index64(const at::Tensor& x, bool force) { return force || x.numel() >= (int64_t(1) << 31) - (int64_t(1) << 20); }

template <typename F> void dispatch_layout_index(bool channels_last, bool index64, F&& f) {
  if (index64) {
    if (channels_last) f(std::true_type{}, int64_t{}); else f(std::false_type{}, int64_t{});
  } else {
    if (channels_last) f(std::true_type{}, int32_t{}); else f(std::false_type{}, int32_t{});
  }
}

template <typename T> void set_params(Args<T>& a, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  a.weight = weight.const_data_ptr<T>();
  a.bias = bias ? bias->const_data_ptr<T>() : nullptr;
}

template <class Launcher>
std::tuple<at::Tensor, at::Tensor> run_forward(Launcher& L, const at::Tensor& x, const at::Tensor& weight_in,
                                               const std::optional<at::Tensor>& bias_in, const std::string& pool,
                                               bool return_map, const Overrides& o = {}, bool force_index64 = false) {
  const Geometry g = check_inputs(x, weight_in, bias_in, pool);
  const auto fmt = compute_format(x);
  const at::Tensor xc = x.contiguous(fmt), weight = weight_in.contiguous();
  const std::optional<at::Tensor> bias = bias_in ? std::optional<at::Tensor>(bias_in->contiguous()) : std::nullopt;
  at::Tensor pooled = at::empty({g.B, g.pool.P, g.H, g.W}, x.options().dtype(acc_dtype(x.scalar_type())));
  at::Tensor out = return_map ? at::empty({g.B, 1, g.H, g.W}, x.options()) : at::empty(x.sizes(), x.options().memory_format(fmt));
  if (pooled.numel() == 0) return {out, pooled};
  L.track(kSlotX, xc); L.track(kSlotOut, out); L.track(kSlotPooled, pooled); L.track(kSlotWeight, weight);
  if (bias) L.track(kSlotBias, *bias);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sam_fused_fwd_block", [&] {
    using A = acc_t<scalar_t>;
    Args<scalar_t> a;
    a.s = shape_of(g, return_map);
    a.p = plan_launch(a.s, L.arch(), sizeof(scalar_t), sizeof(A), false, aligned16(xc) && aligned16(out), o);
    a.x = xc.const_data_ptr<scalar_t>();
    a.out = out.mutable_data_ptr<scalar_t>();
    a.pooled = pooled.mutable_data_ptr<A>();
    set_params(a, weight, bias);
    dispatch_layout_index(g.channels_last, needs_index64(xc, force_index64), [&](auto cl, auto index) {
      constexpr bool CL = decltype(cl)::value;
      using I = decltype(index);
      if (a.p.two_pass) L.template launch<FwdPool<scalar_t, CL, I>>(a.p.blocks, a.p.threads, reduction_smem_bytes(a.p, sizeof(A)), a);
      L.template launch<FwdMain<scalar_t, CL, I>>(a.p.blocks, a.p.threads, a.p.smem_bytes, a);
    });
    L.last_plan = a.p;
  });
  return {out, pooled};
}

template <class Launcher>
std::tuple<at::Tensor, at::Tensor, at::Tensor> run_backward(Launcher& L, const at::Tensor& grad_out, const at::Tensor& x,
                                                            const at::Tensor& weight_in, const std::optional<at::Tensor>& bias_in,
                                                            const at::Tensor& pooled, const std::string& pool, bool return_map,
                                                            const Overrides& o = {}, bool force_index64 = false) {
  const Geometry g = check_bwd_inputs(grad_out, x, weight_in, bias_in, pooled, pool, return_map);
  const auto fmt = compute_format(x);
  const at::Tensor xc = x.contiguous(fmt), weight = weight_in.contiguous(), qc = pooled.contiguous();
  const at::Tensor gc = grad_out.to(x.scalar_type()).contiguous(return_map ? at::MemoryFormat::Contiguous : fmt);
  const std::optional<at::Tensor> bias = bias_in ? std::optional<at::Tensor>(bias_in->contiguous()) : std::nullopt;
  at::Tensor dx = at::empty(x.sizes(), x.options().memory_format(fmt));
  const int64_t nw = g.pool.P * g.kh * g.kw;
  at::Tensor dw = at::empty({nw}, weight.options()), dbias = at::empty({1}, weight.options());
  if (x.numel() == 0) return {dx, dw.zero_().reshape(weight.sizes()), dbias.zero_()};
  L.track(kSlotX, xc); L.track(kSlotGrad, gc); L.track(kSlotOut, dx); L.track(kSlotPooled, qc);
  L.track(kSlotWeight, weight);
  if (bias) L.track(kSlotBias, *bias);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sam_fused_bwd_block", [&] {
    using A = acc_t<scalar_t>;
    Args<scalar_t> a;
    a.s = shape_of(g, return_map);
    a.p = plan_launch(a.s, L.arch(), sizeof(scalar_t), sizeof(A), true,
                      aligned16(xc) && aligned16(gc) && aligned16(dx), o);
    // One workspace: weight-gradient partials [taps + 1, blocks], then rho and argmax maps.
    const int64_t partial_elems = (nw + 1) * a.p.blocks, map_elems = a.p.two_pass ? g.B * g.H * g.W : 0;
    const int64_t ws_bytes = (partial_elems + map_elems) * int64_t(sizeof(A)) + map_elems * 4;
    at::Tensor ws = at::empty({ws_bytes}, x.options().dtype(at::kByte));
    L.track(kSlotWorkspace, ws);
    auto* base = ws.mutable_data_ptr<uint8_t>();
    a.dw_partial = reinterpret_cast<A*>(base);
    a.rho = reinterpret_cast<A*>(base + partial_elems * sizeof(A));
    a.amax = reinterpret_cast<int32_t*>(base + (partial_elems + map_elems) * sizeof(A));
    a.x = xc.const_data_ptr<scalar_t>();
    a.g = gc.const_data_ptr<scalar_t>();
    a.out = dx.mutable_data_ptr<scalar_t>();
    a.pooled = const_cast<A*>(qc.const_data_ptr<A>());
    a.dw = dw.mutable_data_ptr<scalar_t>();
    a.dbias = dbias.mutable_data_ptr<scalar_t>();
    set_params(a, weight, bias);
    dispatch_layout_index(g.channels_last, needs_index64(xc, force_index64), [&](auto cl, auto index) {
      constexpr bool CL = decltype(cl)::value;
      using I = decltype(index);
      if (a.p.two_pass) L.template launch<BwdRho<scalar_t, CL, I>>(a.p.blocks, a.p.threads, reduction_smem_bytes(a.p, sizeof(A)), a);
      L.template launch<BwdMain<scalar_t, CL, I>>(a.p.blocks, a.p.threads, a.p.smem_bytes, a);
    });
    constexpr int kReduceThreads = 128;
    L.template launch<DwReduce<scalar_t>>(detail::ceil_div(nw + 1, kReduceThreads / 32), kReduceThreads, 0, a);
    L.last_plan = a.p;
  });
  return {dx, dw.reshape(weight.sizes()), dbias};
}

}  // namespace sam::block
