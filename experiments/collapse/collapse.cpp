// The collapse metrics: class means, one blocked GEMM pass over the features, and the statistics
// of the centred means and classifier rows. Definitions are in collapse.h.
#include "experiments/collapse/collapse.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "experiments/collapse/stats.h"
#include "tensor/error.h"
#include "tensor/threads.h"

namespace peel {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Rows of H centred and multiplied per GEMM: 256 x 4096 doubles = 8 MB.
constexpr int64_t kBlockRows = 256;
// Eigenvalues of Sigma_B below this fraction of the largest are round-off, not directions.
constexpr double kEigenRelativeFloor = 1e-12;

void check_features_and_labels(const Tensor& features, std::span<const int64_t> labels, int64_t num_classes,
                               const char* op) {
  PEEL_CHECK(features.defined() && features.dim() == 2, "{}: features must be a 2-d tensor (N, D), got {}", op,
             features.defined() ? to_string(features.shape()) : std::string("undefined"));
  const int64_t n = features.size(0);
  PEEL_CHECK(n > 0 && features.size(1) > 0, "{}: features {} are empty", op, to_string(features.shape()));
  PEEL_CHECK(static_cast<int64_t>(labels.size()) == n, "{}: {} labels for {} feature rows", op, labels.size(), n);
  PEEL_CHECK(num_classes >= 1, "{}: num_classes must be positive, got {}", op, num_classes);
  for (size_t i = 0; i < labels.size(); ++i)
    PEEL_CHECK(labels[i] >= 0 && labels[i] < num_classes, "{}: label {} of sample {} is outside [0, {})", op, labels[i],
               i, num_classes);
}

std::vector<double> to_doubles(const Tensor& t) {
  std::vector<float> v = t.contiguous().to_vector();
  return {v.begin(), v.end()};
}

// The eigenpairs of Sigma_B = M^T M / K (M: K x D centred means) that NC1 inverts, obtained from
// the K x K Gram matrix G = M M^T / K: if G u = lambda u then v = M^T u / sqrt(K lambda) is a unit
// eigenvector of Sigma_B with the same eigenvalue. Keeps the top K-1 above the round-off floor.
struct BetweenClassEigen {
  std::vector<double> values;  // r, descending
  MatrixD vectors;             // D x r, columns v_j
  double trace = 0;            // Tr(Sigma_B)
};

BetweenClassEigen between_class_eigen(const MatrixD& centred) {
  const int64_t kp = centred.rows, d = centred.cols;
  BetweenClassEigen out;
  if (kp == 0) return out;
  MatrixD gram = matmul(centred, transpose(centred));
  for (double& g : gram.values) g /= static_cast<double>(kp);
  for (int64_t a = 0; a < kp; ++a) out.trace += gram(a, a);
  Eigh e = eigh(gram);
  const double largest = e.values.back();
  std::vector<int64_t> kept;
  for (int64_t idx = kp - 1; idx >= 0 && static_cast<int64_t>(kept.size()) < kp - 1; --idx)
    if (e.values[static_cast<size_t>(idx)] > kEigenRelativeFloor * largest && largest > 0) kept.push_back(idx);
  const int64_t r = static_cast<int64_t>(kept.size());
  out.vectors = MatrixD::zeros(d, r);
  for (int64_t j = 0; j < r; ++j) {
    const int64_t idx = kept[static_cast<size_t>(j)];
    const double lambda = e.values[static_cast<size_t>(idx)];
    out.values.push_back(lambda);
    const double scale = 1.0 / std::sqrt(static_cast<double>(kp) * lambda);
    for (int64_t a = 0; a < kp; ++a) {
      const double u = e.vectors(a, idx) * scale;
      for (int64_t i = 0; i < d; ++i) out.vectors(i, j) += centred(a, i) * u;
    }
  }
  return out;
}

// What the blocked pass over the samples accumulates.
struct SamplePass {
  double within_trace_sum = 0;   // sum_i ||h_i - mu_{y_i}||^2
  double nc1_sum = 0;            // sum_i sum_j ((h_i - mu_{y_i}) . v_j)^2 / lambda_j
  std::vector<int64_t> ncc;      // nearest-class-centre decision per sample
  std::vector<int64_t> network;  // argmax of H W^T + b per sample (when no logits were given)
};

// One pass over H in blocks of rows: centre each row by its class mean (in double), multiply the
// block by Q = [V | mu_present^T | W^T] with one dgemm, and add back per-class offsets so that
//   column block V:       (h - mu_y) . v_j,
//   column block means:   h . mu_c - ||mu_c||^2 / 2   (argmax = nearest class centre),
//   column block W:       h . w_c + b_c               (the logits).
SamplePass sample_pass(const Tensor& h, std::span<const int64_t> labels, const ClassMeans& cm,
                       const CentredMeans& centred, const BetweenClassEigen& eig, const MatrixD* w,
                       const std::vector<double>& bias) {
  const int64_t n = h.size(0), d = h.size(1), k = cm.means.rows;
  const int64_t r = static_cast<int64_t>(eig.values.size());
  const int64_t kp = static_cast<int64_t>(centred.present.size());
  const int64_t kw = w ? w->rows : 0;
  const int64_t q_cols = r + kp + kw;

  MatrixD q = MatrixD::zeros(d, q_cols);
  for (int64_t i = 0; i < d; ++i) {
    for (int64_t j = 0; j < r; ++j) q(i, j) = eig.vectors(i, j);
    for (int64_t a = 0; a < kp; ++a) q(i, r + a) = cm.means(centred.present[static_cast<size_t>(a)], i);
    for (int64_t c = 0; c < kw; ++c) q(i, r + kp + c) = (*w)(c, i);
  }
  // offset(y, col) = mu_y . Q(:, col) for the mean and W blocks, plus -||mu_c||^2/2 and b_c.
  MatrixD offset = matmul(cm.means, q);
  for (int64_t y = 0; y < k; ++y) {
    for (int64_t j = 0; j < r; ++j) offset(y, j) = 0;
    for (int64_t a = 0; a < kp; ++a) {
      const int64_t c = centred.present[static_cast<size_t>(a)];
      double sq = 0;
      for (int64_t i = 0; i < d; ++i) sq += cm.means(c, i) * cm.means(c, i);
      offset(y, r + a) -= 0.5 * sq;
    }
    for (int64_t c = 0; c < kw; ++c) offset(y, r + kp + c) += bias.empty() ? 0.0 : bias[static_cast<size_t>(c)];
  }

  SamplePass out;
  out.ncc.resize(static_cast<size_t>(n));
  if (w) out.network.resize(static_cast<size_t>(n));
  const float* hp = h.data();
  std::vector<double> block(static_cast<size_t>(kBlockRows * d)), z(static_cast<size_t>(kBlockRows * q_cols));
  // The row loops are serial on purpose: alternating OpenMP regions with OpenBLAS's own spinning
  // thread pool hundreds of times made this pass 3-10x slower on 2 cores; the dgemm is threaded.
  // Sums run in sample order, so the result does not depend on the thread count.
  for (int64_t start = 0; start < n; start += kBlockRows) {
    const int64_t rows = std::min(kBlockRows, n - start);
    for (int64_t t = 0; t < rows; ++t) {
      const int64_t y = labels[static_cast<size_t>(start + t)];
      const float* src = hp + (start + t) * d;
      const double* mean = cm.means.values.data() + y * d;
      double* dst = block.data() + t * d;
      for (int64_t i = 0; i < d; ++i) {
        dst[i] = static_cast<double>(src[i]) - mean[i];
        out.within_trace_sum += dst[i] * dst[i];
      }
    }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(rows), static_cast<blasint>(q_cols),
                static_cast<blasint>(d), 1.0, block.data(), static_cast<blasint>(d), q.values.data(),
                static_cast<blasint>(q_cols), 0.0, z.data(), static_cast<blasint>(q_cols));
    for (int64_t t = 0; t < rows; ++t) {
      const int64_t y = labels[static_cast<size_t>(start + t)];
      const double* zr = z.data() + t * q_cols;
      for (int64_t j = 0; j < r; ++j) out.nc1_sum += zr[j] * zr[j] / eig.values[static_cast<size_t>(j)];
      int64_t best = 0;  // first maximum, like argmin of the distance with the lowest class id on ties
      for (int64_t a = 1; a < kp; ++a)
        if (zr[r + a] + offset(y, r + a) > zr[r + best] + offset(y, r + best)) best = a;
      out.ncc[static_cast<size_t>(start + t)] = centred.present[static_cast<size_t>(best)];
      if (w) {
        const int64_t base = r + kp;
        int64_t top = 0;
        for (int64_t c = 1; c < kw; ++c)
          if (zr[base + c] + offset(y, base + c) > zr[base + top] + offset(y, base + top)) top = c;
        out.network[static_cast<size_t>(start + t)] = top;
      }
    }
  }
  return out;
}

}  // namespace

