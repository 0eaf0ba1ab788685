// Norms and pairwise cosines of the rows of a matrix, and their summary statistics: the geometry
// the collapse metrics (collapse.h) and the Layer-Peeled Model (lpm/lpm.h) both report.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "experiments/collapse/collapse.h"
#include "tensor/linalg.h"

namespace peel {

// Statistics of the cosines over pairs a < b of selected rows.
struct PairStats {
  double mean = 0;
  double std = 0;              // population std (divided by the number of pairs), as np.std
  double mean_abs_offset = 0;  // mean |cos + 1/(n-1)|, n the number of selected rows
};

// Statistics of value(i, j) over the pairs i < j of selected indices; NaN when fewer than two are
// selected.
PairStats pair_stats(const std::vector<bool>& selected, const std::function<double(int64_t, int64_t)>& value);

// Norms and the cosine matrix of the rows of a matrix.
struct RowGeometry {
  std::vector<double> norms;
  MatrixD cosines;
  // std(norms) / mean(norms) over all rows, with Bessel's correction (torch.std); NaN below 2 rows.
  double norm_cov_unbiased() const;
  // np.std(norms) / mean(norms) over the selected rows; NaN with none selected.
  double norm_cov_population(const std::vector<bool>& selected) const;
  // NaN when fewer than two rows are selected.
  PairStats pair_stats(const std::vector<bool>& selected) const;
};
RowGeometry row_geometry(const MatrixD& rows);

// || A/||A||_F - B/||B||_F ||_F^2
double normalized_distance_squared(const MatrixD& a, const MatrixD& b);

// The class means of the present classes (n_c > 0), minus mu_G chosen by `global_mean`.
struct CentredMeans {
  std::vector<int64_t> present;  // class ids with n_c > 0
  std::vector<double> mu_g;      // D
  MatrixD rows;                  // |present| x D
};
CentredMeans centre_means(const ClassMeans& cm, GlobalMean global_mean);

// mask[c] = c is listed; checks range and duplicates.
std::vector<bool> minority_mask(std::span<const int64_t> minority_classes, int64_t num_classes, const char* op);

}  // namespace peel
