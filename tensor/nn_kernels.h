// Kernels for the layers around convolutions: pooling and normalisation, forward and backward.
//
// Inputs are logical (N,C,H,W) with any strides; outputs keep channels-last memory when the input
// has it (activations stay in one layout). Each fast kernel has a reference next to it in tests.
#pragma once

#include <vector>

#include "tensor/tensor.h"

namespace peel {

// ---- Pooling --------------------------------------------------------------------------------
struct Pool2dGeometry {
  int64_t kernel = 2, stride = 2, padding = 0;
};

// Max pooling; `argmax` receives, per output element, the flat index h*W+w of the chosen input
// within its (n, c) plane, for the backward pass. Ties go to the first maximum, as in PyTorch.
Tensor max_pool2d_forward(const Tensor& x, const Pool2dGeometry& g, std::vector<int32_t>& argmax);
Tensor max_pool2d_backward(const Tensor& grad_y, const std::vector<int32_t>& argmax, const Shape& x_shape);
// Average pooling (padding counted in the divisor, PyTorch's count_include_pad=True).
Tensor avg_pool2d_forward(const Tensor& x, const Pool2dGeometry& g);
Tensor avg_pool2d_backward(const Tensor& grad_y, const Shape& x_shape, const Pool2dGeometry& g);
// (N,C,H,W) -> (N,C): the mean over H and W.
Tensor global_avg_pool_forward(const Tensor& x);
Tensor global_avg_pool_backward(const Tensor& grad_y, const Shape& x_shape, bool channels_last);

// ---- Batch normalisation over (N,H,W) per channel (also (N,C) input for BatchNorm1d) ---------
struct BatchNormSaved {
  Tensor mean;     // (C) batch mean
  Tensor inv_std;  // (C) 1 / sqrt(biased batch variance + eps)
};
// Training mode: normalise with batch statistics, then update running statistics in place with
// PyTorch's convention: running = (1 - momentum) * running + momentum * batch, where the variance
// that enters the running estimate is the unbiased one. gamma/beta may be undefined (no affine).
// When `fuse_relu` is set, the output is relu(bn(x)) (the backward then needs y).
Tensor batch_norm_train_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                                Tensor& running_var, float momentum, float eps, BatchNormSaved& saved,
                                bool fuse_relu = false);
// Eval mode: normalise with the running statistics.
Tensor batch_norm_eval_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                               const Tensor& running_var, float eps, bool fuse_relu = false);
struct BatchNormGrads {
  Tensor x, gamma, beta;  // gamma/beta undefined when not affine
};
// Backward of the training-mode forward. y is the forward output (needed only with fuse_relu).
BatchNormGrads batch_norm_train_backward(const Tensor& grad_y, const Tensor& x, const Tensor& gamma,
                                         const BatchNormSaved& saved, const Tensor& y, bool fuse_relu = false);

// ---- Group and layer normalisation -------------------------------------------------------------
// GroupNorm over (C/G, H, W) per (n, group); LayerNorm is GroupNorm's G = 1 case over (C,H,W),
// or the last axis of an (N, D) input. gamma/beta are per channel.
struct GroupNormSaved {
  Tensor mean, inv_std;  // (N, G)
};
Tensor group_norm_forward(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, float eps,
                          GroupNormSaved& saved);
BatchNormGrads group_norm_backward(const Tensor& grad_y, const Tensor& x, int64_t groups, const Tensor& gamma,
                                   const GroupNormSaved& saved);

}  // namespace peel