CentredMeans centre_means(const ClassMeans& cm, GlobalMean global_mean) {
  const int64_t k = cm.means.rows, d = cm.means.cols;
  CentredMeans out;
  for (int64_t c = 0; c < k; ++c)
    if (cm.counts[static_cast<size_t>(c)] > 0) out.present.push_back(c);
  const int64_t kp = static_cast<int64_t>(out.present.size());
  out.mu_g.assign(static_cast<size_t>(d), 0.0);
  if (global_mean == GlobalMean::AllSamples) {
    out.mu_g = cm.sample_mean;
  } else {
    for (int64_t c : out.present)
      for (int64_t j = 0; j < d; ++j) out.mu_g[static_cast<size_t>(j)] += cm.means(c, j) / static_cast<double>(kp);
  }
  out.rows = MatrixD::zeros(kp, d);
  for (int64_t a = 0; a < kp; ++a)
    for (int64_t j = 0; j < d; ++j)
      out.rows(a, j) = cm.means(out.present[static_cast<size_t>(a)], j) - out.mu_g[static_cast<size_t>(j)];
  return out;
}

const char* to_string(GlobalMean g) { return g == GlobalMean::ClassMeans ? "class-means" : "all-samples"; }

GlobalMean parse_global_mean(std::string_view name) {
  if (name == "class-means") return GlobalMean::ClassMeans;
  if (name == "all-samples") return GlobalMean::AllSamples;
  PEEL_FAIL("global mean: expected 'class-means' or 'all-samples', got '{}'", name);
}

