// The Layer-Peeled Model's problem definition, objective, optimality certificate and geometry.
#include "experiments/lpm/lpm.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "experiments/collapse/stats.h"
#include "tensor/error.h"
#include "tensor/threads.h"

namespace peel {

namespace {
bool positive_finite(double v) { return std::isfinite(v) && v > 0; }

// Statistics of `value(i, j)` over pairs i < j in [begin, end) whose rows are both kept.
PairStats pair_summary(int64_t begin, int64_t end, const std::vector<bool>& kept,
                       const std::function<double(int64_t, int64_t)>& value) {
  std::vector<bool> selected(kept.size(), false);
  for (int64_t i = begin; i < end; ++i) selected[static_cast<size_t>(i)] = kept[static_cast<size_t>(i)];
  return pair_stats(selected, value);
}
}  // namespace

void LpmProblem::validate() const {
  PEEL_CHECK(classes >= 2 && classes <= 1000, "lpm: the number of classes K must be in [2, 1000], got {}", classes);
  PEEL_CHECK(majority >= 0 && majority <= classes,
             "lpm: the number of majority classes K_A must be in [0, K = {}], got {}", classes, majority);
  PEEL_CHECK(std::isfinite(ratio) && ratio >= 1,
             "lpm: the imbalance ratio R = n_A / n_B must be finite and >= 1, got {}", ratio);
  PEEL_CHECK(positive_finite(e_w), "lpm: E_W must be positive and finite, got {}", e_w);
  PEEL_CHECK(positive_finite(e_h), "lpm: E_H must be positive and finite, got {}", e_h);
  PEEL_CHECK(positive_finite(minority_weight), "lpm: the minority weight w_r must be positive and finite, got {}",
             minority_weight);
}

std::vector<double> LpmProblem::class_weights() const {
  const double scale = reference_scale();
  std::vector<double> pi(static_cast<size_t>(classes));
  for (int64_t k = 0; k < classes; ++k)
    pi[static_cast<size_t>(k)] = (k < majority ? 1.0 : minority_weight / ratio) / scale;
  return pi;
}

double LpmProblem::reference_scale() const {
  return static_cast<double>(majority) + static_cast<double>(minority()) * minority_weight / ratio;
}

double lpm_loss(const MatrixD& logits, const std::vector<double>& weights, MatrixD* gradient) {
  const int64_t k_count = logits.rows;
  PEEL_CHECK(logits.cols == k_count && static_cast<int64_t>(weights.size()) == k_count,
             "lpm_loss: logits ({},{}) and {} class weights do not match", logits.rows, logits.cols, weights.size());
  if (gradient) *gradient = MatrixD::zeros(k_count, k_count);
  double loss = 0;
  for (int64_t k = 0; k < k_count; ++k) {
    const double* z = &logits.values[static_cast<size_t>(k * k_count)];
    const double top = *std::max_element(z, z + k_count);
    double total = 0;
    for (int64_t j = 0; j < k_count; ++j) total += std::exp(z[j] - top);
    const double pi = weights[static_cast<size_t>(k)];
    loss += pi * (top + std::log(total) - z[k]);
    if (gradient) {
      for (int64_t j = 0; j < k_count; ++j) (*gradient)(k, j) = pi * std::exp(z[j] - top) / total;
      (*gradient)(k, k) -= pi;
    }
  }
  return loss;
}

namespace {
MatrixD logits_of(const MatrixD& gram, int64_t k_count) {
  PEEL_CHECK(gram.rows == 2 * k_count && gram.cols == 2 * k_count,
             "lpm: the Gram matrix must be {}x{} (2K x 2K for K = {}), got {}x{}", 2 * k_count, 2 * k_count, k_count,
             gram.rows, gram.cols);
  MatrixD z = MatrixD::zeros(k_count, k_count);
  for (int64_t k = 0; k < k_count; ++k)
    for (int64_t j = 0; j < k_count; ++j) z(k, j) = gram(k, k_count + j);
  return z;
}
}  // namespace

double lpm_objective(const MatrixD& gram, const LpmProblem& problem) {
  return lpm_loss(logits_of(gram, problem.classes), problem.class_weights());
}

double lpm_certified_gap(const MatrixD& gram, const LpmProblem& problem) {
  const SingleThreadScope single_thread;
  const MatrixD z = logits_of(gram, problem.classes);
  MatrixD g;
  lpm_loss(z, problem.class_weights(), &g);
  double inner = 0;
  for (size_t i = 0; i < z.values.size(); ++i) inner += g.values[i] * z.values[i];
  // min over the feasible set of <G, H W^T> is -||H||_F ||W||_F sigma_max(G) at the budgets.
  const double sigma_max = singular_values(g).front();
  return inner + std::sqrt(problem.trace_budget_h() * problem.trace_budget_w()) * sigma_max;
}

SingleThreadScope::SingleThreadScope() : saved_(num_threads()) {
  if (saved_ != 1) set_num_threads(1);
}
SingleThreadScope::~SingleThreadScope() {
  if (saved_ != 1) set_num_threads(saved_);
}

LpmGeometry lpm_geometry(const MatrixD& gram, const LpmProblem& problem) {
  const int64_t k_count = problem.classes, n = 2 * k_count, k_a = problem.majority;
  PEEL_CHECK(gram.rows == n && gram.cols == n, "lpm_geometry: the Gram matrix must be {}x{}, got {}x{}", n, n,
             gram.rows, gram.cols);
  LpmGeometry g;
  g.minority_count = k_count - k_a;
  // Round-off in a Gram entry is ~1e-15 of the largest, so a norm read from X_kk is noise below
  // ~sqrt(1e-15); call ||w_k|| <= 1e-6 sqrt(E_W) vanished.
  const double vanishing = 1e-12 * problem.e_w;
  std::vector<bool> classifier_kept(static_cast<size_t>(k_count)), feature_kept(static_cast<size_t>(k_count));
  for (int64_t k = 0; k < k_count; ++k) {
    const bool kept = gram(k_count + k, k_count + k) > vanishing;
    classifier_kept[static_cast<size_t>(k)] = kept;
    feature_kept[static_cast<size_t>(k)] = gram(k, k) > 1e-12 * problem.e_h;
    if (!kept) ++(k < k_a ? g.majority_vanished : g.minority_vanished);
  }
  auto true_cosine = [&gram](int64_t offset) {
    return [&gram, offset](int64_t i, int64_t j) {
      return gram(offset + i, offset + j) / std::sqrt(gram(offset + i, offset + i) * gram(offset + j, offset + j));
    };
  };
  auto row_cosine = [&gram, n, k_count](int64_t i, int64_t j) {
    double dot = 0, ni = 0, nj = 0;
    for (int64_t c = 0; c < n; ++c) {
      dot += gram(k_count + i, c) * gram(k_count + j, c);
      ni += gram(k_count + i, c) * gram(k_count + i, c);
      nj += gram(k_count + j, c) * gram(k_count + j, c);
    }
    return dot / std::sqrt(ni * nj);
  };
  g.minority_cosine = pair_summary(k_a, k_count, classifier_kept, true_cosine(k_count));
  g.majority_cosine = pair_summary(0, k_a, classifier_kept, true_cosine(k_count));
  g.minority_row_cosine = pair_summary(k_a, k_count, classifier_kept, row_cosine);
  g.majority_row_cosine = pair_summary(0, k_a, classifier_kept, row_cosine);
  g.minority_feature_cosine = pair_summary(k_a, k_count, feature_kept, true_cosine(0));
  g.majority_feature_cosine = pair_summary(0, k_a, feature_kept, true_cosine(0));
  const std::vector<bool> all(static_cast<size_t>(k_count), true);
  g.minority_classifier_distance = pair_summary(k_a, k_count, all, [&gram, k_count](int64_t i, int64_t j) {
                                     const int64_t a = k_count + i, b = k_count + j;
                                     return std::sqrt(std::max(0.0, gram(a, a) + gram(b, b) - 2 * gram(a, b)));
                                   }).mean;
  for (int64_t k = 0; k < k_count; ++k) {
    g.feature_norms.push_back(std::sqrt(std::max(0.0, gram(k, k))));
    g.classifier_norms.push_back(std::sqrt(std::max(0.0, gram(k_count + k, k_count + k))));
    g.mean_feature_norm_sq += gram(k, k) / static_cast<double>(k_count);
    g.mean_classifier_norm_sq += gram(k_count + k, k_count + k) / static_cast<double>(k_count);
  }
  return g;
}

bool LpmGeometry::minority_collapsed(double tolerance, bool row_cosine) const {
  if (minority_count >= 2 && minority_vanished == minority_count) return true;
  return (row_cosine ? minority_row_cosine : minority_cosine).mean > 1 - tolerance;
}

}  // namespace peel
