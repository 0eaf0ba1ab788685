// Samplers: which data set indices an epoch visits, in which order.
//
// Every sampler is a pure function of its settings, its seed and the epoch number, so a run that
// resumes at an epoch boundary sees exactly the data it would have seen (the state to save is the
// epoch number). Randomness comes from epoch_generator(seed, epoch): peel::Generator with
// our own Fisher-Yates, identical with any compiler and standard library.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor/random.h"

namespace peel::data {

// The generator for one epoch: Generator(seed).fork(epoch).
Generator epoch_generator(uint64_t seed, int64_t epoch);

class Sampler {
 public:
  virtual ~Sampler() = default;
  virtual std::vector<int64_t> epoch_indices(int64_t epoch) const = 0;
  virtual int64_t epoch_size() const = 0;
  virtual std::string describe() const = 0;
};

// 0, 1, ..., n-1 every epoch (evaluation).
class SequentialSampler : public Sampler {
 public:
  explicit SequentialSampler(int64_t n);
  std::vector<int64_t> epoch_indices(int64_t epoch) const override;
  int64_t epoch_size() const override { return n_; }
  std::string describe() const override;

 private:
  int64_t n_;
};

// A fresh random permutation of 0..n-1 every epoch.
class ShuffleSampler : public Sampler {
 public:
  ShuffleSampler(int64_t n, uint64_t seed);
  std::vector<int64_t> epoch_indices(int64_t epoch) const override;
  int64_t epoch_size() const override { return n_; }
  std::string describe() const override;

 private:
  int64_t n_;
  uint64_t seed_;
};

// The mitigation of Fang et al. (their get_weighted_minibatches_idx): every image of a minority
// class appears `factor` times per epoch, every other image once, all shuffled together. The epoch
// has n + (factor - 1) * (number of minority images) entries.
class OversamplingSampler : public Sampler {
 public:
  OversamplingSampler(const std::vector<int64_t>& labels, const std::vector<int64_t>& minority_classes, int64_t factor,
                      uint64_t seed);
  std::vector<int64_t> epoch_indices(int64_t epoch) const override;
  int64_t epoch_size() const override { return static_cast<int64_t>(base_.size()); }
  std::string describe() const override;

 private:
  std::vector<int64_t> base_;  // 0..n-1, then the minority indices repeated factor - 1 times
  int64_t factor_;
  uint64_t seed_;
};

// Draws with replacement with weight 1/n_k for an image of class k (PyTorch's WeightedRandomSampler
// with those weights), so every class that has images is drawn with the same probability: a class
// is drawn uniformly among the non-empty classes, then an image uniformly within it.
class ClassBalancedSampler : public Sampler {
 public:
  // num_samples: draws per epoch; < 0 means the data set's size.
  ClassBalancedSampler(const std::vector<int64_t>& labels, int64_t num_classes, uint64_t seed,
                       int64_t num_samples = -1);
  std::vector<int64_t> epoch_indices(int64_t epoch) const override;
  int64_t epoch_size() const override { return num_samples_; }
  std::string describe() const override;

 private:
  std::vector<std::vector<int64_t>> members_;  // the non-empty classes' indices
  int64_t num_samples_;
  uint64_t seed_;
};

// For the command line: kind is sequential, shuffle, oversample or balanced.
struct SamplerOptions {
  std::string kind = "shuffle";
  uint64_t seed = 0;
  int64_t oversample_factor = 1;          // oversample
  std::vector<int64_t> minority_classes;  // oversample
  int64_t num_samples = -1;               // balanced
};
std::shared_ptr<Sampler> make_sampler(const SamplerOptions& options, const std::vector<int64_t>& labels,
                                      int64_t num_classes);

}  // namespace peel::data
