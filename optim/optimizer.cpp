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

namespace {

// The parameters of every group, in order: the order state() lists buffers in.
std::vector<Variable> all_parameters(const std::vector<ParamGroup>& groups) {
  std::vector<Variable> out;
  for (const auto& g : groups) out.insert(out.end(), g.params.begin(), g.params.end());
  return out;
}

// A saved buffer is empty (shape [0]: not created yet) or has its parameter's shape. Returns what is
// wrong, or "".
std::string buffer_problem(const char* optimizer, const char* buffer, size_t index, const Tensor& b,
                           const Variable& param, size_t param_index) {
  if (b.numel() == 0 && b.dim() == 1) return "";
  if (b.shape() == param.shape()) return "";
  return fmt::format("{}::load_state: tensor {} ({} of parameter {} '{}') has shape {}, the parameter has shape {}",
                     optimizer, index, buffer, param_index, param.name(), to_string(b.shape()),
                     to_string(param.shape()));
}

}  // namespace

void Sgd::load_state(const std::vector<Tensor>& state) {
  const std::vector<Variable> params = all_parameters(groups_);
  PEEL_CHECK(state.size() == params.size(),
             "SGD::load_state: {} tensors given, {} expected (one momentum buffer per parameter); the state belongs "
             "to another model or optimizer",
             state.size(), params.size());
  for (size_t k = 0; k < params.size(); ++k) {
    const std::string problem = buffer_problem("SGD", "the momentum buffer", k, state[k], params[k], k);
    PEEL_CHECK(problem.empty(), "{}", problem);
  }
  // Checked: now change.
  size_t k = 0;
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t pi = 0; pi < groups_[gi].params.size(); ++pi, ++k)
      momentum_[gi][pi] = state[k].numel() ? state[k].clone() : Tensor();  // empty: no buffer yet
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
  const std::vector<Variable> params = all_parameters(groups_);
  PEEL_CHECK(state.size() == 1 + 2 * params.size(),
             "Adam::load_state: {} tensors given, {} expected (the step count, then m and v for each of the {} "
             "parameters); the state belongs to another model or optimizer",
             state.size(), 1 + 2 * params.size(), params.size());
  PEEL_CHECK(state[0].numel() == 1, "Adam::load_state: tensor 0 (the step count) has shape {}, expected one value",
             to_string(state[0].shape()));
  const float steps = state[0].item();
  PEEL_CHECK(steps >= 0 && steps == std::floor(steps) && steps < 1e15f,
             "Adam::load_state: tensor 0 (the step count) is {}, expected a whole number >= 0", steps);
  for (size_t p = 0; p < params.size(); ++p) {
    const Tensor &m = state[1 + 2 * p], &v = state[2 + 2 * p];
    for (const std::string& problem : {buffer_problem("Adam", "m", 1 + 2 * p, m, params[p], p),
                                       buffer_problem("Adam", "v", 2 + 2 * p, v, params[p], p)})
      PEEL_CHECK(problem.empty(), "{}", problem);
    PEEL_CHECK((m.numel() == 0) == (v.numel() == 0) || params[p].numel() == 0,
               "Adam::load_state: parameter {} '{}' has {} m but {} v; both or neither exist", p, params[p].name(),
               m.numel() ? "an" : "no", v.numel() ? "a" : "no");
  }
  // Checked: now change.
  steps_ = static_cast<int64_t>(steps);
  size_t k = 1;
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t pi = 0; pi < groups_[gi].params.size(); ++pi, k += 2) {
      m_[gi][pi] = state[k].numel() ? state[k].clone() : Tensor();
      v_[gi][pi] = state[k + 1].numel() ? state[k + 1].clone() : Tensor();
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
