// Activation sites: the layers that end in a ReLU-like activation (a norm with its ReLU, FRN with its
// TLU, a bare ReLU), where the elimination-singularity probe (experiments/normalization) looks.
//
// A site's forward is activate(pre_activation(x)), fused into one pass where the layer can. While a
// probe is attached the layer runs the two parts separately (same arithmetic, so the same bits) and
// hands both tensors to the probe; with no probe attached it costs one pointer test.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "nn/module.h"

namespace peel::nn {

class ActivationProbe {
 public:
  virtual ~ActivationProbe() = default;
  // pre: the activation's input, post: its output, both logical (N, C, ...); floor: (C), the value
  // at or below which the activation is off (TLU's tau), or undefined for ReLU's 0.
  virtual void record(const Tensor& pre, const Tensor& post, const Tensor& floor) = 0;
};

class ActivationSite : public Module {
 public:
  Variable forward(const Variable& x) final;
  // Whether the layer applies an activation (a BN that feeds a residual sum does not: not a site).
  virtual bool has_activation() const = 0;

  ActivationProbe* probe = nullptr;  // not owned; set by whoever listens, reset when done

 protected:
  virtual Variable pre_activation(const Variable& x) = 0;
  virtual Variable activate(const Variable& pre) = 0;  // the identity when !has_activation()
  virtual Tensor activation_floor() const { return {}; }
  // The path without a probe; layers that fuse their activation override it.
  virtual Variable forward_fused(const Variable& x) { return activate(pre_activation(x)); }
};

// A site whose activation is a ReLU when `relu` is set, none otherwise (most norm layers).
class ReluSite : public ActivationSite {
 public:
  explicit ReluSite(bool relu_) : relu(relu_) {}
  bool has_activation() const override { return relu; }
  bool relu;

 protected:
  Variable activate(const Variable& pre) override;
};

// Every site of `model` that has an activation, named by its module path ("bn1", "features.1",
// "layer1.0.bn1", "layer1.0.act"), in registration order.
std::vector<std::pair<std::string, ActivationSite*>> activation_sites(Module& model);

}  // namespace peel::nn
