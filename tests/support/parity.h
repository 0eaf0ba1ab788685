// Helpers for the PyTorch parity tests: fixture paths and the two comparisons of docs/parity.md:
// element-wise on the tensor's scale (max |peel - torch| <= rtol * max |torch|), and in norm
// (||peel - torch|| <= rtol * ||torch||) for states that several steps of training have made.
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

// ||peel - torch||_2 <= rtol * ||torch||_2 over the whole tensor. For states after several training
// steps, where one ReLU or max-pool decision flipped by float32 rounding moves a few entries by far
// more than rounding, but the tensor as a whole stays close (docs/parity.md).
inline ::testing::AssertionResult close_in_norm(const Tensor& peel_value, const Tensor& torch_value, double rtol) {
  if (peel_value.shape() != torch_value.shape())
    return ::testing::AssertionFailure() << "shape " << to_string(peel_value.shape()) << " vs torch "
                                         << to_string(torch_value.shape());
  const std::vector<float> a = peel_value.to_vector(), b = torch_value.to_vector();
  double difference = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    difference += d * d;
    norm += static_cast<double>(b[i]) * b[i];
  }
  difference = std::sqrt(difference), norm = std::sqrt(norm);
  if (difference <= rtol * std::max(norm, 1e-12)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "||peel - torch|| = " << difference << " is " << difference / norm
                                       << " of ||torch|| = " << norm << ", allowed " << rtol;
}

}  // namespace peel::parity
