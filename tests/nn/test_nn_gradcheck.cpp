// Layer ops and losses against finite differences, through autograd's gradcheck; the backward passes
// of the pooling and normalisation kernels (tensor/kernels/) are checked here, through these ops.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "autograd/gradcheck.h"
#include "nn/functional.h"
#include "tensor/random.h"
#include "tests/support/gradcheck.h"
#include "tests/support/kernel_checks.h"

using namespace peel;
using namespace peel::ag;
using peel::testing::rand_t;
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
    EXPECT_GRADCHECK([groups](const Vars& v) { return nn::group_norm(v[0], groups, v[1], v[2], 1e-5f, true); },
                     rand_t({2, 4, 3, 3}, 1), rand_t({4}, 2, 0.5f, 1.5f), rand_t({4}, 3));  // the fused ReLU
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

// ---- The pooling and normalisation kernels' backward passes (tensor/kernels/), through the ops ----
// Every geometry, both fast memory forms (contiguous NCHW and channels-last), the fused ReLU.

namespace {

const Pool2dGeometry kPoolGeometries[] = {{2, 2, 0}, {3, 2, 1}, {3, 1, 1}, {2, 1, 0}, {3, 3, 1}, {4, 2, 2}};

Tensor in_form(const Tensor& t, bool channels_last) { return channels_last ? t.channels_last() : t.contiguous(); }

GradcheckOptions options_for(float eps, float tol, int64_t elements) {
  GradcheckOptions o;
  o.eps = eps;
  o.rtol = tol;
  o.atol = tol;
  o.max_elements_per_input = elements;
  return o;
}

}  // namespace

TEST(NnGradcheck, MaxPoolEveryGeometryAndLayout) {
  // Values 0.1 apart with no ties, so a step of 0.02 never changes which input is a window's max.
  Generator gen(2);
  const Tensor x = kernel_checks::distinct_values({2, 19, 7, 6}, gen);
  for (const Pool2dGeometry& g : kPoolGeometries)
    for (bool cl : {false, true})
      EXPECT_GRADCHECK_WITH(
          options_for(0.02f, 1e-3f, 64), [g](const Vars& v) { return nn::max_pool2d(v[0], g); }, in_form(x, cl));
}

TEST(NnGradcheck, AvgPoolEveryGeometryAndLayout) {
  for (const Pool2dGeometry& g : kPoolGeometries)
    for (bool cl : {false, true})
      EXPECT_GRADCHECK_WITH(
          options_for(0.05f, 2e-3f, 64), [g](const Vars& v) { return nn::avg_pool2d(v[0], g); },
          in_form(rand_t({2, 5, 7, 9}, 3), cl));
}

TEST(NnGradcheck, GlobalAvgPoolBothLayouts) {
  for (bool cl : {false, true})
    EXPECT_GRADCHECK_WITH(
        options_for(0.05f, 2e-3f, 64), [](const Vars& v) { return nn::global_avg_pool(v[0]); },
        in_form(rand_t({3, 21, 5, 7}, 4, 1.f, 5.f), cl));
}

namespace {

// Batch-norm inputs nudged away from the fused ReLU's kink: per channel c, x = center[c] +-
// (0.5 + u) * scale[c] with u uniform in [0, 1), the two signs in pairs. With center = the batch
// mean (the pairs make it so) or the running mean, and scale = the standard deviation, every
// |xhat| >= ~0.45, so with gamma in [0.5, 1.5] and |beta| <= 0.1 every pre-activation is >= ~0.12
// from zero, and no step of 1e-2 in x, gamma or beta moves one across it.
Tensor nudged_from_kink(const Shape& shape, uint64_t seed, const std::vector<float>& center,
                        const std::vector<float>& scale) {
  const int64_t N = shape[0], C = shape[1], S = numel_of(shape) / (N * C);
  Generator gen(seed);
  const std::vector<float> u = uniform(shape, 0.f, 1.f, gen).to_vector();
  std::vector<float> v(u.size());
  auto index = [&](int64_t c, int64_t k) { return static_cast<size_t>(((k / S) * C + c) * S + k % S); };
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < N * S; ++k) {
      // Values 2j and 2j+1 of a channel share one magnitude, so a channel's values sum to zero.
      const float magnitude = 0.5f + u[index(c, k - k % 2)];
      v[index(c, k)] = center[c] + (k % 2 == 0 ? magnitude : -magnitude) * scale[c];
    }
  return Tensor::from_vector(v, shape);
}

}  // namespace

