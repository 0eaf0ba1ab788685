#include "experiments/normalization/elimination.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "tensor/error.h"
#include "tensor/random.h"

namespace peel {

namespace {

// Accumulates one site's per-channel statistics over the probe's forwards.
class SiteRecorder : public nn::ActivationProbe {
 public:
  void record(const Tensor& pre, const Tensor& post, const Tensor& floor) override {
    PEEL_CHECK(pre.dim() >= 2 && pre.shape() == post.shape(), "elimination probe: pre {} and post {} do not match",
               to_string(pre.shape()), to_string(post.shape()));
    const int64_t N = pre.size(0), C = pre.size(1), S = N * C > 0 ? pre.numel() / (N * C) : 0;
    if (sum_.empty()) {
      sum_.assign(C, 0);
      sum_sq_.assign(C, 0);
      active_.assign(C, false);
    }
    PEEL_CHECK(static_cast<int64_t>(sum_.size()) == C, "elimination probe: a site changed from {} to {} channels",
               sum_.size(), C);
    floor_.assign(C, 0);
    if (floor.defined()) {
      PEEL_CHECK(floor.numel() == C, "elimination probe: floor has {} values for {} channels", floor.numel(), C);
      const std::vector<float> f = floor.to_vector();
      floor_.assign(f.begin(), f.end());
    }
    // Channels-last memory as it is (element (n, c, s) at (n*S + s)*C + c), anything else row-major.
    const bool rows = pre.is_channels_last() && post.is_channels_last();
    const Tensor a = rows ? pre : pre.contiguous(), b = rows ? post : post.contiguous();
    const float* pd = a.data();
    const float* qd = b.data();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) {
        double s1 = 0, s2 = 0;
        bool on = false;
        for (int64_t s = 0; s < S; ++s) {
          const int64_t i = rows ? (n * S + s) * C + c : (n * C + c) * S + s;
          s1 += pd[i];
          s2 += static_cast<double>(pd[i]) * pd[i];
          on = on || qd[i] > floor_[c];
        }
        sum_[c] += s1;
        sum_sq_[c] += s2;
        if (on) active_[c] = true;
      }
    count_ += N * S;
  }

  SiteElimination result(const std::string& site) const {
    SiteElimination r;
    r.site = site;
    r.channels = static_cast<int64_t>(sum_.size());
    for (int64_t c = 0; c < r.channels; ++c) {
      const double mean = sum_[c] / count_;
      const double sd = std::sqrt(std::max(0.0, sum_sq_[c] / count_ - mean * mean));
      r.eliminated.push_back(!active_[c]);
      r.pre_mean.push_back(mean);
      r.pre_std.push_back(sd);
      r.pre_z.push_back((mean - floor_[c]) / sd);
    }
    return r;
  }

 private:
  std::vector<double> sum_, sum_sq_, floor_;
  std::vector<bool> active_;
  int64_t count_ = 0;
};

// Attaches one recorder per site for its lifetime; detaches them however the forward ends.
class AttachedProbes {
 public:
  explicit AttachedProbes(nn::Network& model) : sites_(nn::activation_sites(model)) {
    for (auto& [name, site] : sites_) {
      recorders_.push_back(std::make_unique<SiteRecorder>());
      site->probe = recorders_.back().get();
    }
  }
  ~AttachedProbes() {
    for (auto& [name, site] : sites_) site->probe = nullptr;
  }
  AttachedProbes(const AttachedProbes&) = delete;
  AttachedProbes& operator=(const AttachedProbes&) = delete;

  std::vector<SiteElimination> results() const {
    std::vector<SiteElimination> out;
    for (size_t i = 0; i < sites_.size(); ++i) out.push_back(recorders_[i]->result(sites_[i].first));
    return out;
  }

 private:
  std::vector<std::pair<std::string, nn::ActivationSite*>> sites_;
  std::vector<std::unique_ptr<SiteRecorder>> recorders_;
};

std::string quantile_name(double q) {
  const double percent = q * 100;
  if (std::abs(percent - std::round(percent)) < 1e-9) return fmt::format("q{:02d}", std::lround(percent));
  std::string s = fmt::format("q{}", percent);
  std::replace(s.begin(), s.end(), '.', 'p');
  return s;
}

}  // namespace

