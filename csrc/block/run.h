// Host side of the block-program kernels: checks, layout, planning, allocation and the launch
// sequence, written once over a Launcher so the CUDA op and the CPU emulation make exactly the
// same choices (plan_call) and raise in the same places (check_launch). A Launcher provides:
//   DeviceLimits limits();                              the device's limits (limits.h)
//   void track(int slot, const at::Tensor&, bool written = false);
//                                                       tensors the emulation records (TensorSlot);
//                                                       written: an output or the workspace
//   template <class K, class Args> void launch(const Launch&, const Args&);
//   CallPlan last_call;                                 set here: what the call planned
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <type_traits>
#include <vector>

#include "../spatial_attention.h"
#include "bwd.h"

namespace sam_fused::block {

// Test/tuning overrides from an op's integer arguments (the emulation ops, the CUDA test ops),
// checked.
inline Overrides checked_overrides(int64_t variant, int64_t rows, int64_t threads) {
  TORCH_CHECK_VALUE(variant >= 0 && variant <= 6,
                    "variant must be 0 (auto), 1 (one pass), 2 (two pass), 3 (one pass, backward x tile staged), 4 "
                    "(one pass, x tile not staged), 5 (one pass, the staged tile in chunks) or 6 (two pass, the "
                    "forward's x tile staged)");
  TORCH_CHECK_VALUE(threads == 0 || (threads >= 64 && threads <= 1024 && (threads & (threads - 1)) == 0),
                    "threads must be 0 or a power of two in [64, 1024]");
  TORCH_CHECK_VALUE(rows >= 0, "rows must be >= 0");
  return {Variant(variant), rows, int(threads)};
}

// kSlotShared: the block's shared memory (emulation: bank wavefronts of the accesses made through the context)
enum TensorSlot : int {
  kSlotX,
  kSlotGrad,
  kSlotOut,
  kSlotPooled,
  kSlotWeight,
  kSlotBias,
  kSlotWorkspace,
  kSlotShared,
  kSlots
};

inline bool aligned16(const at::Tensor& t) {
  return !t.defined() || reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
}

// Raises where a launch would exceed the device's limits (only test overrides of the plan
// can: plan_launch keeps every launch within them).
inline void check_launch(const DeviceLimits& dev, const Launch& l) {
  TORCH_CHECK(l.grid < (int64_t(1) << 31), "sam_fused: grid of ", l.grid, " blocks is too large");
  TORCH_CHECK(l.threads <= std::min<int64_t>(kMaxThreads, dev.max_threads_per_block), "sam_fused: ", l.threads,
              " threads per block, more than the kernels' launch bound of ", kMaxThreads);
  TORCH_CHECK(l.threads * kRegsPerThread <= dev.regs_per_sm, "sam_fused: ", l.threads, " threads of up to ",
              kRegsPerThread, " registers, more than the ", dev.name, " limit of ", dev.regs_per_sm);
  TORCH_CHECK(l.smem_bytes <= dev.smem_per_block_optin, "sam_fused: a launch needs ", l.smem_bytes,
              " bytes of shared memory per block, more than the ", dev.name, " limit of ", dev.smem_per_block_optin);
}

// Checks every launch of the call, then launches them in order (K1, K2, K3, KMaps: the programs
// of pass 1, the main kernel, the weight-gradient reduction and the backward's map kernel;
// void: none).
template <class K1, class K2, class K3, class KMaps = void, class Launcher, class Args>
void launch_all(Launcher& L, const DeviceLimits& dev, const CallPlan& c, const Args& a) {
  for (int i = 0; i < c.n_launches; ++i) check_launch(dev, c.launches[i]);
  for (int i = 0; i < c.n_launches; ++i) {
    const Launch& l = c.launches[i];
    if (l.kernel == Kernel::kPass1) L.template launch<K1>(l, a);
    else if (l.kernel == Kernel::kMain) L.template launch<K2>(l, a);
    else if (l.kernel == Kernel::kMaps) {
      if constexpr (!std::is_void_v<KMaps>) L.template launch<KMaps>(l, a);
    } else if constexpr (!std::is_void_v<K3>) L.template launch<K3>(l, a);
  }
  L.last_call = c;
}

// f(std::bool_constant<flag>{}): a runtime flag as a template argument.
template <typename F> void dispatch_flag(bool flag, F&& f) {
  if (flag) f(std::true_type{});
  else f(std::false_type{});
}

template <typename F> void dispatch_layout_index(bool channels_last, bool index64, F&& f) {
  if (index64) {
    if (channels_last) f(std::true_type{}, int64_t{});
    else f(std::false_type{}, int64_t{});
  } else {
    if (channels_last) f(std::true_type{}, int32_t{});
    else f(std::false_type{}, int32_t{});
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
  Geometry g = check_inputs(x, weight_in, bias_in, pool);
  g.return_map = return_map;
  const auto fmt = compute_format(x);
  const at::Tensor xc = x.contiguous(fmt), weight = weight_in.contiguous();
  const std::optional<at::Tensor> bias = bias_in ? std::optional<at::Tensor>(bias_in->contiguous()) : std::nullopt;
  at::Tensor pooled = at::empty({g.B, g.pool.P, g.H, g.W}, x.options().dtype(acc_dtype(x.scalar_type())));
  at::Tensor out =
      return_map ? at::empty({g.B, 1, g.H, g.W}, x.options()) : at::empty(x.sizes(), x.options().memory_format(fmt));
  if (pooled.numel() == 0) return {out, pooled};
  L.track(kSlotX, xc);
  L.track(kSlotOut, out, true);
  L.track(kSlotPooled, pooled, true);
  L.track(kSlotWeight, weight);
  if (bias) L.track(kSlotBias, *bias);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sam_fused_fwd_block", [&] {
    using A = acc_t<scalar_t>;
    Args<scalar_t> a;
    a.s = g;
    const DeviceLimits dev = L.limits();
    const CallPlan c =
        plan_call(a.s, dev, sizeof(scalar_t), sizeof(A), false, aligned16(xc) && aligned16(out), o, force_index64);
    a.p = c.p;
    // no workspace tensor when the plan needs none (the one-pass forward): an allocation is
    // ~1.5-4 us of host time, and at UCI-HAR sizes the host sets an H100's pace (docs/gpu-results.md)
    at::Tensor ws;
    if (c.ws.bytes) {
      ws = at::empty({c.ws.bytes}, x.options().dtype(at::kByte));
      L.track(kSlotWorkspace, ws, true);
      a.scratch = ws.mutable_data_ptr<uint8_t>() + c.ws.scratch;
    }
    a.x = xc.const_data_ptr<scalar_t>();
    a.out = out.mutable_data_ptr<scalar_t>();
    a.pooled = pooled.mutable_data_ptr<A>();
    set_params(a, weight, bias);
    dispatch_layout_index(g.channels_last, c.index64, [&](auto cl, auto index) {
      constexpr bool CL = decltype(cl)::value;
      using I = decltype(index);
      dispatch_flag(c.p.spill, [&](auto spill) {
        launch_all<FwdPool<scalar_t, CL, I>, FwdMain<scalar_t, CL, I, decltype(spill)::value>, void>(L, dev, c, a);
      });
    });
  });
  return {out, pooled};
}

