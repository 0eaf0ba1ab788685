#include "datasets/sampler.h"

#include <algorithm>

#include "tensor/error.h"

namespace peel::data {

Generator epoch_generator(uint64_t seed, int64_t epoch) {
  PEEL_CHECK(epoch >= 0, "sampler: epoch must be >= 0, got {}", epoch);
  Generator base(seed);
  return base.fork(static_cast<uint64_t>(epoch));
}

SequentialSampler::SequentialSampler(int64_t n) : n_(n) {
  PEEL_CHECK(n >= 0, "SequentialSampler: size must be >= 0, got {}", n);
}

std::vector<int64_t> SequentialSampler::epoch_indices(int64_t) const {
  std::vector<int64_t> idx(static_cast<size_t>(n_));
  for (int64_t i = 0; i < n_; ++i) idx[i] = i;
  return idx;
}

std::string SequentialSampler::describe() const { return fmt::format("sequential ({} images)", n_); }

ShuffleSampler::ShuffleSampler(int64_t n, uint64_t seed) : n_(n), seed_(seed) {
  PEEL_CHECK(n >= 0, "ShuffleSampler: size must be >= 0, got {}", n);
}

std::vector<int64_t> ShuffleSampler::epoch_indices(int64_t epoch) const {
  return epoch_generator(seed_, epoch).permutation(n_);
}

std::string ShuffleSampler::describe() const { return fmt::format("shuffle ({} images, seed {})", n_, seed_); }

OversamplingSampler::OversamplingSampler(const std::vector<int64_t>& labels,
                                         const std::vector<int64_t>& minority_classes, int64_t factor, uint64_t seed)
    : factor_(factor), seed_(seed) {
  PEEL_CHECK(factor >= 1, "OversamplingSampler: factor must be >= 1, got {}", factor);
  const int64_t n = static_cast<int64_t>(labels.size());
  std::vector<int64_t> minority;
  for (int64_t i = 0; i < n; ++i)
    if (std::find(minority_classes.begin(), minority_classes.end(), labels[i]) != minority_classes.end())
      minority.push_back(i);
  base_.reserve(static_cast<size_t>(n + (factor - 1) * static_cast<int64_t>(minority.size())));
  for (int64_t i = 0; i < n; ++i) base_.push_back(i);
  for (int64_t r = 1; r < factor; ++r) base_.insert(base_.end(), minority.begin(), minority.end());
}

std::vector<int64_t> OversamplingSampler::epoch_indices(int64_t epoch) const {
  const std::vector<int64_t> perm = epoch_generator(seed_, epoch).permutation(epoch_size());
  std::vector<int64_t> idx(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) idx[i] = base_[perm[i]];
  return idx;
}

std::string OversamplingSampler::describe() const {
  return fmt::format("oversample (minority images x{}, {} per epoch, seed {})", factor_, base_.size(), seed_);
}

ClassBalancedSampler::ClassBalancedSampler(const std::vector<int64_t>& labels, int64_t num_classes, uint64_t seed,
                                           int64_t num_samples)
    : num_samples_(num_samples < 0 ? static_cast<int64_t>(labels.size()) : num_samples), seed_(seed) {
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(num_classes));
  for (int64_t i = 0; i < static_cast<int64_t>(labels.size()); ++i) {
    PEEL_CHECK(labels[i] >= 0 && labels[i] < num_classes, "ClassBalancedSampler: label {} at {} outside [0, {})",
               labels[i], i, num_classes);
    by_class[labels[i]].push_back(i);
  }
  for (auto& members : by_class)
    if (!members.empty()) members_.push_back(std::move(members));
  PEEL_CHECK(!members_.empty() || num_samples_ == 0, "ClassBalancedSampler: no images to draw from");
}

std::vector<int64_t> ClassBalancedSampler::epoch_indices(int64_t epoch) const {
  Generator gen = epoch_generator(seed_, epoch);
  std::vector<int64_t> idx(static_cast<size_t>(num_samples_));
  const int64_t k = static_cast<int64_t>(members_.size());
  for (int64_t& i : idx) {
    const std::vector<int64_t>& members = members_[gen.randint(k)];
    i = members[gen.randint(static_cast<int64_t>(members.size()))];
  }
  return idx;
}

std::string ClassBalancedSampler::describe() const {
  return fmt::format("class-balanced with replacement ({} classes, {} per epoch, seed {})", members_.size(),
                     num_samples_, seed_);
}

std::shared_ptr<Sampler> make_sampler(const SamplerOptions& o, const std::vector<int64_t>& labels,
                                      int64_t num_classes) {
  const int64_t n = static_cast<int64_t>(labels.size());
  if (o.kind == "sequential") return std::make_shared<SequentialSampler>(n);
  if (o.kind == "shuffle") return std::make_shared<ShuffleSampler>(n, o.seed);
  if (o.kind == "oversample")
    return std::make_shared<OversamplingSampler>(labels, o.minority_classes, o.oversample_factor, o.seed);
  if (o.kind == "balanced") return std::make_shared<ClassBalancedSampler>(labels, num_classes, o.seed, o.num_samples);
  PEEL_FAIL("sampler: unknown kind '{}' (choose sequential, shuffle, oversample or balanced)", o.kind);
}

}  // namespace peel::data
