#include "nn/layers.h"

#include <cmath>
#include <typeinfo>

#include "nn/fusion.h"
#include "nn/normalization.h"
#include "tensor/error.h"
#include "tensor/kernels/norm_extra.h"

namespace peel::nn {

Generator& init_generator() {
  static Generator generator(0);
  return generator;
}
void seed_init_generator(uint64_t seed) { init_generator() = Generator(seed); }

Variable WeightedLayer::effective_weight() const {
  switch (reparam) {
    case WeightReparam::none:
      return weight;
    case WeightReparam::standardize:
      return weight_standardize(weight);
    case WeightReparam::weight_norm:
      return weight_norm(weight_v, weight_g);
  }
  PEEL_FAIL("unknown weight reparametrisation {}", static_cast<int>(reparam));
}

void WeightedLayer::register_weight_and_bias(Tensor initial_weight, Tensor initial_bias) {
  if (reparam != WeightReparam::weight_norm) weight = register_parameter("weight", initial_weight);
  if (initial_bias.defined()) bias = register_parameter("bias", std::move(initial_bias));
  if (reparam == WeightReparam::weight_norm) {
    // torch.nn.utils.weight_norm: v = the weight as initialised, g = its norm per output unit.
    Shape g_shape(initial_weight.dim(), 1);
    g_shape[0] = initial_weight.size(0);
    weight_g = register_parameter("weight_g", row_norms(initial_weight).reshape(g_shape));
    weight_v = register_parameter("weight_v", std::move(initial_weight));
  }
}

Linear::Linear(int64_t in_features, int64_t out_features, bool with_bias, WeightReparam reparam_)
    : WeightedLayer(reparam_) {
  PEEL_CHECK(in_features > 0 && out_features > 0, "Linear: sizes must be positive, got {} -> {}", in_features,
             out_features);
  // kaiming_uniform_(a = sqrt(5)) gives bound sqrt(6 / ((1 + 5) fan_in)) = 1 / sqrt(fan_in).
  const float bound = 1.f / std::sqrt(static_cast<float>(in_features));
  Tensor initial = uniform({out_features, in_features}, -bound, bound, init_generator());  // drawn first
  register_weight_and_bias(initial, with_bias ? uniform({out_features}, -bound, bound, init_generator()) : Tensor());
}

Variable Linear::forward(const Variable& x) { return observed(linear(x, effective_weight(), bias)); }

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride, int64_t padding,
               bool with_bias, int64_t dilation, WeightReparam reparam_)
    : WeightedLayer(reparam_), geometry(Conv2dGeometry::square(stride, padding, dilation)) {
  PEEL_CHECK(in_channels > 0 && out_channels > 0 && kernel > 0 && stride > 0 && padding >= 0 && dilation > 0,
             "Conv2d: bad configuration in={} out={} kernel={} stride={} padding={} dilation={}", in_channels,
             out_channels, kernel, stride, padding, dilation);
  // kaiming_normal_(mode='fan_out', nonlinearity='relu'): std = sqrt(2 / (out * k * k)).
  const float stddev = std::sqrt(2.f / static_cast<float>(out_channels * kernel * kernel));
  register_weight_and_bias(normal({out_channels, in_channels, kernel, kernel}, 0.f, stddev, init_generator()),
                           with_bias ? Tensor::zeros({out_channels}) : Tensor());
}

Variable Conv2d::forward(const Variable& x) { return observed(conv2d(x, effective_weight(), bias, geometry)); }

BatchNorm::BatchNorm(int64_t channels, bool fuse_relu_, float eps_, float momentum_, bool affine)
    : eps(eps_), momentum(momentum_), fuse_relu(fuse_relu_) {
  if (affine) {
    weight = register_parameter("weight", Tensor::ones({channels}));
    bias = register_parameter("bias", Tensor::zeros({channels}));
  }
  running_mean = register_buffer("running_mean", Tensor::zeros({channels}));
  running_var = register_buffer("running_var", Tensor::ones({channels}));
}

Variable BatchNorm::normalize(const Variable& x, bool relu) {
  PEEL_CHECK((x.dim() == 2 || x.dim() == 4) && x.size(1) == running_mean.numel(),
             "BatchNorm({}): input of shape {} is not (N, {}) or (N, {}, H, W)", running_mean.numel(),
             to_string(x.shape()), running_mean.numel(), running_mean.numel());
  return batch_norm(x, weight, bias, running_mean, running_var, is_training(), momentum, eps, relu, sync_statistics);
}

