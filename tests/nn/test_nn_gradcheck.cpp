// Layer ops and losses against finite differences.
#include <gtest/gtest.h>

#include "autograd/gradcheck.h"
#include "nn/functional.h"
#include "tensor/random.h"
#include "tests/support/gradcheck_test.h"

using namespace peel;
using namespace peel::ag;
using namespace peel::gradcheck_test;
using Vars = std::vector<Variable>;

TEST(NnGradcheck, Linear) {
  EXPECT_GRADCHECK([](const Vars& v) { return nn::linear(v[0], v[1], v[2]); }, rand_t({4, 5}, 1), rand_t({3, 5}, 2),
                   rand_t({3}, 3));
}

TEST(NnGradcheck, CrossEntropy) {
  EXPECT_GRADCHECK([](const Vars& v) { return nn::cross_entropy(v[0], {0, 2, 1, 2}); }, rand_t({4, 3}, 1, -2, 2));
}

TEST(NnGradcheck, CrossEntropyWithClassWeights) {
  EXPECT_GRADCHECK(
      [](const Vars& v) {
        return nn::cross_entropy(v[0], {0, 2, 1, 2}, {1.f, 3.f, 0.5f});
      },
      rand_t({4, 3}, 1, -2, 2));
}

TEST(NnGradcheck, SquareLossWithScaling) {
  EXPECT_GRADCHECK([](const Vars& v) { return nn::mse_loss(v[0], {1, 0, 2}, 5.f, 2.f); }, rand_t({3, 4}, 1));
}

TEST(NnGradcheck, Conv2dStride2PaddingDilationBias) {
  for (auto g : {Conv2dGeometry::square(1, 1), Conv2dGeometry::square(2, 1), Conv2dGeometry::square(1, 2, 2)}) {
    EXPECT_GRADCHECK([g](const Vars& v) { return nn::conv2d(v[0], v[1], v[2], g); }, rand_t({2, 3, 7, 6}, 1),
                     rand_t({4, 3, 3, 3}, 2), rand_t({4}, 3));
  }
}

TEST(NnGradcheck, Conv2dOneByOne) {
  EXPECT_GRADCHECK([](const Vars& v) { return nn::conv2d(v[0], v[1], Variable(), Conv2dGeometry::square(2, 0)); },
                   rand_t({2, 5, 5, 5}, 1), rand_t({3, 5, 1, 1}, 2));
}

TEST(NnGradcheck, BatchNormTrainingMode) {
  for (bool relu : {false, true}) {
    EXPECT_GRADCHECK(
        [relu](const Vars& v) {
          Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
          return nn::batch_norm(v[0], v[1], v[2], rm, rv, true, 0.1f, 1e-5f, relu);
        },
        rand_t({4, 3, 3, 2}, 1), rand_t({3}, 2, 0.5f, 1.5f), rand_t({3}, 3));
  }
}

TEST(NnGradcheck, BatchNorm1dTrainingMode) {
  EXPECT_GRADCHECK(
      [](const Vars& v) {
        Tensor rm = Tensor::zeros({5}), rv = Tensor::ones({5});
        return nn::batch_norm(v[0], v[1], v[2], rm, rv, true, 0.1f, 1e-5f, false);
      },
      rand_t({6, 5}, 1), rand_t({5}, 2, 0.5f, 1.5f), rand_t({5}, 3));
}

TEST(NnGradcheck, BatchNormEvalMode) {
  EXPECT_GRADCHECK(
      [](const Vars& v) {
        Tensor rm = rand_t({3}, 8), rv = rand_t({3}, 9, 0.5f, 2.f);
        return nn::batch_norm(v[0], v[1], v[2], rm, rv, false, 0.1f, 1e-5f, false);
      },
      rand_t({2, 3, 2, 2}, 1), rand_t({3}, 2, 0.5f, 1.5f), rand_t({3}, 3));
}

TEST(NnGradcheck, GroupNormAndLayerNorm) {
  for (int64_t groups : {1, 2, 4}) {
    EXPECT_GRADCHECK([groups](const Vars& v) { return nn::group_norm(v[0], groups, v[1], v[2], 1e-5f); },
                     rand_t({2, 4, 3, 3}, 1), rand_t({4}, 2, 0.5f, 1.5f), rand_t({4}, 3));
  }
}

TEST(NnGradcheck, Pools) {
  // Distinct values so that the max is never tied within a window.
  Tensor x = Tensor::empty({2, 3, 5, 5});
  Generator g(4);
  std::vector<int64_t> perm = g.permutation(x.numel());
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = static_cast<float>(perm[static_cast<size_t>(i)]) * 0.01f;
  EXPECT_GRADCHECK([](const Vars& v) { return nn::max_pool2d(v[0], {2, 2, 0}); }, x);
  EXPECT_GRADCHECK([](const Vars& v) { return nn::max_pool2d(v[0], {3, 2, 1}); }, x);
  EXPECT_GRADCHECK([](const Vars& v) { return nn::avg_pool2d(v[0], {3, 2, 1}); }, rand_t({2, 3, 5, 5}, 1));
  EXPECT_GRADCHECK([](const Vars& v) { return nn::global_avg_pool(v[0]); }, rand_t({2, 3, 4, 5}, 1));
}

TEST(NnGradcheck, ChannelsLastInputs) {
  Tensor x = rand_t({2, 4, 5, 5}, 1).channels_last();
  EXPECT_GRADCHECK([](const Vars& v) { return nn::conv2d(v[0], v[1], v[2], Conv2dGeometry::square(1, 1)); }, x,
                   rand_t({3, 4, 3, 3}, 2), rand_t({3}, 3));
}
