// The elimination-singularity instruments (elimination.h) measured during a training run: with
// TrainConfig::elimination_probe = n > 0, a fixed probe of n training images, chosen by the run's
// seed, goes through the model (eval mode: BN with its running statistics) at every measured epoch,
// and its es_* columns join that epoch's row of metrics.csv. With n = 0 (the default) nothing is
// measured and metrics.csv is as before.
#pragma once

#include "experiments/run/config.h"
#include "experiments/run/data.h"
#include "experiments/run/measure.h"
#include "nn/models.h"

namespace peel {

// The probe images of a run, (n, C, H, W); undefined when config.elimination_probe is 0.
Tensor training_elimination_probe(const TrainConfig& config, const TrainingData& data);

// Appends the es_* columns of `probe` (and the eliminated fraction to the progress line); nothing
// when `probe` is undefined. The model's mode and state are unchanged.
void add_elimination_measurement(EpochMeasurement& measurement, nn::Network& model, const Tensor& probe);

}  // namespace peel
