// Losses: forward, then backward, side by side.
#include <cmath>

#include "nn/functional.h"
#include "tensor/error.h"

namespace peel::nn {

using ag::Grads;
using ag::make_result;

namespace {
void check_labels(const Variable& logits, const std::vector<int64_t>& labels, const char* op) {
  PEEL_CHECK(logits.dim() == 2, "{}: logits must be (N, K), got shape {}", op, to_string(logits.shape()));
  PEEL_CHECK(static_cast<int64_t>(labels.size()) == logits.size(0), "{}: {} labels for logits of shape {}", op,
             labels.size(), to_string(logits.shape()));
  const int64_t k = logits.size(1);
  for (size_t i = 0; i < labels.size(); ++i)
    PEEL_CHECK(labels[i] >= 0 && labels[i] < k, "{}: label {} at position {} is outside [0, {})", op, labels[i], i, k);
}
}  // namespace

Variable cross_entropy(const Variable& logits, const std::vector<int64_t>& labels,
                       const std::vector<float>& class_weights) {
  check_labels(logits, labels, "cross_entropy");
  const int64_t n = logits.size(0), k = logits.size(1);
  PEEL_CHECK(class_weights.empty() || static_cast<int64_t>(class_weights.size()) == k,
             "cross_entropy: {} class weights for {} classes", class_weights.size(), k);
  auto weight_of = [&](int64_t label) {
    return class_weights.empty() ? 1.f : class_weights[static_cast<size_t>(label)];
  };

  // Forward: CE_i = logsumexp(z_i) - z_i[y_i], weighted mean over the batch.
  Tensor log_probs = log_softmax(logits.value().contiguous(), 1);
  const float* lp = log_probs.data();
  double total = 0, weight_sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double w = weight_of(labels[static_cast<size_t>(i)]);
    total -= w * lp[i * k + labels[static_cast<size_t>(i)]];
    weight_sum += w;
  }
  PEEL_CHECK(weight_sum > 0, "cross_entropy: the class weights of this batch sum to {}", weight_sum);
  Tensor loss = Tensor::scalar(static_cast<float>(total / weight_sum));

  // Backward: dz_i = w[y_i] (softmax(z_i) - onehot(y_i)) / sum w, times the upstream scalar.
  return make_result(loss, {logits}, "cross_entropy",
                     [log_probs, labels, class_weights, weight_sum, n, k](const Tensor& g, const std::vector<bool>&) {
                       Tensor grad = exp(log_probs);
                       float* d = grad.data();
                       const float upstream = g.item();
                       for (int64_t i = 0; i < n; ++i) {
                         const int64_t y = labels[static_cast<size_t>(i)];
                         const float w = class_weights.empty() ? 1.f : class_weights[static_cast<size_t>(y)];
                         const float scale = static_cast<float>(upstream * w / weight_sum);
                         d[i * k + y] -= 1.f;
                         for (int64_t j = 0; j < k; ++j) d[i * k + j] *= scale;
                       }
                       return Grads{grad};
                     });
}

Variable mse_loss(const Variable& logits, const std::vector<int64_t>& labels, float target_scale, float loss_scale) {
  check_labels(logits, labels, "mse_loss");
  const int64_t n = logits.size(0), k = logits.size(1);
  Tensor residual = logits.value().clone();  // z - target_scale * onehot
  float* r = residual.data();
  for (int64_t i = 0; i < n; ++i) r[i * k + labels[static_cast<size_t>(i)]] -= target_scale;
  double total = 0;
  for (int64_t i = 0; i < n * k; ++i) total += static_cast<double>(r[i]) * r[i];
  const double count = static_cast<double>(n * k);
  Tensor loss = Tensor::scalar(static_cast<float>(loss_scale * total / count));
  // d/dz = loss_scale * 2 (z - t) / (N K)
  return make_result(loss, {logits}, "mse_loss",
                     [residual, loss_scale, count](const Tensor& g, const std::vector<bool>&) {
                       return Grads{residual * static_cast<float>(g.item() * loss_scale * 2.0 / count)};
                     });
}

}  // namespace peel::nn
