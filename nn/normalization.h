// The normalisations of Qiao et al. (weight standardisation, EstBN, batch-channel normalisation),
// Singh & Krishnan (filter response normalisation + TLU) and Salimans & Kingma (weight
// normalisation): the differentiable ops (nn/functional_normalization.cpp, each backward beside its
// forward) and the layers (nn/normalization.cpp). Definitions from the official code:
// /work/shared/science.md §3-5; the choices peel makes where it is silent: docs/normalization.md.
#pragma once

#include "nn/layers.h"
#include "tensor/kernels/norm_extra.h"

namespace peel::nn {

// ---- Ops --------------------------------------------------------------------------------------
// Weight standardisation per output unit, over the I = numel/O entries of each row of w (O, ...):
// (w - mean) / sqrt(var_unbiased + eps), the gradient flowing through mean and variance to w.
constexpr float kWeightStandardizeEps = 1e-5f;
Variable weight_standardize(const Variable& w, float eps = kWeightStandardizeEps);
// Weight normalisation: w = g * v / ||v|| per output unit; v (O, ...), g with O elements.
Variable weight_norm(const Variable& v, const Variable& g);

// EstBN: y = gamma (x - mean) / sqrt(var + eps) + beta with the running (estimated) statistics in
// both modes. In training the statistics are first updated in place, without gradient (see
// estimated_batch_norm_update in tensor/kernels/norm_extra.h), and the output uses the updated
// values, as the official forward does; so dx = gamma / sqrt(var + eps) * dy. `fuse_relu` applies
// ReLU in the same pass. With `across` (sync batch norm) the update uses the whole batch's mean and
// deviation; the backward needs nothing from the other shards.
Variable estimated_batch_norm(const Variable& x, const Variable& gamma, const Variable& beta, Tensor& running_mean,
                              Tensor& running_var, bool training, float moving_speed, float eps, bool fuse_relu,
                              const StatisticsSum& across = {});

// BCN's channel part (the official BCNorm after its batch part): group normalisation over G groups
// without a per-channel affine, then one scale and shift per group: weight and bias of shape (1, G, 1).
Variable group_affine_norm(const Variable& x, int64_t groups, const Variable& weight, const Variable& bias, float eps);

// The whole BCN in one op: relu?(group_affine_norm(batch part(x))), the batch part with batch
// statistics (kBatch; the running ones move with `momentum`) or with running_mean/running_var
// (kRunning), its affine bn_gamma/bn_beta (C, or both undefined). Gradients flow to x and all four
// parameters as through the three ops (tensor/kernels/norm_extra.h, batch_channel_norm_forward).
// `across`: kBatch's statistics over a batch split over processes (sync batch norm).
Variable batch_channel_norm(const Variable& x, const Variable& bn_gamma, const Variable& bn_beta,
                            const Variable& group_weight, const Variable& group_bias, Tensor& running_mean,
                            Tensor& running_var, BcnStatistics statistics, float momentum, const BcnParameters& shape,
                            const StatisticsSum& across = {});

// FRN: y = gamma x / sqrt(mean_{H,W} x^2 + |eps|) + beta per sample and channel, then TLU z =
// max(y, tau) when tau is defined. gamma, beta, eps, tau: (C). eps may be a constant (no gradient).
Variable filter_response_norm(const Variable& x, const Variable& gamma, const Variable& beta, const Variable& eps,
                              const Variable& tau);
// TLU alone: max(x, tau_c); gradients as torch.max (half to each side on a tie).
Variable tlu(const Variable& x, const Variable& tau);

// ---- Layers -----------------------------------------------------------------------------------
// Qiao et al.'s EstBN (official README): batch norm whose training forward normalises with the
// estimates it has just updated. Parameters weight, bias (C); buffers running_mean (0), running_var
// (1) and estbn_moving_speed (1 value: r), in the official order. The official buffer starts at 0
// and is set by the training script; its paper value is unpublished, so peel starts it at
// `moving_speed` (default 0.01, the value a third-party port hard-codes). PyTorch's
// num_batches_tracked is left out, as for BatchNorm (the official EstBN never increments it).
// BatchNorm's `momentum` is unused; `fuse_relu` applies the ReLU in the same pass. BatchNorm's
// `sync_statistics`, when set, makes the estimates move with the whole batch's statistics.
constexpr float kDefaultEstbnMovingSpeed = 0.01f;
class EstimatedBatchNorm : public BatchNorm {
 public:
  explicit EstimatedBatchNorm(int64_t channels, float moving_speed = kDefaultEstbnMovingSpeed, bool fuse_relu = false,
                              float eps = 1e-5f);
  float moving_speed() const { return estbn_moving_speed.data()[0]; }
  Tensor estbn_moving_speed;

