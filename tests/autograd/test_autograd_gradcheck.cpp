// Every differentiable op against central finite differences.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/functional.h"
#include "autograd/gradcheck.h"
#include "tensor/random.h"
#include "tests/support/gradcheck.h"

using namespace peel;
using namespace peel::ag;

namespace {

Tensor rand_t(const Shape& s, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  Generator g(seed);
  return uniform(s, lo, hi, g);
}
// Values bounded away from zero (for log, sqrt, div, abs and kinks).
Tensor positive(const Shape& s, uint64_t seed) { return rand_t(s, seed, 0.5f, 2.f); }
Tensor away_from_zero(const Shape& s, uint64_t seed) {
  Tensor t = rand_t(s, seed, 0.2f, 1.f);
  Tensor sign = rand_t(s, seed + 99);
  return where(gt(sign, Tensor::scalar(0.f)), t, neg(t));
}

using Vars = std::vector<Variable>;

}  // namespace

TEST(Gradcheck, Add) {
  EXPECT_GRADCHECK([](const Vars& v) { return add(v[0], v[1]); }, rand_t({3, 4}, 1), rand_t({3, 4}, 2));
}
TEST(Gradcheck, AddBroadcastRight) {
  EXPECT_GRADCHECK([](const Vars& v) { return add(v[0], v[1]); }, rand_t({3, 4}, 1), rand_t({4}, 2));
}
TEST(Gradcheck, AddBroadcastLeft) {
  EXPECT_GRADCHECK([](const Vars& v) { return add(v[0], v[1]); }, rand_t({3, 1}, 1), rand_t({2, 3, 4}, 2));
}
TEST(Gradcheck, SubBroadcastBothWays) {
  EXPECT_GRADCHECK([](const Vars& v) { return sub(v[0], v[1]); }, rand_t({3, 1, 5}, 1), rand_t({4, 1}, 2));
}
TEST(Gradcheck, MulBroadcast) {
  EXPECT_GRADCHECK([](const Vars& v) { return mul(v[0], v[1]); }, rand_t({2, 3, 4}, 1), rand_t({3, 1}, 2));
}
TEST(Gradcheck, Div) {
  EXPECT_GRADCHECK([](const Vars& v) { return div(v[0], v[1]); }, rand_t({3, 4}, 1), positive({1, 4}, 2));
}
TEST(Gradcheck, MaximumMinimum) {
  EXPECT_GRADCHECK([](const Vars& v) { return add(maximum(v[0], v[1]), minimum(v[0], v[1]) * 2.f); }, rand_t({5, 4}, 1),
                   rand_t({5, 4}, 7));
}
TEST(Gradcheck, Neg) {
  EXPECT_GRADCHECK([](const Vars& v) { return neg(v[0]); }, rand_t({6}, 1));
}
TEST(Gradcheck, Exp) {
  EXPECT_GRADCHECK([](const Vars& v) { return exp(v[0]); }, rand_t({3, 5}, 1));
}
TEST(Gradcheck, Log) {
  EXPECT_GRADCHECK([](const Vars& v) { return log(v[0]); }, positive({3, 5}, 1));
}
TEST(Gradcheck, Sqrt) {
  EXPECT_GRADCHECK([](const Vars& v) { return sqrt(v[0]); }, positive({3, 5}, 1));
}
TEST(Gradcheck, Rsqrt) {
  EXPECT_GRADCHECK([](const Vars& v) { return rsqrt(v[0]); }, positive({3, 5}, 1));
}
TEST(Gradcheck, Abs) {
  EXPECT_GRADCHECK([](const Vars& v) { return abs(v[0]); }, away_from_zero({4, 5}, 1));
}
TEST(Gradcheck, Relu) {
  EXPECT_GRADCHECK([](const Vars& v) { return relu(v[0]); }, away_from_zero({4, 5}, 1));
}
TEST(Gradcheck, Sigmoid) {
  EXPECT_GRADCHECK([](const Vars& v) { return sigmoid(v[0]); }, rand_t({4, 5}, 1, -3, 3));
}
TEST(Gradcheck, Tanh) {
  EXPECT_GRADCHECK([](const Vars& v) { return tanh(v[0]); }, rand_t({4, 5}, 1, -2, 2));
}
TEST(Gradcheck, Square) {
  EXPECT_GRADCHECK([](const Vars& v) { return square(v[0]); }, rand_t({4, 5}, 1));
}
TEST(Gradcheck, PowScalar) {
  EXPECT_GRADCHECK([](const Vars& v) { return pow(v[0], 2.5f); }, positive({4, 5}, 1));
}
TEST(Gradcheck, Clamp) {
  // Values kept away from the clamp boundaries, where the derivative jumps.
  EXPECT_GRADCHECK([](const Vars& v) { return clamp(v[0], -0.5f, 0.5f); },
                   Tensor::from_vector({-0.9f, -0.3f, 0.1f, 0.4f, 0.8f, -0.7f}, {6}));
}
TEST(Gradcheck, AffineAndScalarOperators) {
  EXPECT_GRADCHECK([](const Vars& v) { return (v[0] * 3.f + 1.f) / 2.f - 0.5f; }, rand_t({4}, 1));
}
TEST(Gradcheck, Where) {
  Tensor cond = Tensor::from_vector({1, 0, 1, 0, 0, 1}, {2, 3});
  EXPECT_GRADCHECK([cond](const Vars& v) { return where(cond, v[0], v[1]); }, rand_t({2, 3}, 1), rand_t({3}, 2));
}
TEST(Gradcheck, SumAllAxes) {
  EXPECT_GRADCHECK([](const Vars& v) { return sum(v[0]); }, rand_t({2, 3, 4}, 1));
}
TEST(Gradcheck, SumSeveralAxes) {
  EXPECT_GRADCHECK([](const Vars& v) { return sum(v[0], {0, 2}); }, rand_t({2, 3, 4}, 1));
}
TEST(Gradcheck, SumKeepdimNegativeAxis) {
  EXPECT_GRADCHECK([](const Vars& v) { return sum(v[0], {-1}, true); }, rand_t({2, 3, 4}, 1));
}
TEST(Gradcheck, MeanSeveralAxes) {
  EXPECT_GRADCHECK([](const Vars& v) { return mean(v[0], {1, 2}); }, rand_t({2, 3, 4}, 1));
}
TEST(Gradcheck, VarUnbiasedAndBiased) {
  EXPECT_GRADCHECK(
      [](const Vars& v) {
        return add(var(v[0], {1}), var(v[0], {0, 1}, false, false));
      },
      rand_t({3, 5}, 1));
}
TEST(Gradcheck, MaxMin) {
  EXPECT_GRADCHECK([](const Vars& v) { return add(sum(max(v[0], {1})), sum(min(v[0], {0}, true))); },
                   rand_t({3, 5}, 3));
}
TEST(Gradcheck, Logsumexp) {
  EXPECT_GRADCHECK([](const Vars& v) { return logsumexp(v[0], {1}); }, rand_t({3, 5}, 1, -3, 3));
}
TEST(Gradcheck, Softmax) {
  EXPECT_GRADCHECK([](const Vars& v) { return softmax(v[0], 1); }, rand_t({3, 5}, 1, -3, 3));
}
TEST(Gradcheck, LogSoftmax) {
  EXPECT_GRADCHECK([](const Vars& v) { return log_softmax(v[0], 0); }, rand_t({4, 3}, 1, -3, 3));
}
TEST(Gradcheck, Reshape) {
  EXPECT_GRADCHECK([](const Vars& v) { return reshape(v[0], {6, 2}); }, rand_t({3, 4}, 1));
}
TEST(Gradcheck, Flatten) {
  EXPECT_GRADCHECK([](const Vars& v) { return flatten(v[0]); }, rand_t({2, 3, 2}, 1));
}
TEST(Gradcheck, Permute) {
  EXPECT_GRADCHECK([](const Vars& v) { return permute(v[0], {2, 0, 1}); }, rand_t({2, 3, 4}, 1));
}
TEST(Gradcheck, Transpose) {
  EXPECT_GRADCHECK([](const Vars& v) { return transpose(v[0], 0, 1); }, rand_t({2, 5}, 1));
}
TEST(Gradcheck, SliceWithStep) {
  EXPECT_GRADCHECK([](const Vars& v) { return slice(v[0], 1, 1, 6, 2); }, rand_t({3, 7}, 1));
}
TEST(Gradcheck, Select) {
  EXPECT_GRADCHECK([](const Vars& v) { return select(v[0], 1, 2); }, rand_t({3, 4}, 1));
}
TEST(Gradcheck, Expand) {
  EXPECT_GRADCHECK([](const Vars& v) { return expand(v[0], {4, 3, 2}); }, rand_t({3, 1}, 1));
}
TEST(Gradcheck, UnsqueezeSqueeze) {
  EXPECT_GRADCHECK([](const Vars& v) { return squeeze(unsqueeze(v[0], 1), 1) * v[0]; }, rand_t({3, 2}, 1));
}
TEST(Gradcheck, Concat) {
  EXPECT_GRADCHECK([](const Vars& v) { return concat({v[0], v[1]}, 1); }, rand_t({2, 3}, 1), rand_t({2, 2}, 2));
}
TEST(Gradcheck, IndexSelectRepeated) {
  EXPECT_GRADCHECK([](const Vars& v) { return index_select(v[0], {2, 0, 2, 1}); }, rand_t({3, 2}, 1));
}
TEST(Gradcheck, Matmul2d) {
  EXPECT_GRADCHECK([](const Vars& v) { return matmul(v[0], v[1]); }, rand_t({3, 4}, 1), rand_t({4, 5}, 2));
}
TEST(Gradcheck, MatmulTransposedView) {
  EXPECT_GRADCHECK([](const Vars& v) { return matmul(v[0], transpose(v[1], 0, 1)); }, rand_t({3, 4}, 1),
                   rand_t({5, 4}, 2));
}
TEST(Gradcheck, MatmulBatchedBroadcast) {
  EXPECT_GRADCHECK([](const Vars& v) { return matmul(v[0], v[1]); }, rand_t({2, 3, 4}, 1), rand_t({4, 2}, 2));
}
TEST(Gradcheck, ValueFeedsTwoConsumers) {
  // y = x * x + exp(x): the gradient of x gathers from three uses.
  EXPECT_GRADCHECK([](const Vars& v) { return add(mul(v[0], v[0]), exp(v[0])); }, rand_t({4, 3}, 1));
}
TEST(Gradcheck, DiamondGraph) {
  EXPECT_GRADCHECK(
      [](const Vars& v) {
        Variable h = tanh(matmul(v[0], v[1]));
        return sum(mul(h, sigmoid(h)), {1});
      },
      rand_t({3, 4}, 1), rand_t({4, 2}, 2));
}

