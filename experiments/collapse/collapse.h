// Neural-collapse and Minority-Collapse metrics on plain tensors (no autograd).
//
// Definitions follow Papyan, Han & Donoho (PNAS 2020, official notebook) and the Minority Collapse
// code of Fang, He, Long & Su (PNAS 2021, HornHehhf/LPM `minority_collapse.py`); see
// /work/shared/science.md §1d and §2. Notation: h_i the penultimate feature of sample i (row i of
// H), y_i its label, mu_c the mean feature of class c, mu_G the global mean, m_c = mu_c - mu_G the
// centred class mean, w_c row c of the classifier W.
//
// Classes with no samples (the R = inf runs) have no mean: every feature-side metric uses only the
// classes present, and K in those formulas means the number of classes present (`classes_present`);
// classifier-side metrics use all K rows of W. NC3 pairs each present class mean with its row of W,
// as Fang et al.'s code does. A metric that is undefined (fewer than two classes in a group, no
// sample in a group) is NaN; CSV writers print it as "nan", nlohmann::json as null.
//
// Every value is computed in double precision from the float32 inputs.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tensor/linalg.h"
#include "tensor/tensor.h"

namespace peel {

// Named (name, value) pairs, in a fixed order: one CSV row, or one JSON object.
using MetricColumns = std::vector<std::pair<std::string, double>>;

// Where the class means are centred. Papyan et al. use the mean of the class means; Fang et al. the
// mean of all samples. They agree on balanced data and differ under imbalance.
enum class GlobalMean { ClassMeans, AllSamples };
const char* to_string(GlobalMean g);                  // "class-means" | "all-samples"
GlobalMean parse_global_mean(std::string_view name);  // the inverse; throws peel::Error otherwise

// ---- Accuracy ----------------------------------------------------------------------------------

// counts(t, p): number of samples of true class t predicted as p.
struct ConfusionMatrix {
  int64_t num_classes = 0;
  std::vector<int64_t> counts;  // row-major K x K
  int64_t operator()(int64_t true_class, int64_t predicted) const {
    return counts[static_cast<size_t>(true_class * num_classes + predicted)];
  }
};
ConfusionMatrix confusion_matrix(std::span<const int64_t> labels, std::span<const int64_t> predictions,
                                 int64_t num_classes);

// From a confusion matrix (as in Fang et al.'s `simple_test_batch`):
//   overall  = sum_c C(c,c) / N;
//   majority = sum over majority classes c of C(c,c) / number of samples whose true class is a
//              majority class (majority = every class not listed as minority);
//   minority = the same over the minority classes;
//   per_class[c] = C(c,c) / n_c.
// A group without samples gives NaN.
struct Accuracy {
  double overall = 0, majority = 0, minority = 0;
  std::vector<double> per_class;
  // prefix+"accuracy", prefix+"accuracy_majority", prefix+"accuracy_minority",
  // prefix+"accuracy_class_<c>" for c = 0..K-1. The training loop passes "train_" / "test_".
  MetricColumns to_columns(const std::string& prefix = "") const;
};
Accuracy accuracy(const ConfusionMatrix& confusion, std::span<const int64_t> minority_classes);
// argmax over each row of `logits` (N, K), first maximum on ties.
std::vector<int64_t> predictions_from_logits(const Tensor& logits);
Accuracy accuracy_from_logits(const Tensor& logits, std::span<const int64_t> labels,
                              std::span<const int64_t> minority_classes);

// ---- Collapse metrics --------------------------------------------------------------------------

struct CollapseInputs {
  Tensor features;                        // H: (N, D), any layout
  std::span<const int64_t> labels;        // N labels in [0, K); viewed, not copied
  int64_t num_classes = 0;                // K
  Tensor classifier_weight;               // W: (K, D)
  Tensor classifier_bias;                 // b: (K); optional (undefined: no bias)
  Tensor logits;                          // the network's outputs (N, K); optional (undefined: H W^T + b)
  std::vector<int64_t> minority_classes;  // the rest are majority classes
  GlobalMean global_mean = GlobalMean::ClassMeans;
};

struct CollapseMetrics {
  GlobalMean global_mean = GlobalMean::ClassMeans;
  int64_t num_samples = 0, feature_dim = 0, num_classes = 0, classes_present = 0;

  // NC1 = Tr(Sigma_W Sigma_B^+) / K with
  //   Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T,
  //   Sigma_B = (1/K) sum_c m_c m_c^T  (an unweighted average over classes, for either centring),
  //   Sigma_B^+ from the top K-1 eigenpairs of Sigma_B (eigenvalues below 1e-12 of the largest,
  //   i.e. round-off, are dropped). NaN when fewer than two classes are present or Sigma_B = 0.
  // Under the all-samples centring Sigma_B has rank K in general; its smallest eigenpair is then
  // dropped as well, by the definition above.
  double nc1 = 0;
  double nc1_trace = 0;            // Tr(Sigma_W Sigma_B^+), without the /K (Papyan's notebook)
  double within_class_trace = 0;   // Tr(Sigma_W)
  double between_class_trace = 0;  // Tr(Sigma_B)

