// Differentiable operations on Variables. Each is defined in autograd/ops_*.cpp with its backward
// written right after its forward.
#pragma once

#include "autograd/variable.h"
#include "tensor/ops.h"

namespace peel::ag {

// ---- Elementwise (NumPy broadcasting; gradients are summed back to each input's shape) --------
Variable add(const Variable& a, const Variable& b);
Variable sub(const Variable& a, const Variable& b);
Variable mul(const Variable& a, const Variable& b);
Variable div(const Variable& a, const Variable& b);
Variable maximum(const Variable& a, const Variable& b);  // gradient to a where a >= b
Variable minimum(const Variable& a, const Variable& b);
Variable neg(const Variable& x);
Variable exp(const Variable& x);
Variable log(const Variable& x);
Variable sqrt(const Variable& x);
Variable rsqrt(const Variable& x);
Variable abs(const Variable& x);   // gradient sign(x), 0 at 0
Variable relu(const Variable& x);  // gradient 0 at 0, as in PyTorch
Variable sigmoid(const Variable& x);
Variable tanh(const Variable& x);
Variable square(const Variable& x);
Variable pow(const Variable& x, float exponent);
Variable clamp(const Variable& x, float lo, float hi);  // gradient passes where lo <= x <= hi
Variable affine(const Variable& x, float scale, float shift);
// cond is a constant mask (nonzero = take a).
Variable where(const Tensor& cond, const Variable& a, const Variable& b);

Variable operator+(const Variable& a, const Variable& b);
Variable operator-(const Variable& a, const Variable& b);
Variable operator*(const Variable& a, const Variable& b);
Variable operator/(const Variable& a, const Variable& b);
Variable operator-(const Variable& x);
Variable operator*(const Variable& a, float s);
Variable operator*(float s, const Variable& a);
Variable operator+(const Variable& a, float s);
Variable operator-(const Variable& a, float s);
Variable operator/(const Variable& a, float s);

// A constant (no gradient) wrapped for use with the ops above.
Variable constant(const Tensor& t);

// ---- Reductions ----------------------------------------------------------------------------
Variable sum(const Variable& x, const Axes& axes = {}, bool keepdim = false);
Variable mean(const Variable& x, const Axes& axes = {}, bool keepdim = false);
Variable var(const Variable& x, const Axes& axes = {}, bool keepdim = false, bool unbiased = true);
// Gradient flows to every position equal to the max/min, shared equally among ties.
Variable max(const Variable& x, const Axes& axes = {}, bool keepdim = false);
Variable min(const Variable& x, const Axes& axes = {}, bool keepdim = false);
Variable logsumexp(const Variable& x, const Axes& axes, bool keepdim = false);
Variable softmax(const Variable& x, int64_t axis);
Variable log_softmax(const Variable& x, int64_t axis);

// ---- Views and shapes (gradients flow back through the view) ---------------------------------
Variable reshape(const Variable& x, const Shape& shape);
Variable flatten(const Variable& x, int64_t start_axis = 1, int64_t end_axis = -1);
Variable permute(const Variable& x, const std::vector<int64_t>& order);
Variable transpose(const Variable& x, int64_t a, int64_t b);
Variable slice(const Variable& x, int64_t axis, int64_t start, int64_t end, int64_t step = 1);
Variable select(const Variable& x, int64_t axis, int64_t index);
Variable expand(const Variable& x, const Shape& shape);
Variable unsqueeze(const Variable& x, int64_t axis);
Variable squeeze(const Variable& x, int64_t axis);
Variable concat(const std::vector<Variable>& parts, int64_t axis);
// Rows of x (first axis) picked by index: out[i] = x[index[i]].
Variable index_select(const Variable& x, const std::vector<int64_t>& index);

// ---- Linear algebra ------------------------------------------------------------------------
Variable matmul(const Variable& a, const Variable& b);

}  // namespace peel::ag
