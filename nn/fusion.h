// Where adjacent layers run as one op: what nothing outside can tell from the layers applied one
// after the other.
//
// Evaluation: batch norm folded into the convolution before it. In eval mode a batch norm is a
// fixed affine map per channel, bn(z) = s * (z - mean) + beta with s = gamma / sqrt(running_var +
// eps). A convolution is linear in its weights, so
//   bn(conv(x, W) + b) = conv(x, s * W) + s * (b - mean) + beta,
// output filter o scaled by s[o]. The folded convolution writes its output once, where otherwise
// the convolution writes it and the batch norm reads and rewrites it; a batch norm with a fused
// ReLU (or a bare ReLU after the convolution) becomes the convolution's ReLU epilogue
// (ConvEpilogue::kRelu). The same function up to float rounding (a few ulp). The fold applies only
// where nothing can tell it from the two layers: no gradient is being recorded (ag::NoGradGuard, as
// evaluation runs), the norm is exactly a BatchNorm in eval mode (or a ReLU) and neither layer has a
// probe attached (the elimination probes and weight-norm initialisation look at the convolution's
// output). Everywhere else conv_then_norm is norm(conv(x)).
//
// Training: a batch norm with its ReLU followed by a max pool is one op
// (nn::batch_norm_relu_max_pool), bit for bit the two layers, that never stores the normalised map
// or its gradient at full resolution. It applies when the norm is exactly a BatchNorm in training
// mode with its ReLU and no probe attached (a probe needs the pre-activation); everywhere else
// conv_norm_max_pool is max_pool(norm(conv(x))). Likewise a residual block's end, a batch norm
// without ReLU whose output is added to the shortcut and then goes through a ReLU, is one op
// (nn::batch_norm_add_relu) when the norm is exactly a BatchNorm in training mode and the
// activation exactly a ReLU with no probe; everywhere else conv_norm_add_activation is
// activation(norm(conv(x)) + residual).
#pragma once

#include "nn/layers.h"

namespace peel::nn {

// norm(conv(x)), folded where the conditions above hold.
Variable conv_then_norm(Conv2d& conv, Module& norm, const Variable& x);
// max_pool(norm(conv(x))): the evaluation fold, or the training op, where they apply.
Variable conv_norm_max_pool(Conv2d& conv, Module& norm, const Variable& x, const Pool2dGeometry& pool);

// activation(norm(conv(x)) + residual): the training op where it applies, else the layers
// (norm(conv(x)) folded where the evaluation fold applies).
Variable conv_norm_add_activation(Conv2d& conv, Module& norm, const Variable& x, const Variable& residual,
                                  Module& activation);

// Folding and the training ops are on by default; off, the layers always run one by one. For
// measuring what each buys (peel bench infer --no-fold, peel bench train-step --no-fuse) and for the
// tests that compare the paths.
void set_eval_folding(bool enabled);
bool eval_folding();
void set_training_fusion(bool enabled);
bool training_fusion();

}  // namespace peel::nn
