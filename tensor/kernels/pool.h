// Pooling kernels for the layers around convolutions: max, average and global average pooling,
// forward and backward.
//
// Inputs are logical (N,C,H,W) with any strides; outputs keep channels-last memory when the input
// has it (activations stay in one layout), otherwise they are contiguous. Fast paths run on
// channels-last and contiguous NCHW memory; other strides are copied to NCHW first. The average
// pools' backward passes take their layout from grad_y, the max pool's from its forward. Each
// kernel is held to a double-precision reference loop in tests/tensor/test_kernels_pool.cpp, and
// its backward to finite differences through the differentiable ops of nn/functional.h in
// tests/nn/test_nn_gradcheck.cpp. Results do not depend on the thread count: each output (and
// each input-gradient plane) is computed by one task.
#pragma once

#include <vector>

#include "tensor/tensor.h"

namespace peel {

struct Pool2dGeometry {
  int64_t kernel = 2, stride = 2, padding = 0;
};

// Max pooling remembers, per output element, the flat index h*W+w of the chosen input within its
// (n, c) plane, for the backward pass. The indices are stored in the output's memory order (so the
// channels-last forward writes them as it writes y, 16 channels at a time, instead of one scattered
// store per channel), and the backward reads grad_y in that same layout.
struct MaxPoolArgmax {
  std::vector<int32_t> index;  // one per output element, in the output's memory order
  Shape output_shape;          // logical (N, C, OH, OW)
  bool channels_last = false;  // memory order (N, OH, OW, C), else (N, C, OH, OW)

  // The index of output (n, c, oh, ow), whatever the layout.
  int32_t at(int64_t n, int64_t c, int64_t oh, int64_t ow) const;
  // All indices in logical (n, c, oh, ow) order (for tests and references).
  std::vector<int32_t> logical_order() const;
};

// As PyTorch 1.13: padding counts as -inf, ties go to the first maximum, and a NaN wins (the last
// NaN of a window). Geometry as PyTorch's (ceil_mode off): padding <= kernel/2, else an error.
Tensor max_pool2d_forward(const Tensor& x, const Pool2dGeometry& g, MaxPoolArgmax& argmax);
// grad_y may be in any layout; it is read in the argmax's (a copy is made when they differ), and
// the input gradient has that layout too.
Tensor max_pool2d_backward(const Tensor& grad_y, const MaxPoolArgmax& argmax, const Shape& x_shape);
// The windows of `g` do not overlap and have no padding (stride == kernel), so each input position
// lies in at most one window.
bool max_pool2d_windows_disjoint(const Pool2dGeometry& g);
// For disjoint windows on channels-last memory: the input gradient max_pool2d_backward writes at
// input positions [r0, r0 + rows) of the N*H*W rows of C channels, written to out (rows x C) the
// same bits, without the rest of the input gradient. grad_y is channels-last in argmax's shape.
void max_pool2d_backward_rows(const float* grad_y, const MaxPoolArgmax& argmax, int64_t H, int64_t W, int64_t kernel,
                              int64_t r0, int64_t rows, float* out);
// Average pooling (padding counted in the divisor, PyTorch's count_include_pad=True; ceil_mode off).
Tensor avg_pool2d_forward(const Tensor& x, const Pool2dGeometry& g);
Tensor avg_pool2d_backward(const Tensor& grad_y, const Shape& x_shape, const Pool2dGeometry& g);
// (N,C,H,W) -> (N,C): the mean over H and W (summed in double). The backward takes grad_y of shape
// (N,C) or (N,C,1,1) and returns channels-last memory when asked.
Tensor global_avg_pool_forward(const Tensor& x);
Tensor global_avg_pool_backward(const Tensor& grad_y, const Shape& x_shape, bool channels_last);

}  // namespace peel
