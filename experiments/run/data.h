// The data side of a training run: the (possibly imbalanced) training set and the balanced test
// set as a TrainConfig asks for them, the order an epoch visits the images in, and the per-class
// loss weights of reweighting.
#pragma once

#include <memory>
#include <vector>

#include "datasets/dataset.h"
#include "datasets/sampler.h"
#include "experiments/run/config.h"

namespace peel {

struct TrainingData {
  data::Dataset train, test;
  std::vector<int64_t> minority_classes;  // empty when balanced
  std::vector<int64_t> class_counts;      // training images per class
};

// Step imbalance (Fang et al.): classes 0..K_A-1 keep n_A images, the others floor(n_A / R),
// chosen by a seeded shuffled pass; the test set is whole (or its first test_limit images).
TrainingData load_training_data(const TrainConfig& config);

// plain: a seeded shuffle per epoch; oversample: each minority image `factor` times per epoch
// (the authors' weight_ratio, default round(R)); balanced: classes drawn equally often.
std::shared_ptr<const data::Sampler> make_sampler(const TrainConfig& config, const TrainingData& data);

// Loss reweighting: class c is weighted by (largest class count) / n_c, so the minority weight
// is n_A / n_B = R, the factor oversampling applies. Empty when the config asks for none.
std::vector<float> class_loss_weights(const TrainConfig& config, const TrainingData& data);

}  // namespace peel
