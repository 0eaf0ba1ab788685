// Helpers for kernel tests: the memory layouts every kernel is checked in, comparison against
// double-precision references, and central differences of a forward kernel.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "tensor/random.h"
#include "tensor/tensor.h"

namespace peel::kernel_test {

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

// Central difference of L(v) = sum(w * f(v)) with respect to v[i], evaluated in double from the
// float outputs of the forward kernel `f`.
inline double central_difference(const std::function<Tensor(const std::vector<float>&)>& f, std::vector<float> v,
                                 const std::vector<float>& w, size_t i, float h) {
  auto loss = [&](float value) {
    v[i] = value;
    const std::vector<float> y = f(v).to_vector();
    double total = 0;
    for (size_t j = 0; j < y.size(); ++j) total += static_cast<double>(w[j]) * y[j];
    return total;
  };
  const float x0 = v[i];
  const float up = x0 + h, down = x0 - h;
  return (loss(up) - loss(down)) / (static_cast<double>(up) - static_cast<double>(down));
}

// Checks `grad` (logical order) against central differences at `count` indices spread over v.
inline void check_against_differences(const std::function<Tensor(const std::vector<float>&)>& f,
                                      const std::vector<float>& v, const std::vector<float>& w, const Tensor& grad,
                                      float h, double tol, const std::string& what, size_t count = 24,
                                      const std::function<bool(size_t)>& skip = nullptr) {
  const std::vector<float> g = grad.to_vector();
  ASSERT_EQ(g.size(), v.size()) << what;
  const size_t step = std::max<size_t>(1, v.size() / count);
  for (size_t i = 0; i < v.size(); i += step) {
    if (skip && skip(i)) continue;
    const double fd = central_difference(f, v, w, i, h);
    EXPECT_NEAR(g[i], fd, tol * (1.0 + std::abs(fd))) << what << ": element " << i;
  }
}

}  // namespace peel::kernel_test
