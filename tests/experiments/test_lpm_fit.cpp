// The Layer-Peeled Model fitted to a network: the budgets read off features and classifier rows,
// the run's imbalance and mitigation, and the fit read back from a run folder.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "experiments/lpm/fitted.h"
#include "experiments/lpm/from_run.h"
#include "experiments/run/folder.h"
#include "tensor/io/file_io.h"
#include "tests/support/error_matchers.h"
#include "tests/support/temp_files.h"

namespace peel {
namespace {

Tensor matrix(int64_t rows, int64_t cols, std::vector<float> values) {
  Tensor t = Tensor::empty({rows, cols});
  std::copy(values.begin(), values.end(), t.data());
  return t;
}

TEST(LpmFit, BudgetsAreTheClassAveragedSquaredNorms) {
  // Class 0: h = (1,0), (3,0): mean ||h||^2 = 5. Class 1: h = (0,2): 4. E_H = (5 + 4) / 2.
  const Tensor h = matrix(3, 2, {1, 0, 3, 0, 0, 2});
  const std::vector<int64_t> labels{0, 0, 1};
  const Tensor w = matrix(2, 2, {1, 1, 0, 2});  // ||w_0||^2 = 2, ||w_1||^2 = 4: E_W = 3
  const NetworkBudgets b = network_budgets(h, labels, 2, w);
  EXPECT_DOUBLE_EQ(b.e_w, 3.0);
  EXPECT_DOUBLE_EQ(b.e_h, 4.5);
  // mu = (4/3, 2/3): class 0 deviations (-1/3,-2/3), (5/3,-2/3) -> (5/9 + 29/9)/2 = 17/9;
  // class 1: (-4/3, 4/3) -> 32/9. Centred E_H = (17/9 + 32/9) / 2 = 49/18.
  EXPECT_NEAR(b.e_h_centred, 49.0 / 18.0, 1e-12);
  EXPECT_EQ(b.feature_dim, 2);
}

TEST(LpmFit, BudgetsRefuseMismatchedShapes) {
  const Tensor h = matrix(2, 2, {1, 0, 0, 1});
  EXPECT_THAT(
      [&] {
        network_budgets(h, std::vector<int64_t>{0}, 2, matrix(2, 2, {1, 0, 0, 1}));
      },
      testing::ThrowsErrorWith("N labels"));
  EXPECT_THAT(
      [&] {
        network_budgets(h, std::vector<int64_t>{0, 1}, 3, matrix(2, 2, {1, 0, 0, 1}));
      },
      testing::ThrowsErrorWith("classifier weight must be (3, 2)"));
  EXPECT_THAT(
      [&] {
        network_budgets(h, std::vector<int64_t>{0, 5}, 2, matrix(2, 2, {1, 0, 0, 1}));
      },
      testing::ThrowsErrorWith("label 5 of sample 1"));
}

TEST(LpmFit, EachMitigationGivesItsMinorityWeight) {
  TrainConfig c;
  c.majority_classes = 2;
  c.ratio = 10;
  const std::vector<int64_t> counts{100, 100, 10, 10};
  EXPECT_DOUBLE_EQ(run_imbalance(c, counts).minority_weight, 1.0);
  EXPECT_DOUBLE_EQ(run_imbalance(c, counts).ratio(), 10.0);
  c.sampler = Sampler::oversample;
  EXPECT_DOUBLE_EQ(run_imbalance(c, counts).minority_weight, 10.0);  // factor 0 = round(R)
  c.oversample_factor = 4;
  EXPECT_DOUBLE_EQ(run_imbalance(c, counts).minority_weight, 4.0);
  c.sampler = Sampler::plain;
  c.class_weights = ClassWeights::inverse;
  EXPECT_DOUBLE_EQ(run_imbalance(c, counts).minority_weight, 10.0);
  c.class_weights = ClassWeights::none;
  c.majority_classes = 0;  // balanced: no minority, weight 1
  const RunImbalance balanced = run_imbalance(c, {50, 50, 50, 50});
  EXPECT_EQ(balanced.majority, 4);
  EXPECT_DOUBLE_EQ(balanced.ratio(), 1.0);
}

TEST(LpmFit, FittedModelAtRatioOneIsTheSimplex) {
  // At R = 1 the LPM's optimum is a simplex ETF whatever the budgets: every cosine is -1/(K-1).
  RunImbalance run{.classes = 6, .majority = 3, .class_counts = {20, 20, 20, 20, 20, 20}};
  const NetworkBudgets b{.e_w = 0.7, .e_h = 12.0, .e_h_centred = 3.0};
  for (BudgetCentring centring : {BudgetCentring::uncentred, BudgetCentring::centred}) {
    const LpmProblem p = fitted_problem(run, b, centring);
    EXPECT_DOUBLE_EQ(p.e_h, centring == BudgetCentring::centred ? 3.0 : 12.0);
    EXPECT_DOUBLE_EQ(p.e_w, 0.7);
    const LpmSolution s = solve_lpm(p, LpmSolver::Sdp).primary();
    EXPECT_NEAR(s.geometry.minority_cosine.mean, -1.0 / 5.0, 1e-4);
  }
}

TEST(LpmFit, LargerBudgetsDelayMinorityCollapse) {
  // Fang et al.: collapse sets in at a larger R the larger E_H E_W is. At R = 30 with the authors'
  // constants the minority rows have collapsed; with 20 times the feature budget they have not.
  RunImbalance run{.classes = 10, .majority = 5, .class_counts = {300, 300, 300, 300, 300, 10, 10, 10, 10, 10}};
  bool vanished = false;
  auto cosine = [&](double e_h) {
    const LpmSolution s =
        solve_lpm(fitted_problem(run, {.e_w = 1, .e_h = e_h, .e_h_centred = e_h}, BudgetCentring::uncentred),
                  LpmSolver::Sdp)
            .primary();
    vanished = s.geometry.minority_vanished == s.geometry.minority_count;
    return s.geometry.minority_cosine.mean;
  };
  const double small_budget = cosine(5);
  const bool small_vanished = vanished;
  const double large_budget = cosine(100);
  EXPECT_TRUE(small_vanished || small_budget > 0.99) << small_budget;
  EXPECT_LT(large_budget, 0.9);
}

TEST(LpmFit, FromRunFitsEveryMeasuredEpoch) {
  testing::TempDir dir;
  TrainConfig c;
  c.majority_classes = 5;
  c.ratio = 10;
  c.epochs = 2;
  nlohmann::json config = c;
  config["found"] = {{"class_counts", {100, 100, 100, 100, 100, 10, 10, 10, 10, 10}}};
  io::write_file_atomic((dir.path / "config.json").string(), config.dump());
  io::write_file_atomic((dir.path / "metrics.csv").string(),
                        "epoch,minority_cosine,lpm_e_w,lpm_e_h,lpm_e_h_centred\n"
                        "1,0.2,1,5,2\n"
                        "2,0.3,1.5,20,6\n");
  const LpmRunFit fit = fit_lpm_to_run(dir.path.string());
  ASSERT_EQ(fit.rows.size(), 2u);
  EXPECT_EQ(fit.rows[1].epoch, 2);
  EXPECT_DOUBLE_EQ(fit.rows[1].network_minority_cosine, 0.3);
  EXPECT_DOUBLE_EQ(fit.rows[1].budgets.e_h, 20);
  // Epoch 1's uncentred budgets are the authors' constants: the same prediction.
  EXPECT_NEAR(fit.rows[0].fitted_minority_cosine, fit.authors_minority_cosine, 1e-6);
  const LpmSolution centred =
      solve_lpm(fitted_problem(fit.imbalance, fit.rows[1].budgets, BudgetCentring::centred), LpmSolver::Sdp).primary();
  EXPECT_NEAR(fit.rows[1].fitted_centred_minority_cosine, centred.geometry.minority_cosine.mean, 1e-9);
  EXPECT_EQ(fit_lpm_to_run(dir.path.string(), /*last_only=*/true).rows.size(), 1u);
}

TEST(LpmFit, FromRunRefusesAFolderWithoutTheBudgets) {
  testing::TempDir dir;
  TrainConfig c;
  nlohmann::json config = c;
  config["found"] = {{"class_counts", {10, 10}}};
  io::write_file_atomic((dir.path / "config.json").string(), config.dump());
  io::write_file_atomic((dir.path / "metrics.csv").string(), "epoch,minority_cosine\n1,0.5\n");
  EXPECT_THAT([&] { fit_lpm_to_run(dir.path.string()); },
              testing::ThrowsErrorWith("metrics.csv", "no 'lpm_e_w' column"));
  std::filesystem::remove(dir.path / "config.json");
  EXPECT_THAT([&] { fit_lpm_to_run(dir.path.string()); }, testing::ThrowsErrorWith("config.json"));
}

}  // namespace
}  // namespace peel
