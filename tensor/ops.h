// Elementwise ops with NumPy broadcasting, reductions over any set of axes, softmax.
//
// Results are new tensors. A result takes the channels-last layout when its first input has it
// (so activations stay in one layout from layer to layer); otherwise it is row-major.
// Inner loops run in the SIMD kernels of tensor/simd, threaded over peel::num_threads().
#pragma once

#include <vector>

#include "tensor/tensor.h"

namespace peel {

// ---- Unary -----------------------------------------------------------------------------------
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor square(const Tensor& x);
Tensor pow(const Tensor& x, float exponent);
Tensor clamp(const Tensor& x, float lo, float hi);
Tensor affine(const Tensor& x, float scale, float shift);  // scale * x + shift

// ---- Binary, broadcasting ----------------------------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, const Tensor& b);
// Comparisons give 1.0 where true and 0.0 where false.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
// cond != 0 ? a : b, all three broadcast together.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a);
Tensor operator+(const Tensor& a, float b);
Tensor operator-(const Tensor& a, float b);
Tensor operator*(const Tensor& a, float b);
Tensor operator/(const Tensor& a, float b);
Tensor operator+(float a, const Tensor& b);
Tensor operator-(float a, const Tensor& b);
Tensor operator*(float a, const Tensor& b);
Tensor operator/(float a, const Tensor& b);

// ---- Reductions ----------------------------------------------------------------------------
// `axes` may be negative and in any order; an empty list reduces over every axis.
using Axes = std::vector<int64_t>;
Tensor sum(const Tensor& x, const Axes& axes = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const Axes& axes = {}, bool keepdim = false);
// Variance with Bessel's correction when `unbiased` (PyTorch's default), otherwise divided by n.
Tensor var(const Tensor& x, const Axes& axes = {}, bool keepdim = false, bool unbiased = true);
Tensor max(const Tensor& x, const Axes& axes = {}, bool keepdim = false);
Tensor min(const Tensor& x, const Axes& axes = {}, bool keepdim = false);
// Index of the first maximum along `axis` (NaN counts as the maximum, as in PyTorch).
IndexTensor argmax(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor logsumexp(const Tensor& x, const Axes& axes, bool keepdim = false);

// Sums `grad` down to `shape`: the reverse of broadcasting `shape` up to grad's shape.
Tensor sum_to(const Tensor& grad, const Shape& shape);

// ---- Softmax (numerically stable: the row maximum is subtracted first) ---------------------
Tensor softmax(const Tensor& x, int64_t axis);
Tensor log_softmax(const Tensor& x, int64_t axis);

// ---- In-place kernels behind Tensor::fill_, copy_, add_, mul_ -------------------------------
void fill_into(Tensor& dst, float value);
void copy_into(Tensor& dst, const Tensor& src);               // src broadcast to dst's shape
void axpy_into(Tensor& dst, float alpha, const Tensor& src);  // dst += alpha * src
void scale_into(Tensor& dst, float factor);

// True when every element of a and b differs by at most atol + rtol * |b| (shapes must match).
bool allclose(const Tensor& a, const Tensor& b, float rtol = 1e-5f, float atol = 1e-8f);
// The largest |a - b| / max(|b|, floor) over all elements; shapes must match.
float max_relative_error(const Tensor& a, const Tensor& b, float floor = 1e-6f);

}  // namespace peel
