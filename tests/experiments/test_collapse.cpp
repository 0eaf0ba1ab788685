// Collapse metrics: constructed cases with answers worked out by hand, the fast NC1 against the
// explicit D x D one, and every metric against the NumPy fixture (tests/fixtures/collapse).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "experiments/collapse/collapse.h"
#include "tensor/error.h"
#include "tensor/random.h"

using namespace peel;

namespace {

std::map<std::string, double> as_map(const MetricColumns& cols) {
  std::map<std::string, double> m;
  for (const auto& [name, value] : cols) {
    EXPECT_TRUE(m.emplace(name, value).second) << "column " << name << " appears twice";
  }
  return m;
}

// Features: every sample of class c equals rows[c] + offset (no within-class spread).
Tensor features_at_means(const std::vector<std::vector<float>>& rows, const std::vector<int64_t>& labels,
                         const std::vector<float>& offset) {
  const int64_t d = static_cast<int64_t>(offset.size());
  std::vector<float> v;
  for (int64_t y : labels)
    for (int64_t j = 0; j < d; ++j)
      v.push_back(rows[static_cast<size_t>(y)][static_cast<size_t>(j)] + offset[static_cast<size_t>(j)]);
  return Tensor::from_vector(v, {static_cast<int64_t>(labels.size()), d});
}

Tensor rows_tensor(const std::vector<std::vector<float>>& rows) {
  std::vector<float> v;
  for (const auto& r : rows) v.insert(v.end(), r.begin(), r.end());
  return Tensor::from_vector(v, {static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())});
}

double std_unbiased(const std::vector<double>& v) {
  double m = 0, s = 0;
  for (double x : v) m += x / static_cast<double>(v.size());
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

}  // namespace

// K=4 classes exactly at a simplex ETF, m_c = 2 (e_c - 1/4), shifted by an offset orthogonal to
// the ETF's span; W equals the centred means. Every collapse measure is at its limit.
TEST(Collapse, SimplexEtfWithoutSpreadIsFullyCollapsed) {
  const int64_t k = 4;
  std::vector<std::vector<float>> etf(k, std::vector<float>(6, 0.f));
  for (int64_t c = 0; c < k; ++c)
    for (int64_t j = 0; j < k; ++j) etf[c][j] = 2.f * ((c == j ? 1.f : 0.f) - 0.25f);
  std::vector<int64_t> labels;
  for (int rep = 0; rep < 5; ++rep)
    for (int64_t c = 0; c < k; ++c) labels.push_back(c);
  for (GlobalMean gm : {GlobalMean::ClassMeans, GlobalMean::AllSamples}) {
    for (float w_scale : {1.f, 3.f}) {  // NC3 ignores the scale of W
      std::vector<std::vector<float>> w_rows = etf;
      for (auto& r : w_rows)
        for (float& x : r) x *= w_scale;
      CollapseInputs in{features_at_means(etf, labels, {0, 0, 0, 0, 5.f, -3.f}),
                        labels,
                        k,
                        rows_tensor(w_rows),
                        Tensor::zeros({k}),
                        Tensor(),
                        {2, 3},
                        gm};
      const CollapseMetrics m = collapse_metrics(in);
      EXPECT_EQ(m.classes_present, k);
      EXPECT_NEAR(m.nc1, 0.0, 1e-12);
      EXPECT_NEAR(m.within_class_trace, 0.0, 1e-12);
      EXPECT_NEAR(m.between_class_trace, 4.0 * 0.75, 1e-12);  // (1/K) sum ||m_c||^2 = 2^2 (1 - 1/K)
      EXPECT_NEAR(m.nc2_equinorm_means, 0.0, 1e-12);
      EXPECT_NEAR(m.nc2_equinorm_classifier, 0.0, 1e-12);
      EXPECT_NEAR(m.nc2_equiangular_means, 0.0, 1e-12);
      EXPECT_NEAR(m.nc2_equiangular_classifier, 0.0, 1e-12);
      EXPECT_NEAR(m.nc2_maxangle_means, 0.0, 1e-12);
      EXPECT_NEAR(m.nc2_maxangle_classifier, 0.0, 1e-12);
      EXPECT_NEAR(m.cosine_mean_means, -1.0 / 3.0, 1e-12);
      EXPECT_NEAR(m.cosine_mean_classifier, -1.0 / 3.0, 1e-12);
      EXPECT_NEAR(m.minority_cosine, -1.0 / 3.0, 1e-12);
      EXPECT_NEAR(m.majority_cosine, -1.0 / 3.0, 1e-12);
      EXPECT_NEAR(m.minority_cosine_std, 0.0, 1e-12);
      EXPECT_NEAR(m.minority_norm_cov, 0.0, 1e-12);
      EXPECT_NEAR(m.nc3, 0.0, 1e-12);
      EXPECT_EQ(m.nc4, 0.0);
      EXPECT_EQ(m.accuracy.overall, 1.0);
      EXPECT_EQ(m.accuracy.minority, 1.0);
      EXPECT_EQ(m.accuracy.majority, 1.0);
      for (int64_t c = 0; c < k; ++c) EXPECT_NEAR(m.classifier_norms[c], w_scale * std::sqrt(3.0), 1e-6);
    }
  }
}

