// The MSE decomposition (experiments/collapse/mse_decomposition.h): against two NumPy
// implementations (the notebook's formulas and a ridge lstsq, tests/fixtures/collapse), the identity
// L = L_NC1 + L_NC2/3 + L_perp against a per-sample loss computed here, L_perp = 0 at the
// least-squares classifier, a collapsed simplex with its closed-form terms, primal against dual,
// and the link between lambda and peel's training loss.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "experiments/collapse/mse_decomposition.h"
#include "nn/functional.h"
#include "tensor/error.h"
#include "tensor/random.h"

using namespace peel;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

namespace {

struct Case {
  Tensor h, w, b;
  std::vector<int64_t> labels;
  int64_t k = 0;
};

// Gaussian classes around offset centres, with the given counts.
Case random_case(const std::vector<int64_t>& counts, int64_t d, uint64_t seed) {
  Generator gen(seed);
  Case c;
  c.k = static_cast<int64_t>(counts.size());
  const Tensor centres = normal({c.k, d}, 1.f, 1.5f, gen);
  for (int64_t y = 0; y < c.k; ++y)
    for (int64_t i = 0; i < counts[static_cast<size_t>(y)]; ++i) c.labels.push_back(y);
  const std::vector<int64_t> order = gen.permutation(static_cast<int64_t>(c.labels.size()));
  std::vector<int64_t> shuffled;
  for (int64_t i : order) shuffled.push_back(c.labels[static_cast<size_t>(i)]);
  c.labels = shuffled;
  const int64_t n = static_cast<int64_t>(c.labels.size());
  std::vector<float> h(static_cast<size_t>(n * d));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j)
      h[static_cast<size_t>(i * d + j)] =
          centres.data()[c.labels[static_cast<size_t>(i)] * d + j] + 0.7f * gen.normal();
  c.h = Tensor::from_vector(h, {n, d});
  c.w = normal({c.k, d}, 0.f, 0.3f, gen);
  c.b = normal({c.k}, 0.f, 0.2f, gen);
  return c;
}

MseDecompositionInputs inputs(const Case& c, double lambda, MseWeighting weighting = MseWeighting::Empirical) {
  return {.features = c.h,
          .labels = c.labels,
          .num_classes = c.k,
          .classifier_weight = c.w,
          .classifier_bias = c.b,
          .lambda = lambda,
          .weighting = weighting};
}

// (1/(2N)) sum_i ||W h_i + b - t e_{y_i}||^2 + lambda/2 ||W||^2 + lambda_b/2 ||b||^2, straight from the samples.
double per_sample_loss(const Case& c, double lambda, double lambda_b, double t) {
  const int64_t n = c.h.size(0), d = c.h.size(1);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t y = 0; y < c.k; ++y) {
      double z = c.b.defined() ? c.b.data()[y] : 0.0;
      for (int64_t j = 0; j < d; ++j) z += static_cast<double>(c.w.data()[y * d + j]) * c.h.data()[i * d + j];
      const double e = z - (y == c.labels[static_cast<size_t>(i)] ? t : 0.0);
      sum += e * e;
    }
  double w_sq = 0, b_sq = 0;
  for (int64_t i = 0; i < c.w.numel(); ++i) w_sq += static_cast<double>(c.w.data()[i]) * c.w.data()[i];
  if (c.b.defined())
    for (int64_t i = 0; i < c.b.numel(); ++i) b_sq += static_cast<double>(c.b.data()[i]) * c.b.data()[i];
  return 0.5 * sum / static_cast<double>(n) + 0.5 * lambda * w_sq + 0.5 * lambda_b * b_sq;
}

Tensor to_float_tensor(const std::vector<double>& v, const Shape& shape) {
  return Tensor::from_vector(std::vector<float>(v.begin(), v.end()), shape);
}

void expect_close(double actual, double expected, double rel, const std::string& what) {
  EXPECT_NEAR(actual, expected, rel * std::max(1.0, std::abs(expected))) << what;
}

}  // namespace