ClassMeans class_means(const Tensor& features, std::span<const int64_t> labels, int64_t num_classes) {
  check_features_and_labels(features, labels, num_classes, "class_means");
  const Tensor h = features.contiguous();
  const int64_t n = h.size(0), d = h.size(1);
  const float* hp = h.data();
  ClassMeans out{MatrixD::zeros(num_classes, d), std::vector<int64_t>(static_cast<size_t>(num_classes), 0),
                 std::vector<double>(static_cast<size_t>(d), 0.0)};
  for (int64_t y : labels) ++out.counts[static_cast<size_t>(y)];
  // Threads own disjoint feature columns, so the sums are race-free and in sample order.
  parallel_for(d, 64, [&](int64_t b, int64_t e) {
    for (int64_t i = 0; i < n; ++i) {
      const float* src = hp + i * d;
      double* dst = &out.means(labels[static_cast<size_t>(i)], 0);
      for (int64_t j = b; j < e; ++j) dst[j] += src[j];
    }
    for (int64_t c = 0; c < num_classes; ++c)
      for (int64_t j = b; j < e; ++j) out.sample_mean[static_cast<size_t>(j)] += out.means(c, j);
  });
  for (double& v : out.sample_mean) v /= static_cast<double>(n);
  for (int64_t c = 0; c < num_classes; ++c) {
    const int64_t nc = out.counts[static_cast<size_t>(c)];
    if (nc > 0)
      for (int64_t j = 0; j < d; ++j) out.means(c, j) /= static_cast<double>(nc);
  }
  return out;
}

