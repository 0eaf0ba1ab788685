#include "experiments/collapse/rank_over_training.h"

#include "autograd/variable.h"
#include "experiments/collapse/mse_decomposition.h"
#include "experiments/run/config.h"

namespace peel {

SquareLossMeasureOptions square_loss_measure_options(const TrainConfig& c, int64_t num_classes) {
  SquareLossMeasureOptions o;
  o.rank = c.measure_rank;
  o.mse_decomposition = c.measure_mse_decomposition;
  o.rank_options.relative_tolerance = c.rank_epsilon;
  o.global_mean = c.global_mean;
  o.lambda = training_lambda(c.weight_decay, num_classes, c.loss == Loss::square ? c.mse_loss_scale : 1.0);
  o.target_scale = c.loss == Loss::square ? c.mse_target_scale : 1.0;
  return o;
}

SquareLossMeasurement measure_square_loss(nn::Network& model, const Tensor& features, std::span<const int64_t> labels,
                                          int64_t num_classes, const SquareLossMeasureOptions& o) {
  SquareLossMeasurement m;
  if (o.rank) {
    const RankReport ranks = rank_report(model, features, labels, num_classes, o.global_mean, o.rank_options);
    m.columns = ranks.to_columns();
    m.spectra = ranks.to_json();
  }
  if (o.mse_decomposition) {
    ag::NoGradGuard no_grad;
    const MseDecomposition d = mse_decomposition({.features = features,
                                                  .labels = labels,
                                                  .num_classes = num_classes,
                                                  .classifier_weight = model.classifier().effective_weight().value(),
                                                  .classifier_bias = model.classifier().bias.value(),
                                                  .lambda = o.lambda,
                                                  .decay_bias = true,  // SGD decays every parameter
                                                  .target_scale = o.target_scale});
    const MetricColumns columns = d.to_columns();
    m.columns.insert(m.columns.end(), columns.begin(), columns.end());
  }
  return m;
}

}  // namespace peel
