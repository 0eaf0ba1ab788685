// The error of a result relative to its scale, for tests that hold a fast path to a slow one.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "tensor/tensor.h"

namespace peel::testing {

// max |a - b| / max |b| (max |a - b| when b is all zeros): relative to the result's scale, so sums
// that cancel to nearly zero do not count as large relative errors. Shapes must match.
inline double relative_error(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  const std::vector<float> va = a.to_vector(), vb = b.to_vector();
  double diff = 0, scale = 0;
  for (size_t i = 0; i < std::min(va.size(), vb.size()); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(va[i]) - vb[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(vb[i])));
  }
  return scale == 0 ? diff : diff / scale;
}

}  // namespace peel::testing
