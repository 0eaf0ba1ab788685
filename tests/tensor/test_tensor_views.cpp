// Views share storage; layouts, reshape rules and error messages.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tensor/error.h"
#include "tensor/ops.h"
#include "tests/support/error_matchers.h"

using namespace peel;
using peel::testing::ThrowsErrorWith;

namespace {
Tensor iota(const Shape& s) {
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<float>(i);
  return t;
}
}  // namespace

TEST(TensorViews, TransposeSharesStorageAndWritesShowThrough) {
  Tensor a = iota({2, 3});
  Tensor t = a.t();
  EXPECT_TRUE(t.shares_storage_with(a));
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.at({2, 1}), 5.f);
  t.set({0, 1}, 100.f);
  EXPECT_EQ(a.at({1, 0}), 100.f);
}

TEST(TensorViews, ContiguousCopiesOnlyWhenNeeded) {
  Tensor a = iota({2, 3});
  EXPECT_TRUE(a.contiguous().shares_storage_with(a));
  Tensor c = a.t().contiguous();
  EXPECT_FALSE(c.shares_storage_with(a));
  EXPECT_EQ(c.to_vector(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
}

TEST(TensorViews, SliceWithStepAndSelect) {
  Tensor a = iota({4, 5});
  Tensor s = a.slice(1, 1, 5, 2);
  EXPECT_EQ(s.shape(), (Shape{4, 2}));
  EXPECT_EQ(s.to_vector(), (std::vector<float>{1, 3, 6, 8, 11, 13, 16, 18}));
  EXPECT_EQ(a.select(0, 2).to_vector(), (std::vector<float>{10, 11, 12, 13, 14}));
}

TEST(TensorViews, ExpandUsesZeroStrides) {
  Tensor a = Tensor::from_vector({1, 2, 3}, {3, 1});
  Tensor e = a.expand({2, 3, 4});
  EXPECT_EQ(e.stride(0), 0);
  EXPECT_EQ(e.stride(2), 0);
  EXPECT_EQ(e.at({1, 2, 3}), 3.f);
}

TEST(TensorViews, ReshapeIsAViewWhenPossibleAndInfersMinusOne) {
  Tensor a = iota({2, 3, 4});
  Tensor r = a.reshape({6, -1});
  EXPECT_EQ(r.shape(), (Shape{6, 4}));
  EXPECT_TRUE(r.shares_storage_with(a));
  Tensor merged = a.permute({2, 0, 1}).reshape({4, 6});  // axes 0,1 of a stay adjacent: a view
  EXPECT_TRUE(merged.shares_storage_with(a));
  Tensor p = a.permute({1, 0, 2});
  Tensor rp = p.reshape({6, 4});  // not expressible as a view: copies
  EXPECT_FALSE(rp.shares_storage_with(a));
  EXPECT_EQ(rp.at({1, 0}), 12.f);
}

TEST(TensorViews, ViewOfNonContiguousNamesBothShapes) {
  Tensor a = iota({2, 3}).t();
  EXPECT_THAT([&] { a.view({6}); }, ThrowsErrorWith("[3, 2]", "[6]"));
}

TEST(TensorViews, BadReshapeAndAxisErrorsNameTheProblem) {
  Tensor a = iota({2, 3});
  EXPECT_THAT([&] { a.reshape({4, 2}); }, ThrowsErrorWith("[4, 2]"));
  EXPECT_THAT([&] { a.permute({0, 0}); }, ThrowsErrorWith("permute"));
  EXPECT_THAT([&] { sum(a, {2}); }, ThrowsErrorWith("axis 2"));
  EXPECT_THAT([&] { a.at({2, 0}); }, ThrowsErrorWith("at: index 2 is out of range for axis 0 of size 2"));
  EXPECT_THAT([&] { a.slice(1, 0, 2, 0); }, ThrowsErrorWith("slice: step"));
}

TEST(TensorViews, ChannelsLastLayout) {
  Tensor a = iota({2, 3, 4, 5});
  Tensor cl = a.channels_last();
  EXPECT_TRUE(cl.is_channels_last());
  EXPECT_FALSE(cl.is_contiguous());
  EXPECT_EQ(cl.stride(1), 1);
  EXPECT_EQ(cl.to_vector(), a.to_vector());  // same logical values
  // Elementwise ops keep channels-last memory.
  Tensor r = relu(cl);
  EXPECT_TRUE(r.is_channels_last());
  EXPECT_EQ(r.to_vector(), a.to_vector());
}

TEST(TensorViews, PrintingShowsShapeAndValues) {
  Tensor a = Tensor::from_vector({1, 2.5f, 3, 4}, {2, 2});
  EXPECT_EQ(a.to_string(), "Tensor(shape=[2, 2], [[1, 2.5], [3, 4]])");
}

TEST(TensorViews, CachingAllocatorReusesLargeBuffers) {
  release_cached_memory();
  { Tensor a = Tensor::empty({1 << 16}); }
  const MemoryStats before = memory_stats();
  { Tensor b = Tensor::empty({1 << 16}); }
  const MemoryStats after = memory_stats();
  EXPECT_EQ(after.system_allocations, before.system_allocations);
  EXPECT_EQ(after.cache_hits, before.cache_hits + 1);
}
