// EXPECT_GRADCHECK(f, inputs...): autograd's gradcheck of f at the given input tensors, failing the
// test with the checker's message (which input and element, analytic and numeric values).
// EXPECT_GRADCHECK_WITH(options, f, inputs...) passes GradcheckOptions (step, tolerances, points
// to skip). For the tests of programs that link peel_autograd.
#pragma once

#include <gtest/gtest.h>

#include <vector>

#include "autograd/gradcheck.h"
#include "tensor/random.h"

namespace peel::testing {

// Seeded uniform inputs for gradient checks.
inline Tensor rand_t(const Shape& s, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  Generator g(seed);
  return uniform(s, lo, hi, g);
}

// A function (not a macro body) so that lambdas with commas pass through the macro intact.
template <class F, class... T>
void expect_gradcheck(const char* where, const ag::GradcheckOptions& options, F f, T... inputs) {
  const ag::GradcheckResult r = ag::gradcheck(f, std::vector<Tensor>{inputs...}, options);
  EXPECT_TRUE(r.ok) << where << ": " << r.message;
  EXPECT_GT(r.checked, 0) << where << ": no element was checked";
}

}  // namespace peel::testing

#define EXPECT_GRADCHECK_WITH(options, ...) \
  ::peel::testing::expect_gradcheck(__FILE__ ":" GTEST_STRINGIFY_(__LINE__), options, __VA_ARGS__)
#define EXPECT_GRADCHECK(...) EXPECT_GRADCHECK_WITH(::peel::ag::GradcheckOptions{}, __VA_ARGS__)