CollapseMetrics collapse_metrics(const CollapseInputs& in) {
  const char* op = "collapse_metrics";
  check_features_and_labels(in.features, in.labels, in.num_classes, op);
  const int64_t n = in.features.size(0), d = in.features.size(1), k = in.num_classes;
  const Tensor& w_t = in.classifier_weight;
  PEEL_CHECK(w_t.defined() && w_t.dim() == 2 && w_t.size(0) == k && w_t.size(1) == d,
             "{}: classifier weight must be (K, D) = ({}, {}), got {}", op, k, d,
             w_t.defined() ? to_string(w_t.shape()) : std::string("undefined"));
  PEEL_CHECK(!in.classifier_bias.defined() || (in.classifier_bias.dim() == 1 && in.classifier_bias.size(0) == k),
             "{}: classifier bias must be (K) = ({}), got {}", op, k, to_string(in.classifier_bias.shape()));
  PEEL_CHECK(!in.logits.defined() || (in.logits.dim() == 2 && in.logits.size(0) == n && in.logits.size(1) == k),
             "{}: logits must be (N, K) = ({}, {}), got {}", op, n, k, to_string(in.logits.shape()));
  const std::vector<bool> is_minority = minority_mask(in.minority_classes, k, op);

  const Tensor h = in.features.contiguous();
  const ClassMeans cm = class_means(h, in.labels, k);
  const CentredMeans centred = centre_means(cm, in.global_mean);
  const BetweenClassEigen eig = between_class_eigen(centred.rows);
  const MatrixD w = MatrixD::from_tensor(w_t);
  const std::vector<double> bias =
      in.classifier_bias.defined() ? to_doubles(in.classifier_bias) : std::vector<double>{};
  const bool have_logits = in.logits.defined();
  const SamplePass pass = sample_pass(h, in.labels, cm, centred, eig, have_logits ? nullptr : &w, bias);
  const std::vector<int64_t> decisions = have_logits ? predictions_from_logits(in.logits) : pass.network;

  CollapseMetrics m;
  m.global_mean = in.global_mean;
  m.num_samples = n;
  m.feature_dim = d;
  m.num_classes = k;
  const int64_t kp = static_cast<int64_t>(centred.present.size());
  m.classes_present = kp;
  m.class_counts = cm.counts;

  // NC1
  m.within_class_trace = pass.within_trace_sum / static_cast<double>(n);
  m.between_class_trace = eig.trace;
  m.nc1_trace = eig.values.empty() ? kNaN : pass.nc1_sum / static_cast<double>(n);
  m.nc1 = m.nc1_trace / static_cast<double>(kp);

  // NC2 and the Minority Collapse geometry, from the two Gram matrices.
  const RowGeometry means_geo = row_geometry(centred.rows);
  const RowGeometry w_geo = row_geometry(w);
  m.nc2_equinorm_means = means_geo.norm_cov_unbiased();
  m.nc2_equinorm_classifier = w_geo.norm_cov_unbiased();
  const PairStats means_all = means_geo.pair_stats(std::vector<bool>(static_cast<size_t>(kp), true));
  const PairStats w_all = w_geo.pair_stats(std::vector<bool>(static_cast<size_t>(k), true));
  m.nc2_equiangular_means = means_all.std;
  m.nc2_equiangular_classifier = w_all.std;
  m.nc2_maxangle_means = means_all.mean_abs_offset;
  m.nc2_maxangle_classifier = w_all.mean_abs_offset;
  m.cosine_mean_means = means_all.mean;
  m.cosine_mean_classifier = w_all.mean;

  const std::vector<bool>& w_minor = is_minority;
  std::vector<bool> w_major(static_cast<size_t>(k));
  for (int64_t c = 0; c < k; ++c) w_major[static_cast<size_t>(c)] = !is_minority[static_cast<size_t>(c)];
  std::vector<bool> m_minor(static_cast<size_t>(kp)), m_major(static_cast<size_t>(kp));
  for (int64_t a = 0; a < kp; ++a) {
    m_minor[static_cast<size_t>(a)] = is_minority[static_cast<size_t>(centred.present[static_cast<size_t>(a)])];
    m_major[static_cast<size_t>(a)] = !m_minor[static_cast<size_t>(a)];
  }
  const PairStats w_min = w_geo.pair_stats(w_minor), w_maj = w_geo.pair_stats(w_major);
  const PairStats m_min = means_geo.pair_stats(m_minor), m_maj = means_geo.pair_stats(m_major);
  m.minority_cosine = w_min.mean;
  m.minority_cosine_std = w_min.std;
  m.majority_cosine = w_maj.mean;
  m.majority_cosine_std = w_maj.std;
  m.minority_cosine_means = m_min.mean;
  m.minority_cosine_means_std = m_min.std;
  m.majority_cosine_means = m_maj.mean;
  m.majority_cosine_means_std = m_maj.std;
  m.minority_norm_cov = w_geo.norm_cov_population(w_minor);

  m.classifier_norms = w_geo.norms;
  m.class_mean_norms.assign(static_cast<size_t>(k), kNaN);
  for (int64_t a = 0; a < kp; ++a)
    m.class_mean_norms[static_cast<size_t>(centred.present[static_cast<size_t>(a)])] =
        means_geo.norms[static_cast<size_t>(a)];

  // NC3 over the present classes' rows of W.
  MatrixD w_present = MatrixD::zeros(kp, d);
  for (int64_t a = 0; a < kp; ++a)
    for (int64_t j = 0; j < d; ++j) w_present(a, j) = w(centred.present[static_cast<size_t>(a)], j);
  m.nc3 = normalized_distance_squared(w_present, centred.rows);

  // NC4 and accuracy.
  int64_t mismatches = 0;
  for (int64_t i = 0; i < n; ++i) mismatches += decisions[static_cast<size_t>(i)] != pass.ncc[static_cast<size_t>(i)];
  m.nc4 = static_cast<double>(mismatches) / static_cast<double>(n);
  m.accuracy = accuracy(confusion_matrix(in.labels, decisions, k), in.minority_classes);
  return m;
}

// ---- The slow reference ----------------------------------------------------------------------

