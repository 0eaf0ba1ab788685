// The normalisation ops of nn/normalization.h against finite differences (autograd/gradcheck.h),
// and EstBN's training-mode gradient, which by definition ignores the statistics' dependence on x.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "autograd/gradcheck.h"
#include "nn/normalization.h"
#include "tensor/random.h"
#include "tests/support/gradcheck.h"

using namespace peel;
using namespace peel::ag;
using peel::testing::rand_t;
using Vars = std::vector<Variable>;

TEST(NormGradcheck, WeightStandardizedConvolution) {
  EXPECT_GRADCHECK(
      [](const Vars& v) {
        return nn::conv2d(v[0], nn::weight_standardize(v[1]), Variable(), Conv2dGeometry::square(1, 1));
      },
      rand_t({1, 2, 4, 4}, 1), rand_t({3, 2, 3, 3}, 2));
}

TEST(NormGradcheck, WeightStandardizedLinear) {
  EXPECT_GRADCHECK([](const Vars& v) { return nn::linear(v[0], nn::weight_standardize(v[1]), v[2]); },
                   rand_t({4, 6}, 1), rand_t({3, 6}, 2), rand_t({3}, 3));
}

TEST(NormGradcheck, WeightNormalizedConvolutionAndLinear) {
  EXPECT_GRADCHECK(
      [](const Vars& v) { return nn::conv2d(v[0], nn::weight_norm(v[1], v[2]), v[3], Conv2dGeometry::square(2, 1)); },
      rand_t({1, 2, 5, 5}, 1), rand_t({3, 2, 3, 3}, 2), rand_t({3, 1, 1, 1}, 3, 0.5f, 2.f), rand_t({3}, 4));
  EXPECT_GRADCHECK([](const Vars& v) { return nn::linear(v[0], nn::weight_norm(v[1], v[2]), Variable()); },
                   rand_t({4, 6}, 1), rand_t({3, 6}, 2), rand_t({3, 1}, 3, 0.5f, 2.f));
}

TEST(NormGradcheck, EstimatedBatchNormEvalAndTrainWithoutUpdate) {
  // In eval mode, and in training with moving speed 0 (the statistics do not move), the output
  // depends on x only through the normalisation, so finite differences see the whole gradient.
  for (bool training : {false, true}) {
    for (bool relu : {false, true}) {
      EXPECT_GRADCHECK(
          [training, relu](const Vars& v) {
            Tensor rm = rand_t({3}, 8), rv = rand_t({3}, 9, 0.5f, 2.f);
            return nn::estimated_batch_norm(v[0], v[1], v[2], rm, rv, training, 0.f, 1e-5f, relu);
          },
          rand_t({2, 3, 2, 3}, 1), rand_t({3}, 2, 0.5f, 1.5f), rand_t({3}, 3));
    }
  }
}

TEST(NormGradcheck, EstimatedBatchNormTrainingGradientIgnoresTheStatistics) {
  // dx = gamma / sqrt(var + eps) * dy with the statistics after this forward's update.
  const Tensor x0 = rand_t({4, 2, 3, 3}, 1, -2.f, 3.f);
  Tensor rm = Tensor::zeros({2}), rv = Tensor::ones({2});
  Variable x(x0.clone(), true), gamma(Tensor::from_vector({1.5f, -0.5f}, {2}), true), beta(Tensor::zeros({2}), true);
  Variable y = nn::estimated_batch_norm(x, gamma, beta, rm, rv, true, 0.25f, 1e-5f, false);
  y.backward(Tensor::ones(y.shape()));
  const std::vector<float> mean = rm.to_vector(), var = rv.to_vector(), gx = x.grad().to_vector();
  EXPECT_GT(mean[0] * mean[0] + mean[1] * mean[1], 0.f);  // the update happened
  for (size_t i = 0; i < gx.size(); ++i) {
    const size_t c = (i / 9) % 2;
    EXPECT_NEAR(gx[i], gamma.value().to_vector()[c] / std::sqrt(var[c] + 1e-5f), 1e-6) << i;
  }
  // The output used the updated statistics.
  const std::vector<float> yv = y.value().to_vector(), xv = x0.to_vector();
  for (size_t i = 0; i < yv.size(); ++i) {
    const size_t c = (i / 9) % 2;
    EXPECT_NEAR(yv[i], gamma.value().to_vector()[c] * (xv[i] - mean[c]) / std::sqrt(var[c] + 1e-5f), 1e-5) << i;
  }
}

