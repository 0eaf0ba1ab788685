// Elementwise ops, broadcasting, reductions and the SIMD kernels against plain loops.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "tensor/error.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "tensor/simd/kernels.h"
#include "tests/support/error_matchers.h"

using namespace peel;
using peel::testing::ThrowsErrorWith;

namespace {
Tensor rand_t(const Shape& s, uint64_t seed, float lo = -2.f, float hi = 2.f) {
  Generator g(seed);
  return uniform(s, lo, hi, g);
}
}  // namespace

TEST(TensorOps, BroadcastingBothWays) {
  Tensor a = Tensor::from_vector({1, 2, 3}, {3, 1});
  Tensor b = Tensor::from_vector({10, 20}, {2});
  Tensor c = a + b;
  EXPECT_EQ(c.shape(), (Shape{3, 2}));
  EXPECT_EQ(c.to_vector(), (std::vector<float>{11, 21, 12, 22, 13, 23}));
}

TEST(TensorOps, BroadcastMismatchNamesOpAndShapes) {
  EXPECT_THAT([] { mul(Tensor::ones({2, 3}), Tensor::ones({4, 3})); }, ThrowsErrorWith("mul", "[2, 3]", "[4, 3]"));
}

TEST(TensorOps, UnaryOpsMatchTheStandardLibrary) {
  Tensor x = rand_t({1000}, 3, 0.1f, 4.f);
  std::vector<float> v = x.to_vector();
  auto check = [&](const Tensor& y, auto f, float tol) {
    std::vector<float> out = y.to_vector();
    for (size_t i = 0; i < v.size(); ++i) ASSERT_NEAR(out[i], f(v[i]), tol * std::max(1.f, std::abs(f(v[i])))) << i;
  };
  check(
      exp(x), [](float a) { return std::exp(a); }, 2e-6f);
  check(
      log(x), [](float a) { return std::log(a); }, 2e-6f);
  check(
      sqrt(x), [](float a) { return std::sqrt(a); }, 1e-6f);
  check(
      rsqrt(x), [](float a) { return 1.f / std::sqrt(a); }, 1e-6f);
  check(
      tanh(x - 2.f), [](float a) { return std::tanh(a - 2.f); }, 2e-6f);
  check(
      sigmoid(x - 2.f), [](float a) { return 1.f / (1.f + std::exp(2.f - a)); }, 2e-6f);
  check(
      pow(x, 1.7f), [](float a) { return std::pow(a, 1.7f); }, 4e-6f);
  check(
      clamp(x, 1.f, 2.f), [](float a) { return std::min(std::max(a, 1.f), 2.f); }, 0.f);
  check(
      abs(x - 2.f), [](float a) { return std::abs(a - 2.f); }, 0.f);
  check(
      relu(x - 2.f), [](float a) { return std::max(a - 2.f, 0.f); }, 0.f);
}

TEST(TensorOps, ComparisonsAndWhere) {
  Tensor a = Tensor::from_vector({1, 2, 3}, {3});
  Tensor b = Tensor::from_vector({2, 2, 2}, {3});
  EXPECT_EQ(lt(a, b).to_vector(), (std::vector<float>{1, 0, 0}));
  EXPECT_EQ(ge(a, b).to_vector(), (std::vector<float>{0, 1, 1}));
  EXPECT_EQ(eq(a, b).to_vector(), (std::vector<float>{0, 1, 0}));
  EXPECT_EQ(where(gt(a, b), a, b * 10.f).to_vector(), (std::vector<float>{20, 20, 3}));
}

TEST(TensorOps, ReductionsOverSeveralAxesWithKeepdim) {
  Tensor x = rand_t({3, 4, 5}, 1);
  Tensor s = sum(x, {0, 2}, true);
  EXPECT_EQ(s.shape(), (Shape{1, 4, 1}));
  for (int64_t j = 0; j < 4; ++j) {
    double expect = 0;
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t k = 0; k < 5; ++k) expect += x.at({i, j, k});
    EXPECT_NEAR(s.at({0, j, 0}), expect, 1e-5);
  }
  EXPECT_NEAR(mean(x).item(), sum(x).item() / 60.f, 1e-6);
}

TEST(TensorOps, VarianceIsUnbiasedByDefault) {
  Tensor x = Tensor::from_vector({1, 2, 3, 4}, {4});
  EXPECT_FLOAT_EQ(var(x).item(), 5.f / 3.f);
  EXPECT_FLOAT_EQ(var(x, {}, false, false).item(), 1.25f);
}

