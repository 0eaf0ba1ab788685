#include "experiments/lpm/fitted.h"

#include <cmath>
#include <limits>
#include <utility>

#include "tensor/error.h"

namespace peel {

MetricColumns NetworkBudgets::to_columns() const {
  return {{"lpm_e_w", e_w}, {"lpm_e_h", e_h}, {"lpm_e_h_centred", e_h_centred}};
}

NetworkBudgets network_budgets(const Tensor& features, std::span<const int64_t> labels, int64_t num_classes,
                               const Tensor& classifier_weight) {
  PEEL_CHECK(features.dim() == 2 && static_cast<int64_t>(labels.size()) == features.size(0),
             "network_budgets: features must be (N, p) with N labels, got {} and {} labels", features.shape(),
             labels.size());
  PEEL_CHECK(classifier_weight.dim() == 2 && classifier_weight.size(0) == num_classes &&
                 classifier_weight.size(1) == features.size(1),
             "network_budgets: classifier weight must be ({}, {}), got {}", num_classes, features.size(1),
             classifier_weight.shape());
  const Tensor h = features.contiguous(), w = classifier_weight.contiguous();
  const int64_t n = h.size(0), p = h.size(1);
  const float* hd = h.data();

  NetworkBudgets b;
  b.feature_dim = p;
  const float* wd = w.data();
  for (int64_t i = 0; i < num_classes * p; ++i) b.e_w += static_cast<double>(wd[i]) * wd[i];
  b.e_w /= static_cast<double>(num_classes);

  std::vector<double> mu(static_cast<size_t>(p), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < p; ++j) mu[static_cast<size_t>(j)] += hd[i * p + j];
  for (double& m : mu) m /= static_cast<double>(n);

  // Per class: sum_i ||h_i||^2 and sum_i ||h_i - mu||^2, then the mean over its samples.
  std::vector<double> raw(static_cast<size_t>(num_classes), 0.0), centred(raw.size(), 0.0);
  std::vector<int64_t> count(raw.size(), 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = labels[static_cast<size_t>(i)];
    PEEL_CHECK(k >= 0 && k < num_classes, "network_budgets: label {} of sample {} is not in [0, {})", k, i,
               num_classes);
    double r = 0, c = 0;
    for (int64_t j = 0; j < p; ++j) {
      const double x = hd[i * p + j], d = x - mu[static_cast<size_t>(j)];
      r += x * x;
      c += d * d;
    }
    raw[static_cast<size_t>(k)] += r;
    centred[static_cast<size_t>(k)] += c;
    ++count[static_cast<size_t>(k)];
  }
  int64_t present = 0;
  for (size_t k = 0; k < raw.size(); ++k)
    if (count[k] > 0) {
      b.e_h += raw[k] / static_cast<double>(count[k]);
      b.e_h_centred += centred[k] / static_cast<double>(count[k]);
      ++present;
    }
  PEEL_CHECK(present > 0, "network_budgets: no samples");
  b.e_h /= static_cast<double>(present);
  b.e_h_centred /= static_cast<double>(present);
  return b;
}

double RunImbalance::ratio() const {
  PEEL_CHECK(static_cast<int64_t>(class_counts.size()) == classes, "RunImbalance: {} class counts for {} classes",
             class_counts.size(), classes);
  if (majority >= classes) return 1.0;
  double major = 0, minor = 0;
  for (int64_t k = 0; k < classes; ++k) (k < majority ? major : minor) += static_cast<double>(class_counts[k]);
  major /= static_cast<double>(majority);
  minor /= static_cast<double>(classes - majority);
  return minor > 0 ? major / minor : std::numeric_limits<double>::infinity();
}

RunImbalance run_imbalance(const TrainConfig& c, std::vector<int64_t> class_counts) {
  RunImbalance run;
  run.classes = static_cast<int64_t>(class_counts.size());
  run.majority = c.majority_classes == 0 ? run.classes : c.majority_classes;
  run.class_counts = std::move(class_counts);
  // Each mitigation multiplies the minority terms of the training loss by its factor: oversampling
  // visits each minority image that many times, reweighting by n_max / n_c and the balanced sampler
  // both make the minority classes count as much as the majority ones (factor R).
  if (run.majority < run.classes) {
    if (c.sampler == Sampler::oversample)
      run.minority_weight = c.oversample_factor > 0 ? static_cast<double>(c.oversample_factor) : std::round(c.ratio);
    else if (c.sampler == Sampler::balanced || c.class_weights == ClassWeights::inverse)
      run.minority_weight = run.ratio();
  }
  return run;
}

LpmProblem fitted_problem(const RunImbalance& run, const NetworkBudgets& budgets, BudgetCentring centring) {
  LpmProblem problem;
  problem.classes = run.classes;
  problem.majority = run.majority >= run.classes ? run.classes : run.majority;
  problem.ratio = run.ratio();
  problem.e_w = budgets.e_w;
  problem.e_h = centring == BudgetCentring::centred ? budgets.e_h_centred : budgets.e_h;
  problem.minority_weight = run.minority_weight;
  problem.validate();
  return problem;
}

}  // namespace peel