// ---- The checker catches a wrong backward, and its options do what they say ---------------------

namespace {

// y = 3x, whose backward returns `factor` times the true gradient 3 * grad_y: a deliberately
// wrong op for the canaries below (factor 1 is the correct op).
Variable triple_with_backward_times(const Variable& x, float factor) {
  return make_result(x.value() * 3.f, {x}, "triple_wrongly",
                     [factor](const Tensor& g, const std::vector<bool>&) { return Grads{g * (3.f * factor)}; });
}

}  // namespace

TEST(GradcheckCanary, CorrectBackwardPasses) {
  const GradcheckResult r =
      gradcheck([](const Vars& v) { return triple_with_backward_times(v[0], 1.f); }, {rand_t({2, 3}, 1)});
  EXPECT_TRUE(r.ok) << r.message;
  EXPECT_EQ(r.checked, 6);
}

TEST(GradcheckCanary, BackwardOffByAFactorFailsNamingInputAndElement) {
  // Input 0 is correct; input 1 goes through the op whose gradient is twice too large.
  const GradcheckResult r = gradcheck([](const Vars& v) { return add(v[0], triple_with_backward_times(v[1], 2.f)); },
                                      {rand_t({2, 3}, 1), rand_t({2, 3}, 2)});
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.message, ::testing::HasSubstr("input 1 element 0"));
  EXPECT_GT(r.max_abs_error, 0.1);
}