// Means at e_1..e_4 with counts (30, 30, 10, 10); the within-class spread (+-0.5 on e_5) is
// orthogonal to the means. Papyan's centring gives a simplex ETF (cos -1/3). Fang's all-sample
// mean mu_G = (3/8, 3/8, 1/8, 1/8, 0) gives m_1 = (5,-3,-1,-1)/8, m_3 = (-3,-3,7,-1)/8: majority
// cosine -28/36, minority cosine 4/68, norms 6/8 and sqrt(68)/8. The logits are set by hand.
TEST(Collapse, KnownImbalancedConfiguration) {
  const int64_t k = 4, d = 5;
  const std::vector<int64_t> counts{30, 30, 10, 10};
  std::vector<int64_t> labels;
  std::vector<float> h;
  for (int64_t c = 0; c < k; ++c)
    for (int64_t i = 0; i < counts[c]; ++i) {
      labels.push_back(c);
      for (int64_t j = 0; j < d; ++j) h.push_back(j == c ? 1.f : j == 4 ? (i % 2 ? 0.5f : -0.5f) : 0.f);
    }
  const int64_t n = static_cast<int64_t>(labels.size());
  // Network decisions: 6 of class 0 -> 2, 3 of class 2 -> 0, 5 of class 3 -> 1; the rest correct.
  std::vector<int64_t> predicted = labels;
  const int64_t wrong_count[4] = {6, 0, 3, 5}, wrong_class[4] = {2, 0, 0, 1};
  int64_t moved[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = labels[i];
    if (moved[y] < wrong_count[y]) {
      predicted[i] = wrong_class[y];
      ++moved[y];
    }
  }
  std::vector<float> logits(static_cast<size_t>(n * k), 0.f);
  for (int64_t i = 0; i < n; ++i) logits[i * k + predicted[i]] = 1.f;
  // W: the Papyan ETF rows, minority rows at half length.
  std::vector<std::vector<float>> w(k, std::vector<float>(d, 0.f));
  for (int64_t c = 0; c < k; ++c)
    for (int64_t j = 0; j < k; ++j) w[c][j] = ((c == j ? 1.f : 0.f) - 0.25f) * (c >= 2 ? 0.5f : 1.f);

  CollapseInputs in{
      Tensor::from_vector(h, {n, d}), labels, k, rows_tensor(w), Tensor(), Tensor::from_vector(logits, {n, k}), {2, 3},
      GlobalMean::ClassMeans};
  const CollapseMetrics papyan = collapse_metrics(in);
  in.global_mean = GlobalMean::AllSamples;
  const CollapseMetrics fang = collapse_metrics(in);

  for (const CollapseMetrics* m : {&papyan, &fang}) {
    EXPECT_NEAR(m->nc1, 0.0, 1e-12);  // the spread lies in the null space of Sigma_B
    EXPECT_NEAR(m->within_class_trace, 0.25, 1e-12);
    EXPECT_DOUBLE_EQ(m->nc4, 14.0 / 80.0);  // the NCC decision is always the true class
    EXPECT_DOUBLE_EQ(m->accuracy.overall, 66.0 / 80.0);
    EXPECT_DOUBLE_EQ(m->accuracy.majority, 54.0 / 60.0);
    EXPECT_DOUBLE_EQ(m->accuracy.minority, 12.0 / 20.0);
    EXPECT_EQ(m->accuracy.per_class, (std::vector<double>{0.8, 1.0, 0.7, 0.5}));
    // Classifier side: independent of the centring.
    EXPECT_NEAR(m->minority_cosine, -1.0 / 3.0, 1e-12);
    EXPECT_NEAR(m->majority_cosine, -1.0 / 3.0, 1e-12);
    EXPECT_NEAR(m->minority_norm_cov, 0.0, 1e-12);
    const double a = std::sqrt(0.75);
    EXPECT_NEAR(m->nc2_equinorm_classifier, std_unbiased({a, a, a / 2, a / 2}) / (0.75 * a), 1e-12);
    EXPECT_NEAR(m->classifier_norms[3], a / 2, 1e-7);
  }
  EXPECT_NEAR(papyan.minority_cosine_means, -1.0 / 3.0, 1e-12);
  EXPECT_NEAR(papyan.majority_cosine_means, -1.0 / 3.0, 1e-12);
  EXPECT_NEAR(papyan.nc2_equinorm_means, 0.0, 1e-12);
  EXPECT_NEAR(papyan.nc2_maxangle_means, 0.0, 1e-12);
  EXPECT_NEAR(fang.majority_cosine_means, -28.0 / 36.0, 1e-12);
  EXPECT_NEAR(fang.minority_cosine_means, 4.0 / 68.0, 1e-12);
  EXPECT_NEAR(fang.class_mean_norms[0], 0.75, 1e-12);
  EXPECT_NEAR(fang.class_mean_norms[2], std::sqrt(68.0) / 8.0, 1e-12);
  const double big = 0.75, small = std::sqrt(68.0) / 8.0;
  EXPECT_NEAR(fang.nc2_equinorm_means, std_unbiased({big, big, small, small}) / ((big + small) / 2), 1e-12);
  // The four cross pairs (majority, minority) have cosine -12/64 / (big * small).
  const double cross = -12.0 / 64.0 / (big * small);
  EXPECT_NEAR(fang.cosine_mean_means, (-28.0 / 36.0 + 4.0 / 68.0 + 4 * cross) / 6.0, 1e-12);
  // NC3 against the ETF means: rows r_c with ||r_c||^2 = 3/4, ||M||_F = sqrt(3), ||W||_F^2 = 15/8.
  const double alpha = 1 / std::sqrt(15.0 / 8.0), beta = 1 / std::sqrt(3.0);
  EXPECT_NEAR(papyan.nc3, 0.75 * (2 * std::pow(alpha - beta, 2) + 2 * std::pow(alpha / 2 - beta, 2)), 1e-12);
}

