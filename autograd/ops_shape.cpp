// Views and shape ops: the backward of a view undoes it on the gradient.
#include "autograd/functional.h"
#include "tensor/error.h"
#include "tensor/linalg.h"

namespace peel::ag {

Variable reshape(const Variable& x, const Shape& shape) {
  return make_result(x.value().reshape(shape), {x}, "reshape",
                     [in = x.shape()](const Tensor& g, const std::vector<bool>&) { return Grads{g.reshape(in)}; });
}

Variable flatten(const Variable& x, int64_t start_axis, int64_t end_axis) {
  return make_result(x.value().flatten(start_axis, end_axis), {x}, "flatten",
                     [in = x.shape()](const Tensor& g, const std::vector<bool>&) { return Grads{g.reshape(in)}; });
}

Variable permute(const Variable& x, const std::vector<int64_t>& order) {
  std::vector<int64_t> inverse(order.size());
  for (size_t i = 0; i < order.size(); ++i)
    inverse[static_cast<size_t>(normalize_axis(order[i], x.dim(), "permute"))] = static_cast<int64_t>(i);
  return make_result(x.value().permute(order), {x}, "permute",
                     [inverse](const Tensor& g, const std::vector<bool>&) { return Grads{g.permute(inverse)}; });
}

Variable transpose(const Variable& x, int64_t a, int64_t b) {
  return make_result(x.value().transpose(a, b), {x}, "transpose",
                     [a, b](const Tensor& g, const std::vector<bool>&) { return Grads{g.transpose(a, b)}; });
}

Variable slice(const Variable& x, int64_t axis, int64_t start, int64_t end, int64_t step) {
  Tensor y = x.value().slice(axis, start, end, step);
  return make_result(y, {x}, "slice",
                     [in = x.shape(), axis, start, end, step](const Tensor& g, const std::vector<bool>&) {
                       Tensor gx = Tensor::zeros(in);
                       Tensor window = gx.slice(axis, start, end, step);
                       window.copy_(g);
                       return Grads{gx};
                     });
}

Variable select(const Variable& x, int64_t axis, int64_t index) {
  return make_result(x.value().select(axis, index), {x}, "select",
                     [in = x.shape(), axis, index](const Tensor& g, const std::vector<bool>&) {
                       Tensor gx = Tensor::zeros(in);
                       Tensor window = gx.select(axis, index);
                       window.copy_(g);
                       return Grads{gx};
                     });
}

Variable expand(const Variable& x, const Shape& shape) {
  return make_result(x.value().expand(shape), {x}, "expand",
                     [in = x.shape()](const Tensor& g, const std::vector<bool>&) { return Grads{sum_to(g, in)}; });
}

Variable unsqueeze(const Variable& x, int64_t axis) { return reshape(x, x.value().unsqueeze(axis).shape()); }
Variable squeeze(const Variable& x, int64_t axis) { return reshape(x, x.value().squeeze(axis).shape()); }

Variable concat(const std::vector<Variable>& parts, int64_t axis) {
  PEEL_CHECK(!parts.empty(), "concat: no tensors given");
  const int64_t a = normalize_axis(axis, parts[0].dim(), "concat");
  Shape shape = parts[0].shape();
  std::vector<int64_t> starts{0};
  for (size_t i = 1; i < parts.size(); ++i) {
    const Shape& s = parts[i].shape();
    PEEL_CHECK(s.size() == shape.size(), "concat: part {} has shape {}, part 0 has {}", i, to_string(s),
               to_string(parts[0].shape()));
    for (size_t d = 0; d < s.size(); ++d)
      PEEL_CHECK(static_cast<int64_t>(d) == a || s[d] == shape[d], "concat: part {} has shape {}, part 0 has {}", i,
                 to_string(s), to_string(parts[0].shape()));
    starts.push_back(shape[static_cast<size_t>(a)]);
    shape[static_cast<size_t>(a)] += s[static_cast<size_t>(a)];
  }
  Tensor out = Tensor::empty(shape);
  for (size_t i = 0; i < parts.size(); ++i) {
    Tensor window = out.slice(a, starts[i], starts[i] + parts[i].size(a));
    window.copy_(parts[i].value());
  }
  std::vector<int64_t> sizes;
  for (const auto& p : parts) sizes.push_back(p.size(a));
  return make_result(out, parts, "concat", [a, starts, sizes](const Tensor& g, const std::vector<bool>& need) {
    Grads grads(starts.size());
    for (size_t i = 0; i < starts.size(); ++i)
      if (need[i]) grads[i] = g.slice(a, starts[i], starts[i] + sizes[i]).contiguous();
    return grads;
  });
}

Variable index_select(const Variable& x, const std::vector<int64_t>& index) {
  const int64_t rows = x.size(0);
  Shape shape = x.shape();
  shape[0] = static_cast<int64_t>(index.size());
  Tensor out = Tensor::empty(shape);
  for (size_t i = 0; i < index.size(); ++i) {
    PEEL_CHECK(index[i] >= 0 && index[i] < rows, "index_select: index {} out of range for {} rows", index[i], rows);
    Tensor row = out.select(0, static_cast<int64_t>(i));
    row.copy_(x.value().select(0, index[i]));
  }
  return make_result(out, {x}, "index_select", [in = x.shape(), index](const Tensor& g, const std::vector<bool>&) {
    Tensor gx = Tensor::zeros(in);
    for (size_t i = 0; i < index.size(); ++i) {
      Tensor row = gx.select(0, index[i]);
      row.add_(g.select(0, static_cast<int64_t>(i)));  // repeated indices accumulate
    }
    return Grads{gx};
  });
}

Variable matmul(const Variable& a, const Variable& b) {
  // C = A B:  dA = dC B^T,  dB = A^T dC  (batched: summed back over broadcast batch axes)
  return make_result(peel::matmul(a.value(), b.value()), {a, b}, "matmul",
                     [av = a.value(), bv = b.value()](const Tensor& g, const std::vector<bool>& need) {
                       Tensor ga, gb;
                       if (need[0]) ga = sum_to(peel::matmul(g, bv.transpose(-1, -2)), av.shape());
                       if (need[1]) gb = sum_to(peel::matmul(av.transpose(-1, -2), g), bv.shape());
                       return Grads{ga, gb};
                     });
}

}  // namespace peel::ag
