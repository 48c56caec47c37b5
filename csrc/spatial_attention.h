// Host-side declarations shared by the op schema (sam_fused.cpp) and the backends.
#pragma once
#include <ATen/ATen.h>
#include <optional>
#include <string>
#include <tuple>

#include "sam_math.h"

namespace sam_fused {

PoolSpec parse_pool(const std::string& pool);

// Checks x / weight / bias / pool (clear errors naming the argument) and returns the geometry.
Geometry check_inputs(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                      const std::string& pool);

// check_inputs plus the backward's own operands: grad_out (the shape of the forward's output,
// floating point, on x's device) and pooled (the forward's [B, P, H, W] maps).
Geometry check_bwd_inputs(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, const at::Tensor& pooled, const std::string& pool,
                          bool return_map);

// The memory format the op computes in and returns: channels_last if x is channels_last (and
// not also contiguous), else contiguous (other strides are copied once).
at::MemoryFormat compute_format(const at::Tensor& x);

// The pooled-map dtype: float32 for fp16/bf16/fp32, float64 for fp64.
at::ScalarType acc_dtype(at::ScalarType t);

std::tuple<at::Tensor, at::Tensor> spatial_attention_fwd_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                             const std::optional<at::Tensor>& bias,
                                                             const std::string& pool, bool return_map);
std::tuple<at::Tensor, at::Tensor, at::Tensor> spatial_attention_bwd_cpu(const at::Tensor& grad_out,
                                                                         const at::Tensor& x, const at::Tensor& weight,
                                                                         const std::optional<at::Tensor>& bias,
                                                                         const at::Tensor& pooled,
                                                                         const std::string& pool, bool return_map);

}  // namespace sam_fused
