#include "experiments/run/measure.h"

#include <fmt/format.h>

#include <cmath>
#include <span>

#include "autograd/variable.h"
#include "datasets/loader.h"
#include "experiments/distributed/comm.h"
#include "experiments/lpm/fitted.h"
#include "tensor/error.h"

namespace peel {

void EpochTally::add_step(double batch_loss, const Tensor& logits, const std::vector<int64_t>& labels) {
  ++steps;
  PEEL_CHECK(std::isfinite(batch_loss),
             "training diverged at epoch {}, step {}: the loss is {} (try a smaller --lr; the last checkpoint "
             "is of the epoch before)",
             epoch + 1, steps, batch_loss);
  const std::vector<int64_t> predicted = predictions_from_logits(logits);
  for (size_t i = 0; i < labels.size(); ++i) correct += predicted[i] == labels[i];
  loss_sum += batch_loss * static_cast<double>(labels.size());
  seen += static_cast<int64_t>(labels.size());
}

void check_parameters_finite(const nn::Module& model, int64_t epoch) {
  for (const auto& [name, p] : model.named_parameters()) {
    const float* v = p.value().contiguous().data();
    for (int64_t i = 0; i < p.value().numel(); ++i)
      PEEL_CHECK(std::isfinite(v[i]), "training diverged at epoch {}: parameter {} holds {} at element {}", epoch + 1,
                 name, v[i], i);
  }
}

Evaluation evaluate(nn::Network& model, const data::Dataset& split, int64_t batch_size) {
  // Under mpirun each rank evaluates its shard of every batch of batch_size images per rank, into
  // zero-filled tables whose sum over the ranks then holds every row on every rank.
  const dist::Communicator& comm = dist::world();
  ag::NoGradGuard no_grad;
  model.eval();
  data::Loader loader(split, std::make_shared<data::SequentialSampler>(split.size()),
                      {.batch_size = batch_size * comm.size(), .shard = comm.rank(), .shards = comm.size()});
  loader.start_epoch(0);
  const Tensor& w = model.classifier().weight.value();  // (K, D)
  const Shape features{split.size(), w.size(1)}, logits{split.size(), w.size(0)};
  Evaluation e{comm.distributed() ? Tensor::zeros(features) : Tensor::empty(features),
               comm.distributed() ? Tensor::zeros(logits) : Tensor::empty(logits)};
  while (std::optional<data::Batch> batch = loader.next()) {
    if (batch->size() == 0) continue;
    const int64_t row = batch->index * loader.options().batch_size +
                        data::shard_begin(static_cast<int64_t>(batch->batch_labels.size()), comm.rank(), comm.size());
    ag::Variable h = model.features(ag::Variable(batch->images));
    ag::Variable z = model.classifier().forward(h);
    e.features.slice(0, row, row + batch->size()).copy_(h.value());
    e.logits.slice(0, row, row + batch->size()).copy_(z.value());
  }
  comm.allreduce_sum(std::span<float>(e.features.data(), static_cast<size_t>(e.features.numel())));
  comm.allreduce_sum(std::span<float>(e.logits.data(), static_cast<size_t>(e.logits.numel())));
  model.train();
  return e;
}

EpochMeasurement measure_epoch(nn::Network& model, const TrainingData& d, const EpochTally& tally, double lr,
                               GlobalMean global_mean, const SquareLossMeasureOptions& square) {
  const Evaluation train = evaluate(model, d.train), test = evaluate(model, d.test);
  const CollapseMetrics collapse = collapse_metrics({.features = train.features,
                                                     .labels = d.train.labels,
                                                     .num_classes = d.train.num_classes,
                                                     .classifier_weight = model.classifier().weight.value(),
                                                     .classifier_bias = model.classifier().bias.value(),
                                                     .logits = train.logits,
                                                     .minority_classes = d.minority_classes,
                                                     .global_mean = global_mean});
  const Accuracy test_accuracy = accuracy_from_logits(test.logits, d.test.labels, d.minority_classes);
  const WeightSpectrum classifier = weight_spectrum(model.classifier().weight.value());
  const NetworkBudgets budgets =  // the Layer-Peeled Model's E_W and E_H, as this network has them
      network_budgets(train.features, d.train.labels, d.train.num_classes, model.classifier().weight.value());

  EpochMeasurement m;
  m.columns = {{"epoch", static_cast<double>(tally.epoch + 1)},
               {"lr", lr},
               {"train_loss", tally.mean_loss()},
               {"train_running_accuracy", tally.accuracy()}};
  for (const MetricColumns& part : {collapse.accuracy.to_columns("train_"), test_accuracy.to_columns("test_"),
                                    collapse.to_columns(), classifier.to_columns("classifier_"), budgets.to_columns()})
    m.columns.insert(m.columns.end(), part.begin(), part.end());
  m.line = fmt::format("loss {:.4f}  train acc {:.2f}%  test acc {:.2f}%  NC1 {:.3g}  minority cos {:.3f}",
                       tally.mean_loss(), 100 * collapse.accuracy.overall, 100 * test_accuracy.overall, collapse.nc1,
                       collapse.minority_cosine);
  SquareLossMeasurement sq = measure_square_loss(model, train.features, d.train.labels, d.train.num_classes, square);
  m.columns.insert(m.columns.end(), sq.columns.begin(), sq.columns.end());
  m.spectra = std::move(sq.spectra);
  return m;
}

nlohmann::json initial_spectra(nn::Network& model, const TrainingData& d, const SquareLossMeasureOptions& square) {
  return measure_square_loss(model, evaluate(model, d.train).features, d.train.labels, d.train.num_classes,
                             {.rank = true, .rank_options = square.rank_options, .global_mean = square.global_mean})
      .spectra;
}

}  // namespace peel
