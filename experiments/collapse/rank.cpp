// Rank measures of weight matrices and centred class means (rank.h): values-only SVDs in double.
#include "experiments/collapse/rank.h"

#include <cmath>
#include <limits>

#include "autograd/variable.h"
#include "experiments/collapse/blas_threads.h"
#include "experiments/collapse/stats.h"
#include "nn/layers.h"
#include "tensor/error.h"

namespace peel {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

nlohmann::json number_or_null(double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); }

}  // namespace

double MatrixRank::sigma_max() const { return singular_values.empty() ? kNaN : singular_values.front(); }

MatrixRank matrix_rank(const std::string& name, const MatrixD& matrix, const RankOptions& options) {
  PEEL_CHECK(options.frobenius_tolerance >= 0 && options.relative_tolerance >= 0,
             "matrix_rank({}): tolerances must be >= 0, got frobenius {} and relative {}", name,
             options.frobenius_tolerance, options.relative_tolerance);
  MatrixRank r;
  r.name = name;
  r.rows = matrix.rows;
  r.cols = matrix.cols;
  r.shape = {matrix.rows, matrix.cols};
  {
    const SingleThreadedBlas one_thread;  // dgesdd's bidiagonalisation is matrix-vector work
    r.singular_values = singular_values(matrix);
  }
  double frob_sq = 0;
  for (double s : r.singular_values) frob_sq += s * s;
  r.frobenius_norm = std::sqrt(frob_sq);
  const double top = r.singular_values.empty() ? 0.0 : r.singular_values.front();
  for (double s : r.singular_values) {
    // A zero matrix has no direction: both counts stay 0 (Galanti et al. would divide 0 by 0).
    if (top > 0 && s / r.frobenius_norm > options.frobenius_tolerance) ++r.rank;
    if (top > 0 && s / top > options.relative_tolerance) ++r.rank_rel;
  }
  r.stable_rank = top > 0 ? frob_sq / (top * top) : kNaN;
  return r;
}

MatrixD weight_as_matrix(const Tensor& weight) {
  PEEL_CHECK(weight.defined() && weight.dim() >= 2, "weight_as_matrix: needs a weight of rank >= 2, got {}",
             weight.defined() ? to_string(weight.shape()) : std::string("undefined"));
  const int64_t rows = weight.size(0);
  const int64_t cols = rows > 0 ? weight.numel() / rows : 0;
  return MatrixD::from_tensor(weight.contiguous().reshape({rows, cols}));
}

MatrixRank weight_rank(const std::string& name, const Tensor& weight, const RankOptions& options) {
  MatrixRank r = matrix_rank(name, weight_as_matrix(weight), options);
  r.shape.assign(weight.shape().begin(), weight.shape().end());
  return r;
}

std::vector<MatrixRank> weight_ranks(nn::Module& model, const RankOptions& options) {
  ag::NoGradGuard no_grad;
  std::vector<MatrixRank> out;
  for (const auto& [name, module] : model.named_modules())
    if (const auto* layer = dynamic_cast<const nn::WeightedLayer*>(module))
      out.push_back(
          weight_rank(name.empty() ? "weight" : name + ".weight", layer->effective_weight().value(), options));
  return out;
}

MatrixRank class_mean_rank(const ClassMeans& means, GlobalMean global_mean, const RankOptions& options) {
  return matrix_rank("class_means", centre_means(means, global_mean).rows, options);
}

MetricColumns MatrixRank::to_columns() const {
  return {{"rank_" + name, static_cast<double>(rank)},
          {"rank_rel_" + name, static_cast<double>(rank_rel)},
          {"stable_rank_" + name, stable_rank},
          {"sigma_max_" + name, sigma_max()},
          {"frobenius_norm_" + name, frobenius_norm}};
}

nlohmann::json MatrixRank::to_json() const {
  nlohmann::json sv = nlohmann::json::array();
  for (double s : singular_values) sv.push_back(s);
  return {{"shape", shape},
          {"rows", rows},
          {"cols", cols},
          {"singular_values", sv},
          {"frobenius_norm", frobenius_norm},
          {"rank", rank},
          {"rank_rel", rank_rel},
          {"stable_rank", number_or_null(stable_rank)}};
}

MetricColumns RankReport::to_columns() const {
  MetricColumns cols;
  for (const MatrixRank& m : weights) {
    MetricColumns c = m.to_columns();
    cols.insert(cols.end(), c.begin(), c.end());
  }
  for (const MatrixRank* m : {&classifier, &class_means}) {
    MetricColumns c = m->to_columns();
    cols.insert(cols.end(), c.begin(), c.end());
  }
  return cols;
}

nlohmann::json RankReport::to_json() const {
  nlohmann::json matrices = nlohmann::json::object();
  for (const MatrixRank& m : weights) matrices[m.name] = m.to_json();
  matrices[classifier.name] = classifier.to_json();
  matrices[class_means.name] = class_means.to_json();
  return {{"frobenius_tolerance", options.frobenius_tolerance},
          {"relative_tolerance", options.relative_tolerance},
          {"matrices", matrices}};
}

RankReport rank_report(nn::Network& model, const Tensor& features, std::span<const int64_t> labels, int64_t num_classes,
                       GlobalMean global_mean, const RankOptions& options) {
  RankReport report;
  report.options = options;
  report.weights = weight_ranks(model, options);
  {
    ag::NoGradGuard no_grad;
    report.classifier = weight_rank("classifier", model.classifier().effective_weight().value(), options);
  }
  report.class_means = class_mean_rank(class_means(features, labels, num_classes), global_mean, options);
  return report;
}

}  // namespace peel
