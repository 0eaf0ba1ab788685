// The Layer-Peeled Model of Fang, He, Long & Su (PNAS 2021), solved two ways and cross-checked.
//
// K classes: K_A majority classes of n_A samples and K_B = K - K_A minority classes of n_A / R.
// With the features reduced to their class means h_k (exact: the loss is convex in h), the model is
//
//   minimise  sum_k pi_k CE(W h_k, k)
//   subject to (1/K) sum_k ||w_k||^2 <= E_W  and  (1/K) sum_k ||h_k||^2 <= E_H,
//
// with class weights pi_k proportional to n_k times the minority loss weight w_r for minority
// classes (oversampling by w_r and reweighting by w_r both multiply the minority terms), normalised
// to sum to 1: the objective is the mean training cross-entropy. Fang et al.'s code minimises the
// same problem with weights (1, 1/R) instead; `reference_scale()` converts between the two.
//
// Two solvers (see docs/lpm.md for the derivations):
//   - solve_lpm_nonconvex: the program itself over W, H in R^{K x p}, float32, gradients by peel's
//     autograd, spectral projected gradient from several random starts;
//   - solve_lpm_sdp: its convex relaxation over the Gram matrix X of [h_1..h_K, w_1..w_K], in double,
//     by FISTA whose projection onto {X PSD, tr X_HH <= K E_H, tr X_WW <= K E_W} is solved exactly
//     through LAPACK's eigh (a 2-variable dual, Newton's method).
// The relaxation is exact for p >= 2K. Every solution carries a certified optimality gap (valid for
// any feasible Gram matrix, so for the nonconvex solver's too).
//
// Rows 0..K-1 of a Gram matrix are the features h_k, rows K..2K-1 the classifiers w_k; majority
// classes come first (0..K_A-1), as in Fang et al.'s code.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "experiments/collapse/stats.h"
#include "tensor/linalg.h"

namespace peel {

struct LpmProblem {
  int64_t classes = 10;        // K
  int64_t majority = 5;        // K_A; classes K_A..K-1 are the minority
  double ratio = 1;            // R = n_A / n_B
  double e_w = 1;              // E_W: budget of (1/K) sum ||w_k||^2
  double e_h = 5;              // E_H: budget of (1/K) sum ||h_k||^2
  double minority_weight = 1;  // w_r: oversampling factor or loss weight of the minority classes

