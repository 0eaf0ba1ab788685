// Rank measures (experiments/collapse/rank.h): matrices of chosen singular values, each rank
// definition on both sides of its threshold, the convolution reshaping, a model's weight list, the
// centred class means, and everything against the NumPy / torch fixture (tests/fixtures/collapse).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "experiments/collapse/rank.h"
#include "tensor/error.h"
#include "tensor/random.h"

using namespace peel;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

namespace {

MatrixD diagonal(const std::vector<double>& values, int64_t rows, int64_t cols) {
  MatrixD m = MatrixD::zeros(rows, cols);
  for (size_t i = 0; i < values.size(); ++i) m(static_cast<int64_t>(i), static_cast<int64_t>(i)) = values[i];
  return m;
}

// A rows x r matrix with orthonormal columns: the left singular vectors of a Gaussian matrix.
MatrixD orthonormal_columns(int64_t rows, int64_t r, Generator& gen) {
  MatrixD g = MatrixD::from_tensor(normal({rows, r}, 0.f, 1.f, gen));
  return svd(g).u;
}

// U diag(s) V^T as a float32 (rows, cols) tensor.
Tensor with_singular_values(const std::vector<double>& s, int64_t rows, int64_t cols, uint64_t seed) {
  Generator gen(seed);
  const int64_t r = static_cast<int64_t>(s.size());
  const MatrixD u = orthonormal_columns(rows, r, gen), v = orthonormal_columns(cols, r, gen);
  std::vector<float> values(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      double x = 0;
      for (int64_t k = 0; k < r; ++k) x += u(i, k) * s[static_cast<size_t>(k)] * v(j, k);
      values[static_cast<size_t>(i * cols + j)] = static_cast<float>(x);
    }
  return Tensor::from_vector(values, {rows, cols});
}

std::map<std::string, double> as_map(const MetricColumns& cols) {
  std::map<std::string, double> m;
  for (const auto& [name, value] : cols) EXPECT_TRUE(m.emplace(name, value).second) << name << " appears twice";
  return m;
}

nlohmann::json load_fixture() {
  const std::string path = std::string(PEEL_SOURCE_DIR) + "/tests/fixtures/collapse/rank_fixture.json";
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << "cannot open " << path;
  nlohmann::json j = nlohmann::json::parse(f);
  EXPECT_EQ(j["format"], "peel-rank-fixture");
  EXPECT_EQ(j["version"], 1);
  return j;
}

Tensor tensor_from_json(const nlohmann::json& values, const Shape& shape) {
  return Tensor::from_vector(values.get<std::vector<float>>(), shape);
}

void expect_matches_fixture(const MatrixRank& r, const nlohmann::json& expected, const std::string& tol_key,
                            const std::string& what) {
  const std::vector<double> sv = expected["singular_values"].get<std::vector<double>>();
  ASSERT_EQ(r.singular_values.size(), sv.size()) << what;
  for (size_t i = 0; i < sv.size(); ++i) EXPECT_NEAR(r.singular_values[i], sv[i], 1e-12 * sv[0]) << what << " s_" << i;
  EXPECT_NEAR(r.frobenius_norm, expected["frobenius_norm"].get<double>(), 1e-12 * sv[0]) << what;
  EXPECT_NEAR(r.stable_rank, expected["stable_rank"].get<double>(), 1e-12) << what;
  EXPECT_EQ(r.rank, expected["rank"][tol_key].get<int64_t>()) << what << " at " << tol_key;
  EXPECT_EQ(r.rank, expected["rank_torch_galanti"][tol_key].get<int64_t>()) << what << " at " << tol_key;
  EXPECT_EQ(r.rank_rel, expected["rank_rel"][tol_key].get<int64_t>()) << what << " at " << tol_key;
}

}  // namespace

TEST(Rank, ChosenSingularValuesAreRecovered) {
  const std::vector<double> s = {8, 4, 2, 1, 0.5, 0.05};
  const Tensor w = with_singular_values(s, 9, 14, 7);
  const MatrixRank r = weight_rank("w", w);
  ASSERT_EQ(r.singular_values.size(), 9u);
  for (size_t i = 0; i < s.size(); ++i) EXPECT_NEAR(r.singular_values[i], s[i], 1e-5) << i;
  for (size_t i = s.size(); i < 9; ++i) EXPECT_LT(r.singular_values[i], 1e-5) << i;  // float32 round-off
  double frob_sq = 0;
  for (double v : s) frob_sq += v * v;
  EXPECT_NEAR(r.frobenius_norm, std::sqrt(frob_sq), 1e-5);
  EXPECT_NEAR(r.stable_rank, frob_sq / 64.0, 1e-5);
  EXPECT_EQ(r.rank, 6);      // 0.05 / 9.2 = 5.4e-3 > 1e-3
  EXPECT_EQ(r.rank_rel, 6);  // 0.05 / 8 > 1e-3
  EXPECT_EQ(r.rows, 9);
  EXPECT_EQ(r.cols, 14);
  // A tolerance of 1e-2 drops 0.05 from both counts: 0.05 / 8 = 6.3e-3 and 0.05 / 9.23 = 5.4e-3.
  const MatrixRank coarse = weight_rank("w", w, {.frobenius_tolerance = 1e-2, .relative_tolerance = 1e-2});
  EXPECT_EQ(coarse.rank, 5);
  EXPECT_EQ(coarse.rank_rel, 5);
}

