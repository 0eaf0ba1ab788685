// The differentiable layer ops that nn modules are made of, each a fused kernel from tensor/
// with its backward written next to its forward (nn/functional_*.cpp).
#pragma once

#include <vector>

#include "autograd/functional.h"
#include "tensor/conv/conv.h"
#include "tensor/kernels/norm.h"
#include "tensor/kernels/pool.h"
#include "tensor/random.h"

namespace peel::nn {

using ag::Variable;

// y = x W^T + b for x (N, in), W (out, in), b (out) or undefined.
Variable linear(const Variable& x, const Variable& weight, const Variable& bias);

// 2-d convolution on (N,C,H,W); bias may be undefined. The backend is the process default.
Variable conv2d(const Variable& x, const Variable& weight, const Variable& bias, const Conv2dGeometry& geometry);

// Batch norm in training mode (batch statistics; running statistics updated in place) or eval
// mode (running statistics). `fuse_relu` applies ReLU in the same pass. In training mode,
// `across` (tensor/kernels/norm.h) makes the statistics those of a batch split over processes.
Variable batch_norm(const Variable& x, const Variable& gamma, const Variable& beta, Tensor& running_mean,
                    Tensor& running_var, bool training, float momentum, float eps, bool fuse_relu,
                    const StatisticsSum& across = {});
// Group norm over (C/G, H, W) per (n, group); `relu` applies ReLU in the same pass.
Variable group_norm(const Variable& x, int64_t groups, const Variable& gamma, const Variable& beta, float eps,
                    bool relu = false);

Variable max_pool2d(const Variable& x, const Pool2dGeometry& geometry);
// max_pool2d(batch_norm(x, ..., training, fuse_relu)) in training mode as one op, the same bits in
// every output and gradient, without the normalised map between them (tensor/kernels/norm.h).
Variable batch_norm_relu_max_pool(const Variable& x, const Variable& gamma, const Variable& beta, Tensor& running_mean,
                                  Tensor& running_var, float momentum, float eps, const Pool2dGeometry& pool,
                                  const StatisticsSum& across = {});
// relu(batch_norm(x, ..., training) + residual) in training mode as one op, the same bits in every
// output and gradient as the three ops (tensor/kernels/norm.h).
Variable batch_norm_add_relu(const Variable& x, const Variable& gamma, const Variable& beta, Tensor& running_mean,
                             Tensor& running_var, float momentum, float eps, const Variable& residual,
                             const StatisticsSum& across = {});
Variable avg_pool2d(const Variable& x, const Pool2dGeometry& geometry);
Variable global_avg_pool(const Variable& x);  // (N,C,H,W) -> (N,C)

// Inverted dropout: zeroes each element with probability p and scales the rest by 1/(1-p).
Variable dropout(const Variable& x, float p, Generator& gen);

// ---- Losses (mean over the batch) --------------------------------------------------------------
// Cross-entropy from logits (N,K) and labels. With class weights w, PyTorch's weighted mean:
// sum_i w[y_i] * CE_i / sum_i w[y_i].
Variable cross_entropy(const Variable& logits, const std::vector<int64_t>& labels,
                       const std::vector<float>& class_weights = {});
// Square loss against scaled one-hot targets: loss_scale * mean over all N*K entries of
// (logit - target_scale * onehot)^2 (PyTorch's mse_loss with reduction 'mean', times loss_scale).
Variable mse_loss(const Variable& logits, const std::vector<int64_t>& labels, float target_scale = 1.f,
                  float loss_scale = 1.f);

}  // namespace peel::nn
