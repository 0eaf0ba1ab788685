#include "nn/normalization.h"

#include "tensor/error.h"

namespace peel::nn {

namespace {
void check_channels(const Variable& x, int64_t channels, const char* layer) {
  PEEL_CHECK(x.dim() >= 2 && x.size(1) == channels, "{}({}): input of shape {} is not (N, {}, ...)", layer, channels,
             to_string(x.shape()), channels);
}
}  // namespace

EstimatedBatchNorm::EstimatedBatchNorm(int64_t channels, float moving_speed_, bool fuse_relu_, float eps_)
    : BatchNorm(channels, fuse_relu_, eps_) {
  PEEL_CHECK(moving_speed_ >= 0.f && moving_speed_ <= 1.f, "EstimatedBatchNorm: moving speed must be in [0, 1], got {}",
             moving_speed_);
  estbn_moving_speed = register_buffer("estbn_moving_speed", Tensor::full({1}, moving_speed_));
}

Variable EstimatedBatchNorm::normalize(const Variable& x, bool relu) {
  check_channels(x, running_mean.numel(), "EstimatedBatchNorm");
  return estimated_batch_norm(x, weight, bias, running_mean, running_var, is_training(), moving_speed(), eps, relu,
                              sync_statistics);
}

const char* to_string(BcnBatchPart part) { return part == BcnBatchPart::batch ? "batch" : "estimated"; }

BcnBatchPart parse_bcn_batch_part(std::string_view name) {
  if (name == "batch") return BcnBatchPart::batch;
  if (name == "estimated") return BcnBatchPart::estimated;
  PEEL_FAIL("unknown BCN batch part '{}' (known: batch, estimated)", name);
}

BatchChannelNorm::BatchChannelNorm(int64_t channels, int64_t groups_, BcnBatchPart batch_part, float moving_speed,
                                   bool relu_, float eps_)
    : ReluSite(relu_), groups(groups_), eps(eps_) {
  PEEL_CHECK(groups > 0 && channels % groups == 0, "BatchChannelNorm: {} channels cannot be split into {} groups",
             channels, groups);
  weight = register_parameter("weight", Tensor::ones({1, groups, 1}));
  bias = register_parameter("bias", Tensor::zeros({1, groups, 1}));
  if (batch_part == BcnBatchPart::batch)
    bn = register_module("bn", std::make_shared<BatchNorm>(channels));
  else
    bn = register_module("bn", std::make_shared<EstimatedBatchNorm>(channels, moving_speed));
}

Variable BatchChannelNorm::pre_activation(const Variable& x) { return one_op(x, false); }

Variable BatchChannelNorm::forward_fused(const Variable& x) { return one_op(x, relu); }

Variable BatchChannelNorm::one_op(const Variable& x, bool with_relu) {
  check_channels(x, bn->running_mean.numel(), "BatchChannelNorm");
  const bool training = bn->is_training();
  auto* estimated = dynamic_cast<EstimatedBatchNorm*>(bn.get());
  // EstBN first moves its estimates (no gradient), then normalises with them, in training as in eval.
  if (estimated != nullptr && training)
    estimated_batch_norm_update(x.value(), bn->running_mean, bn->running_var, estimated->moving_speed(),
                                bn->sync_statistics);
  const BcnStatistics statistics = training && estimated == nullptr ? BcnStatistics::kBatch : BcnStatistics::kRunning;
  BcnParameters shape;
  shape.groups = groups;
  shape.bn_eps = bn->eps;
  shape.eps = eps;
  shape.relu = with_relu;
  return batch_channel_norm(x, bn->weight, bn->bias, weight, bias, bn->running_mean, bn->running_var, statistics,
                            bn->momentum, shape, bn->sync_statistics);
}

FilterResponseNorm::FilterResponseNorm(int64_t channels, bool with_tlu, float eps_, bool learnable_eps) {
  PEEL_CHECK(channels > 0, "FilterResponseNorm: channels must be positive, got {}", channels);
  weight = register_parameter("weight", Tensor::ones({channels}));
  bias = register_parameter("bias", Tensor::zeros({channels}));
  if (with_tlu) tau = register_parameter("tau", Tensor::zeros({channels}));
  eps = learnable_eps ? register_parameter("eps", Tensor::full({channels}, eps_))
                      : ag::constant(Tensor::full({channels}, eps_));
}

Variable FilterResponseNorm::pre_activation(const Variable& x) {
  check_channels(x, weight.numel(), "FilterResponseNorm");
  return filter_response_norm(x, weight, bias, eps, Variable());
}

Variable FilterResponseNorm::forward_fused(const Variable& x) {
  check_channels(x, weight.numel(), "FilterResponseNorm");
  return filter_response_norm(x, weight, bias, eps, tau);
}

Tlu::Tlu(int64_t channels) {
  PEEL_CHECK(channels > 0, "Tlu: channels must be positive, got {}", channels);
  tau = register_parameter("tau", Tensor::zeros({channels}));
}

}  // namespace peel::nn
