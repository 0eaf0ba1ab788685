// The backward pass itself: accumulation, no-grad, detach, deep graphs, freeing, errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "autograd/functional.h"
#include "tensor/error.h"
#include "tests/support/error_matchers.h"

using namespace peel;
using namespace peel::ag;
using peel::testing::ThrowsErrorWith;

TEST(AutogradEngine, GradientsAccumulateAcrossBackwardCalls) {
  Variable x(Tensor::from_vector({1, 2, 3}, {3}), true);
  sum(x * 2.f).backward();
  sum(x * 3.f).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{5, 5, 5}));
  x.zero_grad();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{0, 0, 0}));
}

TEST(AutogradEngine, NoGradGuardRecordsNothing) {
  Variable x(Tensor::ones({2}), true);
  {
    NoGradGuard guard;
    Variable y = x * 2.f;
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(y.grad_fn(), nullptr);
  }
  EXPECT_TRUE((x * 2.f).requires_grad());
}

TEST(AutogradEngine, DetachCutsTheGraph) {
  Variable x(Tensor::from_vector({2}, {1}), true);
  Variable y = x * x;
  Variable z = y.detach() * x;  // dz/dx = y = 4, not 3x^2
  z.backward();
  EXPECT_FLOAT_EQ(x.grad().item(), 4.f);
}

TEST(AutogradEngine, ChainOfTenThousandOpsDoesNotOverflowTheStack) {
  Variable x(Tensor::from_vector({1}, {1}), true);
  Variable y = x;
  for (int i = 0; i < 10000; ++i) y = y * 1.0001f;
  y.backward();
  EXPECT_NEAR(x.grad().item(), std::pow(1.0001, 10000), 1e-2);
  // Building and dropping a long chain without backward must not recurse either.
  Variable z = x;
  for (int i = 0; i < 100000; ++i) z = z + 1.f;
}

TEST(AutogradEngine, BackwardFreesTheGraph) {
  Variable x(Tensor::ones({3}), true);
  Variable y = sum(exp(x));
  y.backward();
  // A second backward through a freed graph must throw.
  EXPECT_THAT([&] { y.backward(); }, ThrowsErrorWith("already freed"));
}

TEST(AutogradEngine, ExplicitUpstreamGradient) {
  Variable x(Tensor::from_vector({1, 2}, {2}), true);
  Variable y = x * x;
  y.backward(Tensor::from_vector({1, 10}, {2}));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{2, 40}));
}

TEST(AutogradEngine, BackwardOnNonScalarWithoutGradientNamesTheShape) {
  Variable x(Tensor::ones({2, 3}), true);
  Variable y = x * 2.f;
  EXPECT_THAT([&] { y.backward(); }, ThrowsErrorWith("[2, 3]"));
}

TEST(AutogradEngine, InputsThatDoNotRequireGradGetNone) {
  Variable x(Tensor::ones({2}), true);
  Variable c(Tensor::ones({2}), false);
  sum(x * c).backward();
  EXPECT_TRUE(x.grad().defined());
  EXPECT_FALSE(c.grad().defined());
}

TEST(AutogradEngine, ShapeMismatchNamesTheOpAndShapes) {
  Variable a(Tensor::ones({2, 3}), true), b(Tensor::ones({4}), true);
  EXPECT_THAT([&] { add(a, b); }, ThrowsErrorWith("add", "[2, 3]", "[4]"));
}
