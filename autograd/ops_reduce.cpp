// Reductions and softmax: forward, then backward. The backward of a reduction broadcasts the
// output gradient back over the reduced axes (after restoring them as size-1 axes).
#include "autograd/functional.h"
#include "tensor/error.h"

namespace peel::ag {

namespace {

// The output-gradient with the reduced axes restored as size 1, ready to broadcast to `in`.
Tensor restore_reduced_axes(const Tensor& g, const Shape& in, const Axes& axes, bool keepdim) {
  if (keepdim) return g;
  Shape kept = in;
  if (axes.empty()) {
    for (auto& d : kept) d = 1;
  } else {
    for (int64_t a : axes) kept[static_cast<size_t>(normalize_axis(a, static_cast<int64_t>(in.size()), "reduce"))] = 1;
  }
  return g.reshape(kept);
}

}  // namespace

Variable sum(const Variable& x, const Axes& axes, bool keepdim) {
  return make_result(peel::sum(x.value(), axes, keepdim), {x}, "sum",
                     [in = x.shape(), axes, keepdim](const Tensor& g, const std::vector<bool>&) {
                       return Grads{restore_reduced_axes(g, in, axes, keepdim).expand(in).contiguous()};
                     });
}

Variable mean(const Variable& x, const Axes& axes, bool keepdim) {
  Tensor y = peel::mean(x.value(), axes, keepdim);
  const float count = static_cast<float>(x.numel()) / static_cast<float>(std::max<int64_t>(y.numel(), 1));
  return make_result(y, {x}, "mean", [in = x.shape(), axes, keepdim, count](const Tensor& g, const std::vector<bool>&) {
    return Grads{restore_reduced_axes(g, in, axes, keepdim).expand(in) * (1.f / count)};
  });
}

Variable var(const Variable& x, const Axes& axes, bool keepdim, bool unbiased) {
  // d var / dx_i = 2 (x_i - mean) / (n - correction)
  Tensor y = peel::var(x.value(), axes, keepdim, unbiased);
  const float n = static_cast<float>(x.numel()) / static_cast<float>(std::max<int64_t>(y.numel(), 1));
  return make_result(y, {x}, "var",
                     [xv = x.value(), axes, keepdim, unbiased, n](const Tensor& g, const std::vector<bool>&) {
                       Tensor centred = xv - peel::mean(xv, axes, true);
                       Tensor gk = restore_reduced_axes(g, xv.shape(), axes, keepdim);
                       return Grads{gk * centred * (2.f / (unbiased ? n - 1.f : n))};
                     });
}

namespace {
// max and min: the gradient goes to the positions holding the extreme value, split among ties.
Variable extreme(const Variable& x, const Axes& axes, bool keepdim, bool is_max) {
  Tensor y = is_max ? peel::max(x.value(), axes, keepdim) : peel::min(x.value(), axes, keepdim);
  return make_result(y, {x}, is_max ? "max" : "min",
                     [xv = x.value(), y, axes, keepdim](const Tensor& g, const std::vector<bool>&) {
                       Tensor hit = eq(xv, restore_reduced_axes(y, xv.shape(), axes, keepdim));
                       Tensor ties = peel::sum(hit, axes, true);
                       return Grads{hit * restore_reduced_axes(g, xv.shape(), axes, keepdim) / ties};
                     });
}
}  // namespace

Variable max(const Variable& x, const Axes& axes, bool keepdim) { return extreme(x, axes, keepdim, true); }
Variable min(const Variable& x, const Axes& axes, bool keepdim) { return extreme(x, axes, keepdim, false); }

Variable logsumexp(const Variable& x, const Axes& axes, bool keepdim) {
  // d lse / dx = softmax(x) over the reduced axes
  Tensor y = peel::logsumexp(x.value(), axes, keepdim);
  return make_result(y, {x}, "logsumexp",
                     [xv = x.value(), y, axes, keepdim](const Tensor& g, const std::vector<bool>&) {
                       Tensor p = peel::exp(xv - restore_reduced_axes(y, xv.shape(), axes, keepdim));
                       return Grads{p * restore_reduced_axes(g, xv.shape(), axes, keepdim)};
                     });
}

Variable softmax(const Variable& x, int64_t axis) {
  // dx = y * (g - sum(g * y))
  Tensor y = peel::softmax(x.value(), axis);
  return make_result(y, {x}, "softmax", [y, axis](const Tensor& g, const std::vector<bool>&) {
    return Grads{y * (g - peel::sum(g * y, {axis}, true))};
  });
}

Variable log_softmax(const Variable& x, int64_t axis) {
  // dx = g - softmax * sum(g)
  Tensor y = peel::log_softmax(x.value(), axis);
  return make_result(y, {x}, "log_softmax", [y, axis](const Tensor& g, const std::vector<bool>&) {
    return Grads{g - peel::exp(y) * peel::sum(g, {axis}, true)};
  });
}

}  // namespace peel::ag