  // Throws peel::Error naming the field and value that are out of range.
  void validate() const;
  int64_t minority() const { return classes - majority; }
  // pi_k = rho_k / sum_j rho_j with rho = 1 (majority), w_r / R (minority).
  std::vector<double> class_weights() const;
  // Fang et al.'s objective (weights 1 and w_r / R, not normalised) = objective * reference_scale().
  double reference_scale() const;
  double trace_budget_h() const { return static_cast<double>(classes) * e_h; }  // K E_H
  double trace_budget_w() const { return static_cast<double>(classes) * e_w; }  // K E_W
};

// The geometry of a solution, read from its Gram matrix.
struct LpmGeometry {
  // True cosines X_ij / sqrt(X_ii X_jj) between classifier rows w_i, w_j (mean, population std as
  // np.std, and mean |cos + 1/(n-1)|, over pairs i < j; NaN for fewer than two rows).
  PairStats minority_cosine, majority_cosine;
  // What Fang et al.'s optimization.py reports: 1 - scipy cosine distance between whole rows i, j of
  // the 2K x 2K Gram matrix (vectors in R^{2K}), for the classifier rows. Equal to the true cosine
  // only at collapse; kept for parity with the reference curve.
  PairStats minority_row_cosine, majority_row_cosine;
  // True cosines between the class means h_i, h_j.
  PairStats minority_feature_cosine, majority_feature_cosine;
  // Rows with ||w_k|| <= 1e-6 sqrt(E_W) have vanished: the model gave up on those classes (w_k = 0
  // up to round-off; happens for many minority classes at large R, e.g. K = 50, K_A = 25, R >= 4).
  // Their cosines are undefined and left out of the statistics above, which are NaN when fewer than
  // two rows of the group remain.
  int64_t minority_vanished = 0, majority_vanished = 0;
  int64_t minority_count = 0;
  // Mean ||w_i - w_j|| over minority pairs: the quantity the Minority Collapse theorem sends to 0.
  double minority_classifier_distance = 0;
  // Collapsed: minority cosine above 1 - tolerance, or every minority row vanished (all equal 0).
  bool minority_collapsed(double tolerance, bool row_cosine = false) const;
  std::vector<double> classifier_norms;  // ||w_k||
  std::vector<double> feature_norms;     // ||h_k||
  double mean_classifier_norm_sq = 0;    // (1/K) sum ||w_k||^2, at most E_W
  double mean_feature_norm_sq = 0;       // (1/K) sum ||h_k||^2, at most E_H
};
LpmGeometry lpm_geometry(const MatrixD& gram, const LpmProblem& problem);

struct LpmSolution {
  double objective = 0;  // sum_k pi_k CE_k, evaluated in double
  // Upper bound on objective - optimum (Frank-Wolfe gap of the convex relaxation); as the relaxation
  // is exact for p >= 2K, it certifies global optimality of either solver's answer.
  double gap = 0;
  MatrixD gram;  // 2K x 2K Gram matrix of [h_1..h_K, w_1..w_K]
  LpmGeometry geometry;
  int64_t iterations = 0;  // summed over starts for the nonconvex solver
  double seconds = 0;
  int64_t feature_dim = 0;  // p for the nonconvex solver, 2K for the SDP
};

// The objective of a Gram matrix (logits of class k: X[k, K..2K-1]), in double.
double lpm_objective(const MatrixD& gram, const LpmProblem& problem);
// sum_k pi_k CE(z_k, k) over the rows z_k of `logits` (K x K), and, when `gradient` is given, its
// gradient G_kj = pi_k (softmax(z_k)_j - [j = k]). Log-sum-exp with the row maximum taken out.
double lpm_loss(const MatrixD& logits, const std::vector<double>& weights, MatrixD* gradient = nullptr);
// Frank-Wolfe gap <grad f(X), X> - min_{V feasible} <grad f(X), V>, an upper bound on f(X) - f*
// for any feasible X. The minimum is -sqrt(K E_H K E_W) sigma_max(G), G the gradient in the logits.
double lpm_certified_gap(const MatrixD& gram, const LpmProblem& problem);

// ---- The convex relaxation ------------------------------------------------------------------------

struct SdpOptions {
  double tolerance = 1e-10;        // stop when gap <= tolerance * max(1, objective)
  int64_t max_iterations = 50000;  // FISTA iterations
  int64_t check_every = 10;        // iterations between gap evaluations (each costs an SVD)
};
// warm_start (a 2K x 2K symmetric matrix, e.g. the solution at a nearby R) is projected first;
// without it the start is X = diag(E_H, ..., E_W, ...).
LpmSolution solve_lpm_sdp(const LpmProblem& problem, const SdpOptions& options = {},
                          const MatrixD* warm_start = nullptr);

// Euclidean projection of a symmetric Y (2K x 2K) onto {X PSD, tr X[0:K,0:K] <= trace_h,
// tr X[K:2K,K:2K] <= trace_w}: X = Pi_PSD(Y - lambda_h P_H - lambda_w P_W), with the multipliers
// found by projected Newton on the concave dual (one eigh per step). lambda_* are the starting
// multipliers (warm start) on input and the final ones on output.
struct LpmProjection {
  MatrixD x;
  double lambda_h = 0, lambda_w = 0;
  int64_t eigendecompositions = 0;
};
LpmProjection project_lpm_set(const MatrixD& y, int64_t classes, double trace_h, double trace_w, double lambda_h = 0,
                              double lambda_w = 0);
// The same projection by Dykstra's alternating projections between the PSD cone and the two trace
// half-spaces: slow (linear rate) but obviously correct; the reference in tests.
MatrixD project_lpm_set_dykstra(const MatrixD& y, int64_t classes, double trace_h, double trace_w,
                                int64_t iterations = 20000);

// ---- The nonconvex program --------------------------------------------------------------------------

struct NonconvexOptions {
  int64_t feature_dim = 0;  // p; 0 means 2K (the relaxation is exact for p >= 2K)
  int64_t starts = 4;       // random starts; the best objective wins
  uint64_t seed = 0;
  int64_t max_iterations = 20000;  // per start
  // Stop when the projected-gradient step moves no coordinate by more than this (float32 limits it).
  double tolerance = 1e-7;
};
LpmSolution solve_lpm_nonconvex(const LpmProblem& problem, const NonconvexOptions& options = {});

// ---- Which solver, and the sweep over R ------------------------------------------------------------

enum class LpmSolver { Sdp, Nonconvex, Both };
const char* to_string(LpmSolver solver);            // "sdp" | "nonconvex" | "both"
LpmSolver parse_lpm_solver(std::string_view name);  // throws peel::Error on anything else

// One value of R. `primary()` is the SDP answer when it was computed (the reference), else the
// nonconvex one.
struct LpmPoint {
  double ratio = 0;
  std::optional<LpmSolution> sdp, nonconvex;
  const LpmSolution& primary() const;
  // |f_nonconvex - f_sdp| / |f_sdp| when both were solved, else NaN.
  double relative_disagreement() const;
};
LpmPoint solve_lpm(const LpmProblem& problem, LpmSolver solver, const SdpOptions& sdp = {},
                   const NonconvexOptions& nonconvex = {}, const MatrixD* sdp_warm_start = nullptr);

// Fang et al.'s grid: R = 10^(0.1 i), i = 0..40.
std::vector<double> authors_ratio_grid();

struct LpmSweepConfig {
  LpmProblem problem;  // `ratio` is ignored; the grid gives R
  std::vector<double> ratios = authors_ratio_grid();
  LpmSolver solver = LpmSolver::Sdp;
  SdpOptions sdp;
  NonconvexOptions nonconvex;
  double collapse_tolerance = 1e-3;  // collapsed: minority cosine > 1 - collapse_tolerance
  // Also locate the crossing of 1 - collapse_tolerance between grid points by bisection on R (SDP).
  bool refine_collapse = true;
};

struct LpmSweep {
  std::vector<LpmPoint> points;  // in the order of config.ratios
  // Smallest grid R whose minority cosine (true / Fang et al.'s row cosine) exceeds 1 - tolerance.
  std::optional<double> collapse_ratio, collapse_ratio_row_cosine;
  // The crossing located to 1e-4 relative between the grid point below and collapse_ratio.
  std::optional<double> collapse_ratio_refined;
  double max_relative_disagreement = 0;  // over points where both solvers ran (NaN otherwise)
  double seconds = 0;
};
// Solves each R warm-started from the previous SDP solution (ratios are visited in the given order).
LpmSweep lpm_sweep(const LpmSweepConfig& config);

// While alive, peel's loops, OpenBLAS and LAPACK run on one thread. The solvers' matrices (2K x 2K,
// K x p) are far too small to share: on the 2-core machine, threaded BLAS calls made a FISTA iteration
// ~50x slower than single-threaded ones. The caller's thread count is restored on exit.
class SingleThreadScope {
 public:
  SingleThreadScope();
  ~SingleThreadScope();
  SingleThreadScope(const SingleThreadScope&) = delete;
  SingleThreadScope& operator=(const SingleThreadScope&) = delete;

 private:
  int saved_;
};

}  // namespace peel