TEST(Rank, FrobeniusRankCountsOnEachSideOfItsThreshold) {
  // s = (1, x) with x / sqrt(1 + x^2) = t exactly when x = t / sqrt(1 - t^2).
  for (double factor : {1.0 + 1e-4, 1.0 - 1e-4}) {
    const double t = 1e-3 * factor;
    const double x = t / std::sqrt(1 - t * t);
    const MatrixRank r = matrix_rank("m", diagonal({1.0, x}, 3, 3));
    EXPECT_EQ(r.rank, factor > 1 ? 2 : 1) << factor;
  }
}

TEST(Rank, RelativeRankCountsOnEachSideOfItsThreshold) {
  for (double eps : {1e-3, 1e-1}) {
    for (double factor : {1.0 + 1e-6, 1.0 - 1e-6}) {
      const MatrixRank r =
          matrix_rank("m", diagonal({2.0, 2.0 * eps * factor, 0.0}, 4, 3), {.relative_tolerance = eps});
      EXPECT_EQ(r.rank_rel, factor > 1 ? 2 : 1) << eps << " " << factor;
    }
  }
}

TEST(Rank, TheTwoRankDefinitionsDisagreeBetweenTheirThresholds) {
  // ||W||_F = 2 (four unit values): 1.5e-3 is above 1e-3 * s_1 but below 1e-3 * ||W||_F.
  const MatrixRank r = matrix_rank("m", diagonal({1, 1, 1, 1, 1.5e-3}, 5, 6));
  EXPECT_EQ(r.rank_rel, 5);
  EXPECT_EQ(r.rank, 4);
  EXPECT_NEAR(r.stable_rank, 4.0 + 2.25e-6, 1e-12);
}

TEST(Rank, StableRankAndZeroMatrix) {
  EXPECT_DOUBLE_EQ(matrix_rank("m", diagonal({4, 3}, 2, 2)).stable_rank, 25.0 / 16.0);
  const MatrixRank zero = weight_rank("zero", Tensor::zeros({3, 5}));
  EXPECT_EQ(zero.rank, 0);
  EXPECT_EQ(zero.rank_rel, 0);
  EXPECT_TRUE(std::isnan(zero.stable_rank));
  EXPECT_TRUE(zero.to_json()["stable_rank"].is_null());
}

TEST(Rank, ConvWeightIsReadAsOutByInTimesKernel) {
  // w[o][c][kh][kw] = a_o * p[c,kh,kw] + b_o * q[c,kh,kw]: the (4, 18) matrix has rank 2, while a
  // (4*2, 9) reading would have rank up to 8.
  Generator gen(3);
  const std::vector<float> a = {1, 2, -1, 0.5f}, bcoef = {0, 1, 3, -2};
  const Tensor p = normal({18}, 0.f, 1.f, gen), q = normal({18}, 0.f, 1.f, gen);
  std::vector<float> values;
  for (int64_t o = 0; o < 4; ++o)
    for (int64_t i = 0; i < 18; ++i)
      values.push_back(a[static_cast<size_t>(o)] * p.data()[i] + bcoef[static_cast<size_t>(o)] * q.data()[i]);
  const Tensor w = Tensor::from_vector(values, {4, 2, 3, 3});
  const MatrixD m = weight_as_matrix(w);
  EXPECT_EQ(m.rows, 4);
  EXPECT_EQ(m.cols, 18);
  EXPECT_EQ(m(2, 1 * 9 + 2 * 3 + 1), static_cast<double>(values[2 * 18 + 1 * 9 + 2 * 3 + 1]));  // w[2][1][2][1]
  const MatrixRank r = weight_rank("conv.weight", w);
  EXPECT_THAT(r.shape, ElementsAre(4, 2, 3, 3));
  EXPECT_EQ(r.rank, 2);
  EXPECT_EQ(r.rank_rel, 2);
  EXPECT_THAT([] { weight_as_matrix(Tensor::zeros({5})); },
              ThrowsMessage<peel::Error>(HasSubstr("weight_as_matrix: needs a weight of rank >= 2, got")));
}

TEST(Rank, ModelWeightsAreTheLinearAndConvWeights) {
  auto model = nn::make_model({.name = "small_cnn", .classes = 10, .in_channels = 1});
  const std::vector<MatrixRank> ranks = weight_ranks(*model);
  std::vector<std::string> names;
  for (const MatrixRank& r : ranks) names.push_back(r.name);
  EXPECT_THAT(names,
              ElementsAre("conv1.weight", "conv2.weight", "conv3.weight", "conv4.weight", "conv5.weight", "fc.weight"));
  EXPECT_EQ(ranks[1].rows, 32);
  EXPECT_EQ(ranks[1].cols, 32 * 9);
  EXPECT_EQ(ranks[4].rows, 128);
  EXPECT_EQ(ranks[4].cols, 64 * 9);
  EXPECT_EQ(ranks[5].rows, 10);
  EXPECT_EQ(ranks[5].cols, 128);
  EXPECT_EQ(ranks[4].rank, 128);  // a Gaussian initialisation has full rank
}

