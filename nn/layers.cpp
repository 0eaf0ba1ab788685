#include "nn/layers.h"

#include <cmath>

#include "tensor/error.h"

namespace peel::nn {

Generator& init_generator() {
  static Generator generator(0);
  return generator;
}
void seed_init_generator(uint64_t seed) { init_generator() = Generator(seed); }

Linear::Linear(int64_t in_features, int64_t out_features, bool with_bias) {
  PEEL_CHECK(in_features > 0 && out_features > 0, "Linear: sizes must be positive, got {} -> {}", in_features,
             out_features);
  // kaiming_uniform_(a = sqrt(5)) gives bound sqrt(6 / ((1 + 5) fan_in)) = 1 / sqrt(fan_in).
  const float bound = 1.f / std::sqrt(static_cast<float>(in_features));
  weight = register_parameter("weight", uniform({out_features, in_features}, -bound, bound, init_generator()));
  if (with_bias) bias = register_parameter("bias", uniform({out_features}, -bound, bound, init_generator()));
}

Variable Linear::forward(const Variable& x) { return linear(x, weight, bias); }

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride, int64_t padding,
               bool with_bias, int64_t dilation)
    : geometry(Conv2dGeometry::square(stride, padding, dilation)) {
  PEEL_CHECK(in_channels > 0 && out_channels > 0 && kernel > 0 && stride > 0 && padding >= 0 && dilation > 0,
             "Conv2d: bad configuration in={} out={} kernel={} stride={} padding={} dilation={}", in_channels,
             out_channels, kernel, stride, padding, dilation);
  // kaiming_normal_(mode='fan_out', nonlinearity='relu'): std = sqrt(2 / (out * k * k)).
  const float stddev = std::sqrt(2.f / static_cast<float>(out_channels * kernel * kernel));
  weight =
      register_parameter("weight", normal({out_channels, in_channels, kernel, kernel}, 0.f, stddev, init_generator()));
  if (with_bias) bias = register_parameter("bias", Tensor::zeros({out_channels}));
}

Variable Conv2d::forward(const Variable& x) { return conv2d(x, weight, bias, geometry); }

BatchNorm::BatchNorm(int64_t channels, bool fuse_relu_, float eps_, float momentum_, bool affine)
    : eps(eps_), momentum(momentum_), fuse_relu(fuse_relu_) {
  if (affine) {
    weight = register_parameter("weight", Tensor::ones({channels}));
    bias = register_parameter("bias", Tensor::zeros({channels}));
  }
  running_mean = register_buffer("running_mean", Tensor::zeros({channels}));
  running_var = register_buffer("running_var", Tensor::ones({channels}));
}

Variable BatchNorm::forward(const Variable& x) {
  PEEL_CHECK((x.dim() == 2 || x.dim() == 4) && x.size(1) == running_mean.numel(),
             "BatchNorm({}): input of shape {} is not (N, {}) or (N, {}, H, W)", running_mean.numel(),
             to_string(x.shape()), running_mean.numel(), running_mean.numel());
  return batch_norm(x, weight, bias, running_mean, running_var, is_training(), momentum, eps, fuse_relu);
}

GroupNorm::GroupNorm(int64_t groups_, int64_t channels, float eps_) : groups(groups_), eps(eps_) {
  PEEL_CHECK(groups > 0 && channels % groups == 0, "GroupNorm: {} channels cannot be split into {} groups", channels,
             groups);
  weight = register_parameter("weight", Tensor::ones({channels}));
  bias = register_parameter("bias", Tensor::zeros({channels}));
}

Variable GroupNorm::forward(const Variable& x) { return group_norm(x, groups, weight, bias, eps); }

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
  for (auto& layer : layers_) h = layer->forward(h);
  return h;
}

BasicBlock::BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride) {
  conv1 = register_module("conv1", std::make_shared<Conv2d>(in_channels, out_channels, 3, stride, 1, false));
  bn1 = register_module("bn1", std::make_shared<BatchNorm>(out_channels, /*fuse_relu=*/true));
  conv2 = register_module("conv2", std::make_shared<Conv2d>(out_channels, out_channels, 3, 1, 1, false));
  bn2 = register_module("bn2", std::make_shared<BatchNorm>(out_channels));
  if (stride != 1 || in_channels != out_channels) {
    downsample =
        register_module("downsample", std::make_shared<Sequential>(Sequential{
                                          std::make_shared<Conv2d>(in_channels, out_channels, 1, stride, 0, false),
                                          std::make_shared<BatchNorm>(out_channels)}));
  }
}

Variable BasicBlock::forward(const Variable& x) {
  Variable out = bn2->forward(conv2->forward(bn1->forward(conv1->forward(x))));
  Variable shortcut = downsample ? downsample->forward(x) : x;
  return ag::relu(ag::add(out, shortcut));
}

}  // namespace peel::nn
