// Shared pieces of the kernel tests in tests/tensor/test_kernels_*.cpp: the memory layouts every
// kernel runs in, random inputs, comparison against double-precision reference values, and the
// output-shape arithmetic the reference loops share.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "tensor/random.h"
#include "tensor/tensor.h"

namespace peel::kernel_checks {

// ---- Layouts and comparison helpers -------------------------------------------------------------

enum class Layout { kContiguous, kChannelsLast, kStrided };
inline const Layout kLayouts[] = {Layout::kContiguous, Layout::kChannelsLast, Layout::kStrided};

inline std::string layout_name(Layout l) {
  switch (l) {
    case Layout::kContiguous:
      return "contiguous";
    case Layout::kChannelsLast:
      return "channels-last";
    case Layout::kStrided:
      return "strided";
  }
  return "?";
}

// The same logical values in the requested memory layout. kStrided is a view with gaps (every
// other element of a wider last axis), which no fast path accepts as it is.
inline Tensor in_layout(const Tensor& x, Layout l) {
  switch (l) {
    case Layout::kContiguous:
      return x.contiguous();
    case Layout::kChannelsLast:
      return x.dim() == 4 ? x.channels_last() : x.contiguous();
    case Layout::kStrided: {
      Shape wide = x.shape();
      wide.back() *= 2;
      Tensor big = Tensor::zeros(wide);
      Tensor view = big.slice(x.dim() - 1, 0, wide.back(), 2);
      view.copy_(x);
      return view;
    }
  }
  return x;
}

inline Tensor random_tensor(const Shape& shape, Generator& gen, float mean = 0.f, float stddev = 1.f) {
  return normal(shape, mean, stddev, gen);
}

inline std::vector<double> to_double(const Tensor& t) {
  const std::vector<float> v = t.to_vector();
  return {v.begin(), v.end()};
}

inline void expect_close(const Tensor& got, const std::vector<double>& want, double atol, double rtol,
                         const std::string& what) {
  const std::vector<float> g = got.to_vector();
  ASSERT_EQ(g.size(), want.size()) << what;
  int reported = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const bool both_nan = std::isnan(g[i]) && std::isnan(want[i]);
    if (both_nan || std::abs(g[i] - want[i]) <= atol + rtol * std::abs(want[i])) continue;
    ADD_FAILURE() << what << ": element " << i << " is " << g[i] << ", expected " << want[i];
    if (++reported == 5) return;
  }
}

// The layout an output should have for an input in layout l.
inline void expect_layout_follows(const Tensor& out, Layout l, const std::string& what) {
  if (l == Layout::kChannelsLast && out.dim() == 4) {
    EXPECT_TRUE(out.is_channels_last()) << what << ": output should stay channels-last";
  } else {
    EXPECT_TRUE(out.is_contiguous()) << what << ": output should be contiguous";
  }
}

// ---- Buffer reuse -------------------------------------------------------------------------------

// A training step repeats the same shapes: after two warm-up calls of `step`, a third takes no new
// large buffer from the system (the caching allocator serves them all).
template <class Step>
void expect_steady_state_reuses_buffers(Step&& step) {
  step();
  step();
  const int64_t before = memory_stats().system_allocations;
  step();
  EXPECT_EQ(memory_stats().system_allocations, before);
}

// ---- Inputs without ties ------------------------------------------------------------------------

// Distinct values 0.1 apart in random order: no ties, so a small step never changes a window's max.
inline Tensor distinct_values(const Shape& shape, Generator& gen) {
  const int64_t n = numel_of(shape);
  const std::vector<int64_t> perm = gen.permutation(n);
  std::vector<float> v(n);
  // The middle index, an integer on purpose (the values are 0.1 * (k - middle) for k in [0, n)).
  const int64_t middle = n / 2;
  for (int64_t i = 0; i < n; ++i)
    v[i] = 0.1f * static_cast<float>(perm[i] - middle);  // NOLINT(bugprone-integer-division): see above
  return Tensor::from_vector(v, shape);
}

// ---- Normalisation shapes -----------------------------------------------------------------------

struct NormDims {
  int64_t N, C, S;  // x viewed as (N, C, S)
};

inline NormDims norm_dims(const Shape& s) {
  NormDims d{s[0], s[1], 1};
  for (size_t i = 2; i < s.size(); ++i) d.S *= s[i];
  return d;
}

// A parameter's values, or n copies of `fallback` when it is undefined (no affine).
inline std::vector<double> values_or(const Tensor& t, int64_t n, double fallback) {
  return t.defined() ? to_double(t) : std::vector<double>(n, fallback);
}

}  // namespace peel::kernel_checks