TEST(MseDecomposition, MatchesTheNotebookAndARidgeLstsqInNumPy) {
  const std::string path = std::string(PEEL_SOURCE_DIR) + "/tests/fixtures/collapse/mse_decomposition_fixture.json";
  std::ifstream f(path);
  ASSERT_TRUE(f.good()) << "cannot open " << path;
  const nlohmann::json fx = nlohmann::json::parse(f);
  ASSERT_EQ(fx["format"], "peel-mse-decomposition-fixture");
  ASSERT_EQ(fx["version"], 1);
  ASSERT_EQ(fx["cases"].size(), 5u);
  for (const auto& [name, c] : fx["cases"].items()) {
    const int64_t k = c["num_classes"], d = c["feature_dim"];
    const std::vector<int64_t> labels = c["labels"].get<std::vector<int64_t>>();
    const int64_t n = static_cast<int64_t>(labels.size());
    const Tensor h = Tensor::from_vector(c["features"].get<std::vector<float>>(), {n, d});
    const Tensor w = Tensor::from_vector(c["classifier_weight"].get<std::vector<float>>(), {k, d});
    const Tensor b = Tensor::from_vector(c["classifier_bias"].get<std::vector<float>>(), {k});
    const double lambda = c["lambda"];
    for (MseWeighting weighting : {MseWeighting::Uniform, MseWeighting::Empirical}) {
      const std::string what = name + "/" + to_string(weighting);
      const nlohmann::json& e = c["expected"][to_string(weighting)];
      const MseDecomposition m = mse_decomposition({.features = h,
                                                    .labels = labels,
                                                    .num_classes = k,
                                                    .classifier_weight = w,
                                                    .classifier_bias = b,
                                                    .lambda = lambda,
                                                    .weighting = weighting});
      EXPECT_EQ(m.dual_solve, name == "wide") << what;
      EXPECT_EQ(m.pseudo_inverse, lambda == 0) << what;
      expect_close(m.lnc1, e["lnc1"], 1e-9, what + " lnc1");
      expect_close(m.lnc23, e["lnc23"], 1e-9, what + " lnc23");
      expect_close(m.lperp, e["lperp"], 1e-9, what + " lperp");
      // The notebook's MSE_wd_features is the Empirical loss, whatever the weighting.
      expect_close(m.empirical_loss, e["mse_wd_features"], 1e-12, what + " MSE_wd_features");
      EXPECT_NEAR(m.residual, 0.0, 1e-12 * m.loss) << what;
      if (!e["w_ls"].is_null()) {
        const std::vector<double> w_ls = e["w_ls"].get<std::vector<double>>(),
                                  b_ls = e["b_ls"].get<std::vector<double>>();
        for (size_t i = 0; i < w_ls.size(); ++i) expect_close(m.w_ls.values[i], w_ls[i], 1e-9, what + " w_LS");
        for (size_t i = 0; i < b_ls.size(); ++i) expect_close(m.b_ls[i], b_ls[i], 1e-9, what + " b_LS");
      }
    }
  }
}

TEST(MseDecomposition, TermsSumToThePerSampleLossUnderImbalance) {
  const Case c = random_case({40, 25, 9, 4, 2}, 8, 11);
  for (double t : {1.0, 2.5}) {
    for (bool decay_bias : {true, false}) {
      MseDecompositionInputs in = inputs(c, 0.03);
      in.target_scale = t;
      in.decay_bias = decay_bias;
      const MseDecomposition m = mse_decomposition(in);
      const double direct = per_sample_loss(c, 0.03, decay_bias ? 0.03 : 0.0, t);
      EXPECT_NEAR(m.loss, direct, 1e-12 * direct) << t << " " << decay_bias;
      EXPECT_NEAR(m.lnc1 + m.lnc23 + m.lperp, direct, 1e-11 * direct) << t << " " << decay_bias;
      EXPECT_GT(m.lnc1, 0.0);
      EXPECT_GT(m.lnc23, 0.0);
      EXPECT_GT(m.lperp, 0.0);
      EXPECT_EQ(m.bias_lambda, decay_bias ? 0.03 : 0.0);
    }
  }
  // Without a bias the decomposition is that of a bias-free classifier.
  Case no_bias = c;
  no_bias.b = Tensor();
  const MseDecomposition m = mse_decomposition(inputs(no_bias, 0.03));
  EXPECT_TRUE(m.b_ls.empty());
  const double direct = per_sample_loss(no_bias, 0.03, 0.0, 1.0);
  EXPECT_NEAR(m.lnc1 + m.lnc23 + m.lperp, direct, 1e-11 * direct);
}