TEST(NnGradcheck, BatchNormTrainingWithAndWithoutFusedRelu) {
  for (const Shape& shape : {Shape{4, 4, 3, 5}, Shape{6, 5}}) {  // an even count of values per channel
    const int64_t C = shape[1];
    const Tensor x = nudged_from_kink(shape, 9, std::vector<float>(C, 0.f), std::vector<float>(C, 1.f));
    const Tensor gamma = rand_t({C}, 10, 0.5f, 1.5f), beta = rand_t({C}, 11, -0.1f, 0.1f);
    for (bool relu : {false, true}) {
      auto bn = [relu](const Vars& v) {
        Tensor rm = Tensor::zeros({v[1].size(0)}), rv = Tensor::ones({v[1].size(0)});
        return nn::batch_norm(v[0], v[1], v[2], rm, rv, true, 0.1f, 1e-5f, relu);
      };
      EXPECT_GRADCHECK_WITH(options_for(1e-2f, 1e-2f, 30), bn, in_form(x, shape.size() == 4), gamma, beta);
    }
  }
}

TEST(NnGradcheck, BatchNormEvalModeBothLayoutsWithAndWithoutRelu) {
  const Tensor rm = rand_t({6}, 8), rv = rand_t({6}, 9, 0.5f, 2.f);
  std::vector<float> std_dev;
  for (float var : rv.to_vector()) std_dev.push_back(std::sqrt(var + 1e-5f));
  const Tensor x = nudged_from_kink({3, 6, 4, 5}, 1, rm.to_vector(), std_dev);
  const Tensor gamma = rand_t({6}, 2, 0.5f, 1.5f), beta = rand_t({6}, 3, -0.1f, 0.1f);
  for (bool relu : {false, true}) {
    auto bn = [&rm, &rv, relu](const Vars& v) {
      Tensor m = rm, s = rv;
      return nn::batch_norm(v[0], v[1], v[2], m, s, false, 0.1f, 1e-5f, relu);
    };
    for (bool cl : {false, true}) EXPECT_GRADCHECK_WITH(options_for(1e-2f, 1e-3f, 40), bn, in_form(x, cl), gamma, beta);
  }
}

TEST(NnGradcheck, GroupNormGroupCountsShapesAndLayouts) {
  struct Case {
    Shape shape;
    int64_t groups;
  };
  const Case cases[] = {{{3, 6, 5, 7}, 1}, {{3, 6, 5, 7}, 6}, {{3, 6, 5, 7}, 3}, {{2, 48, 4, 5}, 4},
                        {{5, 12}, 1},      {{5, 12}, 4},      {{4, 6, 9}, 2}};
  for (const Case& c : cases) {
    const int64_t C = c.shape[1];
    const Tensor x = rand_t(c.shape, 13, -3.f, 1.f);
    const Tensor gamma = rand_t({C}, 14, 0.5f, 1.5f), beta = rand_t({C}, 15);
    const int64_t groups = c.groups;
    for (bool cl : {false, true}) {
      if (cl && c.shape.size() != 4) continue;
      EXPECT_GRADCHECK_WITH(
          options_for(1e-2f, 1e-2f, 30),
          [groups](const Vars& v) { return nn::group_norm(v[0], groups, v[1], v[2], 1e-5f); }, in_form(x, cl), gamma,
          beta);
    }
  }
}
