// Layers. Each holds its parameters and buffers under PyTorch's names and calls one op of
// nn/functional.h in forward(). Initialisation follows PyTorch's defaults unless noted.
#pragma once

#include <initializer_list>

#include "nn/activation_site.h"
#include "nn/functional.h"
#include "nn/module.h"

namespace peel::nn {

// The generator layers draw their initial weights from; models pass one seeded by --seed.
Generator& init_generator();
void seed_init_generator(uint64_t seed);

// How Linear and Conv2d compute their weight from their parameters, once per forward, with the
// gradient flowing through to the parameters (nn/normalization.h):
//   none         the parameter `weight` is the weight;
//   standardize  Qiao et al.'s weight standardisation of `weight` per output unit (BCN code's form);
//   weight_norm  Salimans & Kingma: weight = weight_g * weight_v / ||weight_v|| per output unit, with
//                torch.nn.utils.weight_norm's names, shapes (weight_g (out,1,...)) and order (bias,
//                weight_g, weight_v), initialised as it does: weight_v = the usual initial weight,
//                weight_g = its norms. Such a layer has no parameter `weight`.
enum class WeightReparam { none, standardize, weight_norm };

// Sees a weighted layer's output, before whatever follows it (a norm slot, a ReLU, a residual sum):
// what nn/weight_norm_init.h standardises. The activation-site probes (nn/activation_site.h) see a
// ReLU's input instead, which in a ResNet block is conv2's output plus the shortcut, not conv2's.
class LayerOutputProbe {
 public:
  virtual ~LayerOutputProbe() = default;
  virtual void record(const Tensor& output) = 0;  // logical (N, out, ...)
};

// A layer with a weight (computed per `reparam`) and an optional bias: Linear and Conv2d.
class WeightedLayer : public Module {
 public:
  Variable effective_weight() const;  // the weight the layer applies (recorded for autograd)
  Variable weight, bias, weight_g, weight_v;
  WeightReparam reparam;
  LayerOutputProbe* output_probe = nullptr;  // not owned; set by whoever listens, reset when done

 protected:
  explicit WeightedLayer(WeightReparam reparam_) : reparam(reparam_) {}
  // The layer's output, shown to the probe if one is attached (one pointer test otherwise).
  Variable observed(Variable output) const {
    if (output_probe != nullptr) output_probe->record(output.value());
    return output;
  }
  // Registers the parameters from the layer's usual initial values (bias undefined: none), in
  // PyTorch's order: weight, bias; or bias, weight_g, weight_v.
  void register_weight_and_bias(Tensor initial_weight, Tensor initial_bias);
};

class Linear : public WeightedLayer {
 public:
  // PyTorch's default: weight and bias uniform in +-1/sqrt(in_features).
  Linear(int64_t in_features, int64_t out_features, bool bias = true, WeightReparam reparam = WeightReparam::none);
  Variable forward(const Variable& x) override;
};

class Conv2d : public WeightedLayer {
 public:
  // Kaiming-normal weights (fan-out, ReLU gain), as docs/reference-models.md specifies; zero bias.
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride = 1, int64_t padding = 0,
         bool bias = true, int64_t dilation = 1, WeightReparam reparam = WeightReparam::none);
  Variable forward(const Variable& x) override;
  Conv2dGeometry geometry;
};

// BatchNorm over (N,H,W) per channel for (N,C,H,W) input, or over N for (N,C) input (BatchNorm1d).
// `fuse_relu` makes the layer BN followed by ReLU in one pass (names and state are unchanged).
class BatchNorm : public ActivationSite {
 public:
  explicit BatchNorm(int64_t channels, bool fuse_relu = false, float eps = 1e-5f, float momentum = 0.1f,
                     bool affine = true);
  bool has_activation() const override { return fuse_relu; }
  Variable weight, bias;
  Tensor running_mean, running_var;
  float eps, momentum;
  bool fuse_relu;
  // Sync batch norm: set, training statistics are those of the whole batch split over processes
  // (experiments/distributed/); empty, this process's batch alone (PyTorch DDP's default).
  StatisticsSum sync_statistics;
  // max_pool(relu(bn(x))) in training mode as one op (nn/fusion.h), the layer's statistics and
  // parameters as forward() would use them.
  Variable normalize_relu_max_pool(const Variable& x, const Pool2dGeometry& pool);
  // relu(bn(x) + residual) in training mode as one op (nn/fusion.h), for a BatchNorm without its ReLU.
  Variable normalize_add_relu(const Variable& x, const Variable& residual);

 protected:
  Variable pre_activation(const Variable& x) override { return normalize(x, false); }
  Variable activate(const Variable& pre) override { return fuse_relu ? ag::relu(pre) : pre; }
  Variable forward_fused(const Variable& x) override { return normalize(x, fuse_relu); }
  // Normalises x (ReLU in the same pass when `relu`); EstimatedBatchNorm overrides it.
  virtual Variable normalize(const Variable& x, bool relu);
};
using BatchNorm2d = BatchNorm;
using BatchNorm1d = BatchNorm;

// GroupNorm, followed by a ReLU when `relu` (in the same pass, unless a probe takes the two apart).
class GroupNorm : public ReluSite {
 public:
  GroupNorm(int64_t groups, int64_t channels, float eps = 1e-5f, bool relu = false);
  Variable weight, bias;
  int64_t groups;
  float eps;

 protected:
  Variable pre_activation(const Variable& x) override;
  Variable forward_fused(const Variable& x) override;
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

class ReLU : public ReluSite {
 public:
  ReLU() : ReluSite(true) {}

 protected:
  Variable pre_activation(const Variable& x) override { return x; }
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
  explicit Dropout(float probability, uint64_t seed = 0) : p(probability), generator(seed) {}
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

}  // namespace peel::nn
