#include "experiments/collapse/stats.h"

#include <cmath>
#include <limits>

#include "tensor/error.h"

namespace peel {

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double mean_of(const std::vector<double>& v) {
  if (v.empty()) return kNaN;
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

// sqrt(sum (x - mean)^2 / (n - ddof))
double std_of(const std::vector<double>& v, int ddof) {
  if (static_cast<int64_t>(v.size()) <= ddof || v.empty()) return kNaN;
  const double m = mean_of(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(static_cast<int64_t>(v.size()) - ddof));
}
}  // namespace

RowGeometry row_geometry(const MatrixD& rows) {
  const int64_t n = rows.rows;
  RowGeometry g;
  const MatrixD gram = matmul(rows, transpose(rows));
  for (int64_t a = 0; a < n; ++a) g.norms.push_back(std::sqrt(gram(a, a)));
  g.cosines = MatrixD::zeros(n, n);
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = 0; b < n; ++b)
      g.cosines(a, b) = gram(a, b) / (g.norms[static_cast<size_t>(a)] * g.norms[static_cast<size_t>(b)]);
  return g;
}

double RowGeometry::norm_cov_unbiased() const { return std_of(norms, 1) / mean_of(norms); }

double RowGeometry::norm_cov_population(const std::vector<bool>& selected) const {
  std::vector<double> picked;
  for (size_t a = 0; a < norms.size(); ++a)
    if (selected[a]) picked.push_back(norms[a]);
  return std_of(picked, 0) / mean_of(picked);
}

PairStats pair_stats(const std::vector<bool>& selected, const std::function<double(int64_t, int64_t)>& value) {
  std::vector<int64_t> idx;
  for (size_t a = 0; a < selected.size(); ++a)
    if (selected[a]) idx.push_back(static_cast<int64_t>(a));
  if (idx.size() < 2) return {kNaN, kNaN, kNaN};
  const double offset = 1.0 / static_cast<double>(idx.size() - 1);
  std::vector<double> values, deviations;
  for (size_t a = 0; a < idx.size(); ++a)
    for (size_t b = a + 1; b < idx.size(); ++b) {
      values.push_back(value(idx[a], idx[b]));
      deviations.push_back(std::abs(values.back() + offset));
    }
  return {mean_of(values), std_of(values, 0), mean_of(deviations)};
}

PairStats RowGeometry::pair_stats(const std::vector<bool>& selected) const {
  return peel::pair_stats(selected, [this](int64_t a, int64_t b) { return cosines(a, b); });
}

double normalized_distance_squared(const MatrixD& a, const MatrixD& b) {
  PEEL_CHECK(a.rows == b.rows && a.cols == b.cols, "normalized_distance_squared: shapes ({},{}) and ({},{}) differ",
             a.rows, a.cols, b.rows, b.cols);
  double na = 0, nb = 0;
  for (double x : a.values) na += x * x;
  for (double x : b.values) nb += x * x;
  na = std::sqrt(na);
  nb = std::sqrt(nb);
  double s = 0;
  for (size_t i = 0; i < a.values.size(); ++i) {
    const double diff = a.values[i] / na - b.values[i] / nb;
    s += diff * diff;
  }
  return s;
}

std::vector<bool> minority_mask(std::span<const int64_t> minority_classes, int64_t num_classes, const char* op) {
  std::vector<bool> mask(static_cast<size_t>(num_classes), false);
  for (int64_t c : minority_classes) {
    PEEL_CHECK(c >= 0 && c < num_classes, "{}: minority class {} is outside [0, {})", op, c, num_classes);
    PEEL_CHECK(!mask[static_cast<size_t>(c)], "{}: minority class {} is listed twice", op, c);
    mask[static_cast<size_t>(c)] = true;
  }
  return mask;
}

}  // namespace peel
