// The normalisation ops of nn/normalization.h: forward, then backward, side by side. The arithmetic
// is in tensor/kernels/norm_extra.h (and batch norm's and group norm's kernels, which EstBN and BCN
// reuse).
#include "nn/normalization.h"
#include "tensor/error.h"
#include "tensor/kernels/norm_extra.h"

namespace peel::nn {

using ag::Grads;
using ag::make_result;

// w: (O, ...) -> w_hat of the same shape.
Variable weight_standardize(const Variable& w, float eps) {
  WeightStandardizeSaved saved;
  Tensor w_hat = weight_standardize_forward(w.value(), eps, saved);
  return make_result(w_hat, {w}, "weight_standardize",
                     [wv = w.value(), saved](const Tensor& g, const std::vector<bool>&) {
                       return Grads{weight_standardize_backward(g, wv, saved)};
                     });
}

// v: (O, ...), g: O elements (PyTorch's (O, 1, ...)) -> w of v's shape.
Variable weight_norm(const Variable& v, const Variable& g) {
  Tensor inv_norm;
  Tensor w = weight_norm_forward(v.value(), g.value(), inv_norm);
  return make_result(w, {v, g}, "weight_norm",
                     [vv = v.value(), gv = g.value(), inv_norm](const Tensor& grad, const std::vector<bool>&) {
                       WeightNormGrads d = weight_norm_backward(grad, vv, gv, inv_norm);
                       return Grads{d.v, d.g};
                     });
}

// x: (N,C,H,W) or (N,C); gamma, beta, running statistics: (C).
Variable estimated_batch_norm(const Variable& x, const Variable& gamma, const Variable& beta, Tensor& running_mean,
                              Tensor& running_var, bool training, float moving_speed, float eps, bool fuse_relu,
                              const StatisticsSum& across) {
  if (!training) return batch_norm(x, gamma, beta, running_mean, running_var, false, 0.f, eps, fuse_relu);
  // Official order: update the estimates (no gradient), then normalise with the updated values. The
  // op keeps a copy of them, so its backward sees the statistics it used even if the layer runs again.
  estimated_batch_norm_update(x.value(), running_mean, running_var, moving_speed, across);
  Tensor mean = running_mean.clone(), var = running_var.clone();
  // With the statistics constants this is batch norm's eval-mode op, whose backward is dx = gamma dy / sqrt(var + eps).
  return batch_norm(x, gamma, beta, mean, var, false, 0.f, eps, fuse_relu);
}

// x: (N, C, ...), weight/bias: (1, G, 1). The per-group affine is the per-channel one with each
// channel taking its group's value, so group_norm's kernels do the work and the expansion's
// backward sums the channel gradients of each group.
Variable group_affine_norm(const Variable& x, int64_t groups, const Variable& weight, const Variable& bias, float eps) {
  PEEL_CHECK(x.dim() >= 2 && groups > 0 && x.size(1) % groups == 0,
             "group_affine_norm: input of shape {} cannot be split into {} groups of channels", to_string(x.shape()),
             groups);
  PEEL_CHECK(weight.shape() == Shape({1, groups, 1}) && bias.shape() == Shape({1, groups, 1}),
             "group_affine_norm: weight {} and bias {} must have shape [1, {}, 1]", to_string(weight.shape()),
             to_string(bias.shape()), groups);
  const int64_t C = x.size(1);
  auto per_channel = [&](const Variable& v) {
    return ag::reshape(ag::expand(ag::reshape(v, {groups, 1}), {groups, C / groups}), {C});
  };
  return group_norm(x, groups, per_channel(weight), per_channel(bias), eps);
}

// x: (N, C, ...); the BCN parameters as in batch_channel_norm_forward. `shape` carries groups,
// the two eps and relu; its tensors are ignored (the Variables' values are used).
Variable batch_channel_norm(const Variable& x, const Variable& bn_gamma, const Variable& bn_beta,
                            const Variable& group_weight, const Variable& group_bias, Tensor& running_mean,
                            Tensor& running_var, BcnStatistics statistics, float momentum, const BcnParameters& shape,
                            const StatisticsSum& across) {
  BcnParameters p = shape;
  p.bn_gamma = bn_gamma.defined() ? bn_gamma.value() : Tensor();
  p.bn_beta = bn_beta.defined() ? bn_beta.value() : Tensor();
  p.group_weight = group_weight.value();
  p.group_bias = group_bias.value();
  BcnSaved saved;
  Tensor y = batch_channel_norm_forward(x.value(), p, running_mean, running_var, statistics, momentum, saved, across);
  return make_result(
      y, {x, bn_gamma, bn_beta, group_weight, group_bias}, "batch_channel_norm",
      [xv = x.value(), yv = p.relu ? y : Tensor(), p, saved, across](const Tensor& g, const std::vector<bool>&) {
        BcnGrads d = batch_channel_norm_backward(g, xv, yv, p, saved, across);
        return Grads{d.x, d.bn_gamma, d.bn_beta, d.group_weight, d.group_bias};
      });
}

// x: (N,C,H,W) or (N,C); gamma, beta, eps, tau: (C), tau optional.
Variable filter_response_norm(const Variable& x, const Variable& gamma, const Variable& beta, const Variable& eps,
                              const Variable& tau) {
  const Tensor t = tau.defined() ? tau.value() : Tensor();
  FrnSaved saved;
  Tensor z = filter_response_norm_forward(x.value(), gamma.value(), beta.value(), eps.value(), t, saved);
  return make_result(z, {x, gamma, beta, eps, tau}, "filter_response_norm",
                     [xv = x.value(), g = gamma.value(), b = beta.value(), e = eps.value(), t, saved](
                         const Tensor& gz, const std::vector<bool>&) {
                       FrnGrads d = filter_response_norm_backward(gz, xv, g, b, e, t, saved);
                       return Grads{d.x, d.gamma, d.beta, d.eps, d.tau};
                     });
}

// x: (N, C, ...), tau: (C).
Variable tlu(const Variable& x, const Variable& tau) {
  return make_result(tlu_forward(x.value(), tau.value()), {x, tau}, "tlu",
                     [xv = x.value(), t = tau.value()](const Tensor& gz, const std::vector<bool>&) {
                       TluGrads d = tlu_backward(gz, xv, t);
                       return Grads{d.x, d.tau};
                     });
}

}  // namespace peel::nn
