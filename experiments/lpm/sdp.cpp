// The convex relaxation of the Layer-Peeled Model, solved by FISTA (accelerated projected gradient)
// in double precision, with backtracking on the step, function-value restarts, and the certified
// Frank-Wolfe gap as the stopping rule.
//
// f(X) = sum_k pi_k CE(X[k, K:2K], k) depends on X only through the off-diagonal block Z = X_HW, so its
// gradient in the space of symmetric matrices is [[0, G/2], [G^T/2, 0]] with G the gradient in Z, and
// it is (max_k pi_k / 4)-Lipschitz (softmax's Jacobian has norm <= 1/2, and ||S_HW||^2 <= ||S||^2 / 2).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "experiments/lpm/lpm.h"
#include "tensor/error.h"

namespace peel {

namespace {

struct Objective {
  int64_t k_count;
  std::vector<double> weights;

  // f(X), and G (K x K) when asked.
  double operator()(const MatrixD& x, MatrixD* gradient = nullptr) const {
    MatrixD z = MatrixD::zeros(k_count, k_count);
    for (int64_t k = 0; k < k_count; ++k)
      for (int64_t j = 0; j < k_count; ++j) z(k, j) = x(k, k_count + j);
    return lpm_loss(z, weights, gradient);
  }

  // <grad f(Y), D> = sum_kj G_kj D[k, K + j] (the two off-diagonal halves each carry G/2).
  double directional(const MatrixD& g, const MatrixD& d) const {
    double s = 0;
    for (int64_t k = 0; k < k_count; ++k)
      for (int64_t j = 0; j < k_count; ++j) s += g(k, j) * d(k, k_count + j);
    return s;
  }
};

}  // namespace

LpmSolution solve_lpm_sdp(const LpmProblem& problem, const SdpOptions& options, const MatrixD* warm_start) {
  problem.validate();
  PEEL_CHECK(options.tolerance >= 0 && options.max_iterations >= 1 && options.check_every >= 1,
             "solve_lpm_sdp: bad options (tolerance {}, max_iterations {}, check_every {})", options.tolerance,
             options.max_iterations, options.check_every);
  const SingleThreadScope single_thread;
  const auto started = std::chrono::steady_clock::now();
  const int64_t k_count = problem.classes, n = 2 * k_count;
  const double a = problem.trace_budget_h(), b = problem.trace_budget_w();
  const Objective f{k_count, problem.class_weights()};

  // Projections reuse the last multipliers: consecutive projections differ little.
  double lambda_h = 0, lambda_w = 0;
  auto project = [&](const MatrixD& y) {
    LpmProjection p = project_lpm_set(y, k_count, a, b, lambda_h, lambda_w);
    lambda_h = p.lambda_h;
    lambda_w = p.lambda_w;
    return std::move(p.x);
  };

  MatrixD x;
  if (warm_start) {
    PEEL_CHECK(warm_start->rows == n && warm_start->cols == n, "solve_lpm_sdp: warm start is {}x{}, expected {}x{}",
               warm_start->rows, warm_start->cols, n, n);
    x = project(*warm_start);
  } else {
    x = MatrixD::zeros(n, n);
    for (int64_t i = 0; i < n; ++i) x(i, i) = i < k_count ? problem.e_h : problem.e_w;
  }

  const double lipschitz_bound = *std::max_element(f.weights.begin(), f.weights.end()) / 4;
  double lipschitz = lipschitz_bound;
  double fx = f(x), momentum = 1, gap = std::numeric_limits<double>::infinity();
  MatrixD y = x, gy;
  int64_t iteration = 0;
  for (; iteration < options.max_iterations; ++iteration) {
    if (iteration % options.check_every == 0) {
      gap = lpm_certified_gap(x, problem);
      if (gap <= options.tolerance * std::max(1.0, std::abs(fx))) break;
    }
    const double fy = f(y, &gy);
    // Backtracking: grow L until the quadratic model at y bounds f at the projected step.
    MatrixD next;
    double f_next = 0;
    while (true) {
      MatrixD stepped = y;
      for (int64_t k = 0; k < k_count; ++k)
        for (int64_t j = 0; j < k_count; ++j) {
          const double move = gy(k, j) / (2 * lipschitz);
          stepped(k, k_count + j) -= move;
          stepped(k_count + j, k) -= move;
        }
      next = project(stepped);
      f_next = f(next);
      MatrixD d = next;
      double d_norm = 0;
      for (size_t i = 0; i < d.values.size(); ++i) {
        d.values[i] -= y.values[i];
        d_norm += d.values[i] * d.values[i];
      }
      const double model = fy + f.directional(gy, d) + 0.5 * lipschitz * d_norm;
      // The slack covers round-off in f. Past the proven bound a failed test is round-off, not
      // curvature: accept.
      if (f_next <= model + 1e-15 * std::max(1.0, std::abs(fy)) || lipschitz >= lipschitz_bound) break;
      lipschitz = std::min(2 * lipschitz, lipschitz_bound);
    }
    const double momentum_next = 0.5 * (1 + std::sqrt(1 + 4 * momentum * momentum));
    if (f_next > fx) {  // restart: the momentum overshot
      momentum = 1;
      y = next;
    } else {
      const double beta = (momentum - 1) / momentum_next;
      y = next;
      for (size_t i = 0; i < y.values.size(); ++i) y.values[i] += beta * (next.values[i] - x.values[i]);
      momentum = momentum_next;
    }
    x = std::move(next);
    fx = f_next;
    lipschitz = std::max(lipschitz * 0.95, lipschitz_bound * 1e-6);  // let the step grow again
  }
  if (iteration == options.max_iterations) gap = lpm_certified_gap(x, problem);

  LpmSolution s;
  s.objective = fx;
  s.gap = gap;
  s.gram = std::move(x);
  s.geometry = lpm_geometry(s.gram, problem);
  s.iterations = iteration;
  s.feature_dim = n;
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return s;
}

}  // namespace peel
