// Evaluation with batch norm folded into the convolution before it.
//
// In eval mode a batch norm is a fixed affine map per channel, bn(z) = s * (z - mean) + beta with
// s = gamma / sqrt(running_var + eps). A convolution is linear in its weights, so
//   bn(conv(x, W) + b) = conv(x, s * W) + s * (b - mean) + beta,
// output filter o scaled by s[o]. The folded convolution writes its output once, where otherwise
// the convolution writes it and the batch norm reads and rewrites it; a batch norm with a fused
// ReLU (or a bare ReLU after the convolution) becomes the convolution's ReLU epilogue
// (ConvEpilogue::kRelu). The same function up to float rounding (a few ulp).
//
// The fold applies only where nothing can tell it from the two layers: no gradient is being
// recorded (ag::NoGradGuard, as evaluation runs), the norm is exactly a BatchNorm in eval mode (or
// a ReLU) and neither layer has a probe attached (the elimination probes and weight-norm
// initialisation look at the convolution's output). Everywhere else conv_then_norm is
// norm(conv(x)).
#pragma once

#include "nn/layers.h"

namespace peel::nn {

// norm(conv(x)), folded where the conditions above hold.
Variable conv_then_norm(Conv2d& conv, Module& norm, const Variable& x);

// Folding is on by default; off, conv_then_norm is always norm(conv(x)). For measuring what the
// fold buys (peel bench infer --no-fold) and for the tests that compare the two paths.
void set_eval_folding(bool enabled);
bool eval_folding();

}  // namespace peel::nn
