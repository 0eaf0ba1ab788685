// Step imbalance, samplers and the background loader: exact counts and multiplicities,
// determinism, resumption, batch shapes, augmentation and error propagation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "datasets/dataset.h"
#include "datasets/imbalance.h"
#include "datasets/loader.h"
#include "datasets/sampler.h"
#include "datasets/synthetic.h"
#include "tensor/error.h"
#include "tests/support/error_matchers.h"

using namespace peel;
using namespace peel::data;
using peel::testing::ThrowsErrorWith;

namespace {

// 10 classes, `per_class` images each, label i % 10.
std::vector<int64_t> balanced_labels(int64_t per_class) {
  std::vector<int64_t> labels(static_cast<size_t>(10 * per_class));
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int64_t>(i % 10);
  return labels;
}

// A small data set whose pixel values identify image, channel and position.
Dataset numbered_dataset(int64_t n, int64_t C, int64_t H, int64_t W) {
  Dataset d;
  d.name = "numbered";
  d.split = "train";
  d.num_classes = 10;
  d.images = Tensor::empty({n, C, H, W});
  float* x = d.images.data();
  for (int64_t i = 0; i < n * C * H * W; ++i) x[i] = static_cast<float>(i);
  for (int64_t i = 0; i < n; ++i) d.labels.push_back(i % 10);
  d.padding_value.assign(static_cast<size_t>(C), -1.f);
  return d;
}

std::vector<Batch> whole_epoch(Loader& loader, int64_t epoch) {
  loader.start_epoch(epoch);
  std::vector<Batch> batches;
  while (auto b = loader.next()) batches.push_back(std::move(*b));
  return batches;
}

void expect_same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].indices, b[i].indices) << "batch " << i;
    EXPECT_EQ(a[i].labels, b[i].labels) << "batch " << i;
    EXPECT_EQ(a[i].images.to_vector(), b[i].images.to_vector()) << "batch " << i;
  }
}

}  // namespace

TEST(StepImbalance, MinorityCountRule) {
  EXPECT_EQ(minority_count(6000, 10), 600);
  EXPECT_EQ(minority_count(5000, 1000), 5);
  EXPECT_EQ(minority_count(5000, 3), 1666);  // floor, as the authors' 5000 // 3
  EXPECT_EQ(minority_count(5000, 10000), 0);
  EXPECT_EQ(minority_count(6000, std::numeric_limits<double>::infinity()), 0);
  EXPECT_EQ(minority_count(6000, std::pow(10.0, 0.5)), 1897);  // 6000 / 3.1623 = 1897.4
  EXPECT_EQ(minority_count(6000, 1), 6000);
  EXPECT_THROW(minority_count(6000, 0.5), Error);
}