// K=3, means m_c = 3 e_c - 1 (a simplex ETF in the first three coordinates) plus an offset.
// Sigma_B = 3 P (P projects onto the complement of (1,1,1)), so Sigma_B^+ = P / 3 on those
// coordinates. Each class has samples mu_c +- u_c and mu_c +- eps e_4 (N = 12), so
// Sigma_W = (1/6) sum_c u_c u_c^T + (1/2) eps^2 e_4 e_4^T and
// Tr(Sigma_W Sigma_B^+) = (1/18) sum_c (||u_c||^2 - (1.u_c)^2 / 3) = (1/18)(1/6 + 1/6 + 0) = 1/54.
TEST(Collapse, Nc1ByHandWithWithinClassSpread) {
  const int64_t k = 3, d = 4;
  const float delta = 0.5f, eps = 2.f;
  const std::vector<std::vector<float>> u{{delta, 0, 0, 0}, {delta, delta, 0, 0}, {delta, delta, delta, 0}};
  const std::vector<float> offset{7.f, 7.f, 7.f, -4.f};
  std::vector<int64_t> labels;
  std::vector<float> h;
  for (int64_t c = 0; c < k; ++c)
    for (int s = 0; s < 4; ++s) {
      labels.push_back(c);
      for (int64_t j = 0; j < d; ++j) {
        const float mean = (j < 3 ? 3.f * (j == c) - 1.f : 0.f) + offset[j];
        const float sign = s % 2 ? -1.f : 1.f;
        const float dev = s < 2 ? u[c][j] : (j == 3 ? eps : 0.f);
        h.push_back(mean + sign * dev);
      }
    }
  const Tensor features = Tensor::from_vector(h, {12, d});
  std::vector<std::vector<float>> w{{2, -1, -1, 0}, {-1, 2, -1, 0}, {-1, -1, 2, 0}};
  for (GlobalMean gm : {GlobalMean::ClassMeans, GlobalMean::AllSamples}) {
    CollapseInputs in{features, labels, k, rows_tensor(w), Tensor(), Tensor(), {}, gm};
    const CollapseMetrics m = collapse_metrics(in);
    EXPECT_NEAR(m.nc1_trace, 1.0 / 54.0, 1e-12);
    EXPECT_NEAR(m.nc1, 1.0 / 162.0, 1e-12);
    EXPECT_NEAR(m.within_class_trace, (0.25 + 0.5 + 0.75) / 6.0 + 0.5 * eps * eps, 1e-12);
    EXPECT_NEAR(m.between_class_trace, 6.0, 1e-12);  // tr(3P) = 3 * 2
    EXPECT_NEAR(nc1_dense(features, labels, k, gm), 1.0 / 162.0, 1e-12);
    const MatrixD sw = within_class_covariance(features, labels, k);
    EXPECT_NEAR(sw(0, 0), (3 * 0.25) / 6.0, 1e-12);
    EXPECT_NEAR(sw(0, 1), (2 * 0.25) / 6.0, 1e-12);
    EXPECT_NEAR(sw(3, 3), 0.5 * eps * eps, 1e-12);
    // No minority classes: the minority statistics are undefined, majority ones cover all rows.
    EXPECT_TRUE(std::isnan(m.minority_cosine));
    EXPECT_TRUE(std::isnan(m.accuracy.minority));
    EXPECT_NEAR(m.majority_cosine, -0.5, 1e-12);
    EXPECT_NEAR(m.nc3, 0.0, 1e-12);
  }
}

