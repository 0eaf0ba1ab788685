// The Layer-Peeled Model: theory at R = 1 (simplex ETF, closed-form loss), Minority Collapse at a
// finite R, the two solvers against each other, the projection against Dykstra's algorithm and its
// variational inequality, and the minority weight.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "experiments/lpm/lpm.h"
#include "tensor/error.h"
#include "tensor/random.h"

using namespace peel;

namespace {

// Fang et al.'s setting: K = 10, K_A = 5, E_W = 1, E_H = 5 (the LpmProblem defaults).
LpmProblem authors_problem(double ratio) {
  LpmProblem p;
  p.ratio = ratio;
  return p;
}

// Balanced case: the w_k form a simplex ETF with ||w_k||^2 = E_W, and h_k = sqrt(E_H / E_W) w_k.
void expect_simplex_etf(const MatrixD& x, const LpmProblem& p, double tol) {
  const int64_t k = p.classes;
  const double c = std::sqrt(p.e_h / p.e_w);
  for (int64_t i = 0; i < k; ++i) {
    EXPECT_NEAR(x(k + i, k + i), p.e_w, tol) << "||w_" << i << "||^2";
    // ||h_i - c w_i||^2, relative to ||h_i||^2 = E_H
    const double miss = x(i, i) - 2 * c * x(i, k + i) + c * c * x(k + i, k + i);
    EXPECT_LT(miss / p.e_h, tol) << "h_" << i << " is not sqrt(E_H/E_W) w_" << i;
    for (int64_t j = i + 1; j < k; ++j)
      EXPECT_NEAR(x(k + i, k + j) / std::sqrt(x(k + i, k + i) * x(k + j, k + j)), -1.0 / (k - 1), tol)
          << "cos(w_" << i << ", w_" << j << ")";
  }
}

const double kBalancedLoss = std::log(1 + 9 * std::exp(-std::sqrt(5.0) * 10 / 9));

MatrixD random_symmetric(Generator& gen, int64_t n, double scale, double shift) {
  MatrixD y = MatrixD::zeros(n, n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) y(i, j) = y(j, i) = scale * gen.normal() + (i == j ? shift : 0);
  return y;
}

double trace(const MatrixD& x, int64_t begin, int64_t count) {
  double t = 0;
  for (int64_t i = begin; i < begin + count; ++i) t += x(i, i);
  return t;
}

double frobenius_distance(const MatrixD& a, const MatrixD& b) {
  double s = 0;
  for (size_t i = 0; i < a.values.size(); ++i) s += (a.values[i] - b.values[i]) * (a.values[i] - b.values[i]);
  return std::sqrt(s);
}

// A random feasible point: B B^T scaled into both trace budgets (by a random factor in (0, 1]).
MatrixD random_feasible(Generator& gen, int64_t k, double a, double b) {
  const int64_t n = 2 * k;
  MatrixD f = MatrixD::zeros(n, n);
  for (double& v : f.values) v = gen.normal();
  MatrixD x = matmul(f, transpose(f));
  const double s = std::min(a / trace(x, 0, k), b / trace(x, k, k)) * (0.05 + 0.95 * gen.uniform());
  for (double& v : x.values) v *= s;
  return x;
}

}  // namespace

// The model's objective at a hand-built optimum: w_k a simplex ETF with ||w_k||^2 = E_W and
// h_k = sqrt(E_H / E_W) w_k, so the true logit is sqrt(E_H E_W) and the others -sqrt(E_H E_W)/(K-1).
// lpm_objective must give science.md's anchor, log(1 + 9 exp(-sqrt(5) 10/9)) = 0.559782.
TEST(LpmTheory, ObjectiveAtTheSimplexEtfIsTheClosedForm) {
  const LpmProblem p = authors_problem(1);
  const int64_t k = p.classes;
  const double scale = std::sqrt(p.e_h / p.e_w);
  MatrixD gram = MatrixD::zeros(2 * k, 2 * k);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      const double ww = p.e_w * (i == j ? 1.0 : -1.0 / static_cast<double>(k - 1));  // <w_i, w_j>
      gram(k + i, k + j) = ww;
      gram(i, j) = scale * scale * ww;               // <h_i, h_j>
      gram(i, k + j) = gram(k + j, i) = scale * ww;  // <h_i, w_j>
    }
  EXPECT_NEAR(lpm_objective(gram, p), 0.559782, 1e-6);
  EXPECT_NEAR(lpm_objective(gram, p), kBalancedLoss, 1e-12);
}

