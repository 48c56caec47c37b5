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

// out = x * sigmoid(y) in the accumulation dtype, rounded once to x's dtype.
at::Tensor pointwise_attention_composite(const at::Tensor& x, const at::Tensor& y);

// Whether an op must build a graph: grad mode is on and an operand requires grad (for a
// backward op: create_graph). Otherwise its autograd kernel runs the fused op below autograd
// at once (a custom Function's node and saved state cost microseconds of a batch-1 call).
bool needs_graph(std::initializer_list<const at::Tensor*> operands);

// Whether forward-mode AD (torch.autograd.forward_ad) gave an operand a tangent: C++ custom
// Functions have no jvp, so the forward ops then compute their composite, whose ATen ops carry
// the tangents.
bool has_tangent(std::initializer_list<const at::Tensor*> operands);
// The backward ops refuse tangents (forward-mode AD over a reverse-mode gradient): their
// composite path detaches the operands that need no gradient, which would drop them.
inline constexpr const char* kNoTangentsThroughBackward =
    "sam_fused: forward-mode AD (torch.autograd.forward_ad) through the fused backward is not supported; "
    "use torch.func (e.g. torch.func.jvp of torch.func.grad or vjp), which differentiates the layer's "
    "composite of ATen ops";

// Runs the autograd engine's call `f` with the GIL released where the calling thread holds it.
// torch.ops calls the ops with the GIL held, and torch 2.11 refuses to run the engine then ("The
// autograd engine was called while holding the GIL": opcheck's test_aot_dispatch_dynamic of the
// backward op); its worker threads may need the GIL too. The Python module installs the release
// (python_module.cpp); the C++ library alone has no GIL and calls f as it is.
using GilReleaser = void (*)(c10::function_ref<void()>);
void set_gil_releaser(GilReleaser releaser);
void without_gil(c10::function_ref<void()> f);

}  // namespace sam_fused
