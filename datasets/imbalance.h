// Step imbalance, as in Fang, He, Long, Su (PNAS 2021) and their code (HornHehhf/LPM, data.py and
// train_models.py): K_A majority classes keep n_A training images each, the K_B = K - K_A minority
// classes keep n_B = floor(n_A / R) each (the authors' `n_A // R`; R = infinity gives 0). The test
// set is not touched.
//
// Which classes: by default the first K_A labels are the majority, as in the authors' code;
// with random_majority, a seeded random choice of K_A classes instead.
// Which images: a seeded permutation of the whole training set is scanned once and each class keeps
// the first images met until it has its quota, which is how the authors' shuffled pass (seed 666)
// picks them. The kept indices are returned in increasing order, so the subset keeps the data
// set's order. Asking for more images than a class has is an error.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

namespace peel::data {

struct StepImbalanceOptions {
  int64_t majority_classes = 5;  // K_A
  int64_t n_majority = 5000;     // n_A: images kept per majority class
  double ratio = 1.0;            // R >= 1; std::numeric_limits<double>::infinity() drops the minority
  uint64_t seed = 666;
  bool random_majority = false;  // false: classes 0..K_A-1 are the majority
};

struct StepImbalance {
  std::vector<int64_t> indices;           // kept training indices, increasing
  std::vector<int64_t> majority_classes;  // increasing
  std::vector<int64_t> minority_classes;  // increasing
  std::vector<int64_t> class_counts;      // images kept per class
  int64_t n_majority = 0, n_minority = 0;
};

// floor(n_majority / ratio), computed exactly for integral ratios; 0 for an infinite ratio.
int64_t minority_count(int64_t n_majority, double ratio);

StepImbalance step_imbalance(const std::vector<int64_t>& labels, int64_t num_classes,
                             const StepImbalanceOptions& options);

}  // namespace peel::data
