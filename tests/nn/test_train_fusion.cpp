// Batch norm fused with what follows it in training (nn/fusion.h): its ReLU and a max pool
// (small_cnn, VGG), or a residual sum and a ReLU (ResNet's blocks). A training step of each model
// gives the same bits with the ops and with the layers one by one (logits, every gradient, the
// running statistics); the ops are taken where they apply, and the layers run one by one where they
// must not (a probe attached, another norm or activation, eval mode).
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "nn/fusion.h"
#include "nn/models.h"
#include "tensor/random.h"
#include "tests/support/gradcheck.h"
#include "tests/support/kernel_checks.h"

using namespace peel;

namespace {

struct StepResult {
  std::vector<float> logits;
  std::vector<std::pair<std::string, std::vector<float>>> grads, buffers;
};

StepResult training_step(const std::string& name, double width, bool fuse) {
  nn::set_training_fusion(fuse);
  auto model = nn::make_model({.name = name, .width = width, .seed = 5});
  model->train();
  Generator gen(6);
  const int64_t size = nn::model_image_size(name);
  const Tensor x = normal({6, 1, size, size}, 0.f, 1.f, gen);
  const std::vector<int64_t> labels{0, 1, 2, 3, 4, 5};
  ag::Variable logits = model->forward(ag::Variable(x));
  nn::cross_entropy(logits, labels).backward();
  nn::set_training_fusion(true);
  StepResult r;
  r.logits = logits.value().to_vector();
  for (auto& [n, p] : model->named_parameters()) r.grads.emplace_back(n, p.grad().to_vector());
  for (auto& [n, b] : model->named_buffers()) r.buffers.emplace_back(n, b.to_vector());
  return r;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST(TrainFusion, ATrainingStepIsTheLayersOneByOneBitForBit) {
  for (const auto& [name, width] :
       {std::pair<std::string, double>{"small_cnn", 1}, {"vgg11", 0.125}, {"resnet18", 0.125}}) {
    const StepResult fused = training_step(name, width, true), layers = training_step(name, width, false);
    EXPECT_TRUE(same_bits(fused.logits, layers.logits)) << name << " logits";
    ASSERT_EQ(fused.grads.size(), layers.grads.size());
    for (size_t i = 0; i < fused.grads.size(); ++i)
      EXPECT_TRUE(same_bits(fused.grads[i].second, layers.grads[i].second)) << name << " grad " << fused.grads[i].first;
    ASSERT_EQ(fused.buffers.size(), layers.buffers.size());
    for (size_t i = 0; i < fused.buffers.size(); ++i)
      EXPECT_TRUE(same_bits(fused.buffers[i].second, layers.buffers[i].second))
          << name << " buffer " << fused.buffers[i].first;
  }
}

// Which op made the output: the fused one exactly where nn/fusion.h says it applies.
TEST(TrainFusion, TheOpIsTakenOnlyWhereNothingCanTellItFromTheLayers) {
  Generator gen(7);
  const ag::Variable x(normal({4, 3, 8, 8}, 0.f, 1.f, gen));
  const Pool2dGeometry pool{2, 2, 0};
  auto op_of = [&](nn::Module& norm) {
    nn::Conv2d conv(3, 16, 3, 1, 1, false);
    return std::string(nn::conv_norm_max_pool(conv, norm, x, pool).grad_fn()->op);
  };
  nn::BatchNorm bn(16, true);
  EXPECT_EQ(op_of(bn), "batch_norm_relu_max_pool");

  struct Probe : nn::ActivationProbe {
    int calls = 0;
    void record(const Tensor&, const Tensor&, const Tensor&) override { ++calls; }
  } probe;
  bn.probe = &probe;
  EXPECT_EQ(op_of(bn), "max_pool2d");
  EXPECT_EQ(probe.calls, 1);
  bn.probe = nullptr;

  nn::set_training_fusion(false);
  EXPECT_EQ(op_of(bn), "max_pool2d");
  nn::set_training_fusion(true);

  nn::BatchNorm no_relu(16, false);
  EXPECT_EQ(op_of(no_relu), "max_pool2d");
  nn::GroupNorm gn(4, 16, 1e-5f, true);
  EXPECT_EQ(op_of(gn), "max_pool2d");
  bn.eval();
  EXPECT_EQ(op_of(bn), "max_pool2d");
}

TEST(TrainFusion, TheResidualOpIsTakenOnlyWhereNothingCanTellItFromTheLayers) {
  Generator gen(9);
  const ag::Variable x(normal({4, 8, 6, 6}, 0.f, 1.f, gen)), shortcut(normal({4, 8, 6, 6}, 0.f, 1.f, gen));
  auto op_of = [&](nn::Module& norm, nn::Module& activation) {
    nn::Conv2d conv(8, 8, 3, 1, 1, false);
    return std::string(nn::conv_norm_add_activation(conv, norm, x, shortcut, activation).grad_fn()->op);
  };
  nn::BatchNorm bn(8, false);
  nn::ReLU relu;
  EXPECT_EQ(op_of(bn, relu), "batch_norm_add_relu");

  struct Probe : nn::ActivationProbe {
    void record(const Tensor&, const Tensor&, const Tensor&) override {}
  } probe;
  relu.probe = &probe;
  EXPECT_EQ(op_of(bn, relu), "relu");
  relu.probe = nullptr;
  nn::Tlu tlu(8);
  EXPECT_NE(op_of(bn, tlu), "batch_norm_add_relu");
  nn::BatchNorm with_relu(8, true);
  EXPECT_EQ(op_of(with_relu, relu), "relu");
  nn::set_training_fusion(false);
  EXPECT_EQ(op_of(bn, relu), "relu");
  nn::set_training_fusion(true);
  bn.eval();
  EXPECT_EQ(op_of(bn, relu), "relu");
}

TEST(TrainFusion, GradientsMatchFiniteDifferences) {
  // Distinct inputs 0.1 apart and a shift that keeps every pre-activation positive: no window ties
  // and no ReLU kink within a step; the ReLU's cut and the ties are held to the two kernels bit for
  // bit in tests/tensor/test_kernels_batch_norm_fused.cpp.
  Generator gen(8);
  const Tensor x = kernel_checks::distinct_values({2, 3, 4, 6}, gen).channels_last();
  EXPECT_GRADCHECK(
      [](const std::vector<ag::Variable>& v) {
        Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
        return nn::batch_norm_relu_max_pool(v[0], v[1], v[2], rm, rv, 0.1f, 1e-5f, {2, 2, 0});
      },
      x, peel::testing::rand_t({3}, 2, 0.2f, 0.4f), peel::testing::rand_t({3}, 3, 1.f, 1.5f));
  // The residual op: with a shift and a residual that keep every sum positive (the ReLU's cut is
  // held to the three ops bit for bit in the kernel tests).
  EXPECT_GRADCHECK(
      [](const std::vector<ag::Variable>& v) {
        Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
        return nn::batch_norm_add_relu(v[0], v[1], v[2], rm, rv, 0.1f, 1e-5f, v[3]);
      },
      peel::testing::rand_t({2, 3, 4, 5}, 4), peel::testing::rand_t({3}, 5, 0.2f, 0.4f),
      peel::testing::rand_t({3}, 6, 1.f, 1.5f), peel::testing::rand_t({2, 3, 4, 5}, 7, 0.f, 0.5f));
}
