// What a training run measures: the running loss and accuracy of each epoch, and, every
// --metrics-every epochs, the collapse metrics on the training set's penultimate features and the
// accuracies on both sets, as one named row of metrics.csv.
#pragma once

#include <string>

#include "experiments/collapse/collapse.h"
#include "experiments/collapse/rank_over_training.h"
#include "experiments/run/data.h"
#include "nn/models.h"

namespace peel {

// The training steps of one epoch so far.
struct EpochTally {
  int64_t epoch = 0;  // 0-based
  double loss_sum = 0;
  int64_t correct = 0, seen = 0, steps = 0;

  // Adds one step's batch mean loss and logits (N,K). Throws "training diverged at epoch E, step
  // S" when the loss is not finite, before anything of the step is kept.
  void add_step(double batch_loss, const Tensor& logits, const std::vector<int64_t>& labels);
  double mean_loss() const { return seen ? loss_sum / static_cast<double>(seen) : 0.0; }
  double accuracy() const { return seen ? static_cast<double>(correct) / static_cast<double>(seen) : 0.0; }
};

// Throws "training diverged at epoch E" naming the first parameter with a non-finite value.
void check_parameters_finite(const nn::Module& model, int64_t epoch);

// Penultimate features (N, D) and logits (N, K) of a whole split, in eval mode, without a graph.
// Under mpirun every rank calls it: each evaluates its share, and all get every row.
struct Evaluation {
  Tensor features, logits;
};
Evaluation evaluate(nn::Network& model, const data::Dataset& split, int64_t batch_size = 256);

// As SquareLossMeasurement's (experiments/collapse/rank_over_training.h): nlohmann::json's
// destructor allocates, which clang-tidy counts as a throw.
// NOLINTNEXTLINE(bugprone-exception-escape)
struct EpochMeasurement {
  MetricColumns columns;   // metrics.csv's row, starting with epoch
  std::string line;        // what the progress line says about it
  nlohmann::json spectra;  // the square-loss study's singular values (null unless square.rank)
};
EpochMeasurement measure_epoch(nn::Network& model, const TrainingData& data, const EpochTally& tally, double lr,
                               GlobalMean global_mean, const SquareLossMeasureOptions& square = {});
// The square-loss study's spectra before training (spectra/epoch-000.json).
nlohmann::json initial_spectra(nn::Network& model, const TrainingData& data, const SquareLossMeasureOptions& square);

}  // namespace peel