TEST(GradcheckCanary, BackwardWithTheWrongSignFails) {
  const GradcheckResult r =
      gradcheck([](const Vars& v) { return triple_with_backward_times(v[0], -1.f); }, {rand_t({4}, 3)});
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.message, ::testing::AllOf(::testing::HasSubstr("input 0 element 0"), ::testing::HasSubstr("analytic")));
}

TEST(GradcheckOptions, SkipLeavesOutPointsAtAKink) {
  // ReLU at exactly 0: the central difference is 1/2, the backward gives 0, so the check fails
  // there unless that element is skipped.
  const Tensor x = Tensor::from_vector({-0.5f, 0.f, 0.5f, 0.7f}, {4});
  auto f = [](const Vars& v) { return relu(v[0]); };
  const GradcheckResult unskipped = gradcheck(f, {x});
  EXPECT_FALSE(unskipped.ok);
  EXPECT_THAT(unskipped.message, ::testing::HasSubstr("input 0 element 1"));
  GradcheckOptions options;
  options.skip = [&](size_t input, int64_t element) { return std::abs(x.data()[element]) < options.eps && input == 0; };
  const GradcheckResult skipped = gradcheck(f, {x}, options);
  EXPECT_TRUE(skipped.ok) << skipped.message;
  EXPECT_EQ(skipped.checked, 3);
}

TEST(GradcheckOptions, MaxElementsPerInputChecksASpreadSubset) {
  GradcheckOptions options;
  options.max_elements_per_input = 10;
  const GradcheckResult r = gradcheck(
      [](const Vars& v) {
        return concat({square(v[0]), square(v[1])}, 0);
      },
      {rand_t({100}, 1), rand_t({7}, 2)}, options);
  EXPECT_TRUE(r.ok) << r.message;
  EXPECT_EQ(r.checked, 10 + 7);  // every 10th of the 100, all 7 of the small input
}

TEST(GradcheckOptions, ChannelsLastInputsReachTheFunctionChannelsLast) {
  int calls = 0, channels_last_calls = 0;
  const GradcheckResult r = gradcheck(
      [&](const Vars& v) {
        ++calls;
        if (v[0].value().is_channels_last()) ++channels_last_calls;
        return v[0] * 2.f;
      },
      {rand_t({2, 3, 2, 2}, 1).channels_last()});
  EXPECT_TRUE(r.ok) << r.message;
  EXPECT_GT(calls, 0);
  EXPECT_EQ(channels_last_calls, calls);
}