TEST(Rank, CentredClassMeansOfASimplexHaveRankKMinusOneForBothCentrings) {
  // K=4 means at a simplex ETF plus an offset, in D=6, with unequal class counts.
  const int64_t k = 4, d = 6;
  std::vector<int64_t> labels;
  std::vector<float> features;
  const std::vector<int64_t> counts = {7, 3, 2, 1};
  for (int64_t c = 0; c < k; ++c)
    for (int64_t i = 0; i < counts[static_cast<size_t>(c)]; ++i) {
      labels.push_back(c);
      for (int64_t j = 0; j < d; ++j) features.push_back((j == c ? 3.f : 0.f) - (j < k ? 0.75f : 0.f) + 0.5f);
    }
  const Tensor h = Tensor::from_vector(features, {static_cast<int64_t>(labels.size()), d});
  for (GlobalMean gm : {GlobalMean::ClassMeans, GlobalMean::AllSamples}) {
    const MatrixRank r = class_mean_rank(class_means(h, labels, k), gm);
    EXPECT_EQ(r.rows, k) << to_string(gm);
    EXPECT_EQ(r.rank, k - 1) << to_string(gm);
    EXPECT_EQ(r.rank_rel, k - 1) << to_string(gm);
    EXPECT_LT(r.singular_values.back(), 1e-12) << to_string(gm);
  }
  // The class-means centring of an ETF gives K-1 equal singular values: stable rank K-1.
  EXPECT_NEAR(class_mean_rank(class_means(h, labels, k), GlobalMean::ClassMeans).stable_rank, 3.0, 1e-12);
}

TEST(Rank, ReportColumnsAndSpectra) {
  auto model = nn::make_model({.name = "small_cnn", .classes = 3, .in_channels = 1});
  Generator gen(5);
  const Tensor h = normal({30, 128}, 0.f, 1.f, gen);
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < 30; ++i) labels.push_back(i % 3);
  const RankReport report = rank_report(*model, h, labels, 3, GlobalMean::ClassMeans);
  const auto cols = as_map(report.to_columns());
  EXPECT_EQ(cols.size(), 5u * (6 + 2));
  EXPECT_EQ(cols.at("rank_classifier"), cols.at("rank_fc.weight"));
  EXPECT_EQ(cols.at("rank_class_means"), 2.0);  // 3 centred means
  EXPECT_EQ(cols.at("rank_rel_conv2.weight"), 32.0);
  EXPECT_GT(cols.at("stable_rank_conv5.weight"), 1.0);
  EXPECT_EQ(cols.at("sigma_max_fc.weight"), report.weights.back().singular_values.front());
  const nlohmann::json j = report.to_json();
  EXPECT_EQ(j["frobenius_tolerance"], 1e-3);
  EXPECT_EQ(j["matrices"].size(), 8u);
  EXPECT_EQ(j["matrices"]["conv3.weight"]["singular_values"].size(), 64u);
  EXPECT_EQ(j["matrices"]["conv3.weight"]["cols"], 32 * 9);
  EXPECT_EQ(j["matrices"]["class_means"]["rows"], 3);
}

TEST(Rank, MatchesNumPyAndGalantisTorchCall) {
  const nlohmann::json fx = load_fixture();
  // The fixture's keys are Python's repr of each tolerance.
  const std::vector<std::pair<std::string, double>> tolerances = {{"0.001", 1e-3}, {"0.01", 1e-2}};
  EXPECT_EQ(fx["tolerances"].get<std::vector<double>>(), std::vector<double>({1e-3, 1e-2}));
  for (const auto& [name, c] : fx["weights"].items()) {
    const Tensor w = tensor_from_json(c["weight"], c["shape"].get<Shape>());
    for (const auto& [key, tol] : tolerances) {
      const MatrixRank r = weight_rank(name, w, {.frobenius_tolerance = tol, .relative_tolerance = tol});
      expect_matches_fixture(r, c["expected"], key, name);
    }
  }
  const nlohmann::json& cm = fx["class_means"];
  const int64_t k = cm["num_classes"], d = cm["feature_dim"];
  const std::vector<int64_t> labels = cm["labels"].get<std::vector<int64_t>>();
  const Tensor h = tensor_from_json(cm["features"], {static_cast<int64_t>(labels.size()), d});
  for (GlobalMean gm : {GlobalMean::ClassMeans, GlobalMean::AllSamples}) {
    const MatrixRank r = class_mean_rank(class_means(h, labels, k), gm);
    expect_matches_fixture(r, cm["expected"][to_string(gm)], "0.001", std::string("class means ") + to_string(gm));
  }
}
