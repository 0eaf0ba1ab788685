#include "optim/optimizer.h"

#include <algorithm>
#include <cmath>

#include "tensor/error.h"
#include "tensor/threads.h"

namespace peel::optim {

namespace {

// One parameter's share of an update step, as raw pointers, gathered before the parallel region.
struct SgdSlice {
  float* w;
  const float* g;
  float* buf;  // null without momentum
  int64_t n;
  float lr, wd;
  bool first;  // the buffer is new: it starts as d
};
struct AdamSlice {
  float* w;
  const float* g;
  float* m;
  float* v;
  int64_t n;
  float lr, wd;
};

// Calls update(slice, begin, end) over the elements of every slice in one parallel region, split by
// element count across all parameters. Before, each parameter was a serial loop: at batch 2 the
// step's SGD was 7% of a one-thread step and, run serially, left the other thread idle long enough
// to fall asleep. Every update is elementwise, so the split changes no bit.
template <class Slice, class Update>
void update_in_parallel(const std::vector<Slice>& slices, Update&& update) {
  std::vector<int64_t> offset(slices.size() + 1, 0);
  for (size_t s = 0; s < slices.size(); ++s) offset[s + 1] = offset[s] + slices[s].n;
  constexpr int64_t kGrain = 16384;  // elements; below it a thread's share is not worth a wake-up
  parallel_for(offset.back(), kGrain, [&](int64_t begin, int64_t end) {
    auto s = static_cast<size_t>(std::upper_bound(offset.begin(), offset.end(), begin) - offset.begin() - 1);
    for (; s < slices.size() && offset[s] < end; ++s) {
      const int64_t lo = std::max(begin, offset[s]) - offset[s], hi = std::min(end, offset[s + 1]) - offset[s];
      if (lo < hi) update(slices[s], lo, hi);
    }
  });
}

}  // namespace

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
  const bool nesterov = options_.nesterov;
  std::vector<SgdSlice> slices;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& group = groups_[gi];
    for (size_t pi = 0; pi < group.params.size(); ++pi) {
      Variable p = group.params[pi];
      if (!p.grad().defined()) continue;
      Tensor& param = p.value();
      const Tensor& grad = p.grad();
      PEEL_CHECK(param.is_contiguous() && grad.is_contiguous(), "SGD: parameter '{}' must be contiguous", p.name());
      Tensor& buffer = momentum_[gi][pi];
      const bool first = !buffer.defined();
      if (momentum != 0 && first) buffer = Tensor::empty(param.shape());
      slices.push_back({param.data(), grad.data(), momentum != 0 ? buffer.data() : nullptr, param.numel(),
                        lr_ * group.lr_scale, group.weight_decay, first});
    }
  }
  update_in_parallel(slices, [&](const SgdSlice& s, int64_t begin, int64_t end) {
    float* __restrict w = s.w;
    const float* __restrict g = s.g;
    float* __restrict buf = s.buf;
    const float lr = s.lr, wd = s.wd;
    // Three branch-free loops (no momentum; the first step, whose buffer starts as d; the rest), so
    // each vectorises.
    if (buf == nullptr) {
      for (int64_t i = begin; i < end; ++i) w[i] -= lr * (g[i] + wd * w[i]);
    } else if (s.first) {
      for (int64_t i = begin; i < end; ++i) {
        const float d = g[i] + wd * w[i];
        buf[i] = d;
        w[i] -= lr * (nesterov ? d + momentum * d : d);
      }
    } else {
      for (int64_t i = begin; i < end; ++i) {
        const float d = g[i] + wd * w[i];
        const float b = momentum * buf[i] + (1.f - dampening) * d;
        buf[i] = b;
        w[i] -= lr * (nesterov ? d + momentum * b : b);
      }
    }
  });
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
  const float b1 = options_.beta1, b2 = options_.beta2, eps = options_.eps;
  const bool decoupled = options_.decoupled_weight_decay;
  const float correction1 = 1.f - static_cast<float>(std::pow(b1, steps_));
  const float correction2_sqrt = std::sqrt(1.f - static_cast<float>(std::pow(b2, steps_)));
  std::vector<AdamSlice> slices;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& group = groups_[gi];
    for (size_t pi = 0; pi < group.params.size(); ++pi) {
      Variable p = group.params[pi];
      if (!p.grad().defined()) continue;
      if (!m_[gi][pi].defined()) {
        m_[gi][pi] = Tensor::zeros(p.shape());
        v_[gi][pi] = Tensor::zeros(p.shape());
      }
      slices.push_back({p.value().data(), p.grad().data(), m_[gi][pi].data(), v_[gi][pi].data(), p.numel(),
                        lr_ * group.lr_scale, group.weight_decay});
    }
  }
  update_in_parallel(slices, [&](const AdamSlice& s, int64_t begin, int64_t end) {
    float* __restrict w = s.w;
    const float* __restrict g = s.g;
    float* __restrict m = s.m;
    float* __restrict v = s.v;
    const float lr = s.lr, wd = s.wd;
    // PyTorch's order: step_size = lr / bc1; denom = sqrt(v) / sqrt(bc2) + eps.
    const float step_size = lr / correction1;
    for (int64_t i = begin; i < end; ++i) {
      float grad = g[i];
      if (decoupled)
        w[i] *= 1.f - lr * wd;
      else
        grad += wd * w[i];
      m[i] = b1 * m[i] + (1.f - b1) * grad;
      v[i] = b2 * v[i] + (1.f - b2) * grad * grad;
      const float denom = std::sqrt(v[i]) / correction2_sqrt + eps;
      w[i] -= step_size * m[i] / denom;
    }
  });
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