// The blocked projection (O(N D K)) against explicit Sigma_W and pinv(Sigma_B) (O(N D^2)), with N
// not a multiple of the block and an imbalanced, anisotropic random configuration.
TEST(Collapse, FastNc1MatchesDenseReference) {
  const int64_t k = 7, d = 40;
  const std::vector<int64_t> counts{300, 250, 200, 120, 60, 50, 20};
  Generator gen(11);
  const Tensor centres = normal({k, d}, 0.f, 2.f, gen);
  std::vector<int64_t> labels;
  for (int64_t c = 0; c < k; ++c)
    for (int64_t i = 0; i < counts[c]; ++i) labels.push_back(c);
  const int64_t n = static_cast<int64_t>(labels.size());
  std::vector<float> h(static_cast<size_t>(n * d));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) h[i * d + j] = centres.at({labels[i], j}) + 1.f + gen.normal() * (0.2f + 0.05f * j);
  const Tensor features = Tensor::from_vector(h, {n, d});
  const Tensor w = normal({k, d}, 0.f, 1.f, gen);
  for (GlobalMean gm : {GlobalMean::ClassMeans, GlobalMean::AllSamples}) {
    const CollapseMetrics m = collapse_metrics({features, labels, k, w, Tensor(), Tensor(), {4, 5, 6}, gm});
    const double dense = nc1_dense(features, labels, k, gm);
    EXPECT_GT(dense, 1e-3);
    EXPECT_NEAR(m.nc1, dense, 1e-10 * dense) << to_string(gm);
    const MatrixD sw = within_class_covariance(features, labels, k);
    double trace = 0;
    for (int64_t j = 0; j < d; ++j) trace += sw(j, j);
    EXPECT_NEAR(m.within_class_trace, trace, 1e-10 * trace);
  }
}

// An empty class (R = inf) is left out of the feature-side metrics; W keeps all K rows.
TEST(Collapse, AbsentClassIsExcludedFromFeatureMetrics) {
  const std::vector<int64_t> labels{0, 0, 1, 1, 2, 2};
  const Tensor features = Tensor::from_vector({1, 0, 1, 0, 0, 1, 0, 1, -1, -1, -1, -1}, {6, 2});
  const Tensor w = Tensor::from_vector({1, 0, 0, 1, -1, -1, 1, 1}, {4, 2});
  const CollapseMetrics m =
      collapse_metrics({features, labels, 4, w, Tensor(), Tensor(), {2, 3}, GlobalMean::ClassMeans});
  EXPECT_EQ(m.classes_present, 3);
  EXPECT_EQ(m.class_counts, (std::vector<int64_t>{2, 2, 2, 0}));
  EXPECT_TRUE(std::isnan(m.class_mean_norms[3]));
  EXPECT_TRUE(std::isnan(m.minority_cosine_means));  // only one minority class present
  EXPECT_NEAR(m.minority_cosine, -1.0, 1e-12);       // W rows 2 and 3: (-1,-1).(1,1) / 2
  EXPECT_EQ(m.classifier_norms.size(), 4u);
  EXPECT_NEAR(m.nc1, 0.0, 1e-12);
  EXPECT_TRUE(std::isnan(m.accuracy.per_class[3]));
}

