// Singular values and numerical rank of a weight matrix (collapse.h), for the square-loss study.
#include <algorithm>
#include <limits>

#include "experiments/collapse/collapse.h"
#include "tensor/error.h"

namespace peel {

WeightSpectrum weight_spectrum(const Tensor& weight, double rank_tolerance) {
  PEEL_CHECK(weight.defined() && weight.dim() >= 2, "weight_spectrum: needs a weight of rank >= 2, got {}",
             weight.defined() ? to_string(weight.shape()) : std::string("undefined"));
  PEEL_CHECK(rank_tolerance >= 0, "weight_spectrum: rank tolerance must be >= 0, got {}", rank_tolerance);
  const int64_t rows = weight.size(0), cols = weight.numel() / std::max<int64_t>(rows, 1);
  const MatrixD m = MatrixD::from_tensor(weight.reshape({rows, cols}));
  WeightSpectrum s;
  s.singular_values = singular_values(m);
  s.rank_tolerance = rank_tolerance;
  s.rank = numerical_rank(s.singular_values, rows, cols, rank_tolerance);
  s.rank_numpy = numerical_rank(s.singular_values, rows, cols);
  double frob_sq = 0;
  for (double v : s.singular_values) frob_sq += v * v;
  const double top = s.singular_values.empty() ? 0.0 : s.singular_values.front();
  s.stable_rank = top > 0 ? frob_sq / (top * top) : std::numeric_limits<double>::quiet_NaN();
  return s;
}

MetricColumns WeightSpectrum::to_columns(const std::string& prefix) const {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  return {{prefix + "rank", static_cast<double>(rank)},
          {prefix + "rank_numpy", static_cast<double>(rank_numpy)},
          {prefix + "stable_rank", stable_rank},
          {prefix + "sigma_max", singular_values.empty() ? nan : singular_values.front()},
          {prefix + "sigma_min", singular_values.empty() ? nan : singular_values.back()}};
}

}  // namespace peel