  // NC2, on the centred class means ("means") and on the rows of W ("classifier"):
  //   equinorm    = std(norms) / mean(norms), std with Bessel's correction (torch.std, Papyan);
  //   equiangular = std of the cosines over pairs c < c' (population std, divided by the number of pairs);
  //   maxangle    = mean over pairs c < c' of |cos + 1/(K-1)| (Papyan's notebook computes this,
  //                 under the name `coherence`, for its equiangularity plot);
  //   cosine_mean = mean cosine over pairs c < c' (-1/(K-1) at a simplex ETF).
  double nc2_equinorm_means = 0, nc2_equinorm_classifier = 0;
  double nc2_equiangular_means = 0, nc2_equiangular_classifier = 0;
  double nc2_maxangle_means = 0, nc2_maxangle_classifier = 0;
  double cosine_mean_means = 0, cosine_mean_classifier = 0;

  // NC3 = || W / ||W||_F - M / ||M||_F ||_F^2, M the centred class means as rows.
  double nc3 = 0;
  // NC4 = fraction of samples where argmax of the logits differs from argmin_c ||h_i - mu_c||.
  double nc4 = 0;

  // Minority Collapse geometry (Fang et al.): mean and population std (np.std) of the cosines over
  // pairs c < c' within the minority classes, and within the majority classes; for W and for the
  // centred means. `minority_cosine` (W) is the y-axis of the Minority Collapse figures.
  double minority_cosine = 0, minority_cosine_std = 0, majority_cosine = 0, majority_cosine_std = 0;
  double minority_cosine_means = 0, minority_cosine_means_std = 0;
  double majority_cosine_means = 0, majority_cosine_means_std = 0;
  double minority_norm_cov = 0;  // np.std / mean of the minority rows' norms (Fang et al.)

  std::vector<double> classifier_norms;  // ||w_c||, c = 0..K-1
  std::vector<double> class_mean_norms;  // ||m_c||, NaN for an absent class
  std::vector<int64_t> class_counts;     // n_c

  Accuracy accuracy;  // of argmax(logits) on these samples

  // "global_mean_all_samples" (0 or 1), num_samples, classes_present, every metric above named as
  // its field, then classifier_norm_<c>, class_mean_norm_<c>, class_count_<c> for c = 0..K-1; each
  // name preceded by `prefix`. 26 + 3K columns. Accuracy is not included: add
  // accuracy.to_columns("train_").
  MetricColumns to_columns(const std::string& prefix = "") const;
};

// One pass for the class means, one blocked pass for everything else; memory O(block * D + K * D),
// never D x D. NC1 uses Tr(Sigma_W Sigma_B^+) = (1/N) sum_i sum_j ((h_i - mu_{y_i}) . v_j)^2 / lambda_j
// over the eigenpairs (lambda_j, v_j) of Sigma_B, which come from the K x K Gram matrix of the
// centred means; so the cost is O(N D K), not the O(N D^2) of forming Sigma_W.
CollapseMetrics collapse_metrics(const CollapseInputs& in);

// ---- Building blocks, also the slow reference for the tests -----------------------------------

struct ClassMeans {
  MatrixD means;                    // K x D (rows of absent classes are zero)
  std::vector<int64_t> counts;      // n_c
  std::vector<double> sample_mean;  // mean of all N features (D)
};
ClassMeans class_means(const Tensor& features, std::span<const int64_t> labels, int64_t num_classes);

// Sigma_W (D x D) by blocked dsyrk over the centred features: O(N D^2), for small D or checks.
MatrixD within_class_covariance(const Tensor& features, std::span<const int64_t> labels, int64_t num_classes);
// Sigma_B (D x D) over the classes present, centred as chosen.
MatrixD between_class_covariance(const ClassMeans& means, GlobalMean global_mean);
// Tr(Sigma_W pinv_symmetric(Sigma_B, K-1)) / K with explicit D x D matrices: the reference NC1.
double nc1_dense(const Tensor& features, std::span<const int64_t> labels, int64_t num_classes, GlobalMean global_mean);

// ---- Weight spectra (square-loss study) ----------------------------------------------------------

// A weight of shape (O, ...) is read as the matrix (O, prod(rest)); a conv weight (O, C, KH, KW)
// becomes (O, C*KH*KW).
struct WeightSpectrum {
  std::vector<double> singular_values;  // descending
  double rank_tolerance = 0;            // relative: rank counts sigma > rank_tolerance * sigma_max
  int64_t rank = 0;
  int64_t rank_numpy = 0;  // NumPy matrix_rank's default: sigma > sigma_max * max(m, n) * eps_float32
  double stable_rank = 0;  // ||W||_F^2 / sigma_max^2
  // prefix+"rank", prefix+"rank_numpy", prefix+"stable_rank", prefix+"sigma_max", prefix+"sigma_min".
  MetricColumns to_columns(const std::string& prefix = "") const;
};
WeightSpectrum weight_spectrum(const Tensor& weight, double rank_tolerance = 1e-3);

}  // namespace peel
