// Layers. Each holds its parameters and buffers under PyTorch's names and calls one op of
// nn/functional.h in forward(). Initialisation follows PyTorch's defaults unless noted.
#pragma once

#include <initializer_list>

#include "nn/functional.h"
#include "nn/module.h"

namespace peel::nn {

// The generator layers draw their initial weights from; models pass one seeded by --seed.
Generator& init_generator();
void seed_init_generator(uint64_t seed);

class Linear : public Module {
 public:
  // PyTorch's default: weight and bias uniform in +-1/sqrt(in_features).
  Linear(int64_t in_features, int64_t out_features, bool bias = true);
  Variable forward(const Variable& x) override;
  Variable weight, bias;
};

class Conv2d : public Module {
 public:
  // Kaiming-normal weights (fan-out, ReLU gain), as reference-models.md specifies; zero bias.
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride = 1, int64_t padding = 0,
         bool bias = true, int64_t dilation = 1);
  Variable forward(const Variable& x) override;
  Variable weight, bias;
  Conv2dGeometry geometry;
};

// BatchNorm over (N,H,W) per channel for (N,C,H,W) input, or over N for (N,C) input (BatchNorm1d).
// `fuse_relu` makes the layer BN followed by ReLU in one pass (names and state are unchanged).
class BatchNorm : public Module {
 public:
  explicit BatchNorm(int64_t channels, bool fuse_relu = false, float eps = 1e-5f, float momentum = 0.1f,
                     bool affine = true);
  Variable forward(const Variable& x) override;
  Variable weight, bias;
  Tensor running_mean, running_var;
  float eps, momentum;
  bool fuse_relu;
};
using BatchNorm2d = BatchNorm;
using BatchNorm1d = BatchNorm;

class GroupNorm : public Module {
 public:
  GroupNorm(int64_t groups, int64_t channels, float eps = 1e-5f);
  Variable forward(const Variable& x) override;
  Variable weight, bias;
  int64_t groups;
  float eps;
};

// PyTorch's LayerNorm(normalized_shape): normalises each sample over all its non-batch axes,
// (C,H,W) of (N,C,H,W) or D of (N,D), then applies a per-element scale and shift of that shape.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(const Shape& normalized_shape, float eps = 1e-5f);
  Variable forward(const Variable& x) override;
  Variable weight, bias;
  float eps;
};

class ReLU : public Module {
 public:
  Variable forward(const Variable& x) override { return ag::relu(x); }
};

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(int64_t kernel, int64_t stride = -1, int64_t padding = 0);
  Variable forward(const Variable& x) override { return max_pool2d(x, geometry); }
  Pool2dGeometry geometry;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(int64_t kernel, int64_t stride = -1, int64_t padding = 0);
  Variable forward(const Variable& x) override { return avg_pool2d(x, geometry); }
  Pool2dGeometry geometry;
};

class GlobalAvgPool : public Module {
 public:
  Variable forward(const Variable& x) override { return global_avg_pool(x); }
};

class Flatten : public Module {
 public:
  Variable forward(const Variable& x) override { return ag::flatten(x, 1); }
};

class Dropout : public Module {
 public:
  explicit Dropout(float p, uint64_t seed = 0) : p(p), generator(seed) {}
  Variable forward(const Variable& x) override { return is_training() && p > 0 ? dropout(x, p, generator) : x; }
  float p;
  Generator generator;
};

class Identity : public Module {
 public:
  Variable forward(const Variable& x) override { return x; }
};

// Children named "0", "1", ... in order, as in PyTorch's nn.Sequential.
class Sequential : public Module {
 public:
  Sequential() = default;
  Sequential(std::initializer_list<ModulePtr> modules);
  Sequential& add(ModulePtr module);
  Variable forward(const Variable& x) override;
  size_t size() const { return layers_.size(); }
  const ModulePtr& operator[](size_t i) const { return layers_[i]; }

 private:
  std::vector<ModulePtr> layers_;
};

// ResNet's BasicBlock: conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU. The shortcut is
// the identity, or `downsample` (1x1 conv with stride + BN) where the shape changes.
class BasicBlock : public Module {
 public:
  BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride);
  Variable forward(const Variable& x) override;
  std::shared_ptr<Conv2d> conv1, conv2;
  std::shared_ptr<BatchNorm> bn1, bn2;
  std::shared_ptr<Sequential> downsample;  // null for the identity shortcut
};

}  // namespace peel::nn