TEST(TensorOps, MaxMinArgmax) {
  Tensor x = Tensor::from_vector({3, 7, 7, 1, -2, 5}, {2, 3});
  EXPECT_EQ(max(x, {1}).to_vector(), (std::vector<float>{7, 5}));
  EXPECT_EQ(min(x, {0}).to_vector(), (std::vector<float>{1, -2, 5}));
  EXPECT_EQ(argmax(x, 1).values, (std::vector<int64_t>{1, 2}));  // first maximum wins
  Tensor with_nan = Tensor::from_vector({1, NAN, 3}, {3});
  EXPECT_EQ(argmax(with_nan, 0).values[0], 1);
}

TEST(TensorOps, SoftmaxIsStableForLargeLogits) {
  Tensor x = Tensor::from_vector({1000, 1001, 1002}, {1, 3});
  std::vector<float> p = softmax(x, 1).to_vector();
  EXPECT_NEAR(p[2], 0.66524096f, 1e-6);
  std::vector<float> lp = log_softmax(x, 1).to_vector();
  EXPECT_NEAR(lp[0], -2.40760596f, 1e-5);
  EXPECT_NEAR(logsumexp(x, {1}).item(), 1002.40760596f, 1e-3);
}

TEST(TensorOps, SumToReversesBroadcasting) {
  Tensor g = Tensor::ones({2, 3, 4});
  EXPECT_EQ(sum_to(g, {3, 1}).to_vector(), (std::vector<float>{8, 8, 8}));
  EXPECT_EQ(sum_to(g, {4}).to_vector(), (std::vector<float>{6, 6, 6, 6}));
}

TEST(TensorOps, StridedOperandsGiveTheSameResultAsContiguous) {
  Tensor a = rand_t({7, 9}, 1), b = rand_t({9, 7}, 2);
  EXPECT_TRUE(allclose(add(a, b.t()), add(a, b.t().contiguous()), 0, 0));
  EXPECT_TRUE(allclose(exp(a.t()), exp(a.t().contiguous()), 0, 0));
}

TEST(TensorOps, EveryInstructionSetGivesTheSameResults) {
  using namespace peel::simd;
  Tensor x = rand_t({1037}, 5, 0.1f, 3.f), y = rand_t({1037}, 6, 0.1f, 3.f);
  std::vector<float> ref(1037), out(1037);
  const KernelTable& base = kernels_for(Isa::kBaseline);
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    if (!cpu_supports(isa)) continue;
    const KernelTable& k = kernels_for(isa);
    for (UnaryOp op :
         {UnaryOp::kExp, UnaryOp::kLog, UnaryOp::kTanh, UnaryOp::kSigmoid, UnaryOp::kRsqrt, UnaryOp::kRelu}) {
      base.unary(op, 1037, x.data(), 1, ref.data(), 1, 0, 0);
      k.unary(op, 1037, x.data(), 1, out.data(), 1, 0, 0);
      for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-6f * std::max(1.f, std::abs(ref[i])));
    }
    for (BinaryOp op : {BinaryOp::kAdd, BinaryOp::kMul, BinaryOp::kDiv, BinaryOp::kMax, BinaryOp::kLt}) {
      base.binary(op, 1037, x.data(), 1, y.data(), 1, ref.data(), 1);
      k.binary(op, 1037, x.data(), 1, y.data(), 1, out.data(), 1);
      EXPECT_EQ(out, ref) << isa_name(isa);
    }
    EXPECT_NEAR(k.reduce(ReduceOp::kSum, 1037, x.data(), 1), base.reduce(ReduceOp::kSum, 1037, x.data(), 1), 1e-2);
    EXPECT_EQ(k.reduce(ReduceOp::kMax, 1037, x.data(), 1), base.reduce(ReduceOp::kMax, 1037, x.data(), 1));
  }
}

TEST(TensorOps, InPlaceUpdates) {
  Tensor a = Tensor::ones({2, 3});
  a.add_(Tensor::from_vector({1, 2, 3}, {3}), 2.f);
  EXPECT_EQ(a.to_vector(), (std::vector<float>{3, 5, 7, 3, 5, 7}));
  a.mul_(0.5f);
  EXPECT_EQ(a.at({1, 2}), 3.5f);
  a.fill_(4.f);
  EXPECT_EQ(sum(a).item(), 24.f);
}
