#include "optim/optimizer.h"

#include <cmath>

#include "tensor/error.h"

namespace peel::optim {

void Optimizer::zero_grad() {
  for (auto& group : groups_)
    for (auto& p : group.params) p.zero_grad();
}

Sgd::Sgd(std::vector<ParamGroup> groups, const SgdOptions& options)
    : Optimizer(std::move(groups), options.lr), options_(options) {
  PEEL_CHECK(options.lr >= 0 && options.momentum >= 0, "SGD: lr {} and momentum {} must be non-negative", options.lr,
             options.momentum);
  PEEL_CHECK(!options.nesterov || (options.momentum > 0 && options.dampening == 0),
             "SGD: Nesterov momentum needs momentum > 0 and zero dampening");
  for (const auto& g : groups_) momentum_.emplace_back(g.params.size());
}

void Sgd::step() {
  const float momentum = options_.momentum, dampening = options_.dampening;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& group = groups_[gi];
    const float lr = lr_ * group.lr_scale, wd = group.weight_decay;
    for (size_t pi = 0; pi < group.params.size(); ++pi) {
      Variable p = group.params[pi];
      if (!p.grad().defined()) continue;
      Tensor& param = p.value();
      const Tensor& grad = p.grad();
      PEEL_CHECK(param.is_contiguous() && grad.is_contiguous(), "SGD: parameter '{}' must be contiguous", p.name());
      float* w = param.data();
      const float* g = grad.data();
      const int64_t n = param.numel();
      Tensor& buffer = momentum_[gi][pi];
      const bool first = !buffer.defined();
      if (momentum != 0 && first) buffer = Tensor::empty(param.shape());
      float* buf = momentum != 0 ? buffer.data() : nullptr;
      // One fused pass per parameter (the loop vectorises).
      for (int64_t i = 0; i < n; ++i) {
        float d = g[i] + wd * w[i];
        if (momentum != 0) {
          buf[i] = first ? d : momentum * buf[i] + (1.f - dampening) * d;
          d = options_.nesterov ? d + momentum * buf[i] : buf[i];
        }
        w[i] -= lr * d;
      }
    }
  }
}

std::vector<Tensor> Sgd::state() const {
  std::vector<Tensor> out;
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t pi = 0; pi < groups_[gi].params.size(); ++pi) {
      const Tensor& b = momentum_[gi][pi];
      out.push_back(b.defined() ? b : Tensor::zeros({0}));  // empty = no buffer yet
    }
  return out;
}

void Sgd::load_state(const std::vector<Tensor>& state) {
  size_t k = 0;
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t pi = 0; pi < groups_[gi].params.size(); ++pi, ++k) {
      PEEL_CHECK(k < state.size(), "SGD::load_state: {} buffers given, more expected", state.size());
      const Tensor& b = state[k];
      if (b.numel() == 0 && groups_[gi].params[pi].numel() != 0) {
        momentum_[gi][pi] = Tensor();
        continue;
      }
      PEEL_CHECK(b.shape() == groups_[gi].params[pi].shape(), "SGD::load_state: buffer {} has shape {}, parameter {}",
                 k, to_string(b.shape()), to_string(groups_[gi].params[pi].shape()));
      momentum_[gi][pi] = b.clone();
    }
  PEEL_CHECK(k == state.size(), "SGD::load_state: {} buffers given, {} expected", state.size(), k);
}

Adam::Adam(std::vector<ParamGroup> groups, const AdamOptions& options)
    : Optimizer(std::move(groups), options.lr), options_(options) {
  for (const auto& g : groups_) {
    m_.emplace_back(g.params.size());
    v_.emplace_back(g.params.size());
  }
}

void Adam::step() {
  ++steps_;
  const float b1 = options_.beta1, b2 = options_.beta2;
  const float correction1 = 1.f - static_cast<float>(std::pow(b1, steps_));
  const float correction2_sqrt = std::sqrt(1.f - static_cast<float>(std::pow(b2, steps_)));
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& group = groups_[gi];
    const float lr = lr_ * group.lr_scale, wd = group.weight_decay;
    for (size_t pi = 0; pi < group.params.size(); ++pi) {
      Variable p = group.params[pi];
      if (!p.grad().defined()) continue;
      float* w = p.value().data();
      const float* g = p.grad().data();
      const int64_t n = p.numel();
      if (!m_[gi][pi].defined()) {
        m_[gi][pi] = Tensor::zeros(p.shape());
        v_[gi][pi] = Tensor::zeros(p.shape());
      }
      float* m = m_[gi][pi].data();
      float* v = v_[gi][pi].data();
      // PyTorch's order: step_size = lr / bc1; denom = sqrt(v) / sqrt(bc2) + eps.
      const float step_size = lr / correction1;
      for (int64_t i = 0; i < n; ++i) {
        float grad = g[i];
        if (options_.decoupled_weight_decay)
          w[i] *= 1.f - lr * wd;
        else
          grad += wd * w[i];
        m[i] = b1 * m[i] + (1.f - b1) * grad;
        v[i] = b2 * v[i] + (1.f - b2) * grad * grad;
        const float denom = std::sqrt(v[i]) / correction2_sqrt + options_.eps;
        w[i] -= step_size * m[i] / denom;
      }
    }
  }
}

std::vector<Tensor> Adam::state() const {
  std::vector<Tensor> out{Tensor::scalar(static_cast<float>(steps_))};
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t pi = 0; pi < groups_[gi].params.size(); ++pi) {
      out.push_back(m_[gi][pi].defined() ? m_[gi][pi] : Tensor::zeros({0}));
      out.push_back(v_[gi][pi].defined() ? v_[gi][pi] : Tensor::zeros({0}));
    }
  return out;
}

void Adam::load_state(const std::vector<Tensor>& state) {
  PEEL_CHECK(!state.empty(), "Adam::load_state: empty state");
  steps_ = static_cast<int64_t>(state[0].item());
  size_t k = 1;
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t pi = 0; pi < groups_[gi].params.size(); ++pi) {
      PEEL_CHECK(k + 2 <= state.size(), "Adam::load_state: too few tensors ({})", state.size());
      m_[gi][pi] = state[k].numel() ? state[k].clone() : Tensor();
      v_[gi][pi] = state[k + 1].numel() ? state[k + 1].clone() : Tensor();
      k += 2;
    }
}

std::vector<ParamGroup> split_weight_decay(const std::vector<std::pair<std::string, Variable>>& named,
                                           float weight_decay, bool decay_norms_and_biases) {
  ParamGroup decayed{{}, weight_decay, 1.f}, plain{{}, 0.f, 1.f};
  for (const auto& [name, p] : named) (decay_norms_and_biases || p.dim() > 1 ? decayed : plain).params.push_back(p);
  std::vector<ParamGroup> groups{decayed};
  if (!plain.params.empty()) groups.push_back(plain);
  return groups;
}

}  // namespace peel::optim
