// Optimizers, applied exactly as PyTorch 1.13 applies them (torch.optim.SGD, Adam, AdamW).
//
// Parameters come in groups, each with its own learning rate and weight decay, so that e.g.
// norm-layer parameters and biases can go without weight decay. The schedule sets `lr` on the
// optimizer; each group's effective rate is lr * group.lr_scale.
#pragma once

#include <string>
#include <vector>

#include "autograd/variable.h"

namespace peel::optim {

using ag::Variable;

struct ParamGroup {
  std::vector<Variable> params;
  float weight_decay = 0.f;
  float lr_scale = 1.f;
};

class Optimizer {
 public:
  explicit Optimizer(std::vector<ParamGroup> groups, float lr) : groups_(std::move(groups)), lr_(lr) {}
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  void zero_grad();
  void set_lr(float lr) { lr_ = lr; }
  float lr() const { return lr_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }
  // Optimizer state (momentum buffers etc.) for checkpoints, in a fixed order.
  virtual std::vector<Tensor> state() const = 0;
  virtual void load_state(const std::vector<Tensor>& state) = 0;

 protected:
  std::vector<ParamGroup> groups_;
  float lr_;
};

struct SgdOptions {
  float lr = 0.1f;
  float momentum = 0.f;
  float dampening = 0.f;
  bool nesterov = false;
};

// d = g + wd * p;  buf = momentum * buf + (1 - dampening) * d (buf = d on the first step);
// d = nesterov ? d + momentum * buf : buf;  p -= lr * d.
class Sgd : public Optimizer {
 public:
  Sgd(std::vector<ParamGroup> groups, const SgdOptions& options);
  void step() override;
  std::vector<Tensor> state() const override;
  void load_state(const std::vector<Tensor>& state) override;

 private:
  SgdOptions options_;
  std::vector<std::vector<Tensor>> momentum_;  // per group, per parameter; undefined until used
};

struct AdamOptions {
  float lr = 1e-3f;
  float beta1 = 0.9f, beta2 = 0.999f;
  float eps = 1e-8f;
  bool decoupled_weight_decay = false;  // AdamW
};

// Adam: g += wd * p; AdamW: p *= 1 - lr * wd. Then m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
class Adam : public Optimizer {
 public:
  Adam(std::vector<ParamGroup> groups, const AdamOptions& options);
  void step() override;
  std::vector<Tensor> state() const override;
  void load_state(const std::vector<Tensor>& state) override;

 private:
  AdamOptions options_;
  int64_t steps_ = 0;
  std::vector<std::vector<Tensor>> m_, v_;
};

// One group with `weight_decay` for weights, and one without for biases and norm parameters
// (every parameter of rank 1), when `decay_norms_and_biases` is false.
std::vector<ParamGroup> split_weight_decay(const std::vector<std::pair<std::string, Variable>>& named,
                                           float weight_decay, bool decay_norms_and_biases);

}  // namespace peel::optim
