// Helpers for the PyTorch parity tests: fixture paths and the scale-relative comparison of
// docs/parity.md (max |peel - torch| <= rtol * max |torch|).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/support/npy.h"

namespace peel::parity {

inline std::string case_dir(const std::string& name) {
  return std::string(PEEL_SOURCE_DIR) + "/tests/fixtures/torch/" + name;
}

inline nlohmann::json manifest(const std::string& name) {
  std::ifstream in(case_dir(name) + "/manifest.json");
  return nlohmann::json::parse(in);
}

inline Tensor load(const std::string& name, const std::string& stem) {
  return load_npy(npy_path(case_dir(name) + "/" + stem));
}

inline ::testing::AssertionResult close(const Tensor& peel_value, const Tensor& torch_value, double rtol = 1e-4) {
  if (peel_value.shape() != torch_value.shape())
    return ::testing::AssertionFailure() << "shape " << to_string(peel_value.shape()) << " vs torch "
                                         << to_string(torch_value.shape());
  const std::vector<float> a = peel_value.to_vector(), b = torch_value.to_vector();
  double worst = 0, scale = 0;
  size_t at = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
    const double d = std::abs(static_cast<double>(a[i]) - b[i]);
    if (d > worst || std::isnan(d)) worst = std::isnan(d) ? INFINITY : d, at = i;
  }
  if (worst <= rtol * std::max(scale, 1e-12)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max |peel - torch| = " << worst << " at element " << at << " (peel " << a[at]
                                       << ", torch " << b[at] << "), allowed " << rtol * scale;
}

}  // namespace peel::parity
