// Singular values and numerical rank of weight matrices and class means over training, for the
// square-loss low-rank study (Galanti, Siegel, Gupte & Poggio, arXiv 2206.05794; Xu, Rangamani,
// Banburski, Liao, Galanti & Poggio, Research 2023). See /work/shared/science.md §3 and
// docs/square-loss.md.
//
// A weight of shape (O, I) is the matrix itself; a convolution weight (O, C, KH, KW) is read as the
// matrix (O, C*KH*KW), row-major, as Galanti et al.'s `eval_rank_conv_prime` does
// (`kernel.view(kernel.shape[0], -1)`) and as weight_spectrum() does.
//
// Three rank measures of a matrix W with singular values s_1 >= s_2 >= ... (all in double):
//   rank        = #{i : s_i / ||W||_F > frobenius_tolerance}   (Galanti et al. `analysis_rank.py`:
//                 torch.linalg.matrix_rank(W / ||W||_F, tol=0.001); tol there is absolute, strict >)
//   rank_rel    = #{i : s_i / s_1 > relative_tolerance}        (the eps * sigma_max count)
//   stable_rank = ||W||_F^2 / s_1^2                            (Galanti et al. `eval_stable_ranks`)
// A zero matrix has rank 0, rank_rel 0 and stable_rank NaN. The SVD runs on one OpenBLAS thread
// (blas_threads.h); small_cnn's six weights cost ~9 ms CPU (docs/square-loss.md §3).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "experiments/collapse/collapse.h"
#include "nn/models.h"

namespace peel {

struct RankOptions {
  double frobenius_tolerance = 1e-3;  // Galanti et al.'s tol on W / ||W||_F
  double relative_tolerance = 1e-3;   // eps of the s_i / s_1 > eps count
};

// The spectrum and rank measures of one matrix.
struct MatrixRank {
  std::string name;                     // the parameter's name ("conv1.weight"), or "classifier", "class_means"
  std::vector<int64_t> shape;           // the tensor's shape before reshaping
  int64_t rows = 0, cols = 0;           // the matrix measured
  std::vector<double> singular_values;  // descending, min(rows, cols) of them
  double frobenius_norm = 0;            // sqrt(sum s_i^2)
  int64_t rank = 0;                     // Galanti et al.'s count, see above
  int64_t rank_rel = 0;
  double stable_rank = 0;
  double sigma_max() const;  // s_1; NaN for an empty matrix

  // rank_<name>, rank_rel_<name>, stable_rank_<name>, sigma_max_<name>, frobenius_norm_<name>.
  MetricColumns to_columns() const;
  // {"shape", "rows", "cols", "singular_values", "frobenius_norm", "rank", "rank_rel", "stable_rank"}
  // (NaN as null).
  nlohmann::json to_json() const;
};

MatrixRank matrix_rank(const std::string& name, const MatrixD& matrix, const RankOptions& options = {});
// The weight read as a matrix (O, prod(rest)), in double.
MatrixD weight_as_matrix(const Tensor& weight);
MatrixRank weight_rank(const std::string& name, const Tensor& weight, const RankOptions& options = {});

// Every weight matrix of a model, in registration order: the weight each Linear and Conv2d applies
// (WeightedLayer::effective_weight), named "<module>.weight". For a plain layer that is its
// parameter `weight`; under weight normalisation (--norm wn, parameters weight_g and weight_v) it is
// g v / ||v||, and under weight standardisation the standardised weight. Norm layers' scales are
// not linear maps of the features and are left out.
std::vector<MatrixRank> weight_ranks(nn::Module& model, const RankOptions& options = {});

// The centred class means as a matrix (classes present x D), rows mu_c - mu_G with mu_G chosen as
// in the collapse metrics (collapse.h: GlobalMean). Both centrings give rank <= K - 1, since
// sum_c n_c (mu_c - mean of all samples) = 0 and sum_c (mu_c - mean of class means) = 0.
MatrixRank class_mean_rank(const ClassMeans& means, GlobalMean global_mean, const RankOptions& options = {});

// What the training loop stores at a measurement.
struct RankReport {
  RankOptions options;
  std::vector<MatrixRank> weights;  // weight_ranks(model)
  MatrixRank classifier;            // the weight the classifier applies (K x D), named "classifier"
  MatrixRank class_means;           // class_mean_rank(...), named "class_means"

  // The columns of every weight, then of "classifier" and "class_means" (5 per matrix).
  MetricColumns to_columns() const;
  // {"frobenius_tolerance", "relative_tolerance", "matrices": {name: MatrixRank::to_json(), ...}}
  // with every weight, "classifier" and "class_means" (nlohmann sorts the keys). One such object
  // per measurement makes the spectra over training.
  nlohmann::json to_json() const;
};

// features: the penultimate features (N, D) of the samples `labels` (in [0, num_classes)).
RankReport rank_report(nn::Network& model, const Tensor& features, std::span<const int64_t> labels, int64_t num_classes,
                       GlobalMean global_mean, const RankOptions& options = {});

}  // namespace peel