 protected:
  Variable normalize(const Variable& x, bool relu) override;
};

// BCN's batch part: ordinary batch norm (large batches) or EstBN (micro-batches).
enum class BcnBatchPart { batch, estimated };
using ::peel::to_string;                   // keeps to_string(Shape) and the others visible beside the overloads here
const char* to_string(BcnBatchPart part);  // "batch" | "estimated"
BcnBatchPart parse_bcn_batch_part(std::string_view name);  // the inverse; throws naming the known

// Batch-channel normalisation, the official BCNorm: child `bn` (BatchNorm or EstimatedBatchNorm
// with its own per-channel affine), then group_affine_norm with parameters weight and bias (1, G, 1)
// (ones and zeros), eps 1e-5; then ReLU when `relu`.
class BatchChannelNorm : public ReluSite {
 public:
  BatchChannelNorm(int64_t channels, int64_t groups, BcnBatchPart batch_part = BcnBatchPart::batch,
                   float moving_speed = kDefaultEstbnMovingSpeed, bool relu = false, float eps = 1e-5f);
  Variable weight, bias;
  std::shared_ptr<BatchNorm> bn;  // BatchNorm or EstimatedBatchNorm
  int64_t groups;
  float eps;

 protected:
  // Both run batch_channel_norm, one op, with the ReLU in forward_fused (so a probe, which takes
  // pre_activation and the ReLU apart, sees the same bits); with --sync-bn its batch statistics
  // (or EstBN's update) are the whole batch's.
  Variable pre_activation(const Variable& x) override;
  Variable forward_fused(const Variable& x) override;

 private:
  Variable one_op(const Variable& x, bool with_relu);
};

// FRN, with TLU when `with_tlu`: parameters weight (gamma, ones), bias (beta, zeros), tau (zeros;
// only with TLU) and eps (C) when `learnable_eps` (initialised to `eps`; the layer uses |eps|).
// A fixed eps is a constant, not part of the state.
class FilterResponseNorm : public ActivationSite {
 public:
  explicit FilterResponseNorm(int64_t channels, bool with_tlu = true, float eps = 1e-6f, bool learnable_eps = false);
  bool has_activation() const override { return tau.defined(); }
  Variable weight, bias, tau, eps;

 protected:
  Variable pre_activation(const Variable& x) override;
  Variable activate(const Variable& pre) override { return tau.defined() ? nn::tlu(pre, tau) : pre; }
  Variable forward_fused(const Variable& x) override;
  Tensor activation_floor() const override { return tau.defined() ? tau.value() : Tensor(); }
};

// TLU as a layer of its own (where a ReLU stands after a residual sum): parameter tau (C), zeros.
class Tlu : public ActivationSite {
 public:
  explicit Tlu(int64_t channels);
  bool has_activation() const override { return true; }
  Variable tau;

 protected:
  Variable pre_activation(const Variable& x) override { return x; }
  Variable activate(const Variable& pre) override { return nn::tlu(pre, tau); }
  Tensor activation_floor() const override { return tau.value(); }
};

}  // namespace peel::nn
