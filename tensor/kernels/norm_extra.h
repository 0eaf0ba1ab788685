// Kernels of the normalisations studied by Qiao et al. (weight standardisation, estimated batch
// norm) and Singh & Krishnan (filter response normalisation + TLU), and of weight normalisation
// (Salimans & Kingma), forward and backward. Definitions: /work/shared/science.md §3-5 and
// docs/normalization.md.
//
// Layouts as in kernels.h: activations are logical (N,C,H,W) (or (N,C)) with any strides; outputs
// keep channels-last memory when the input has it, otherwise they are contiguous; other strides are
// copied to NCHW first. Weights are (O, ...) and are processed as O rows of I = numel/O values.
// Sums are accumulated in double in fixed blocks added in a fixed order, so results do not depend
// on the thread count. Each kernel is held to a double-precision loop in tests/tensor/test_norm_extra_kernels.cpp.
#pragma once

#include "tensor/kernels/norm.h"
#include "tensor/tensor.h"

namespace peel {

// ---- Weight reparametrisations (per output unit: a row of O x I) ---------------------------------
// Weight standardisation, the official BCN code's form: per row i over its I entries,
//   w_hat_i = (w_i - mean(w_i)) / sqrt(var_unbiased(w_i) + eps),
// needs I > 1. `saved` receives the per-row mean and inv_std = 1 / sqrt(var_unbiased + eps).
struct WeightStandardizeSaved {
  Tensor mean, inv_std;  // (O)
};
Tensor weight_standardize_forward(const Tensor& w, float eps, WeightStandardizeSaved& saved);
// dw = inv_std * (g - mean(g) - w_hat * sum(g * w_hat) / (I - 1)), per row.
Tensor weight_standardize_backward(const Tensor& grad_w_hat, const Tensor& w, const WeightStandardizeSaved& saved);

// Weight normalisation, torch.nn.utils.weight_norm (dim 0): w_i = g_i * v_i / ||v_i||, g of O
// elements in any shape (PyTorch's (O,1,1,1) or (O,1)). `inv_norm` receives 1 / ||v_i|| (O).
Tensor weight_norm_forward(const Tensor& v, const Tensor& g, Tensor& inv_norm);
struct WeightNormGrads {
  Tensor v, g;  // g in g's shape
};
// dg_i = (grad_w_i . v_i) / ||v_i||;  dv_i = g_i / ||v_i|| * (grad_w_i - v_hat_i (grad_w_i . v_hat_i)).
WeightNormGrads weight_norm_backward(const Tensor& grad_w, const Tensor& v, const Tensor& g, const Tensor& inv_norm);
// ||v_i|| per row (O), in double: PyTorch's weight_norm initialises g with it.
Tensor row_norms(const Tensor& v);

// ---- Estimated batch norm (Qiao et al.'s EstBN; official README) ---------------------------------
// The training-mode statistics update, done without gradient before EstBN normalises:
//   mean_c = mean over (N, H, W) of x,  dev_c = mean over (N, H, W) of (x - running_mean_c)^2
//   (deviations about the OLD running mean), then
//   running_mean = (1 - r) running_mean + r mean_c,  running_var = (1 - r) running_var + r dev_c.
// The normalisation itself is batch_norm_eval_forward with the updated statistics (EstBN uses the
// estimated statistics in both train and eval), and its backward is batch_norm_eval_backward.
// With `across` (synchronised batch norm, norm.h) mean_c and dev_c are the whole batch's: the sums
// of (x - running_mean_c), of its square and the counts are added over the shards (2C + 1 doubles,
// one call), which is exact because every shard holds the same running statistics.
void estimated_batch_norm_update(const Tensor& x, Tensor& running_mean, Tensor& running_var, float moving_speed,
                                 const StatisticsSum& across = {});

// ---- Batch-channel normalisation (Qiao et al.'s BCN), fused --------------------------------------
// y = relu?(group_affine(bn(x))), one op in place of three: the batch part bn per channel, with its
// own affine gamma_c, beta_c, normalises with the batch's statistics (kBatch: batch norm in
// training, which also moves the running statistics as batch_norm_train_forward does) or with
// given ones (kRunning: EstBN, whose update estimated_batch_norm_update does first, and eval mode);
// then group norm over G groups of C/G channels with one affine (weight_g, bias_g) per group (each
// part with its own eps inside the square root). The batch part's output z = a_c (x - mu_c) + beta_c is never stored:
// the group statistics of z follow from per-(n, c) moments of x (Chan et al.'s combination), and
// in the backward every sum either part needs follows from per-(n, c) sums of g' and g' (x - mu_c),
// so the forward reads x twice and writes y once, and the backward reads (grad_y, x, y) twice and
// writes dx once. Held to the three unfused kernels in tests/tensor/test_kernels_batch_channel_norm.cpp.
enum class BcnStatistics { kBatch, kRunning };
struct BcnParameters {
  Tensor bn_gamma, bn_beta;         // (C) each, or undefined (no affine in the batch part)
  Tensor group_weight, group_bias;  // (G) each
  int64_t groups = 1;
  float bn_eps = 1e-5f;  // the batch part's
  float eps = 1e-5f;     // the group part's
  bool relu = false;
};
struct BcnSaved {
  Tensor sample_mean, sample_m2;     // (N, C): mean and sum of squared deviations of x per (n, c)
  Tensor mean, inv_std;              // (C): the batch part's statistics (the batch's, or the running)
  Tensor group_mean, group_inv_std;  // (N, G): the group part's statistics of z
  bool batch_statistics = true;
  int64_t count = 0;  // values per channel the batch statistics cover (all shards' with a StatisticsSum)
};
// kBatch with running_mean/running_var defined updates them in place with `momentum` (PyTorch's
// convention, unbiased variance); kRunning reads them. With `across` (synchronised batch norm,
// norm.h) kBatch's statistics, and the per-channel sums its input gradient needs, are the whole
// batch's, as in batch_norm_train_forward; the group part is per sample and needs nothing from the
// other shards, nor does kRunning (EstBN synchronises its update, estimated_batch_norm_update).
Tensor batch_channel_norm_forward(const Tensor& x, const BcnParameters& params, Tensor& running_mean,
                                  Tensor& running_var, BcnStatistics statistics, float momentum, BcnSaved& saved,
                                  const StatisticsSum& across = {});
struct BcnGrads {
  Tensor x, bn_gamma, bn_beta, group_weight, group_bias;  // bn_* undefined without the batch part's affine
};
// y: the forward's output (read only with relu, for the mask); `across`: the forward's. The
// parameter gradients stay this shard's (the gradient sum over ranks adds them up).
BcnGrads batch_channel_norm_backward(const Tensor& grad_y, const Tensor& x, const Tensor& y,
                                     const BcnParameters& params, const BcnSaved& saved,
                                     const StatisticsSum& across = {});

// ---- Filter response normalisation + TLU (Singh & Krishnan) --------------------------------------
// Per sample n and channel c over the S = H*W positions:
//   nu2 = mean_s x^2,  y = gamma_c * x / sqrt(nu2 + |eps_c|) + beta_c,  z = max(y, tau_c).
// gamma, beta, eps are (C); tau is (C) or undefined (no TLU: z = y). `saved.inv_rms` receives
// 1 / sqrt(nu2 + |eps|) per (n, c).
struct FrnSaved {
  Tensor inv_rms;  // (N, C)
};
Tensor filter_response_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& eps,
                                    const Tensor& tau, FrnSaved& saved);
struct FrnGrads {
  Tensor x, gamma, beta, eps, tau;  // tau undefined without TLU
};
// TLU's gradient follows torch.max(y, tau): to y where y > tau, to tau where y < tau, and half to
// each where y == tau (ties are common: a zero input gives y = beta, and beta = tau at init).
// The eps gradient uses d|eps|/deps = sign(eps) (0 at 0, as torch.abs). One difference: an
// infinite or NaN grad_z gives NaN on the side that gets no share, where PyTorch gives 0.
FrnGrads filter_response_norm_backward(const Tensor& grad_z, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                       const Tensor& eps, const Tensor& tau, const FrnSaved& saved);

// TLU alone: z = max(x, tau_c) per channel, and its backward with torch.max's ties rule.
Tensor tlu_forward(const Tensor& x, const Tensor& tau);
struct TluGrads {
  Tensor x, tau;
};
TluGrads tlu_backward(const Tensor& grad_z, const Tensor& x, const Tensor& tau);

}  // namespace peel
