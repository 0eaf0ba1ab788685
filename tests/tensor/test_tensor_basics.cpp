#include <gtest/gtest.h>

#include "tensor/ops.h"

using namespace peel;

TEST(TensorBasics, SumOverAxes) {
  Tensor x = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(sum(x, {1}).to_vector(), (std::vector<float>{6, 15}));
  EXPECT_EQ(sum(x, {0}).to_vector(), (std::vector<float>{5, 7, 9}));
  EXPECT_FLOAT_EQ(sum(x).item(), 21.f);
}
