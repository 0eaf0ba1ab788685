// Modules: names, parameter counts, train/eval, save/load and its errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>

#include "nn/models.h"
#include "tensor/error.h"
#include "tests/support/error_matchers.h"

using namespace peel;
using peel::testing::ThrowsErrorWith;

namespace {
std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("peel_test_" + std::to_string(::getpid()) + "_" + name)).string();
}
}  // namespace

TEST(Modules, SmallCnnHasPyTorchNamesAndCounts) {
  auto model = nn::make_model({.name = "small_cnn"});
  auto named = model->named_parameters();
  ASSERT_EQ(named.front().first, "conv1.weight");
  EXPECT_EQ(named.back().first, "fc.bias");
  // conv weights 288 + 9216 + 18432 + 36864 + 73728, BN 2*(32+32+64+64+128), fc 1280 + 10
  EXPECT_EQ(model->parameter_count(), 288 + 9216 + 18432 + 36864 + 73728 + 2 * 320 + 1290);
  auto buffers = model->named_buffers();
  EXPECT_EQ(buffers.front().first, "bn1.running_mean");
}

TEST(Modules, ResNet18NamesFollowTorchvision) {
  auto model = nn::make_model({.name = "resnet18", .width = 0.25, .in_channels = 3});
  bool found = false;
  for (auto& [name, v] : model->named_parameters())
    if (name == "layer2.0.downsample.0.weight") {
      found = true;
      EXPECT_EQ(v.shape(), (Shape{32, 16, 1, 1}));
    }
  EXPECT_TRUE(found);
}

TEST(Modules, UnknownModelIsAClearError) {
  EXPECT_THAT([] { nn::make_model({.name = "lenet"}); }, ThrowsErrorWith("unknown model 'lenet'"));
}

TEST(Modules, SaveLoadRoundTrip) {
  auto a = nn::make_model({.name = "small_cnn", .seed = 1});
  auto b = nn::make_model({.name = "small_cnn", .seed = 2});
  const std::string path = temp_path("roundtrip.peel");
  a->save(path);
  b->load(path);
  auto sa = a->state(), sb = b->state();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) EXPECT_EQ(sa[i].second.to_vector(), sb[i].second.to_vector()) << sa[i].first;
  std::filesystem::remove(path);
}

TEST(Modules, LoadReportsEveryMismatchAndChangesNothing) {
  auto small = nn::make_model({.name = "small_cnn", .classes = 10});
  auto other = nn::make_model({.name = "small_cnn", .classes = 5, .seed = 3});
  const std::string path = temp_path("mismatch.peel");
  other->save(path);
  const std::vector<float> before = small->state().front().second.to_vector();
  EXPECT_THAT([&] { small->load(path); },
              ThrowsErrorWith("'fc.weight' has shape [5, 128] in the file, the model expects [10, 128]", "'fc.bias'"));
  EXPECT_EQ(small->state().front().second.to_vector(), before);
  std::filesystem::remove(path);
}

TEST(Modules, TruncatedStateFileNamesTheOffset) {
  auto model = nn::make_model({.name = "small_cnn"});
  const std::string path = temp_path("truncated.peel");
  model->save(path);
  std::filesystem::resize_file(path, 1000);
  EXPECT_THAT([&] { model->load(path); }, ThrowsErrorWith("truncated at byte"));
  std::filesystem::remove(path);
}