TEST(LpmTheory, BalancedSdpIsASimplexEtfWithTheClosedFormLoss) {
  const LpmProblem p = authors_problem(1);
  const LpmSolution s = solve_lpm_sdp(p);
  EXPECT_NEAR(s.objective, kBalancedLoss, 1e-4 * kBalancedLoss);
  EXPECT_LT(s.gap, 1e-8);
  expect_simplex_etf(s.gram, p, 1e-4);
  EXPECT_NEAR(s.geometry.minority_cosine.mean, -1.0 / 9, 1e-4);
  EXPECT_NEAR(s.geometry.majority_cosine.mean, -1.0 / 9, 1e-4);
  // At the ETF the rows of X are proportional to rows of the ETF's Gram matrix: same cosines.
  EXPECT_NEAR(s.geometry.minority_row_cosine.mean, -1.0 / 9, 1e-4);
  EXPECT_NEAR(s.geometry.mean_classifier_norm_sq, p.e_w, 1e-6);
  EXPECT_NEAR(s.geometry.mean_feature_norm_sq, p.e_h, 1e-6);
}

TEST(LpmTheory, BalancedNonconvexIsASimplexEtfWithTheClosedFormLoss) {
  const LpmProblem p = authors_problem(1);
  const LpmSolution s = solve_lpm_nonconvex(p);
  EXPECT_EQ(s.feature_dim, 2 * p.classes);
  EXPECT_NEAR(s.objective, kBalancedLoss, 1e-4 * kBalancedLoss);
  expect_simplex_etf(s.gram, p, 1e-4);
}

TEST(LpmTheory, MinorityCosineRisesWithRAndCollapsesAtAFiniteR) {
  LpmSweepConfig config;  // Fang et al.'s grid and constants
  const LpmSweep sweep = lpm_sweep(config);
  ASSERT_EQ(sweep.points.size(), 41u);
  EXPECT_NEAR(sweep.points.front().primary().geometry.minority_cosine.mean, -1.0 / 9, 1e-4);
  for (size_t i = 1; i < sweep.points.size(); ++i) {
    const double before = sweep.points[i - 1].primary().geometry.minority_cosine.mean;
    const double now = sweep.points[i].primary().geometry.minority_cosine.mean;
    EXPECT_GE(now, before - 1e-6) << "minority cosine fell between R = " << sweep.points[i - 1].ratio << " and "
                                  << sweep.points[i].ratio;
    EXPECT_LT(sweep.points[i].primary().gap, 1e-8);
  }
  ASSERT_TRUE(sweep.collapse_ratio.has_value());
  EXPECT_GT(*sweep.collapse_ratio, 1);
  EXPECT_LT(*sweep.collapse_ratio, 1e4);
  for (const LpmPoint& point : sweep.points)
    EXPECT_EQ(point.primary().geometry.minority_cosine.mean > 1 - 1e-3, point.ratio >= *sweep.collapse_ratio)
        << "R = " << point.ratio;
  EXPECT_GT(sweep.points.back().primary().geometry.minority_cosine.mean, 1 - 1e-6);
  ASSERT_TRUE(sweep.collapse_ratio_refined.has_value());
  EXPECT_LE(*sweep.collapse_ratio_refined, *sweep.collapse_ratio);
  EXPECT_GT(*sweep.collapse_ratio_refined, *sweep.collapse_ratio / std::pow(10.0, 0.1));
  // Majority classifiers spread further apart as the minority ones merge.
  EXPECT_LT(sweep.points.back().primary().geometry.majority_cosine.mean, -1.0 / 9);
}

TEST(LpmTheory, MinorityRowsCanVanishAndThenCountAsCollapsed) {
  // With a small feature budget the model gives up on the minority classes at large R: w_k = h_k = 0.
  LpmProblem p = authors_problem(1000);
  p.e_h = 1;
  const LpmSolution s = solve_lpm_sdp(p);
  EXPECT_EQ(s.geometry.minority_vanished, 5);
  EXPECT_EQ(s.geometry.majority_vanished, 0);
  EXPECT_TRUE(std::isnan(s.geometry.minority_cosine.mean));  // undefined, not round-off noise
  EXPECT_LT(s.geometry.minority_classifier_distance, 1e-6);
  EXPECT_TRUE(s.geometry.minority_collapsed(1e-3));
  // The majority rows are then a K_A-simplex ETF.
  EXPECT_NEAR(s.geometry.majority_cosine.mean, -1.0 / (p.majority - 1), 1e-4);
}

TEST(LpmSolvers, NonconvexAgreesWithSdpOnTheObjective) {
  for (double ratio : {1.0, 3.0, 10.0, 12.0, 15.0, 100.0, 1e4}) {
    const LpmPoint point = solve_lpm(authors_problem(ratio), LpmSolver::Both);
    EXPECT_LT(point.relative_disagreement(), 1e-4) << "R = " << ratio;
    // The SDP is a relaxation: nothing feasible for the nonconvex program beats it.
    EXPECT_GE(point.nonconvex->objective, point.sdp->objective - 1e-9) << "R = " << ratio;
    // Cosines agree less tightly near the collapse threshold, where the nonconvex objective is
    // flat in the angle between minority rows beyond what float32 resolves (docs/lpm.md).
    EXPECT_NEAR(point.nonconvex->geometry.minority_cosine.mean, point.sdp->geometry.minority_cosine.mean, 1e-2)
        << "R = " << ratio;
    EXPECT_NEAR(point.nonconvex->geometry.majority_cosine.mean, point.sdp->geometry.majority_cosine.mean, 1e-2)
        << "R = " << ratio;
  }
}

