// Op schema of the sam_fused library and the argument checks every backend shares.
#include <torch/library.h>

#include "spatial_attention.h"

namespace sam_fused {

PoolSpec parse_pool(const std::string& pool) {
  PoolSpec s;
  if (pool == "mean") {
    s.P = 1;
    s.map[0] = kMean;
  } else if (pool == "max") {
    s.P = 1;
    s.map[0] = kMax;
  } else if (pool == "mean+max") {
    s.P = 2;
    s.map[0] = kMean;
    s.map[1] = kMax;
  } else if (pool == "max+mean") {
    s.P = 2;
    s.map[0] = kMax;
    s.map[1] = kMean;
  } else TORCH_CHECK_VALUE(false, "pool must be one of 'mean', 'max', 'mean+max', 'max+mean', got '", pool, "'");
  return s;
}

static void check_like(const at::Tensor& x, const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.scalar_type() == x.scalar_type(), name, " must have the dtype of x (", x.scalar_type(), "), got ",
                    t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == x.device(), name, " must be on the device of x (", x.device(), "), got ", t.device());
}

Geometry check_inputs(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                      const std::string& pool) {
  Geometry g;
  g.pool = parse_pool(pool);
  TORCH_CHECK_VALUE(x.dim() == 4, "x must be a 4-D tensor [B, C, H, W], got ", x.dim(), " dimensions");
  const auto t = x.scalar_type();
  TORCH_CHECK_VALUE(t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16,
                    "x must be float32, float64, float16 or bfloat16, got ", t);
  TORCH_CHECK_VALUE(x.size(1) >= 1, "x must have at least one channel (C >= 1)");
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(0) == 1 && weight.size(1) == g.pool.P,
                    "weight must have shape [1, ", g.pool.P, ", kh, kw] for pool='", pool, "', got ", weight.sizes());
  TORCH_CHECK_VALUE(weight.size(2) % 2 == 1 && weight.size(3) % 2 == 1,
                    "weight kernel size must be odd (same padding), got ", weight.size(2), "x", weight.size(3));
  check_like(x, weight, "weight");
  if (bias) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == 1, "bias must have shape [1] or be None, got ",
                      bias->sizes());
    check_like(x, *bias, "bias");
  }
  g.B = x.size(0);
  g.C = x.size(1);
  g.H = x.size(2);
  g.W = x.size(3);
  g.kh = int(weight.size(2));
  g.kw = int(weight.size(3));
  g.channels_last = compute_format(x) == at::MemoryFormat::ChannelsLast;
  return g;
}

Geometry check_bwd_inputs(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, const at::Tensor& pooled, const std::string& pool,
                          bool return_map) {
  Geometry g = check_inputs(x, weight, bias, pool);
  g.return_map = return_map;
  const std::vector<int64_t> gshape = return_map ? std::vector<int64_t>{g.B, 1, g.H, g.W} : x.sizes().vec();
  TORCH_CHECK_VALUE(grad_out.sizes() == gshape, "grad_out must have shape ", c10::IntArrayRef(gshape), ", got ",
                    grad_out.sizes());
  TORCH_CHECK_VALUE(grad_out.is_floating_point(), "grad_out must be a floating-point tensor, got ",
                    grad_out.scalar_type());
  TORCH_CHECK_VALUE(grad_out.device() == x.device(), "grad_out must be on the device of x (", x.device(), "), got ",
                    grad_out.device());
  TORCH_CHECK_VALUE(pooled.sizes() == at::IntArrayRef({g.B, g.pool.P, g.H, g.W}) &&
                        pooled.scalar_type() == acc_dtype(x.scalar_type()) && pooled.device() == x.device(),
                    "pooled must be the [B, P, H, W] ", acc_dtype(x.scalar_type()),
                    " maps returned by spatial_attention_fwd on the device of x, got ", pooled.sizes(), " ",
                    pooled.scalar_type(), " on ", pooled.device());
  return g;
}

at::MemoryFormat compute_format(const at::Tensor& x) {
  if (x.is_contiguous() || !x.is_contiguous(at::MemoryFormat::ChannelsLast)) return at::MemoryFormat::Contiguous;
  return at::MemoryFormat::ChannelsLast;
}

at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

}  // namespace sam_fused

TORCH_LIBRARY(sam_fused, m) {
  m.def("spatial_attention_fwd(Tensor x, Tensor weight, Tensor? bias, str pool, bool return_map) -> (Tensor, Tensor)");
  m.def("spatial_attention_bwd(Tensor grad_out, Tensor x, Tensor weight, Tensor? bias, Tensor pooled, str pool, "
        "bool return_map) -> (Tensor, Tensor, Tensor)");
  // The same function as differentiable ATen ops (csrc/autograd/composite.cpp): what higher-order
  // autograd and torch.func transforms differentiate.
  m.def("spatial_attention_composite(Tensor x, Tensor weight, Tensor? bias, str pool, bool return_map) -> Tensor");
}
