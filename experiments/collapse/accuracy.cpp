// Confusion matrix and the overall / majority / minority / per-class accuracies (collapse.h).
#include <limits>

#include "experiments/collapse/collapse.h"
#include "experiments/collapse/stats.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace peel {

ConfusionMatrix confusion_matrix(std::span<const int64_t> labels, std::span<const int64_t> predictions,
                                 int64_t num_classes) {
  PEEL_CHECK(labels.size() == predictions.size(), "confusion_matrix: {} labels but {} predictions", labels.size(),
             predictions.size());
  PEEL_CHECK(num_classes >= 1, "confusion_matrix: num_classes must be positive, got {}", num_classes);
  ConfusionMatrix cm{num_classes, std::vector<int64_t>(static_cast<size_t>(num_classes * num_classes), 0)};
  for (size_t i = 0; i < labels.size(); ++i) {
    const int64_t t = labels[i], p = predictions[i];
    PEEL_CHECK(t >= 0 && t < num_classes, "confusion_matrix: label {} of sample {} is outside [0, {})", t, i,
               num_classes);
    PEEL_CHECK(p >= 0 && p < num_classes, "confusion_matrix: prediction {} of sample {} is outside [0, {})", p, i,
               num_classes);
    ++cm.counts[static_cast<size_t>(t * num_classes + p)];
  }
  return cm;
}

Accuracy accuracy(const ConfusionMatrix& confusion, std::span<const int64_t> minority_classes) {
  const int64_t k = confusion.num_classes;
  const std::vector<bool> minority = minority_mask(minority_classes, k, "accuracy");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  // [0] majority, [1] minority
  int64_t correct[2] = {0, 0}, total[2] = {0, 0};
  Accuracy acc;
  for (int64_t c = 0; c < k; ++c) {
    int64_t row = 0;
    for (int64_t p = 0; p < k; ++p) row += confusion(c, p);
    const int group = minority[static_cast<size_t>(c)] ? 1 : 0;
    correct[group] += confusion(c, c);
    total[group] += row;
    acc.per_class.push_back(row > 0 ? static_cast<double>(confusion(c, c)) / static_cast<double>(row) : nan);
  }
  auto ratio = [&](int64_t num, int64_t den) {
    return den > 0 ? static_cast<double>(num) / static_cast<double>(den) : nan;
  };
  acc.overall = ratio(correct[0] + correct[1], total[0] + total[1]);
  acc.majority = ratio(correct[0], total[0]);
  acc.minority = ratio(correct[1], total[1]);
  return acc;
}

std::vector<int64_t> predictions_from_logits(const Tensor& logits) {
  PEEL_CHECK(logits.defined() && logits.dim() == 2, "predictions_from_logits: logits must be (N, K), got {}",
             logits.defined() ? to_string(logits.shape()) : std::string("undefined"));
  return argmax(logits, 1).values;
}

Accuracy accuracy_from_logits(const Tensor& logits, std::span<const int64_t> labels,
                              std::span<const int64_t> minority_classes) {
  const std::vector<int64_t> predicted = predictions_from_logits(logits);
  return accuracy(confusion_matrix(labels, predicted, logits.size(1)), minority_classes);
}

MetricColumns Accuracy::to_columns(const std::string& prefix) const {
  MetricColumns cols{{prefix + "accuracy", overall},
                     {prefix + "accuracy_majority", majority},
                     {prefix + "accuracy_minority", minority}};
  for (size_t c = 0; c < per_class.size(); ++c)
    cols.emplace_back(prefix + "accuracy_class_" + std::to_string(c), per_class[c]);
  return cols;
}

}  // namespace peel
