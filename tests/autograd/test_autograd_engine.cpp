// The backward pass itself: accumulation, no-grad, detach, deep graphs, freeing, errors, and the
// hook that is told when a leaf's gradient is complete.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "autograd/functional.h"
#include "tensor/error.h"
#include "tensor/storage.h"
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

// What backward's LeafReady hook saw: each leaf's name and its gradient at that moment.
struct ReadyCall {
  std::string name;
  std::vector<float> grad;
};

TEST(AutogradEngine, LeafReadyFiresOnceForEachLeafWhenItsGradientIsCompleteLastLayerFirst) {
  // Two layers; w1 is used twice, by the first layer and by a penalty on the loss, so its gradient
  // arrives in two parts far apart in the walk. b0 requires a gradient but no path reaches it; c
  // does not require one.
  auto make = [] {
    return std::vector<Variable>{
        Variable(Tensor::from_vector({0.5f, -1.f, 2.f, 0.25f, 1.5f, -0.75f}, {2, 3}), true, "w1"),
        Variable(Tensor::from_vector({0.1f, 0.2f, -0.3f}, {3}), true, "b1"),
        Variable(Tensor::from_vector({1.f, -2.f, 0.5f}, {3, 1}), true, "w2"),
        Variable(Tensor::from_vector({3.f}, {1}), true, "b0"),
        Variable(Tensor::from_vector({1.f, 2.f, -1.f, 0.5f}, {2, 2}), false, "c")};
  };
  auto loss_of = [](const std::vector<Variable>& v) {
    const Variable& w1 = v[0];
    Variable h = relu(matmul(v[4], w1) + v[1]);
    return sum(matmul(h, v[2])) + sum(w1 * w1);
  };
  std::vector<Variable> plain = make(), hooked = make();
  loss_of(plain).backward();
  std::vector<ReadyCall> calls;
  loss_of(hooked).backward([&](const VariableState& leaf) {
    calls.push_back({leaf.name, leaf.grad.contiguous().to_vector()});
  });

  ASSERT_EQ(calls.size(), 3u);     // w1, b1, w2 once each; not b0 (unreached) nor c (no gradient)
  EXPECT_EQ(calls[0].name, "w2");  // the last layer's parameter is complete first
  std::vector<std::string> rest{calls[1].name, calls[2].name};
  std::sort(rest.begin(), rest.end());
  EXPECT_EQ(rest, (std::vector<std::string>{"b1", "w1"}));
  for (const ReadyCall& call : calls) {
    const auto at =
        std::find_if(hooked.begin(), hooked.end(), [&](const Variable& v) { return v.name() == call.name; });
    const size_t k = static_cast<size_t>(at - hooked.begin());
    // Complete when told (w1's penalty part included), and the same bits as a backward without hook.
    EXPECT_EQ(call.grad, hooked[k].grad().contiguous().to_vector()) << call.name;
    EXPECT_EQ(call.grad, plain[k].grad().contiguous().to_vector()) << call.name;
  }
  EXPECT_FALSE(hooked[3].grad().defined());
}

TEST(AutogradEngine, LeafReadyIsToldOfTheAccumulatedGradientAndAnEmptyHookIsNone) {
  Variable x(Tensor::from_vector({1, 2}, {2}), true, "x");
  sum(x * 2.f).backward();
  std::vector<float> seen;
  sum(x * 3.f).backward([&](const VariableState& leaf) { seen = leaf.grad.to_vector(); });
  EXPECT_EQ(seen, (std::vector<float>{5, 5}));  // .grad() after adding this backward's part
  sum(x * x).backward(LeafReady{});
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{7, 9}));
}

// An output that no backward saved is released when its last handle goes, not at the end of the
// next backward (a residual sum's output, say). add's backward needs neither input, so the two
// inner sums below are held by nothing but the graph.
TEST(AutogradEngine, AnUnsavedIntermediateIsReleasedWithItsLastHandle) {
  const int64_t n = 1 << 20;  // 4 MB per value: large buffers, counted in live_bytes
  const int64_t value_bytes = n * static_cast<int64_t>(sizeof(float));
  Variable a(Tensor::full({n}, 1.f), true, "a");
  const int64_t before = memory_stats().live_bytes;
  Variable loss = sum(add(add(add(a, a), a), a));
  EXPECT_LT(memory_stats().live_bytes - before, value_bytes);  // the three sums are gone already
  loss.backward();
  EXPECT_EQ(a.grad().to_vector(), std::vector<float>(static_cast<size_t>(n), 4.f));
  EXPECT_EQ(loss.item(), 4.f * static_cast<float>(n));  // the root keeps its value: it has a handle
}

// A value someone still holds keeps it through backward, and copies and moves of a handle count
// as the handle they were made from.
TEST(AutogradEngine, AHeldIntermediateKeepsItsValueThroughBackward) {
  Variable a(Tensor::from_vector({1, 2, 3}, {3}), true, "a");
  Variable held = add(a, a);
  Variable copy = held;
  held = Variable();  // the copy still holds it
  Variable moved = std::move(copy);
  Variable loss = sum(add(moved, a));
  loss.backward();
  EXPECT_EQ(moved.value().to_vector(), (std::vector<float>{2, 4, 6}));
  EXPECT_EQ(a.grad().to_vector(), (std::vector<float>{3, 3, 3}));
}
