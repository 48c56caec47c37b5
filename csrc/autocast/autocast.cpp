// Autocast kernels: under torch.autocast the fused ops return what the reference layers return
// under the same context, computed by the fused kernels (fp32 accumulation inside).
//   spatial: the reference's conv runs in the autocast dtype, so its map s comes out in that
//     dtype and x * s in the promotion of x's dtype and it. The fused op computes in that
//     promoted dtype (weights cast to it) and returns the map in the autocast dtype.
//   point-wise: x * sigmoid(y) promotes x and y; the fused op computes in the promoted dtype.
// float64 and non-floating inputs are left alone, as autocast leaves them (the ops' own checks
// then apply).
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <optional>

namespace sam_fused {
namespace {

bool autocast_eligible(at::ScalarType t) { return t == at::kFloat || t == at::kHalf || t == at::kBFloat16; }

at::Tensor cast_to(const at::Tensor& t, at::ScalarType dtype) {
  return t.is_floating_point() && t.scalar_type() != dtype ? t.to(dtype) : t;
}

template <c10::DispatchKey kAutocastKey, c10::DeviceType kDevice>
std::tuple<at::Tensor, at::Tensor> spatial_attention_fwd_autocast(const at::Tensor& x, const at::Tensor& weight,
                                                                  const std::optional<at::Tensor>& bias,
                                                                  const std::string& pool, bool return_map) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(kAutocastKey);
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("sam_fused::spatial_attention_fwd", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                    const std::optional<at::Tensor>&, const std::string&, bool)>();
  if (!autocast_eligible(x.scalar_type())) return op.call(x, weight, bias, pool, return_map);
  const auto lowp = at::autocast::get_autocast_dtype(kDevice);
  const auto compute = at::promote_types(x.scalar_type(), lowp);
  auto [out, pooled] =
      op.call(cast_to(x, compute), cast_to(weight, compute),
              bias ? std::optional<at::Tensor>(cast_to(*bias, compute)) : std::nullopt, pool, return_map);
  return {return_map ? out.to(lowp) : out, pooled};
}

template <c10::DispatchKey kAutocastKey>
at::Tensor pointwise_attention_fwd_autocast(const at::Tensor& x, const at::Tensor& y) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(kAutocastKey);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sam_fused::pointwise_attention_fwd", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  if (!autocast_eligible(x.scalar_type()) || !autocast_eligible(y.scalar_type())) return op.call(x, y);
  const auto compute = at::promote_types(x.scalar_type(), y.scalar_type());
  return op.call(cast_to(x, compute), cast_to(y, compute));
}

}  // namespace
}  // namespace sam_fused

TORCH_LIBRARY_IMPL(sam_fused, AutocastCPU, m) {
  m.impl("spatial_attention_fwd",
         &sam_fused::spatial_attention_fwd_autocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>);
  m.impl("pointwise_attention_fwd", &sam_fused::pointwise_attention_fwd_autocast<c10::DispatchKey::AutocastCPU>);
}

TORCH_LIBRARY_IMPL(sam_fused, AutocastCUDA, m) {
  m.impl("spatial_attention_fwd",
         &sam_fused::spatial_attention_fwd_autocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>);
  m.impl("pointwise_attention_fwd", &sam_fused::pointwise_attention_fwd_autocast<c10::DispatchKey::AutocastCUDA>);
}