TEST(LpmSolvers, NonconvexWithWiderFeaturesAgreesAndIsDeterministic) {
  const LpmProblem p = authors_problem(5);
  NonconvexOptions options;
  options.feature_dim = 4 * p.classes;
  options.seed = 7;
  const LpmSolution a = solve_lpm_nonconvex(p, options), b = solve_lpm_nonconvex(p, options);
  EXPECT_EQ(a.gram.values, b.gram.values);
  const LpmSolution sdp = solve_lpm_sdp(p);
  EXPECT_LT(std::abs(a.objective - sdp.objective) / sdp.objective, 1e-4);
}

TEST(LpmSolvers, CertifiedGapBoundsTheSuboptimalityOfFeasiblePoints) {
  const LpmProblem p = authors_problem(10);
  const LpmSolution best = solve_lpm_sdp(p);
  Generator gen(3);
  for (int trial = 0; trial < 20; ++trial) {
    const MatrixD x = random_feasible(gen, p.classes, p.trace_budget_h(), p.trace_budget_w());
    const double excess = lpm_objective(x, p) - best.objective;
    EXPECT_GE(excess, -1e-9);
    EXPECT_GE(lpm_certified_gap(x, p), excess - 1e-9);
  }
}

TEST(LpmSolvers, WarmStartReachesTheSameSolution) {
  const LpmSolution from_r5 = solve_lpm_sdp(authors_problem(5));
  const LpmSolution cold = solve_lpm_sdp(authors_problem(10));
  const LpmSolution warm = solve_lpm_sdp(authors_problem(10), {}, &from_r5.gram);
  EXPECT_NEAR(warm.objective, cold.objective, 1e-9);
  EXPECT_NEAR(warm.geometry.minority_cosine.mean, cold.geometry.minority_cosine.mean, 1e-4);
}

TEST(LpmProjection, IsFeasibleMatchesDykstraAndSatisfiesTheVariationalInequality) {
  const int64_t k = 10, n = 2 * k;
  const double a = 50, b = 10;
  Generator gen(11);
  // Small, large and shifted matrices: no constraint, one, or both active.
  const double cases[][2] = {{0.3, 0}, {1, 0}, {1, 4}, {5, 0}, {5, 10}, {0.5, -2}, {2, 8}};
  for (const auto& [scale, shift] : cases) {
    const MatrixD y = random_symmetric(gen, n, scale, shift);
    const LpmProjection p = project_lpm_set(y, k, a, b);
    const MatrixD& x = p.x;
    const std::string label = "scale " + std::to_string(scale) + ", shift " + std::to_string(shift);
    EXPECT_GE(eigh(x).values.front(), -1e-10) << label;
    EXPECT_LE(trace(x, 0, k), a + 1e-10) << label;
    EXPECT_LE(trace(x, k, k), b + 1e-10) << label;
    EXPECT_LT(frobenius_distance(x, project_lpm_set_dykstra(y, k, a, b)), 1e-8) << label;
    EXPECT_LT(frobenius_distance(project_lpm_set(x, k, a, b).x, x), 1e-9) << label;  // idempotent
    // x = argmin ||y - v|| over C  <=>  <y - x, v - x> <= 0 for every v in C.
    for (int trial = 0; trial < 30; ++trial) {
      const MatrixD v = random_feasible(gen, k, a, b);
      double inner = 0;
      for (size_t i = 0; i < v.values.size(); ++i) inner += (y.values[i] - x.values[i]) * (v.values[i] - x.values[i]);
      EXPECT_LE(inner, 1e-9 * (1 + scale * scale)) << label;
      EXPECT_LE(frobenius_distance(y, x), frobenius_distance(y, v) + 1e-12) << label;
    }
  }
}

