// Normalisation kernels: batch norm (with a fused ReLU, training and eval mode) and group norm
// (layer norm is its one-group case), forward and backward. The loops they share live in
// kernels/norm_detail.h, for new normalisations to reuse.
//
// x is logical (N,C,...) with any strides; outputs keep channels-last memory when x has it,
// otherwise they are contiguous. Fast paths run on channels-last and contiguous NCHW memory; other
// strides are copied to NCHW first. Backward passes take their layout from x. Each kernel is held
// to a double-precision reference loop in tests/tensor/test_kernels_batch_norm.cpp and
// tests/tensor/test_kernels_group_norm.cpp, and its backward to finite differences through the
// differentiable ops of nn/functional.h in tests/nn/test_nn_gradcheck.cpp. Results do not depend
// on the thread count: reductions use fixed blocks added in a fixed order.
#pragma once

#include <functional>

#include "tensor/kernels/pool.h"
#include "tensor/tensor.h"

namespace peel {

// ---- Batch normalisation over (N,H,W) per channel (also (N,C) input for BatchNorm1d) ---------
// x may be (N,C), (N,C,L) or (N,C,H,W). Statistics are accumulated in double.
struct BatchNormSaved {
  Tensor mean;        // (C) batch mean, as the float the output was centred on
  Tensor inv_std;     // (C) 1 / sqrt(biased batch variance + eps)
  Tensor scale;       // (C) the forward's affine, y = relu?((x - mean) * scale + shift), which the fused
  Tensor shift;       //     ReLU's backward re-evaluates for its mask instead of keeping y
  int64_t count = 0;  // values per channel the statistics cover (all shards' with a StatisticsSum)
};
// Synchronised batch norm: when a batch is split over processes, sums `count` doubles element-wise
// over all of them in place (the same call order on each). Given to the training-mode kernels, it
// makes the statistics, and the sums the input gradient needs, those of the whole batch, so every
// shard computes what one process computes on the whole batch. Empty: the batch is x alone.
using StatisticsSum = std::function<void(double* values, int64_t count)>;
// Training mode: normalise with batch statistics, then update running statistics in place with
// PyTorch's convention: running = (1 - momentum) * running + momentum * batch, where the variance
// that enters the running estimate is the unbiased one (needs N*H*W > 1). gamma/beta may be
// undefined (no affine); running_mean/running_var may both be undefined (not tracked).
// When `fuse_relu` is set, the output is relu(bn(x)).
Tensor batch_norm_train_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                                Tensor& running_var, float momentum, float eps, BatchNormSaved& saved,
                                bool fuse_relu = false, const StatisticsSum& across = {});
// Eval mode: normalise with the running statistics.
Tensor batch_norm_eval_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                               const Tensor& running_var, float eps, bool fuse_relu = false);
struct BatchNormGrads {
  Tensor x, gamma, beta;  // gamma/beta undefined when not affine
};
// Backward of the training-mode forward. With fuse_relu the gradient is masked where the forward's
// output was 0, i.e. where its pre-activation (x - mean) * scale + shift was <= 0 (PyTorch's
// threshold_backward on y, so a NaN passes). The mask is re-evaluated from x and `saved`, with
// the forward's own arithmetic (bit for bit), so the backward reads x and grad_y, not y.
// dx = gamma*inv_std/M * (M g' - sum g' - xhat * sum(g' xhat)), dgamma = sum(g' xhat),
// dbeta = sum(g'), over the M = N*H*W values of a channel. The gamma and beta gradients are
// defined exactly when gamma is. With `across` (the forward's), the sums in dx are the whole
// batch's and M is saved.count; dgamma and dbeta stay this shard's (the gradient sum adds them up).
BatchNormGrads batch_norm_train_backward(const Tensor& grad_y, const Tensor& x, const Tensor& gamma,
                                         const BatchNormSaved& saved, bool fuse_relu = false,
                                         const StatisticsSum& across = {});