TEST(StepImbalance, ExactCountsFirstClassesMajorityAndDeterministic) {
  const std::vector<int64_t> labels = balanced_labels(100);
  StepImbalanceOptions o;
  o.majority_classes = 3;
  o.n_majority = 50;
  o.ratio = 10;
  const StepImbalance s = step_imbalance(labels, 10, o);
  EXPECT_EQ(s.majority_classes, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(s.minority_classes, (std::vector<int64_t>{3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(s.n_minority, 5);
  EXPECT_EQ(s.class_counts, (std::vector<int64_t>{50, 50, 50, 5, 5, 5, 5, 5, 5, 5}));
  ASSERT_EQ(s.indices.size(), 3u * 50 + 7 * 5);
  EXPECT_TRUE(std::is_sorted(s.indices.begin(), s.indices.end()));
  EXPECT_EQ(std::set<int64_t>(s.indices.begin(), s.indices.end()).size(), s.indices.size());
  std::vector<int64_t> recount(10, 0);
  for (int64_t i : s.indices) ++recount[labels[i]];
  EXPECT_EQ(recount, s.class_counts);

  EXPECT_EQ(step_imbalance(labels, 10, o).indices, s.indices);
  o.seed = 667;
  EXPECT_NE(step_imbalance(labels, 10, o).indices, s.indices);
  // Not simply the first images of each class: the seeded scan picks from the whole class.
  EXPECT_GT(s.indices.back(), 900);

  o.n_majority = 101;
  EXPECT_THROW(step_imbalance(labels, 10, o), Error);
}

TEST(StepImbalance, RandomMajorityAndInfiniteRatio) {
  const std::vector<int64_t> labels = balanced_labels(20);
  StepImbalanceOptions o;
  o.majority_classes = 4;
  o.n_majority = 20;
  o.ratio = std::numeric_limits<double>::infinity();
  o.random_majority = true;
  o.seed = 3;
  const StepImbalance s = step_imbalance(labels, 10, o);
  ASSERT_EQ(s.majority_classes.size(), 4u);
  EXPECT_EQ(s.minority_classes.size(), 6u);
  EXPECT_EQ(s.indices.size(), 80u);
  for (int64_t k : s.majority_classes) EXPECT_EQ(s.class_counts[k], 20);
  for (int64_t k : s.minority_classes) EXPECT_EQ(s.class_counts[k], 0);
  bool differs = false;
  for (uint64_t seed = 0; seed < 5; ++seed) {
    o.seed = seed;
    differs |= step_imbalance(labels, 10, o).majority_classes != s.majority_classes;
  }
  EXPECT_TRUE(differs);
}

TEST(Samplers, SequentialAndShuffle) {
  EXPECT_EQ(SequentialSampler(4).epoch_indices(3), (std::vector<int64_t>{0, 1, 2, 3}));
  const ShuffleSampler s(1000, 42);
  const std::vector<int64_t> e0 = s.epoch_indices(0), e1 = s.epoch_indices(1);
  std::vector<int64_t> sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, SequentialSampler(1000).epoch_indices(0));
  EXPECT_NE(e0, e1);
  EXPECT_EQ(ShuffleSampler(1000, 42).epoch_indices(1), e1);  // a pure function of seed and epoch
  EXPECT_NE(ShuffleSampler(1000, 43).epoch_indices(0), e0);
}

TEST(Samplers, OversamplingMultiplicitiesAreExact) {
  std::vector<int64_t> labels = balanced_labels(30);
  const std::vector<int64_t> minority = {7, 8, 9};
  const OversamplingSampler s(labels, minority, 10, 5);
  EXPECT_EQ(s.epoch_size(), 300 + 9 * 90);
  for (int64_t epoch : {0, 1}) {
    std::map<int64_t, int64_t> times;
    for (int64_t i : s.epoch_indices(epoch)) ++times[i];
    ASSERT_EQ(times.size(), 300u);
    for (const auto& [i, n] : times) EXPECT_EQ(n, labels[i] >= 7 ? 10 : 1) << "index " << i;
  }
  EXPECT_NE(s.epoch_indices(0), s.epoch_indices(1));
  // The copies are spread over the epoch, not appended.
  const std::vector<int64_t> e = s.epoch_indices(0);
  const int64_t minority_in_first_half = std::count_if(e.begin(), e.begin() + static_cast<std::ptrdiff_t>(e.size() / 2),
                                                       [&](int64_t i) { return labels[i] >= 7; });
  EXPECT_NEAR(static_cast<double>(minority_in_first_half), 450.0, 60.0);
  EXPECT_EQ(OversamplingSampler(labels, minority, 1, 5).epoch_size(), 300);
  EXPECT_THROW(OversamplingSampler(labels, minority, 0, 5), Error);
}

TEST(Samplers, ClassBalancedDrawsClassesUniformly) {
  // Class 0 has 1000 images, classes 1..4 have 10 each.
  std::vector<int64_t> labels(1000, 0);
  for (int64_t k = 1; k <= 4; ++k) labels.insert(labels.end(), 10, k);
  const ClassBalancedSampler s(labels, 6, 11, 50000);  // class 5 is empty: never drawn
  const std::vector<int64_t> draws = s.epoch_indices(0);
  ASSERT_EQ(draws.size(), 50000u);
  std::vector<int64_t> per_class(6, 0);
  std::map<int64_t, int64_t> per_image;
  for (int64_t i : draws) {
    ++per_class[labels[i]];
    ++per_image[i];
  }
  // Binomial(50000, 1/5): mean 10000, sd 89. Allow 5 sd.
  for (int64_t k = 0; k < 5; ++k) EXPECT_NEAR(per_class[k], 10000, 450) << "class " << k;
  EXPECT_EQ(per_class[5], 0);
  // With replacement: the 10 images of class 1 are each drawn about 1000 times.
  for (int64_t i = 1000; i < 1010; ++i) EXPECT_NEAR(per_image[i], 1000, 160);
  EXPECT_EQ(ClassBalancedSampler(labels, 6, 11, 50000).epoch_indices(0), draws);
  EXPECT_EQ(ClassBalancedSampler(labels, 6, 11).epoch_size(), 1040);
}

TEST(Loader, BatchShapesLabelsAndDropLast) {
  const Dataset d = numbered_dataset(10, 1, 2, 3);
  auto sampler = std::make_shared<SequentialSampler>(10);
  Loader keep(d, sampler, {.batch_size = 4});
  EXPECT_EQ(keep.batches_per_epoch(), 3);
  const std::vector<Batch> a = whole_epoch(keep, 0);
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a[0].images.shape(), (Shape{4, 1, 2, 3}));
  EXPECT_EQ(a[2].images.shape(), (Shape{2, 1, 2, 3}));
  EXPECT_EQ(a[2].indices, (std::vector<int64_t>{8, 9}));
  EXPECT_EQ(a[1].labels, (std::vector<int64_t>{4, 5, 6, 7}));
  EXPECT_EQ(a[1].index, 1);
  EXPECT_EQ(a[1].images.at({2, 0, 1, 2}), d.images.at({6, 0, 1, 2}));
  EXPECT_EQ(a[1].label_tensor().shape, (Shape{4}));

  Loader drop(d, sampler, {.batch_size = 4, .drop_last = true});
  EXPECT_EQ(drop.batches_per_epoch(), 2);
  const std::vector<Batch> b = whole_epoch(drop, 0);
  ASSERT_EQ(b.size(), 2u);
  for (const Batch& batch : b) EXPECT_EQ(batch.size(), 4);
  EXPECT_FALSE(drop.next().has_value());  // stays finished
}

TEST(Loader, ChannelsLastBatchesHoldTheSameValues) {
  const Dataset d = numbered_dataset(6, 3, 4, 5);
  auto sampler = std::make_shared<ShuffleSampler>(6, 1);
  Loader nhwc(d, sampler, {.batch_size = 3});
  Loader nchw(d, sampler, {.batch_size = 3, .channels_last = false});
  const std::vector<Batch> a = whole_epoch(nhwc, 0), b = whole_epoch(nchw, 0);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_TRUE(a[0].images.is_channels_last());
  EXPECT_TRUE(b[0].images.is_contiguous());
  for (size_t k = 0; k < a.size(); ++k)
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t y = 0; y < 4; ++y)
          for (int64_t x = 0; x < 5; ++x) {
            const float want = d.images.at({a[k].indices[i], c, y, x});
            ASSERT_EQ(a[k].images.at({i, c, y, x}), want);
            ASSERT_EQ(b[k].images.at({i, c, y, x}), want);
          }
}

TEST(Loader, BackgroundEqualsSynchronousAndRepeatsAcrossRuns) {
  SyntheticOptions so;
  so.train_per_class = 50;
  so.channels = 3;
  so.height = so.width = 8;
  const Dataset d = make_synthetic(so, "train");
  auto sampler = std::make_shared<OversamplingSampler>(d.labels, std::vector<int64_t>{8, 9}, 3, 9);
  const LoaderOptions base{
      .batch_size = 32, .random_crop = true, .crop_padding = 2, .horizontal_flip = true, .seed = 4};
  LoaderOptions sync = base;
  sync.prefetch = 0;
  LoaderOptions deep = base;
  deep.prefetch = 5;
  Loader a(d, sampler, base), b(d, sampler, sync), c(d, sampler, deep);
  for (int64_t epoch : {0, 1}) {
    const std::vector<Batch> ea = whole_epoch(a, epoch);
    expect_same(ea, whole_epoch(b, epoch));
    expect_same(ea, whole_epoch(c, epoch));
  }
  // Resuming: a fresh loader started at epoch 1 (or mid-epoch) sees what the first one saw.
  Loader resumed(d, sampler, base);
  const std::vector<Batch> e1 = whole_epoch(a, 1);
  expect_same(e1, whole_epoch(resumed, 1));
  resumed.start_epoch(1, 3);
  auto third = resumed.next();
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(third->index, 3);
  EXPECT_EQ(third->images.to_vector(), e1[3].images.to_vector());
  // A different augmentation seed changes the images but not the order.
  LoaderOptions other = base;
  other.seed = 5;
  Loader d2(d, sampler, other);
  const std::vector<Batch> e1_other = whole_epoch(d2, 1);
  EXPECT_EQ(e1_other[0].indices, e1[0].indices);
  EXPECT_NE(e1_other[0].images.to_vector(), e1[0].images.to_vector());
}

TEST(Loader, CropAndFlipFollowTheDocumentedDraws) {
  const Dataset d = numbered_dataset(8, 2, 5, 6);
  auto sampler = std::make_shared<SequentialSampler>(8);
  const LoaderOptions o{.batch_size = 8,
                        .random_crop = true,
                        .crop_padding = 2,
                        .horizontal_flip = true,
                        .seed = 77,
                        .channels_last = false};
  Loader loader(d, sampler, o);
  const std::vector<Batch> e = whole_epoch(loader, 3);
  ASSERT_EQ(e.size(), 1u);
  Generator gen = Generator(77).fork(uint64_t{3} << 32 | 0);
  int flips = 0, shifted = 0;
  for (int64_t i = 0; i < 8; ++i) {
    const int64_t dy = gen.randint(5), dx = gen.randint(5);
    const bool flip = gen.uniform() < 0.5f;
    flips += flip;
    shifted += (dy != 2 || dx != 2);
    for (int64_t c = 0; c < 2; ++c)
      for (int64_t y = 0; y < 5; ++y)
        for (int64_t x = 0; x < 6; ++x) {
          const int64_t sy = y + dy - 2, sx = (flip ? 5 - x : x) + dx - 2;
          const float want = (sy >= 0 && sy < 5 && sx >= 0 && sx < 6) ? d.images.at({i, c, sy, sx}) : -1.f;
          ASSERT_EQ(e[0].images.at({i, c, y, x}), want) << "image " << i << " c " << c << " y " << y << " x " << x;
        }
  }
  EXPECT_GT(flips, 0);
  EXPECT_GT(shifted, 0);
}

namespace {

class ThrowingSampler : public Sampler {
 public:
  std::vector<int64_t> epoch_indices(int64_t epoch) const override {
    if (epoch == 1) throw Error("ThrowingSampler: epoch 1 is broken");
    return {0, 1, 2, 99};  // index 99 is outside the data set
  }
  int64_t epoch_size() const override { return 4; }
  std::string describe() const override { return "throwing"; }
};

}  // namespace

TEST(Loader, WorkerErrorsReachTheCaller) {
  const Dataset d = numbered_dataset(10, 1, 2, 2);
  Loader loader(d, std::make_shared<ThrowingSampler>(), {.batch_size = 2});
  loader.start_epoch(0);
  auto first = loader.next();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->indices, (std::vector<int64_t>{0, 1}));
  EXPECT_THAT([&] { loader.next(); }, ThrowsErrorWith("index 99"));
  loader.start_epoch(1);
  EXPECT_THROW(loader.next(), Error);
  // Abandoning an epoch midway and starting another works (no deadlock with a full queue).
  Loader l2(d, std::make_shared<ShuffleSampler>(10, 0), {.batch_size = 1, .prefetch = 1});
  l2.start_epoch(0);
  ASSERT_TRUE(l2.next().has_value());
  l2.start_epoch(5);
  int64_t count = 0;
  while (l2.next()) ++count;
  EXPECT_EQ(count, 10);
}