TEST(MseDecomposition, UniformWeightsDecomposeAnotherLossUnderImbalance) {
  // The notebook's formulas (Uniform) are exact for 1/2 tr(W Sigma_W W^T) + 1/(2K) sum_c ||W mu_c +
  // b - e_c||^2 + reg, which is not the per-sample loss it plots when the classes are unequal.
  const Case c = random_case({40, 25, 9, 4, 2}, 8, 12);
  const MseDecomposition uniform = mse_decomposition(inputs(c, 0.03, MseWeighting::Uniform));
  const MseDecomposition empirical = mse_decomposition(inputs(c, 0.03, MseWeighting::Empirical));
  EXPECT_NEAR(uniform.lnc1 + uniform.lnc23 + uniform.lperp, uniform.loss, 1e-11 * uniform.loss);
  EXPECT_NEAR(uniform.empirical_loss, empirical.loss, 1e-12 * empirical.loss);
  EXPECT_GT(std::abs(uniform.loss - empirical.loss), 1e-2 * empirical.loss);
  // On balanced classes the two weightings are the same.
  const Case balanced = random_case({10, 10, 10}, 5, 13);
  const MseDecomposition ub = mse_decomposition(inputs(balanced, 0.03, MseWeighting::Uniform));
  const MseDecomposition eb = mse_decomposition(inputs(balanced, 0.03, MseWeighting::Empirical));
  EXPECT_NEAR(ub.loss, eb.loss, 1e-12);
  EXPECT_NEAR(ub.lnc1, eb.lnc1, 1e-12);
  EXPECT_NEAR(ub.lperp, eb.lperp, 1e-12);
}

TEST(MseDecomposition, PerpendicularTermVanishesAtTheLeastSquaresClassifier) {
  Case c = random_case({30, 20, 10}, 6, 14);
  for (MseWeighting weighting : {MseWeighting::Empirical, MseWeighting::Uniform}) {
    const MseDecomposition first = mse_decomposition(inputs(c, 0.05, weighting));
    Case at_ls = c;
    at_ls.w = to_float_tensor(first.w_ls.values, {c.k, 6});
    at_ls.b = to_float_tensor(first.b_ls, {c.k});
    const MseDecomposition m = mse_decomposition(inputs(at_ls, 0.05, weighting));
    // float32 rounding of w_LS leaves a perpendicular part of order (1e-7)^2.
    EXPECT_LT(m.lperp, 1e-12) << to_string(weighting);
    EXPECT_GT(first.lperp, 1e-2) << to_string(weighting);
    EXPECT_NEAR(m.loss, m.least_squares_loss, 1e-12) << to_string(weighting);
    EXPECT_NEAR(m.least_squares_loss, first.least_squares_loss, 1e-10) << to_string(weighting);
    // The least-squares classifier minimises L.
    EXPECT_LE(first.least_squares_loss, first.loss);
  }
}