MatrixD within_class_covariance(const Tensor& features, std::span<const int64_t> labels, int64_t num_classes) {
  const Tensor h = features.contiguous();
  const ClassMeans cm = class_means(h, labels, num_classes);
  const int64_t n = h.size(0), d = h.size(1);
  MatrixD sw = MatrixD::zeros(d, d);
  std::vector<double> block(static_cast<size_t>(kBlockRows * d));
  for (int64_t start = 0; start < n; start += kBlockRows) {
    const int64_t rows = std::min(kBlockRows, n - start);
    for (int64_t t = 0; t < rows; ++t) {
      const int64_t y = labels[static_cast<size_t>(start + t)];
      for (int64_t i = 0; i < d; ++i)
        block[static_cast<size_t>(t * d + i)] = h.data()[(start + t) * d + i] - cm.means(y, i);
    }
    // Sigma_W (upper triangle) += block^T block
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<blasint>(d), static_cast<blasint>(rows), 1.0,
                block.data(), static_cast<blasint>(d), 1.0, sw.values.data(), static_cast<blasint>(d));
  }
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = i; j < d; ++j) {
      sw(i, j) /= static_cast<double>(n);
      sw(j, i) = sw(i, j);
    }
  return sw;
}

MatrixD between_class_covariance(const ClassMeans& means, GlobalMean global_mean) {
  const CentredMeans centred = centre_means(means, global_mean);
  MatrixD sb = matmul(transpose(centred.rows), centred.rows);
  for (double& v : sb.values) v /= static_cast<double>(centred.rows.rows);
  return sb;
}

double nc1_dense(const Tensor& features, std::span<const int64_t> labels, int64_t num_classes, GlobalMean global_mean) {
  const ClassMeans cm = class_means(features, labels, num_classes);
  const int64_t kp = std::count_if(cm.counts.begin(), cm.counts.end(), [](int64_t c) { return c > 0; });
  const MatrixD sw = within_class_covariance(features, labels, num_classes);
  const MatrixD sb_pinv = pinv_symmetric(between_class_covariance(cm, global_mean), kp - 1);
  double trace = 0;  // Tr(Sw P) = sum_ij Sw(i,j) P(j,i)
  for (int64_t i = 0; i < sw.rows; ++i)
    for (int64_t j = 0; j < sw.cols; ++j) trace += sw(i, j) * sb_pinv(j, i);
  return trace / static_cast<double>(kp);
}

}  // namespace peel

// ---- Output ----------------------------------------------------------------------------------

namespace peel {

MetricColumns CollapseMetrics::to_columns(const std::string& prefix) const {
  MetricColumns cols;
  auto add = [&](const std::string& name, double value) { cols.emplace_back(prefix + name, value); };
  add("global_mean_all_samples", global_mean == GlobalMean::AllSamples ? 1.0 : 0.0);
  add("num_samples", static_cast<double>(num_samples));
  add("classes_present", static_cast<double>(classes_present));
  add("nc1", nc1);
  add("nc1_trace", nc1_trace);
  add("within_class_trace", within_class_trace);
  add("between_class_trace", between_class_trace);
  add("nc2_equinorm_means", nc2_equinorm_means);
  add("nc2_equinorm_classifier", nc2_equinorm_classifier);
  add("nc2_equiangular_means", nc2_equiangular_means);
  add("nc2_equiangular_classifier", nc2_equiangular_classifier);
  add("nc2_maxangle_means", nc2_maxangle_means);
  add("nc2_maxangle_classifier", nc2_maxangle_classifier);
  add("cosine_mean_means", cosine_mean_means);
  add("cosine_mean_classifier", cosine_mean_classifier);
  add("nc3", nc3);
  add("nc4", nc4);
  add("minority_cosine", minority_cosine);
  add("minority_cosine_std", minority_cosine_std);
  add("majority_cosine", majority_cosine);
  add("majority_cosine_std", majority_cosine_std);
  add("minority_cosine_means", minority_cosine_means);
  add("minority_cosine_means_std", minority_cosine_means_std);
  add("majority_cosine_means", majority_cosine_means);
  add("majority_cosine_means_std", majority_cosine_means_std);
  add("minority_norm_cov", minority_norm_cov);
  for (size_t c = 0; c < classifier_norms.size(); ++c) add("classifier_norm_" + std::to_string(c), classifier_norms[c]);
  for (size_t c = 0; c < class_mean_norms.size(); ++c) add("class_mean_norm_" + std::to_string(c), class_mean_norms[c]);
  for (size_t c = 0; c < class_counts.size(); ++c)
    add("class_count_" + std::to_string(c), static_cast<double>(class_counts[c]));
  return cols;
}

}  // namespace peel
