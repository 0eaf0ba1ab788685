// Helpers for the finite-difference tests of differentiable ops: seeded uniform inputs and an
// EXPECT_GRADCHECK that names the line of the failing check.
#pragma once

#include <gtest/gtest.h>

#include <vector>

#include "autograd/gradcheck.h"
#include "tensor/random.h"

namespace peel::gradcheck_test {

inline Tensor rand_t(const Shape& s, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  Generator g(seed);
  return uniform(s, lo, hi, g);
}

// A function (not a macro body) so that lambdas with commas pass through the macro intact.
template <class F, class... T>
void expect_gradcheck(const char* where, F f, T... inputs) {
  ag::GradcheckResult r = ag::gradcheck(f, std::vector<Tensor>{inputs...});
  EXPECT_TRUE(r.ok) << where << ": " << r.message;
}

}  // namespace peel::gradcheck_test

#define EXPECT_GRADCHECK(...) \
  ::peel::gradcheck_test::expect_gradcheck(__FILE__ ":" GTEST_STRINGIFY_(__LINE__), __VA_ARGS__)