TEST(MseDecomposition, CollapsedSimplexHasTheClosedFormTerms) {
  // K=4 balanced classes with every feature at its class mean alpha (e_c - 1/K) (embedded in D=6,
  // mu_G = 0): Sigma_W = 0. With rho = (alpha^2/K) / (alpha^2/K + lambda):
  //   w_LS = (alpha/K) / (alpha^2/K + lambda) (I - 11^T/K),   b_LS = 1 / (K (1 + lambda)),
  //   L_NC1   = lambda/2 ((alpha/K)^2 (K-1) / (alpha^2/K + lambda)^2 + 1 / (K (1 + lambda)^2)),
  //   L_NC2/3 = 1/2 ((rho-1)^2 + 2 gamma (rho-1) + K gamma^2),  gamma = 1/(K(1+lambda)) - rho/K.
  // L_NC1 is the weight decay of w_LS only: it is 0 exactly when lambda = 0.
  const int64_t k = 4, d = 6;
  const double alpha = 2.0;
  std::vector<int64_t> labels;
  std::vector<float> h;
  for (int rep = 0; rep < 5; ++rep)
    for (int64_t c = 0; c < k; ++c) {
      labels.push_back(c);
      for (int64_t j = 0; j < d; ++j)
        h.push_back(j < k ? static_cast<float>(alpha * ((j == c ? 1.0 : 0.0) - 0.25)) : 0.f);
    }
  Case collapsed{Tensor::from_vector(h, {static_cast<int64_t>(labels.size()), d}), Tensor::zeros({k, d}),
                 Tensor::zeros({k}), labels, k};
  for (double lambda : {0.0, 0.01, 0.5}) {
    const MseDecomposition first = mse_decomposition(inputs(collapsed, lambda));
    const double rho = (alpha * alpha / k) / (alpha * alpha / k + lambda);
    const double scale = (alpha / k) / (alpha * alpha / k + lambda);
    for (int64_t c = 0; c < k; ++c) {
      for (int64_t j = 0; j < d; ++j)
        EXPECT_NEAR(first.w_ls(c, j), j < k ? scale * ((j == c ? 1.0 : 0.0) - 0.25) : 0.0, 1e-12) << lambda;
      EXPECT_NEAR(first.b_ls[static_cast<size_t>(c)], 1.0 / (k * (1 + lambda)), 1e-12) << lambda;
    }
    Case at_ls = collapsed;
    at_ls.w = to_float_tensor(first.w_ls.values, {k, d});
    at_ls.b = to_float_tensor(first.b_ls, {k});
    const MseDecomposition m = mse_decomposition(inputs(at_ls, lambda));
    const double gamma = 1.0 / (k * (1 + lambda)) - rho / k;
    const double lnc1 = 0.5 * lambda * (scale * scale * (k - 1) + 1.0 / (k * (1 + lambda) * (1 + lambda)));
    const double lnc23 = 0.5 * ((rho - 1) * (rho - 1) + 2 * gamma * (rho - 1) + k * gamma * gamma);
    EXPECT_NEAR(m.lnc1, lnc1, 1e-12) << lambda;
    EXPECT_NEAR(m.lnc23, lnc23, 1e-12) << lambda;
    EXPECT_LT(m.lperp, 1e-13) << lambda;
    EXPECT_EQ(m.pseudo_inverse, lambda == 0) << lambda;
    if (lambda == 0) {
      EXPECT_EQ(m.lnc1, 0.0);  // Sigma_W = 0 exactly and no weight decay
      EXPECT_NEAR(m.loss, 0.0, 1e-13);
    }
  }
}

TEST(MseDecomposition, PrimalAndDualSolvesAgree) {
  const Case c = random_case({8, 6, 4}, 30, 15);  // N = 18 < D = 30
  {
    MseDecompositionInputs in = inputs(c, 0.02);
    in.solver = MseSolver::Primal;
    const MseDecomposition primal = mse_decomposition(in);
    in.solver = MseSolver::Dual;
    const MseDecomposition dual = mse_decomposition(in);
    in.solver = MseSolver::Auto;
    const MseDecomposition automatic = mse_decomposition(in);
    EXPECT_FALSE(primal.dual_solve);
    EXPECT_TRUE(dual.dual_solve);
    EXPECT_TRUE(automatic.dual_solve);
    for (size_t i = 0; i < primal.w_ls.values.size(); ++i)
      EXPECT_NEAR(primal.w_ls.values[i], dual.w_ls.values[i], 1e-10);
    for (size_t i = 0; i < primal.b_ls.size(); ++i) EXPECT_NEAR(primal.b_ls[i], dual.b_ls[i], 1e-10);
    EXPECT_NEAR(primal.lnc1, dual.lnc1, 1e-11);
    EXPECT_NEAR(primal.lnc23, dual.lnc23, 1e-11);
    EXPECT_NEAR(primal.lperp, dual.lperp, 1e-11);
  }
  // Tall data: Auto takes the primal system; the dual one gives the same answer.
  const Case tall = random_case({12, 10, 8}, 4, 16);
  MseDecompositionInputs in = inputs(tall, 0.02);
  const MseDecomposition automatic = mse_decomposition(in);
  in.solver = MseSolver::Dual;
  const MseDecomposition dual = mse_decomposition(in);
  EXPECT_FALSE(automatic.dual_solve);
  EXPECT_NEAR(automatic.lnc1, dual.lnc1, 1e-11);
  EXPECT_NEAR(automatic.lperp, dual.lperp, 1e-11);
}

