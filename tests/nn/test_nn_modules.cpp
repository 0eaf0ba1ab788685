// Modules: names, parameter counts, train/eval, save/load and its errors; optimizers; schedules.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "nn/models.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "tensor/error.h"

using namespace peel;

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
  try {
    nn::make_model({.name = "lenet"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown model 'lenet'"), std::string::npos) << e.what();
  }
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
  try {
    small->load(path);
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("'fc.weight' has shape [5, 128] in the file, the model expects [10, 128]"), std::string::npos)
        << m;
    EXPECT_NE(m.find("'fc.bias'"), std::string::npos) << m;
  }
  EXPECT_EQ(small->state().front().second.to_vector(), before);
  std::filesystem::remove(path);
}

TEST(Modules, TruncatedStateFileNamesTheOffset) {
  auto model = nn::make_model({.name = "small_cnn"});
  const std::string path = temp_path("truncated.peel");
  model->save(path);
  std::filesystem::resize_file(path, 1000);
  try {
    model->load(path);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated at byte"), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
}

TEST(Optim, SgdMatchesPyTorchUpdateRule) {
  // p = 1, grads 1 then 2, lr 0.1, momentum 0.9, wd 0.1 (PyTorch: d = g + wd p; buf = d, then 0.9 buf + d).
  ag::Variable p(Tensor::from_vector({1.f}, {1}), true);
  optim::Sgd sgd({{{p}, 0.1f, 1.f}}, {.lr = 0.1f, .momentum = 0.9f});
  p.grad() = Tensor::from_vector({1.f}, {1});
  sgd.step();  // d = 1.1, buf = 1.1, p = 1 - 0.11 = 0.89
  EXPECT_NEAR(p.item(), 0.89f, 1e-7);
  p.grad() = Tensor::from_vector({2.f}, {1});
  sgd.step();  // d = 2.089, buf = 0.99 + 2.089 = 3.079, p = 0.89 - 0.3079
  EXPECT_NEAR(p.item(), 0.5821f, 1e-6);
}

TEST(Optim, NesterovNeedsMomentum) {
  ag::Variable p(Tensor::ones({1}), true);
  EXPECT_THROW(optim::Sgd({{{p}, 0.f, 1.f}}, {.lr = 0.1f, .momentum = 0.f, .nesterov = true}), Error);
}

TEST(Optim, WeightDecayGroupsSkipNormsAndBiases) {
  auto model = nn::make_model({.name = "small_cnn"});
  auto groups = optim::split_weight_decay(model->named_parameters(), 5e-4f, false);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].params.size(), 6u);  // five conv weights and the fc weight
  EXPECT_EQ(groups[1].weight_decay, 0.f);
}

TEST(Schedules, MultistepCosineWarmup) {
  auto multistep = optim::parse_schedule("multistep:116,233", 350);
  EXPECT_FLOAT_EQ(optim::learning_rate_at(multistep, 0.1f, 115), 0.1f);
  EXPECT_FLOAT_EQ(optim::learning_rate_at(multistep, 0.1f, 116), 0.01f);
  EXPECT_NEAR(optim::learning_rate_at(multistep, 0.1f, 300), 0.001f, 1e-9);
  auto cosine = optim::parse_schedule("cosine", 10);
  EXPECT_NEAR(optim::learning_rate_at(cosine, 1.f, 5), 0.5f, 1e-6);
  auto warm = optim::parse_schedule("constant+warmup:5", 10);
  EXPECT_NEAR(optim::learning_rate_at(warm, 1.f, 0), 0.1f, 1e-6);
  EXPECT_NEAR(optim::learning_rate_at(warm, 1.f, 4), 0.82f, 1e-6);
  EXPECT_NEAR(optim::learning_rate_at(warm, 1.f, 5), 1.f, 1e-6);
  EXPECT_THROW(optim::parse_schedule("step:3", 10), Error);
  EXPECT_THROW(optim::parse_schedule("multistep:a,b", 10), Error);
}
