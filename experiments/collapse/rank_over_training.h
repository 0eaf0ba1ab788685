// What the square-loss study measures at each measurement of a training run (docs/square-loss.md):
// the rank measures of every weight matrix, of the classifier and of the centred class means
// (rank.h), with their singular values for the run folder's spectra/epoch-NNN.json, and the MSE
// decomposition L_NC1 + L_NC2/3 + L_perp at the least-squares classifier of the current training
// features (mse_decomposition.h). Both are off unless the run asks for them (TrainConfig's
// measure_rank and measure_mse_decomposition), so a run that does not ask writes the metrics.csv
// it always wrote.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <span>

#include "experiments/collapse/collapse.h"
#include "experiments/collapse/rank.h"
#include "nn/models.h"

namespace peel {

struct TrainConfig;

struct SquareLossMeasureOptions {
  bool rank = false;
  bool mse_decomposition = false;
  RankOptions rank_options;
  GlobalMean global_mean = GlobalMean::AllSamples;  // the centring of the class means (as the collapse metrics)
  double lambda = 0;                                // the decomposition's ridge weight on W and b
  double target_scale = 1;                          // t of the targets t e_y
  bool enabled() const { return rank || mse_decomposition; }
};

// The options a run's settings ask for. lambda is training_lambda(weight_decay, K, mse_loss_scale):
// the ridge at which the trained last layer of a square-loss run (peel's mean over N*K entries, SGD
// weight decay on every parameter, biases included) sits at the least-squares classifier, so that
// L_perp measures how far training is from the central path. A cross-entropy run is measured at
// the same lambda (that of a square-loss run with its weight decay); its L_perp is then large.
SquareLossMeasureOptions square_loss_measure_options(const TrainConfig& config, int64_t num_classes);

// clang-tidy counts a throw in the implicit destructor, from nlohmann::json's, whose destroy()
// flattens nested values into a std::vector (it allocates): not a throw of this code.
// NOLINTNEXTLINE(bugprone-exception-escape)
struct SquareLossMeasurement {
  MetricColumns columns;   // RankReport::to_columns(), then MseDecomposition::to_columns()
  nlohmann::json spectra;  // RankReport::to_json(); null without options.rank
};

// features: the penultimate features (N, D) of the training samples `labels`, in eval mode (as the
// collapse metrics). Nothing is computed for what the options leave off.
SquareLossMeasurement measure_square_loss(nn::Network& model, const Tensor& features, std::span<const int64_t> labels,
                                          int64_t num_classes, const SquareLossMeasureOptions& options);

}  // namespace peel
