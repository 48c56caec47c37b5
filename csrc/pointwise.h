// Darknet's point-wise spatial attention (YOLOv4 sam_layer): out = x * sigmoid(y), y the
// shape of x. Host declarations shared by the op file (pointwise.cpp) and the backends.
#pragma once
#include <ATen/ATen.h>
#include <vector>

namespace sam_fused {

// Checks x and the other same-shaped operands (y, grad) and returns them in one common dense
// layout: unchanged when all share the strides of a non-overlapping dense tensor (contiguous,
// channels_last, any permutation), else each copied to contiguous once. The kernels then run
// over flat storage and outputs are `empty_like` the first operand.
std::vector<at::Tensor> pointwise_operands(std::vector<at::Tensor> operands, const char* const* names);

// Operand names of the forward (x, y) and backward (x, y, grad) in pointwise_operands' order.
inline const char* const kFwdNames[] = {"x", "y"};
inline const char* const kBwdNames[] = {"x", "y", "grad"};

}  // namespace sam_fused