// Backward of the eval-mode forward (running statistics are constants): dx = gamma * g' / sqrt(var + eps),
// dgamma = sum(g' * xhat), dbeta = sum(g'), with g' = grad_y masked as above when `fuse_relu` (the
// forward's affine is recomputed from gamma, beta and the running statistics, which must be the
// forward's).
BatchNormGrads batch_norm_eval_backward(const Tensor& grad_y, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                        const Tensor& running_mean, const Tensor& running_var, float eps,
                                        bool fuse_relu = false);

// ---- Batch norm, its ReLU and a max pool as one op (training mode) ---------------------------
// max_pool(relu(bn(x))): the output, argmax, saved statistics and running statistics are bit for
// bit those of batch_norm_train_forward(fuse_relu) followed by max_pool2d_forward, and the
// gradients those of max_pool2d_backward followed by batch_norm_train_backward(fuse_relu). On
// channels-last x with windows that do not overlap (stride == kernel, no padding: the pools of
// peel's models) the normalised map is never stored: the forward normalises each window as it
// pools it, and the backward rebuilds the pool's input gradient a block of rows at a time, in
// cache, inside the two passes batch norm's backward makes anyway. Anything else runs the two
// kernels one after the other.
bool batch_norm_pool_fuses(const Tensor& x, const Pool2dGeometry& pool);
Tensor batch_norm_relu_max_pool_train_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                              Tensor& running_mean, Tensor& running_var, float momentum, float eps,
                                              const Pool2dGeometry& pool, BatchNormSaved& saved, MaxPoolArgmax& argmax,
                                              const StatisticsSum& across = {});
// grad_y: the gradient of the pooled output. pool and argmax: the forward's.
BatchNormGrads batch_norm_relu_max_pool_train_backward(const Tensor& grad_y, const Tensor& x, const Tensor& gamma,
                                                       const BatchNormSaved& saved, const Pool2dGeometry& pool,
                                                       const MaxPoolArgmax& argmax, const StatisticsSum& across = {});

// ---- Batch norm, a residual sum and a ReLU as one op (training mode) -------------------------
// relu(bn(x) + residual), a residual block's end: the output and statistics are bit for bit those of
// batch_norm_train_forward (no ReLU), then add, then relu; the gradients those of relu's backward
// (grad_y * (y > 0)), which is also the residual's gradient, then batch_norm_train_backward. One
// pass over x and the residual instead of three over the normalised map and the sum. The output
// is in x's memory form; the residual may have any layout.
Tensor batch_norm_add_relu_train_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                                         Tensor& running_var, float momentum, float eps, const Tensor& residual,
                                         BatchNormSaved& saved, const StatisticsSum& across = {});
struct BatchNormAddReluGrads {
  BatchNormGrads norm;  // x, gamma, beta
  Tensor residual;
};
// y: the forward's output (the ReLU's mask).
BatchNormAddReluGrads batch_norm_add_relu_train_backward(const Tensor& grad_y, const Tensor& x, const Tensor& y,
                                                         const Tensor& gamma, const BatchNormSaved& saved,
                                                         const StatisticsSum& across = {});

// ---- Group and layer normalisation -------------------------------------------------------------
// GroupNorm over (C/G, H, W) per (n, group); LayerNorm is GroupNorm's G = 1 case over (C,H,W),
// or the last axis of an (N, D) input. gamma/beta are per channel and may be undefined. Biased
// variance, eps inside the square root; the backward's gamma/beta gradients are defined when gamma is.
// With `relu` the output is relu(gn(x)) in the same pass, and the backward masks grad_y where the
// forward's output was 0, re-evaluating its pre-activation from x and `saved` bit for bit (as
// batch norm's fused ReLU), so it needs no copy of y.
struct GroupNormSaved {
  Tensor mean, inv_std;  // (N, G)
  Tensor scale, shift;   // (N, C): the forward's affine, y = relu?((x - mean of the group) * scale + shift)
};
Tensor group_norm_forward(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, float eps,
                          GroupNormSaved& saved, bool relu = false);
BatchNormGrads group_norm_backward(const Tensor& grad_y, const Tensor& x, int64_t groups, const Tensor& gamma,
                                   const GroupNormSaved& saved, bool relu = false);

}  // namespace peel