TEST(Collapse, RejectsBadInput) {
  const std::vector<int64_t> labels{0, 1, 2};
  const Tensor h = Tensor::zeros({3, 2});
  const Tensor w = Tensor::zeros({3, 2});
  const std::vector<int64_t> bad_label{0, 1, 3};
  EXPECT_THROW(collapse_metrics({h, bad_label, 3, w, Tensor(), Tensor(), {}, GlobalMean::ClassMeans}), peel::Error);
  EXPECT_THROW(collapse_metrics({h, labels, 3, Tensor::zeros({2, 2}), Tensor(), Tensor(), {}, GlobalMean::ClassMeans}),
               peel::Error);
  EXPECT_THROW(collapse_metrics({h, labels, 3, w, Tensor::zeros({2}), Tensor(), {}, GlobalMean::ClassMeans}),
               peel::Error);
  EXPECT_THROW(collapse_metrics({h, labels, 3, w, Tensor(), Tensor::zeros({3, 2}), {}, GlobalMean::ClassMeans}),
               peel::Error);
  EXPECT_THROW(collapse_metrics({h, labels, 3, w, Tensor(), Tensor(), {1, 1}, GlobalMean::ClassMeans}), peel::Error);
  EXPECT_THROW(collapse_metrics({h, labels, 3, w, Tensor(), Tensor(), {5}, GlobalMean::ClassMeans}), peel::Error);
  EXPECT_THROW(collapse_metrics({Tensor::zeros({2, 2}), labels, 3, w, Tensor(), Tensor(), {}, GlobalMean::ClassMeans}),
               peel::Error);
  EXPECT_THROW(parse_global_mean("papyan"), peel::Error);
  EXPECT_EQ(parse_global_mean(to_string(GlobalMean::AllSamples)), GlobalMean::AllSamples);
  EXPECT_EQ(parse_global_mean(to_string(GlobalMean::ClassMeans)), GlobalMean::ClassMeans);
}

TEST(Collapse, AccuracyFromConfusionMatrix) {
  const std::vector<int64_t> labels{0, 0, 0, 1, 1, 2, 2, 2, 2};
  const std::vector<int64_t> predicted{0, 0, 1, 1, 0, 2, 2, 0, 1};
  const ConfusionMatrix cm = confusion_matrix(labels, predicted, 4);
  EXPECT_EQ(cm(0, 1), 1);
  EXPECT_EQ(cm(2, 2), 2);
  const Accuracy acc = accuracy(cm, std::vector<int64_t>{2, 3});
  EXPECT_DOUBLE_EQ(acc.overall, 5.0 / 9.0);
  EXPECT_DOUBLE_EQ(acc.majority, 3.0 / 5.0);
  EXPECT_DOUBLE_EQ(acc.minority, 2.0 / 4.0);
  EXPECT_DOUBLE_EQ(acc.per_class[0], 2.0 / 3.0);
  EXPECT_TRUE(std::isnan(acc.per_class[3]));
  const auto cols = as_map(acc.to_columns("test_"));
  EXPECT_DOUBLE_EQ(cols.at("test_accuracy_minority"), 0.5);
  EXPECT_EQ(cols.size(), 3u + 4u);
  const Tensor logits = Tensor::from_vector({0, 1, 0, 0, 3, 3, 2, 0, 0}, {3, 3});
  EXPECT_EQ(predictions_from_logits(logits), (std::vector<int64_t>{1, 1, 0}));  // first maximum on ties
  EXPECT_DOUBLE_EQ(accuracy_from_logits(logits, std::vector<int64_t>{1, 2, 0}, std::vector<int64_t>{}).overall,
                   2.0 / 3.0);
  EXPECT_THROW(confusion_matrix(labels, std::vector<int64_t>{0}, 3), peel::Error);
}

TEST(Collapse, WeightSpectrumOfConvWeight) {
  // (O=2, C=1, 2, 2) read as the 2 x 4 matrix [[1,0,0,0],[0,2,0,0]].
  const WeightSpectrum s = weight_spectrum(Tensor::from_vector({1, 0, 0, 0, 0, 2, 0, 0}, {2, 1, 2, 2}));
  ASSERT_EQ(s.singular_values.size(), 2u);
  EXPECT_NEAR(s.singular_values[0], 2.0, 1e-12);
  EXPECT_NEAR(s.singular_values[1], 1.0, 1e-12);
  EXPECT_EQ(s.rank, 2);
  EXPECT_NEAR(s.stable_rank, 1.25, 1e-12);
  EXPECT_EQ(weight_spectrum(Tensor::from_vector({1, 0, 0, 0, 0, 2, 0, 0}, {2, 1, 2, 2}), 0.6).rank, 1);
  EXPECT_THROW(weight_spectrum(Tensor::zeros({4})), peel::Error);
}