template <class Launcher>
std::tuple<at::Tensor, at::Tensor, at::Tensor> run_backward(Launcher& L, const at::Tensor& grad_out,
                                                            const at::Tensor& x, const at::Tensor& weight_in,
                                                            const std::optional<at::Tensor>& bias_in,
                                                            const at::Tensor& pooled, const std::string& pool,
                                                            bool return_map, const Overrides& o = {},
                                                            bool force_index64 = false) {
  const Geometry g = check_bwd_inputs(grad_out, x, weight_in, bias_in, pooled, pool, return_map);
  const auto fmt = compute_format(x);
  const at::Tensor xc = x.contiguous(fmt), weight = weight_in.contiguous(), qc = pooled.contiguous();
  const at::Tensor gc = grad_out.to(x.scalar_type()).contiguous(return_map ? at::MemoryFormat::Contiguous : fmt);
  const std::optional<at::Tensor> bias = bias_in ? std::optional<at::Tensor>(bias_in->contiguous()) : std::nullopt;
  at::Tensor dx = at::empty(x.sizes(), x.options().memory_format(fmt));
  const int64_t nw = g.pool.P * g.kh * g.kw;
  at::Tensor dw = at::empty({nw}, weight.options()), dbias = at::empty({1}, weight.options());
  if (x.numel() == 0) return {dx, dw.zero_().reshape(weight.sizes()), dbias.zero_()};
  L.track(kSlotX, xc);
  L.track(kSlotGrad, gc);
  L.track(kSlotOut, dx, true);
  L.track(kSlotPooled, qc);
  L.track(kSlotWeight, weight);
  if (bias) L.track(kSlotBias, *bias);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sam_fused_bwd_block", [&] {
    using A = acc_t<scalar_t>;
    Args<scalar_t> a;
    a.s = g;
    const DeviceLimits dev = L.limits();
    const CallPlan c = plan_call(a.s, dev, sizeof(scalar_t), sizeof(A), true,
                                 aligned16(xc) && aligned16(gc) && aligned16(dx), o, force_index64);
    a.p = c.p;
    at::Tensor ws = at::empty({c.ws.bytes}, x.options().dtype(at::kByte));
    L.track(kSlotWorkspace, ws, true);
    auto* base = ws.mutable_data_ptr<uint8_t>();
    a.dw_partial = reinterpret_cast<A*>(base + c.ws.partials);
    a.rho = reinterpret_cast<A*>(base + c.ws.rho);
    a.amax = reinterpret_cast<int32_t*>(base + c.ws.amax);
    a.sig = reinterpret_cast<A*>(base + c.ws.sig);
    a.gamma = reinterpret_cast<A*>(base + c.ws.gamma);
    a.scratch = base + c.ws.scratch;
    a.map_scratch = base + c.ws.map_scratch;
    a.x = xc.const_data_ptr<scalar_t>();
    a.g = gc.const_data_ptr<scalar_t>();
    a.out = dx.mutable_data_ptr<scalar_t>();
    a.pooled = const_cast<A*>(qc.const_data_ptr<A>());
    a.dw = dw.mutable_data_ptr<scalar_t>();
    a.dbias = dbias.mutable_data_ptr<scalar_t>();
    set_params(a, weight, bias);
    dispatch_layout_index(g.channels_last, c.index64, [&](auto cl, auto index) {
      constexpr bool CL = decltype(cl)::value;
      using I = decltype(index);
      dispatch_flag(c.p.spill, [&](auto spill) {
        dispatch_flag(c.p.maps.spill, [&](auto maps_spill) {
          dispatch_flag(c.p.two_pass, [&](auto two_pass) {
            launch_all<BwdRho<scalar_t, CL, I>,
                       BwdMain<scalar_t, CL, I, decltype(spill)::value, decltype(two_pass)::value>, DwReduce<scalar_t>,
                       BwdMaps<scalar_t, I, decltype(maps_spill)::value>>(L, dev, c, a);
          });
        });
      });
    });
  });
  return {dx, dw.reshape(weight.sizes()), dbias};
}

}  // namespace sam_fused::block
