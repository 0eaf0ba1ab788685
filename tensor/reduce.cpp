// Reductions over any set of axes, argmax, softmax and sum_to.
//
// Strategy: permute the kept axes to the front and the reduced axes to the back, so each output
// element reduces one block of `inner` elements. When that block is contiguous in memory the SIMD
// reduce kernel runs on it directly; otherwise the permuted view is first copied to dense memory.
// Each output element is computed by one thread from the same data in the same order, so results
// are identical for a given thread count (and in fact for any thread count).
#include <cmath>
#include <limits>

#include "tensor/error.h"
#include "tensor/ops.h"
#include "tensor/simd/kernels.h"
#include "tensor/threads.h"

namespace peel {

namespace {

struct ReducePlan {
  Tensor rows;      // (outer, inner) dense view of the input, reduced axes last
  Shape out_shape;  // with or without the kept size-1 axes
  int64_t outer = 1, inner = 1;
};

ReducePlan plan_reduction(const Tensor& x, const Axes& axes, bool keepdim, const char* op) {
  PEEL_CHECK(x.defined(), "{}: tensor is undefined", op);
  const int64_t nd = x.dim();
  std::vector<bool> reduced(static_cast<size_t>(nd), axes.empty());
  for (int64_t a : axes) {
    const int64_t axis = normalize_axis(a, nd, op);
    PEEL_CHECK(!reduced[axis] || axes.empty(), "{}: axis {} listed twice for shape {}", op, a, to_string(x.shape()));
    reduced[axis] = true;
  }
  ReducePlan plan;
  std::vector<int64_t> order;
  for (int64_t d = 0; d < nd; ++d)
    if (!reduced[d]) {
      order.push_back(d);
      plan.outer *= x.size(d);
      plan.out_shape.push_back(x.size(d));
    } else if (keepdim) {
      plan.out_shape.push_back(1);
    }
  if (keepdim) {
    plan.out_shape.clear();
    for (int64_t d = 0; d < nd; ++d) plan.out_shape.push_back(reduced[d] ? 1 : x.size(d));
  }
  for (int64_t d = 0; d < nd; ++d)
    if (reduced[d]) {
      order.push_back(d);
      plan.inner *= x.size(d);
    }
  plan.rows = x.permute(order).contiguous().view({plan.outer, plan.inner});
  return plan;
}

Tensor reduce(const Tensor& x, const Axes& axes, bool keepdim, simd::ReduceOp op, const char* name) {
  ReducePlan plan = plan_reduction(x, axes, keepdim, name);
  PEEL_CHECK(plan.inner > 0 || op == simd::ReduceOp::kSum, "{}: cannot reduce an empty axis of shape {}", name,
             to_string(x.shape()));
  Tensor out = Tensor::empty(plan.out_shape);
  const float* src = plan.rows.data();
  float* dst = out.data();
  const auto& k = simd::kernels();
  const int64_t inner = plan.inner;
  parallel_for(plan.outer, std::max<int64_t>(1, 16384 / std::max<int64_t>(inner, 1)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dst[i] = inner == 0 ? 0.f : k.reduce(op, inner, src + i * inner, 1);
  });
  return out;
}

}  // namespace

Tensor sum(const Tensor& x, const Axes& axes, bool keepdim) {
  return reduce(x, axes, keepdim, simd::ReduceOp::kSum, "sum");
}
Tensor max(const Tensor& x, const Axes& axes, bool keepdim) {
  return reduce(x, axes, keepdim, simd::ReduceOp::kMax, "max");
}
Tensor min(const Tensor& x, const Axes& axes, bool keepdim) {
  return reduce(x, axes, keepdim, simd::ReduceOp::kMin, "min");
}

Tensor mean(const Tensor& x, const Axes& axes, bool keepdim) {
  Tensor s = sum(x, axes, keepdim);
  const int64_t count = x.numel() / std::max<int64_t>(s.numel(), 1);
  PEEL_CHECK(count > 0, "mean: no elements to average in shape {}", to_string(x.shape()));
  scale_into(s, 1.f / static_cast<float>(count));
  return s;
}

Tensor var(const Tensor& x, const Axes& axes, bool keepdim, bool unbiased) {
  ReducePlan plan = plan_reduction(x, axes, keepdim, "var");
  const int64_t n = plan.inner;
  PEEL_CHECK(n > (unbiased ? 1 : 0), "var: {} element(s) per group is too few (shape {})", n, to_string(x.shape()));
  Tensor out = Tensor::empty(plan.out_shape);
  const float* src = plan.rows.data();
  float* dst = out.data();
  const auto& k = simd::kernels();
  const float denom = static_cast<float>(unbiased ? n - 1 : n);
  parallel_for(plan.outer, std::max<int64_t>(1, 16384 / n), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float m = k.reduce(simd::ReduceOp::kSum, n, src + i * n, 1) / static_cast<float>(n);
      dst[i] = k.sum_squared_deviation(n, src + i * n, 1, m) / denom;  // two-pass: no cancellation
    }
  });
  return out;
}

