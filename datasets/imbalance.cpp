#include "datasets/imbalance.h"

#include <algorithm>
#include <cmath>

#include "tensor/error.h"
#include "tensor/random.h"

namespace peel::data {

int64_t minority_count(int64_t n_majority, double ratio) {
  PEEL_CHECK(ratio >= 1.0, "step imbalance: the ratio R must be >= 1 (or infinite), got {}", ratio);
  if (std::isinf(ratio)) return 0;
  if (ratio == std::floor(ratio) && ratio < 9.0e15) return n_majority / static_cast<int64_t>(ratio);
  return static_cast<int64_t>(std::floor(static_cast<double>(n_majority) / ratio));
}

StepImbalance step_imbalance(const std::vector<int64_t>& labels, int64_t num_classes, const StepImbalanceOptions& o) {
  PEEL_CHECK(o.majority_classes >= 1 && o.majority_classes <= num_classes,
             "step imbalance: K_A = {} majority classes of {}", o.majority_classes, num_classes);
  PEEL_CHECK(o.n_majority >= 0, "step imbalance: n_A = {} must be >= 0", o.n_majority);
  StepImbalance out;
  out.n_majority = o.n_majority;
  out.n_minority = minority_count(o.n_majority, o.ratio);

  Generator gen(o.seed);
  std::vector<int64_t> classes(static_cast<size_t>(num_classes));
  for (int64_t k = 0; k < num_classes; ++k) classes[k] = k;
  if (o.random_majority) {
    const std::vector<int64_t> perm = gen.permutation(num_classes);
    for (int64_t k = 0; k < num_classes; ++k) classes[k] = perm[k];
  }
  std::vector<int64_t> quota(static_cast<size_t>(num_classes), out.n_minority);
  for (int64_t i = 0; i < num_classes; ++i) {
    const bool major = i < o.majority_classes;
    (major ? out.majority_classes : out.minority_classes).push_back(classes[i]);
    if (major) quota[classes[i]] = out.n_majority;
  }
  std::sort(out.majority_classes.begin(), out.majority_classes.end());
  std::sort(out.minority_classes.begin(), out.minority_classes.end());

  std::vector<int64_t> have(static_cast<size_t>(num_classes), 0);
  for (int64_t y : labels) {
    PEEL_CHECK(y >= 0 && y < num_classes, "step imbalance: label {} outside [0, {})", y, num_classes);
    ++have[y];
  }
  for (int64_t k = 0; k < num_classes; ++k)
    PEEL_CHECK(have[k] >= quota[k], "step imbalance: class {} has {} images, {} requested (K_A = {}, n_A = {}, R = {})",
               k, have[k], quota[k], o.majority_classes, o.n_majority, o.ratio);

  out.class_counts.assign(static_cast<size_t>(num_classes), 0);
  for (int64_t i : gen.permutation(static_cast<int64_t>(labels.size()))) {
    const int64_t y = labels[i];
    if (out.class_counts[y] < quota[y]) {
      ++out.class_counts[y];
      out.indices.push_back(i);
    }
  }
  std::sort(out.indices.begin(), out.indices.end());
  return out;
}

}  // namespace peel::data