TEST(LpmProjection, ClippingEigenvaluesThenRescalingIsNotTheProjection) {
  // The tempting shortcut: clip negative eigenvalues, then shrink each block's trace by a congruence.
  // It lands in the set but farther from y than the projection does.
  const int64_t k = 10, n = 2 * k;
  const double a = 50, b = 10;
  Generator gen(5);
  const MatrixD y = random_symmetric(gen, n, 5, 10);
  const MatrixD x = project_lpm_set(y, k, a, b).x;
  MatrixD naive = project_lpm_set(y, k, 1e300, 1e300).x;  // budgets that never bind: eigenvalue clipping
  for (int block = 0; block < 2; ++block) {
    const int64_t begin = block * k;
    const double s = std::sqrt(std::min(1.0, (block == 0 ? a : b) / trace(naive, begin, k)));
    for (int64_t i = begin; i < begin + k; ++i)
      for (int64_t c = 0; c < n; ++c) {
        naive(i, c) *= s;
        naive(c, i) *= s;
      }
  }
  EXPECT_LE(trace(naive, 0, k), a + 1e-9);
  EXPECT_LE(trace(naive, k, k), b + 1e-9);
  EXPECT_LT(frobenius_distance(y, x), frobenius_distance(y, naive) - 1e-3);
}

TEST(LpmWeights, MinorityWeightDividesTheRatio) {
  LpmProblem weighted = authors_problem(100);
  weighted.minority_weight = 10;
  const LpmSolution a = solve_lpm_sdp(weighted), b = solve_lpm_sdp(authors_problem(10));
  EXPECT_NEAR(a.objective, b.objective, 1e-9);
  EXPECT_NEAR(a.geometry.minority_cosine.mean, b.geometry.minority_cosine.mean, 1e-4);

  double total = 0;
  for (double w : weighted.class_weights()) total += w;
  EXPECT_NEAR(total, 1, 1e-15);
  EXPECT_NEAR(weighted.class_weights()[9] / weighted.class_weights()[0], 10.0 / 100, 1e-15);
  EXPECT_NEAR(weighted.reference_scale(), 5 + 5 * 10.0 / 100, 1e-15);
}

TEST(LpmWeights, OversamplingMovesTheCollapseThresholdByItsFactor) {
  // Grid points R = 10^(0.1 i): w_r = 10 should move the threshold by exactly ten of them.
  auto grid = [](int first, int last) {
    std::vector<double> r;
    for (int i = first; i <= last; ++i) r.push_back(std::pow(10.0, 0.1 * i));
    return r;
  };
  LpmSweepConfig config;
  config.refine_collapse = false;
  config.ratios = grid(5, 20);
  const LpmSweep plain = lpm_sweep(config);
  config.problem.minority_weight = 10;
  config.ratios = grid(15, 30);
  const LpmSweep oversampled = lpm_sweep(config);
  ASSERT_TRUE(plain.collapse_ratio && oversampled.collapse_ratio);
  EXPECT_NEAR(*oversampled.collapse_ratio / *plain.collapse_ratio, 10, 1e-9);  // ten grid steps
}

TEST(LpmGeometry, RowCosineIsFangEtAlsCosineBetweenRowsOfTheGramMatrix) {
  // K = 2, both classes minority. h_0 = h_1 = w_0 = (1, 0), w_1 = (1, 1)/sqrt(2).
  LpmProblem p;
  p.classes = 2;
  p.majority = 0;
  const double r = 1 / std::sqrt(2.0);
  MatrixD rows = MatrixD::zeros(4, 2);
  rows(0, 0) = rows(1, 0) = rows(2, 0) = 1;
  rows(3, 0) = rows(3, 1) = r;
  const LpmGeometry g = lpm_geometry(matmul(rows, transpose(rows)), p);
  EXPECT_NEAR(g.minority_cosine.mean, r, 1e-12);  // the true angle, 45 degrees
  // Rows of X: w_0 -> (1, 1, 1, r), w_1 -> (r, r, r, 1); cosine 4r / sqrt(3.5 * 2.5).
  EXPECT_NEAR(g.minority_row_cosine.mean, 4 * r / std::sqrt(3.5 * 2.5), 1e-12);
  EXPECT_TRUE(std::isnan(g.majority_cosine.mean));
  EXPECT_NEAR(g.classifier_norms[1], 1, 1e-12);
}

TEST(LpmProblem, RejectsBadValuesByName) {
  auto expect_error = [](LpmProblem p, const std::string& needle) {
    try {
      p.validate();
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  LpmProblem p;
  p.classes = 1;
  expect_error(p, "classes K");
  p = {};
  p.majority = 11;
  expect_error(p, "K_A");
  p = {};
  p.ratio = 0.5;
  expect_error(p, "ratio R");
  p = {};
  p.ratio = std::nan("");
  expect_error(p, "ratio R");
  p = {};
  p.e_w = 0;
  expect_error(p, "E_W");
  p = {};
  p.e_h = -1;
  expect_error(p, "E_H");
  p = {};
  p.minority_weight = 0;
  expect_error(p, "w_r");
  EXPECT_THROW(parse_lpm_solver("cvx"), Error);
  EXPECT_EQ(parse_lpm_solver("both"), LpmSolver::Both);
  MatrixD wrong = MatrixD::zeros(3, 3);
  EXPECT_THROW(solve_lpm_sdp(authors_problem(1), {}, &wrong), Error);
}