IndexTensor argmax(const Tensor& x, int64_t axis, bool keepdim) {
  const int64_t a = normalize_axis(axis, x.dim(), "argmax");
  ReducePlan plan = plan_reduction(x, {a}, keepdim, "argmax");
  PEEL_CHECK(plan.inner > 0, "argmax: axis {} of shape {} is empty", axis, to_string(x.shape()));
  IndexTensor out{plan.out_shape, std::vector<int64_t>(static_cast<size_t>(plan.outer))};
  const float* src = plan.rows.data();
  for (int64_t i = 0; i < plan.outer; ++i) {
    const float* row = src + i * plan.inner;
    int64_t best = 0;
    for (int64_t j = 1; j < plan.inner; ++j) {
      if (std::isnan(row[best])) break;
      if (row[j] > row[best] || std::isnan(row[j])) best = j;
    }
    out.values[static_cast<size_t>(i)] = best;
  }
  return out;
}

Tensor logsumexp(const Tensor& x, const Axes& axes, bool keepdim) {
  Tensor m = max(x, axes, true);
  // Rows that are entirely -inf would give nan from (-inf) - (-inf): shift them by 0 instead.
  Tensor finite_m = where(eq(m, Tensor::scalar(-std::numeric_limits<float>::infinity())), Tensor::scalar(0.f), m);
  Tensor out = log(sum(exp(x - finite_m), axes, true)) + finite_m;
  if (keepdim) return out;
  return sum(out, axes, false);  // drops the kept size-1 axes (sum over size-1 is the identity)
}

Tensor sum_to(const Tensor& grad, const Shape& shape) {
  if (grad.shape() == shape) return grad;
  const int64_t lead = grad.dim() - static_cast<int64_t>(shape.size());
  PEEL_CHECK(lead >= 0, "sum_to: cannot sum shape {} down to {}", to_string(grad.shape()), to_string(shape));
  Axes axes;
  for (int64_t d = 0; d < grad.dim(); ++d) {
    if (d < lead) {
      axes.push_back(d);
      continue;
    }
    const int64_t target = shape[static_cast<size_t>(d - lead)];
    PEEL_CHECK(target == 1 || target == grad.size(d), "sum_to: cannot sum shape {} down to {}", to_string(grad.shape()),
               to_string(shape));
    if (target == 1 && grad.size(d) != 1) axes.push_back(d);
  }
  if (axes.empty()) return grad.reshape(shape);
  return sum(grad, axes, true).reshape(shape);
}

Tensor softmax(const Tensor& x, int64_t axis) {
  const int64_t a = normalize_axis(axis, x.dim(), "softmax");
  Tensor e = exp(x - max(x, {a}, true));
  return e / sum(e, {a}, true);
}

Tensor log_softmax(const Tensor& x, int64_t axis) {
  const int64_t a = normalize_axis(axis, x.dim(), "log_softmax");
  Tensor shifted = x - max(x, {a}, true);
  return shifted - log(sum(exp(shifted), {a}, true));
}

}  // namespace peel
