// Batch norm, its ReLU and the max pool after it as one op in training (nn/fusion.h): a training
// step of every model with such a layer gives the same bits with the op and with the layers one by
// one (logits, every gradient, the running statistics), the op is the one taken where it applies,
// and the layers run one by one where it must not apply (a probe attached, another norm, eval mode).
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
  for (const auto& [name, width] : {std::pair<std::string, double>{"small_cnn", 1}, {"vgg11", 0.125}}) {
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

TEST(TrainFusion, GradientMatchesFiniteDifferences) {
  // Distinct inputs 0.1 apart and a shift that keeps every pre-activation positive: no window ties
  // and no ReLU kink within a step; the ReLU's cut and the ties are held to the two kernels bit for
  // bit in tests/tensor/test_kernels_batch_norm_pool.cpp.
  Generator gen(8);
  const Tensor x = kernel_checks::distinct_values({2, 3, 4, 6}, gen).channels_last();
  EXPECT_GRADCHECK(
      [](const std::vector<ag::Variable>& v) {
        Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
        return nn::batch_norm_relu_max_pool(v[0], v[1], v[2], rm, rv, 0.1f, 1e-5f, {2, 2, 0});
      },
      x, peel::testing::rand_t({3}, 2, 0.2f, 0.4f), peel::testing::rand_t({3}, 3, 1.f, 1.5f));
}
