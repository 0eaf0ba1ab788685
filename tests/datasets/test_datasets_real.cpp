// Checks on the real data sets as `peel fetch` leaves them in $PEEL_DATA (default: <source>/data).
// They skip when the data is absent (run `peel fetch all` first).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "datasets/dataset.h"
#include "datasets/fetch.h"
#include "datasets/imbalance.h"
#include "datasets/loader.h"
#include "tensor/error.h"

using namespace peel;
using namespace peel::data;

namespace {

std::string data_dir() {
  const char* env = std::getenv("PEEL_DATA");
  return env && *env ? std::string(env) : std::string(PEEL_SOURCE_DIR) + "/data";
}

// A statement of its own (safe after an unbraced if, no dangling else), skipping the test when
// the data set is absent.
#define REQUIRE_FETCHED(name)                                                                    \
  do {                                                                                           \
    if (!dataset_is_complete((name), data_dir()))                                                \
      GTEST_SKIP() << (name) << " not fetched into " << data_dir() << " (run `peel fetch all`)"; \
  } while (false)

// Mean and (population) standard deviation of all values.
std::pair<double, double> moments(const Tensor& t) {
  double s = 0, q = 0;
  const float* x = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) {
    s += x[i];
    q += double{x[i]} * x[i];
  }
  const double n = static_cast<double>(t.numel()), m = s / n;
  return {m, std::sqrt(q / n - m * m)};
}
}  // namespace

TEST(RealData, MnistIsTheOfficialSetAndNormalisesToZeroMeanUnitStd) {
  REQUIRE_FETCHED("mnist");
  const Dataset train = load_dataset("mnist", "train", data_dir());
  const Dataset test = load_dataset("mnist", "test", data_dir());
  EXPECT_EQ(train.images.shape(), (Shape{60000, 1, 28, 28}));
  EXPECT_EQ(test.size(), 10000);
  // The well-known class counts of MNIST's training set.
  EXPECT_EQ(train.class_counts(), (std::vector<int64_t>{5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949}));
  const auto [mean, std] = moments(train.images);
  EXPECT_NEAR(mean, 0.0, 2e-3);
  EXPECT_NEAR(std, 1.0, 2e-3);
}

TEST(RealData, FashionSplitIsBalancedAndNormalisesToZeroMeanUnitStd) {
  REQUIRE_FETCHED("fashion-mnist");
  const Dataset train = load_dataset("fashion-mnist", "train", data_dir());
  const Dataset test = load_dataset("fashion-mnist", "test", data_dir(), {.fit32 = Fit32::bilinear});
  EXPECT_EQ(train.class_counts(), std::vector<int64_t>(10, 6000));
  EXPECT_EQ(test.class_counts(), std::vector<int64_t>(10, 1000));
  EXPECT_EQ(test.images.shape(), (Shape{10000, 1, 32, 32}));
  const auto [mean, std] = moments(train.images);
  EXPECT_NEAR(mean, 0.0, 2e-3);
  EXPECT_NEAR(std, 1.0, 2e-3);
}

TEST(RealData, StepImbalancedFashionAndOneLoaderEpoch) {
  REQUIRE_FETCHED("fashion-mnist");
  const Dataset full = load_dataset("fashion-mnist", "train", data_dir());
  StepImbalanceOptions o;
  o.majority_classes = 5;
  o.n_majority = 6000;
  o.ratio = 10;
  const StepImbalance imb = step_imbalance(full.labels, full.num_classes, o);
  const Dataset train = subset(full, imb.indices);
  EXPECT_EQ(train.class_counts(), (std::vector<int64_t>{6000, 6000, 6000, 6000, 6000, 600, 600, 600, 600, 600}));
  Loader loader(train, std::make_shared<OversamplingSampler>(train.labels, imb.minority_classes, 10, 666),
                {.batch_size = 128});
  loader.start_epoch(0);
  int64_t images = 0, minority = 0;
  while (auto batch = loader.next()) {
    images += batch->size();
    for (int64_t y : batch->labels) minority += y >= 5;
  }
  EXPECT_EQ(images, 30000 + 10 * 3000);
  EXPECT_EQ(minority, 10 * 3000);
}
