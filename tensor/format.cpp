// Printing tensors: shape, then values nested by axis (elided in the middle of long axes).
#include <fmt/format.h>

#include <ostream>

#include "tensor/tensor.h"

namespace peel {

namespace {

void print_axis(std::string& out, const Tensor& t, int64_t axis, int64_t offset, const std::vector<float>& values,
                const Strides& dense) {
  constexpr int64_t kEdge = 3;
  const int64_t n = t.size(axis);
  out += '[';
  for (int64_t i = 0; i < n; ++i) {
    if (n > 2 * kEdge && i == kEdge) {
      out += "..., ";
      i = n - kEdge - 1;
      continue;
    }
    const int64_t at = offset + i * dense[static_cast<size_t>(axis)];
    if (axis + 1 == t.dim())
      out += fmt::format("{:.4g}", values[static_cast<size_t>(at)]);
    else
      print_axis(out, t, axis + 1, at, values, dense);
    if (i + 1 < n) out += ", ";
  }
  out += ']';
}

}  // namespace

std::string Tensor::to_string() const {
  if (!defined()) return "Tensor(undefined)";
  std::string out = fmt::format("Tensor(shape={}, ", peel::to_string(shape_));
  const std::vector<float> values = to_vector();
  if (dim() == 0)
    out += fmt::format("{:.4g}", values[0]);
  else
    print_axis(out, *this, 0, 0, values, contiguous_strides(shape_));
  return out + ")";
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.to_string(); }

}  // namespace peel
