// The Layer-Peeled Model fitted to a trained network: the model solved with the network's own
// budgets and class weights instead of the authors' constants (E_H = 5, E_W = 1).
//
// The LPM's constraints are on the last layer's two blocks (Fang et al., eq. (3)):
//   (1/K) sum_k ||w_k||^2 <= E_W   and   (1/K) sum_k (1/n_k) sum_i ||h_{k,i}||^2 <= E_H,
// so the network's budgets are those two averages, read off its classifier rows and its training
// features. The model has no bias; the network's classifier does, and a bias absorbs any shift of
// the features common to all classes (W(h - mu) + (b + W mu)). So E_H is read two ways: as written
// (uncentred) and about the features' global mean (centred), and both fits are reported.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "experiments/collapse/collapse.h"
#include "experiments/lpm/lpm.h"
#include "experiments/run/config.h"
#include "tensor/tensor.h"

namespace peel {

struct NetworkBudgets {
  double e_w = 0;           // (1/K) sum_k ||w_k||^2 over the classifier rows
  double e_h = 0;           // (1/K) sum_k (1/n_k) sum_i ||h_{k,i}||^2 (classes present)
  double e_h_centred = 0;   // the same with h - mu, mu the mean of all training features
  int64_t feature_dim = 0;  // p
  // "lpm_e_w", "lpm_e_h", "lpm_e_h_centred": the columns of metrics.csv.
  MetricColumns to_columns() const;
};
// features (N, p) of the training set, its labels, the classifier weight (K, p).
NetworkBudgets network_budgets(const Tensor& features, std::span<const int64_t> labels, int64_t num_classes,
                               const Tensor& classifier_weight);

// What the LPM needs from a run besides the budgets: its classes, which are minority, their counts
// and the minority loss weight that the mitigation gives (oversampling factor, or R for loss
// reweighting and for the balanced sampler, else 1).
struct RunImbalance {
  int64_t classes = 10;
  int64_t majority = 10;  // classes 0..majority-1 are the majority
  std::vector<int64_t> class_counts;
  double minority_weight = 1;
  // R from the counts: the mean majority count over the mean minority count (1 when balanced,
  // infinite when the minority classes have no images: the model is then not defined).
  double ratio() const;
};

// The run's imbalance as config.json states it, with the class counts its data turned out to have.
RunImbalance run_imbalance(const TrainConfig& config, std::vector<int64_t> class_counts);

enum class BudgetCentring { uncentred, centred };
// The LPM with the network's budgets (E_H as chosen) and the run's classes, R and minority weight;
// throws when R is infinite.
LpmProblem fitted_problem(const RunImbalance& run, const NetworkBudgets& budgets, BudgetCentring centring);

}  // namespace peel
