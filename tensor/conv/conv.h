// 2-d convolution with interchangeable backends.
//
// Layouts: activations are logical (N,C,H,W); every backend accepts any strides (contiguous,
// channels-last, or views with gaps) and every backend returns forward and backward-data results
// in channels-last memory, (N,H,W,C), so that activations stay in one layout from layer to layer
// and no per-call NCHW<->blocked conversion is needed. Weights are (O, C/groups, KH, KW) (PyTorch's
// layout, so checkpoints and fixtures load as they are; a non-contiguous view is copied first);
// a backend that wants another layout repacks them per call (they are small). Weight gradients
// are contiguous (O,C,KH,KW). groups = 1.
//
// Backends (all compute the same thing; tests hold each to the reference within 1e-4):
//   reference  naive loops in double precision: the definition, slow
//   im2col     im2col + GEMM through OpenBLAS, one GEMM per thread per chunk of images
//   direct     our own SIMD kernels (AVX-512, AVX2 fallback, chosen at run time)
//   onednn     oneDNN primitives over nhwc memory, created once per shape and cached
// Threads: all of them follow peel::set_num_threads. Results are deterministic for a given thread
// count.
#pragma once

#include <string>
#include <string_view>

#include "tensor/tensor.h"

namespace peel {

enum class ConvBackend { kReference, kIm2col, kDirect, kOneDnn };

struct Conv2dGeometry {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  static Conv2dGeometry square(int64_t stride, int64_t padding, int64_t dilation = 1) {
    return {stride, stride, padding, padding, dilation, dilation};
  }
};

// The output shape (N, O, OH, OW); throws naming the shapes when they do not fit together.
Shape conv2d_output_shape(const Shape& x, const Shape& w, const Conv2dGeometry& g);

// The process-wide default: PEEL_CONV_BACKEND if set (an unknown name throws), else the backend
// measured fastest on small_cnn's layers (bench/bench_conv; see conv.cpp), falling back to im2col
// when that is `direct` and the CPU (or PEEL_ISA) offers neither AVX2 nor AVX-512.
ConvBackend default_conv_backend();
void set_default_conv_backend(ConvBackend backend);
ConvBackend parse_conv_backend(std::string_view name);  // throws on an unknown name, listing the known
const char* conv_backend_name(ConvBackend backend);

// What the forward applies to each output value as it stores it: nothing, or max(0, .), a ReLU
// fused into the convolution (evaluation with batch norm folded into the weights, nn/fusion.h).
enum class ConvEpilogue { kNone, kRelu };

// y = epilogue(conv(x, w) + bias): (N,O,OH,OW), channels-last. bias may be undefined (no bias).
// Mismatched shapes throw peel::Error naming them.
Tensor conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dGeometry& g,
                      ConvBackend backend = default_conv_backend(), ConvEpilogue epilogue = ConvEpilogue::kNone);
// dL/dx given dL/dy: x_shape, channels-last.
Tensor conv2d_backward_data(const Tensor& grad_y, const Tensor& w, const Shape& x_shape, const Conv2dGeometry& g,
                            ConvBackend backend = default_conv_backend());
// dL/dw given dL/dy and the forward input x: w_shape, contiguous.
Tensor conv2d_backward_weight(const Tensor& grad_y, const Tensor& x, const Shape& w_shape, const Conv2dGeometry& g,
                              ConvBackend backend = default_conv_backend());
// dL/dbias: the sum of dL/dy over N, H and W, shape (O); any layout of grad_y.
Tensor conv2d_backward_bias(const Tensor& grad_y);

}  // namespace peel