Variable BatchNorm::normalize_relu_max_pool(const Variable& x, const Pool2dGeometry& pool) {
  PEEL_CHECK(x.dim() == 4 && x.size(1) == running_mean.numel(), "BatchNorm({}): input of shape {} is not (N, {}, H, W)",
             running_mean.numel(), to_string(x.shape()), running_mean.numel());
  PEEL_CHECK(is_training() && fuse_relu, "BatchNorm({}): the fused max pool is for training mode with a ReLU",
             running_mean.numel());
  return batch_norm_relu_max_pool(x, weight, bias, running_mean, running_var, momentum, eps, pool, sync_statistics);
}

Variable BatchNorm::normalize_add_relu(const Variable& x, const Variable& residual) {
  PEEL_CHECK((x.dim() == 2 || x.dim() == 4) && x.size(1) == running_mean.numel(),
             "BatchNorm({}): input of shape {} is not (N, {}) or (N, {}, H, W)", running_mean.numel(),
             to_string(x.shape()), running_mean.numel(), running_mean.numel());
  PEEL_CHECK(is_training() && !fuse_relu, "BatchNorm({}): the fused residual sum is for training mode without a ReLU",
             running_mean.numel());
  return batch_norm_add_relu(x, weight, bias, running_mean, running_var, momentum, eps, residual, sync_statistics);
}

GroupNorm::GroupNorm(int64_t groups_, int64_t channels, float eps_, bool relu_)
    : ReluSite(relu_), groups(groups_), eps(eps_) {
  PEEL_CHECK(groups > 0 && channels % groups == 0, "GroupNorm: {} channels cannot be split into {} groups", channels,
             groups);
  weight = register_parameter("weight", Tensor::ones({channels}));
  bias = register_parameter("bias", Tensor::zeros({channels}));
}

Variable GroupNorm::pre_activation(const Variable& x) { return group_norm(x, groups, weight, bias, eps); }
Variable GroupNorm::forward_fused(const Variable& x) { return group_norm(x, groups, weight, bias, eps, relu); }

LayerNorm::LayerNorm(const Shape& normalized_shape, float eps_) : eps(eps_) {
  weight = register_parameter("weight", Tensor::ones(normalized_shape));
  bias = register_parameter("bias", Tensor::zeros(normalized_shape));
}

Variable LayerNorm::forward(const Variable& x) {
  Shape sample(x.shape().begin() + 1, x.shape().end());
  PEEL_CHECK(sample == weight.shape(), "LayerNorm({}): input of shape {} does not end in the normalised shape",
             to_string(weight.shape()), to_string(x.shape()));
  // One group over every non-batch axis is exactly layer normalisation; then the element-wise affine.
  Variable normalised = group_norm(x, 1, Variable(), Variable(), eps);
  return ag::add(ag::mul(normalised, weight), bias);
}

MaxPool2d::MaxPool2d(int64_t kernel, int64_t stride, int64_t padding)
    : geometry{kernel, stride < 0 ? kernel : stride, padding} {}
AvgPool2d::AvgPool2d(int64_t kernel, int64_t stride, int64_t padding)
    : geometry{kernel, stride < 0 ? kernel : stride, padding} {}

Sequential::Sequential(std::initializer_list<ModulePtr> modules) {
  for (const auto& m : modules) add(m);
}

Sequential& Sequential::add(ModulePtr module) {
  register_module(std::to_string(layers_.size()), module);
  layers_.push_back(std::move(module));
  return *this;
}

Variable Sequential::forward(const Variable& x) {
  Variable h = x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    // A convolution and the layer after it (a norm slot in every model here) go through
    // conv_then_norm, which folds an eval-mode batch norm into the convolution.
    if (auto* conv = dynamic_cast<Conv2d*>(layers_[i].get()); conv != nullptr && i + 1 < layers_.size()) {
      // torchvision's vgg_bn layout, conv, norm, ReLU (an Identity here: the norm applies it), max
      // pool, goes through conv_norm_max_pool, which runs the norm and the pool as one op in training.
      auto* pool = i + 3 < layers_.size() ? dynamic_cast<MaxPool2d*>(layers_[i + 3].get()) : nullptr;
      const Module* relu_slot = pool != nullptr ? layers_[i + 2].get() : nullptr;
      if (relu_slot != nullptr && typeid(*relu_slot) == typeid(Identity)) {
        h = conv_norm_max_pool(*conv, *layers_[i + 1], h, pool->geometry);
        i += 3;
        continue;
      }
      h = conv_then_norm(*conv, *layers_[i + 1], h);
      ++i;
      continue;
    }
    h = layers_[i]->forward(h);
  }
  return h;
}

}  // namespace peel::nn
