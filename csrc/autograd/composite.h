// The ops as compositions of differentiable ATen ops: the same math as the fused kernels
// (pooling and sigmoid in the accumulation dtype, one rounding at the end, the max routing its
// gradient to the first maximal channel as torch.max(dim) does). Autograd differentiates these
// where the fused backward is not enough: double backward and torch.func transforms.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/FunctionRef.h>
#include <optional>
#include <string>

namespace sam_fused {

at::Tensor spatial_attention_composite(const at::Tensor& x, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias, const std::string& pool, bool return_map);

// dx = g * s, dy = g * x * s * (1 - s) with s = sigmoid(y), differentiable in g, x and y.
std::tuple<at::Tensor, at::Tensor> pointwise_attention_bwd_composite(const at::Tensor& grad, const at::Tensor& x,
                                                                     const at::Tensor& y);

// Whether a backward op must build a graph: create_graph is on and an operand requires grad.
bool needs_differentiable_backward(std::initializer_list<const at::Tensor*> operands);

// Runs the autograd engine's call `f` with the GIL released where the calling thread holds it.
// torch.ops calls the ops with the GIL held, and torch 2.11 refuses to run the engine then ("The
// autograd engine was called while holding the GIL": opcheck's test_aot_dispatch_dynamic of the
// backward op); its worker threads may need the GIL too. The Python module installs the release
// (python_module.cpp); the C++ library alone has no GIL and calls f as it is.
using GilReleaser = void (*)(c10::function_ref<void()>);
void set_gil_releaser(GilReleaser releaser);
void without_gil(c10::function_ref<void()> f);

}  // namespace sam_fused
