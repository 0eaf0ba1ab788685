// Shapes and strides: the small integer vectors that describe a tensor's layout.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace peel {

using Shape = std::vector<int64_t>;
using Strides = std::vector<int64_t>;

// "[2, 3, 4]"
std::string to_string(const Shape& shape);

int64_t numel_of(const Shape& shape);

// Row-major (C order) strides for a shape.
Strides contiguous_strides(const Shape& shape);

// Maps a possibly negative axis into [0, ndim); throws naming `op` when out of range.
int64_t normalize_axis(int64_t axis, int64_t ndim, const char* op);

// NumPy broadcasting of two shapes; throws naming `op` and both shapes when incompatible.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// Strides that read a tensor of (shape, strides) as if it had `target` shape (stride 0 on
// broadcast axes). `target` must be a broadcast of `shape`.
Strides broadcast_strides(const Shape& shape, const Strides& strides, const Shape& target);

}  // namespace peel
