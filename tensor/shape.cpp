#include "tensor/shape.h"

#include "tensor/error.h"

namespace peel {

std::string to_string(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

int64_t numel_of(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Strides contiguous_strides(const Shape& shape) {
  Strides strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

int64_t normalize_axis(int64_t axis, int64_t ndim, const char* op) {
  PEEL_CHECK(axis >= -ndim && axis < ndim, "{}: axis {} is out of range for a tensor with {} dimensions", op, axis,
             ndim);
  return axis < 0 ? axis + ndim : axis;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    PEEL_CHECK(da == db || da == 1 || db == 1, "{}: shapes {} and {} cannot be broadcast together", op, to_string(a),
               to_string(b));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Strides broadcast_strides(const Shape& shape, const Strides& strides, const Shape& target) {
  PEEL_CHECK(shape.size() <= target.size(), "broadcast: cannot broadcast shape {} to {}", to_string(shape),
             to_string(target));
  const size_t lead = target.size() - shape.size();
  Strides out(target.size(), 0);
  for (size_t i = 0; i < shape.size(); ++i) {
    const int64_t d = shape[i];
    PEEL_CHECK(d == target[lead + i] || d == 1, "broadcast: cannot broadcast shape {} to {}", to_string(shape),
               to_string(target));
    out[lead + i] = (d == 1 && target[lead + i] != 1) ? 0 : strides[i];
  }
  return out;
}

}  // namespace peel