TEST(NormGradcheck, BatchChannelNormWithBatchNormBatchPart) {
  for (const Shape& shape : {Shape{3, 4, 2, 3}, Shape{5, 4}}) {
    EXPECT_GRADCHECK(
        [](const Vars& v) {
          Tensor rm = Tensor::zeros({4}), rv = Tensor::ones({4});
          Variable h = nn::batch_norm(v[0], v[1], v[2], rm, rv, true, 0.1f, 1e-5f, false);
          return nn::group_affine_norm(h, 2, v[3], v[4], 1e-5f);
        },
        rand_t(shape, 1), rand_t({4}, 2, 0.5f, 1.5f), rand_t({4}, 3), rand_t({1, 2, 1}, 4, 0.5f, 1.5f),
        rand_t({1, 2, 1}, 5));
  }
}

TEST(NormGradcheck, FusedBatchChannelNormEveryMode) {
  // The one-op BCN: batch statistics (the batch part's training mode) and given statistics (EstBN,
  // eval), with and without its ReLU, channels in groups of 2 and of 1, 4-d and 2-d input.
  for (BcnStatistics statistics : {BcnStatistics::kBatch, BcnStatistics::kRunning})
    for (bool relu : {false, true})
      for (int64_t groups : {2, 4})
        for (const Shape& shape : {Shape{3, 4, 2, 3}, Shape{5, 4}}) {
          SCOPED_TRACE(::testing::Message() << "batch statistics " << (statistics == BcnStatistics::kBatch) << " relu "
                                            << relu << " groups " << groups << " shape " << to_string(shape));
          EXPECT_GRADCHECK(
              [&](const Vars& v) {
                Tensor rm = rand_t({4}, 8), rv = rand_t({4}, 9, 0.5f, 2.f);
                BcnParameters p;
                p.groups = groups;
                p.relu = relu;
                return nn::batch_channel_norm(v[0], v[1], v[2], v[3], v[4], rm, rv, statistics, 0.1f, p);
              },
              rand_t(shape, 1), rand_t({4}, 2, 0.5f, 1.5f), rand_t({4}, 3), rand_t({1, groups, 1}, 4, 0.5f, 1.5f),
              rand_t({1, groups, 1}, 5));
        }
}

TEST(NormGradcheck, FilterResponseNormWithTluAndLearnedEps) {
  // tau well below y (no kink within reach of the finite differences) and near it (some inputs clipped).
  for (float tau_level : {-4.f, -0.3f}) {
    EXPECT_GRADCHECK([](const Vars& v) { return nn::filter_response_norm(v[0], v[1], v[2], v[3], v[4]); },
                     rand_t({2, 3, 3, 3}, 11), rand_t({3}, 2, 0.5f, 1.5f), rand_t({3}, 3, -0.2f, 0.2f),
                     rand_t({3}, 4, 0.05f, 0.2f), rand_t({3}, 5, tau_level - 0.05f, tau_level + 0.05f));
  }
  // (N, C) input, where each value is its own plane and a learned eps matters most.
  EXPECT_GRADCHECK([](const Vars& v) { return nn::filter_response_norm(v[0], v[1], v[2], v[3], Variable()); },
                   rand_t({4, 3}, 1), rand_t({3}, 2, 0.5f, 1.5f), rand_t({3}, 3), rand_t({3}, 4, 0.2f, 0.5f));
}

TEST(NormGradcheck, TluAwayFromTies) {
  EXPECT_GRADCHECK([](const Vars& v) { return nn::tlu(v[0], v[1]); }, rand_t({2, 3, 3, 3}, 6),
                   Tensor::from_vector({-0.57f, 0.013f, 0.41f}, {3}));
}