// ---- Agreement with the NumPy reference ----------------------------------------------------------

namespace {

nlohmann::json load_fixture() {
  const std::string path = std::string(PEEL_SOURCE_DIR) + "/tests/fixtures/collapse/collapse_fixture.json";
  std::ifstream f(path);
  if (!f)
    throw peel::Error("cannot open " + path + "; regenerate with tests/fixtures/collapse/gen_collapse_fixture.py");
  nlohmann::json j = nlohmann::json::parse(f);
  if (j.at("format") != "peel-collapse-fixture" || j.at("version") != 1)
    throw peel::Error("unexpected collapse fixture format/version in " + path);
  return j;
}

Tensor tensor_of(const nlohmann::json& values, const Shape& shape) {
  return Tensor::from_vector(values.get<std::vector<float>>(), shape);
}

// Float32 inputs, double computations: agreement to 1e-5 relative.
void expect_close(double actual, const nlohmann::json& expected, const std::string& what) {
  if (expected.is_null()) {
    EXPECT_TRUE(std::isnan(actual)) << what << " should be NaN, got " << actual;
    return;
  }
  const double e = expected.get<double>();
  EXPECT_NEAR(actual, e, 1e-5 * std::abs(e) + 1e-12) << what;
}

}  // namespace

TEST(Collapse, MatchesNumPyFixture) {
  const nlohmann::json fixture = load_fixture();
  int compared = 0;
  for (const auto& [case_name, c] : fixture.at("cases").items()) {
    const int64_t k = c.at("num_classes"), d = c.at("feature_dim");
    const std::vector<int64_t> labels = c.at("labels").get<std::vector<int64_t>>();
    const int64_t n = static_cast<int64_t>(labels.size());
    CollapseInputs in;
    in.features = tensor_of(c.at("features"), {n, d});
    in.labels = labels;
    in.num_classes = k;
    in.classifier_weight = tensor_of(c.at("classifier_weight"), {k, d});
    in.classifier_bias = tensor_of(c.at("classifier_bias"), {k});
    in.minority_classes = c.at("minority_classes").get<std::vector<int64_t>>();
    for (const auto& [variant, expected] : c.at("expected").items()) {
      const bool no_logits = variant.find("/no-logits") != std::string::npos;
      in.logits = c.contains("logits") && !no_logits ? tensor_of(c.at("logits"), {n, k}) : Tensor();
      in.global_mean = parse_global_mean(variant.substr(0, variant.find('/')));
      const CollapseMetrics m = collapse_metrics(in);
      MetricColumns cols = m.to_columns();
      const MetricColumns acc = m.accuracy.to_columns();
      cols.insert(cols.end(), acc.begin(), acc.end());
      const auto actual = as_map(cols);
      std::set<std::string> expected_names;
      for (const auto& [name, value] : expected.items()) {
        expected_names.insert(name);
        ASSERT_TRUE(actual.count(name)) << "no column " << name;
        expect_close(actual.at(name), value, case_name + " " + variant + " " + name);
        ++compared;
      }
      for (const auto& [name, value] : actual) EXPECT_TRUE(expected_names.count(name)) << name << " not in the fixture";
    }
  }
  EXPECT_GT(compared, 200);

  const nlohmann::json& sp = fixture.at("spectrum");
  const Shape shape = sp.at("shape").get<Shape>();
  const WeightSpectrum s = weight_spectrum(tensor_of(sp.at("weight"), shape), sp.at("rank_tolerance").get<double>());
  const std::vector<double> sv = sp.at("expected").at("singular_values").get<std::vector<double>>();
  ASSERT_EQ(s.singular_values.size(), sv.size());
  // Singular values are accurate to ~eps * sigma_max, so the tiniest is compared absolutely.
  for (size_t i = 0; i < sv.size(); ++i) EXPECT_NEAR(s.singular_values[i], sv[i], 1e-5 * sv[i] + 1e-12) << i;
  EXPECT_EQ(s.rank, sp.at("expected").at("rank").get<int64_t>());
  EXPECT_EQ(s.rank_numpy, sp.at("expected").at("rank_numpy").get<int64_t>());
  EXPECT_NEAR(s.stable_rank, sp.at("expected").at("stable_rank").get<double>(), 1e-9);
}
