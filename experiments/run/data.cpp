#include "experiments/run/data.h"

#include <algorithm>
#include <cmath>

#include "datasets/imbalance.h"
#include "nn/models.h"

namespace peel {

TrainingData load_training_data(const TrainConfig& c) {
  data::LoadOptions options;
  // vgg and resnet take 32x32 inputs: MNIST-like 28x28 images are zero-padded by 2 on each side.
  options.fit32 = nn::model_image_size(c.model) == 32 ? data::Fit32::pad : data::Fit32::none;
  options.synthetic.seed = c.seed;
  TrainingData d;
  d.train = data::load_dataset(c.dataset, "train", c.data_dir, options);
  d.test = data::load_dataset(c.dataset, "test", c.data_dir, options);
  if (c.test_limit > 0 && c.test_limit < d.test.size()) {
    std::vector<int64_t> first(static_cast<size_t>(c.test_limit));
    for (int64_t i = 0; i < c.test_limit; ++i) first[static_cast<size_t>(i)] = i;
    d.test = data::subset(d.test, first);
  }
  if (c.majority_classes > 0 || c.n_major > 0) {
    data::StepImbalanceOptions imbalance;
    imbalance.majority_classes = c.majority_classes > 0 ? c.majority_classes : d.train.num_classes;
    std::vector<int64_t> counts = d.train.class_counts();
    imbalance.n_majority = c.n_major > 0 ? c.n_major : *std::min_element(counts.begin(), counts.end());
    imbalance.ratio = c.ratio;
    imbalance.seed = c.seed;
    data::StepImbalance kept = data::step_imbalance(d.train.labels, d.train.num_classes, imbalance);
    d.train = data::subset(d.train, kept.indices);
    d.minority_classes = kept.minority_classes;
  }
  d.class_counts = d.train.class_counts();
  return d;
}

std::shared_ptr<const data::Sampler> make_sampler(const TrainConfig& c, const TrainingData& d) {
  switch (c.sampler) {
    case Sampler::oversample: {
      const int64_t factor =
          c.oversample_factor > 0 ? c.oversample_factor : std::max<int64_t>(1, std::llround(c.ratio));
      return std::make_shared<data::OversamplingSampler>(d.train.labels, d.minority_classes, factor, c.seed);
    }
    case Sampler::balanced:
      return std::make_shared<data::ClassBalancedSampler>(d.train.labels, d.train.num_classes, c.seed);
    case Sampler::plain:
      break;
  }
  return std::make_shared<data::ShuffleSampler>(d.train.size(), c.seed);
}

std::vector<float> class_loss_weights(const TrainConfig& c, const TrainingData& d) {
  if (c.class_weights == ClassWeights::none) return {};
  const int64_t largest = *std::max_element(d.class_counts.begin(), d.class_counts.end());
  std::vector<float> w;
  for (int64_t n : d.class_counts) w.push_back(n > 0 ? static_cast<float>(largest) / static_cast<float>(n) : 0.f);
  return w;
}

}  // namespace peel