TEST(MseDecomposition, TrainingLambdaMatchesPeelsMseLoss) {
  // loss_scale * nn::mse_loss + wd/2 (||W||^2 + ||b||^2) = (2 loss_scale / K) L at
  // lambda = training_lambda(wd, K, loss_scale).
  const Case c = random_case({9, 7, 5, 3}, 6, 17);
  const double wd = 5e-4, loss_scale = 3.0;
  const float t = 1.5f;
  const int64_t n = c.h.size(0);
  std::vector<float> z(static_cast<size_t>(n * c.k));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t y = 0; y < c.k; ++y) {
      double v = c.b.data()[y];
      for (int64_t j = 0; j < 6; ++j) v += static_cast<double>(c.w.data()[y * 6 + j]) * c.h.data()[i * 6 + j];
      z[static_cast<size_t>(i * c.k + y)] = static_cast<float>(v);
    }
  const double mse =
      nn::mse_loss(nn::Variable(Tensor::from_vector(z, {n, c.k})), c.labels, t, static_cast<float>(loss_scale))
          .value()
          .item();
  double params_sq = 0;
  for (int64_t i = 0; i < c.w.numel(); ++i) params_sq += static_cast<double>(c.w.data()[i]) * c.w.data()[i];
  for (int64_t i = 0; i < c.b.numel(); ++i) params_sq += static_cast<double>(c.b.data()[i]) * c.b.data()[i];
  const double objective = mse + 0.5 * wd * params_sq;
  MseDecompositionInputs in = inputs(c, training_lambda(wd, c.k, loss_scale));
  in.target_scale = t;
  const MseDecomposition m = mse_decomposition(in);
  EXPECT_NEAR(objective, 2 * loss_scale / static_cast<double>(c.k) * m.loss, 1e-6 * objective);
  EXPECT_DOUBLE_EQ(training_lambda(5e-4, 10), 2.5e-3);
  EXPECT_DOUBLE_EQ(notebook_lambda(5e-4), 2.5e-4);
}

TEST(MseDecomposition, ColumnsAndErrors) {
  const Case c = random_case({5, 5}, 3, 18);
  const MseDecomposition m = mse_decomposition(inputs(c, 0.1));
  const MetricColumns cols = m.to_columns("train_");
  ASSERT_EQ(cols.size(), 13u);
  EXPECT_EQ(cols[0].first, "train_mse_lambda");
  EXPECT_EQ(cols[7].first, "train_lnc1");
  EXPECT_EQ(cols[7].second, m.lnc1);
  EXPECT_EQ(cols[9].first, "train_lperp");

  MseDecompositionInputs bad = inputs(c, 0.1);
  bad.classifier_weight = Tensor::zeros({3, 3});
  EXPECT_THAT([&] { mse_decomposition(bad); },
              ThrowsMessage<peel::Error>(HasSubstr("classifier weight must be (K, D) = [2, 3], got [3, 3]")));
  bad = inputs(c, -1.0);
  EXPECT_THAT([&] { mse_decomposition(bad); },
              ThrowsMessage<peel::Error>(HasSubstr("lambda must be finite and >= 0, got -1")));
  bad = inputs(c, 0.0);
  bad.solver = MseSolver::Dual;
  EXPECT_THAT([&] { mse_decomposition(bad); },
              ThrowsMessage<peel::Error>(HasSubstr("the dual solver needs lambda > 0")));
}