std::vector<int64_t> choose_probe(int64_t dataset_size, int64_t count, uint64_t seed) {
  PEEL_CHECK(dataset_size >= 0 && count > 0, "choose_probe: needs a positive count, got {} of {} images", count,
             dataset_size);
  Generator gen(seed);
  std::vector<int64_t> order = gen.permutation(dataset_size);
  order.resize(static_cast<size_t>(std::min(count, dataset_size)));
  std::sort(order.begin(), order.end());
  return order;
}

Tensor probe_images(const data::Dataset& train, int64_t count, uint64_t seed) {
  return data::subset(train, choose_probe(train.size(), count, seed)).images;
}

const char* to_string(ProbeMode mode) { return mode == ProbeMode::eval ? "eval" : "train"; }

double SiteElimination::eliminated_fraction() const {
  if (channels == 0) return std::nan("");
  return static_cast<double>(std::count(eliminated.begin(), eliminated.end(), true)) / static_cast<double>(channels);
}

double quantile(std::vector<double> values, double q) {
  PEEL_CHECK(q >= 0 && q <= 1, "quantile: q must be in [0, 1], got {}", q);
  if (values.empty() || std::any_of(values.begin(), values.end(), [](double v) { return std::isnan(v); }))
    return std::nan("");
  std::sort(values.begin(), values.end());
  const double at = q * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(at)), hi = std::min(lo + 1, values.size() - 1);
  const double frac = at - static_cast<double>(lo);
  if (frac == 0) return values[lo];  // exact order statistic (also when it is infinite)
  return values[lo] + frac * (values[hi] - values[lo]);
}

MetricColumns EliminationMetrics::to_columns(const std::string& prefix) const {
  MetricColumns cols;
  int64_t dead = 0, total = 0;
  for (const SiteElimination& s : sites) {
    dead += std::count(s.eliminated.begin(), s.eliminated.end(), true);
    total += s.channels;
  }
  cols.emplace_back(prefix + "eliminated", total ? static_cast<double>(dead) / static_cast<double>(total) : NAN);
  for (const SiteElimination& s : sites) {
    const std::string base = prefix + s.site + "_";
    cols.emplace_back(base + "eliminated", s.eliminated_fraction());
    for (auto [name, values] : {std::pair{"premean_", &s.pre_mean}, {"prestd_", &s.pre_std}, {"prez_", &s.pre_z}})
      for (double q : quantiles) cols.emplace_back(base + name + quantile_name(q), quantile(*values, q));
  }
  return cols;
}

EliminationMetrics measure_elimination(nn::Network& model, const Tensor& probe, const EliminationOptions& options) {
  PEEL_CHECK(probe.defined() && probe.dim() == 4 && probe.size(0) > 0,
             "measure_elimination: the probe must be a non-empty (N, C, H, W) batch, got {}",
             probe.defined() ? to_string(probe.shape()) : "undefined");
  PEEL_CHECK(options.batch_size > 0, "measure_elimination: batch size must be positive, got {}", options.batch_size);
  const bool was_training = model.is_training();
  ag::NoGradGuard no_grad;
  EliminationMetrics m;
  m.probe_images = probe.size(0);
  m.mode = options.mode;
  m.quantiles = options.quantiles;
  std::vector<Tensor> saved_buffers;
  if (options.mode == ProbeMode::train)
    for (auto& [name, t] : model.named_buffers()) saved_buffers.push_back(t.clone());
  {
    AttachedProbes probes(model);
    model.train(options.mode == ProbeMode::train);
    const int64_t step = options.mode == ProbeMode::train ? probe.size(0) : options.batch_size;
    for (int64_t i = 0; i < probe.size(0); i += step)
      model.forward(ag::Variable(probe.slice(0, i, std::min(probe.size(0), i + step))));
    m.sites = probes.results();
  }
  if (options.mode == ProbeMode::train) {
    size_t i = 0;
    for (auto& [name, t] : model.named_buffers()) {
      Tensor dst = t;
      dst.copy_(saved_buffers[i++]);
    }
  }
  model.train(was_training);
  return m;
}

}  // namespace peel
