// The Layer-Peeled Model as posed, over W and the class means H (both K x p), in float32 with the
// gradient from peel's autograd, by spectral projected gradient (Birgin, Martinez & Raydan 2000:
// Barzilai-Borwein step lengths, non-monotone Armijo line search) onto the product of the two balls
// ||W||_F^2 <= K E_W and ||H||_F^2 <= K E_H, whose projection is a rescaling of the violating block.
// Several random starts; the best objective (re-evaluated in double) wins.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <limits>

#include "autograd/functional.h"
#include "experiments/lpm/lpm.h"
#include "tensor/error.h"
#include "tensor/random.h"

namespace peel {

namespace {

// x = [W (K x p, row-major); H (K x p)].
class AutogradObjective {
 public:
  AutogradObjective(int64_t k_count, int64_t dim, const std::vector<double>& weights)
      : k_(k_count), p_(dim), weight_diag_(Tensor::zeros({k_count, k_count})) {
    for (int64_t k = 0; k < k_count; ++k) weight_diag_.set({k, k}, static_cast<float>(weights[static_cast<size_t>(k)]));
  }

  // loss = -sum_k pi_k log_softmax(H W^T)[k, k]; fills `grad` (same layout as x) by backward.
  float value_and_gradient(const std::vector<float>& x, std::vector<float>& grad) const {
    const size_t half = static_cast<size_t>(k_ * p_);
    ag::Variable w(Tensor::from_vector(std::vector<float>(x.begin(), x.begin() + half), {k_, p_}), true);
    ag::Variable h(Tensor::from_vector(std::vector<float>(x.begin() + half, x.end()), {k_, p_}), true);
    ag::Variable logits = ag::matmul(h, ag::transpose(w, 0, 1));  // (K, K): row k = logits of class k
    ag::Variable loss = ag::neg(ag::sum(ag::mul(ag::log_softmax(logits, 1), ag::constant(weight_diag_))));
    loss.backward();
    const std::vector<float> gw = w.grad().to_vector(), gh = h.grad().to_vector();
    grad.assign(gw.begin(), gw.end());
    grad.insert(grad.end(), gh.begin(), gh.end());
    return loss.item();
  }

 private:
  int64_t k_, p_;
  Tensor weight_diag_;
};

// Rescales each block onto its ball when it is outside.
void project_balls(std::vector<float>& x, size_t half, double budget_w, double budget_h) {
  for (int block = 0; block < 2; ++block) {
    const auto begin = x.begin() + static_cast<std::ptrdiff_t>(block * half);
    double sq = 0;
    for (auto it = begin; it != begin + static_cast<std::ptrdiff_t>(half); ++it) sq += double(*it) * double(*it);
    const double budget = block == 0 ? budget_w : budget_h;
    if (sq <= budget) continue;
    const float s = static_cast<float>(std::sqrt(budget / sq));
    for (auto it = begin; it != begin + static_cast<std::ptrdiff_t>(half); ++it) *it *= s;
  }
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * double(b[i]);
  return s;
}

struct StartResult {
  std::vector<float> x;
  int64_t iterations = 0;
};

StartResult spectral_projected_gradient(const AutogradObjective& f, std::vector<float> x, double budget_w,
                                        double budget_h, const NonconvexOptions& options) {
  constexpr double kAlphaMin = 1e-10, kAlphaMax = 1e10, kArmijo = 1e-4;
  constexpr size_t kMemory = 10;            // non-monotone window
  constexpr double kResolvable = 4 * 6e-8;  // relative decrease float32 can resolve (4 ulps)
  constexpr int64_t kPatience = 200;
  const size_t half = x.size() / 2;
  project_balls(x, half, budget_w, budget_h);
  std::vector<float> g, trial(x.size()), g_trial, d(x.size());
  double fx = f.value_and_gradient(x, g);
  std::deque<double> recent{fx};

  auto projected_step = [&](double alpha) {  // d = P(x - alpha g) - x
    for (size_t i = 0; i < x.size(); ++i) trial[i] = x[i] - static_cast<float>(alpha) * g[i];
    project_balls(trial, half, budget_w, budget_h);
    double largest = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      d[i] = trial[i] - x[i];
      largest = std::max(largest, double(std::abs(d[i])));
    }
    return largest;
  };

  double alpha = 1 / std::max(projected_step(1.0), 1e-12);
  double best = fx;
  int64_t best_iteration = 0;
  // At the end f is below float32's resolution, but the gradient still resolves the optimum: return
  // the visited point closest to stationarity.
  double most_stationary = std::numeric_limits<double>::infinity();
  std::vector<float> most_stationary_x = x;
  int64_t iteration = 0;
  for (; iteration < options.max_iterations; ++iteration) {
    const double stationarity = projected_step(1.0);
    if (stationarity < most_stationary) {
      most_stationary = stationarity;
      most_stationary_x = x;
    }
    if (stationarity <= options.tolerance) break;  // first-order stationarity
    projected_step(alpha);
    const double f_ref = *std::max_element(recent.begin(), recent.end());
    const double slope = dot(g, d);
    double t = 1, f_trial = 0;
    bool accepted = false;
    for (int backtrack = 0; backtrack < 8; ++backtrack) {
      for (size_t i = 0; i < x.size(); ++i) trial[i] = x[i] + static_cast<float>(t) * d[i];
      f_trial = f.value_and_gradient(trial, g_trial);
      if (f_trial <= f_ref + kArmijo * t * slope) {
        accepted = true;
        break;
      }
      t *= 0.5;
    }
    if (!accepted) break;  // no decrease resolvable in float32
    // Barzilai-Borwein: alpha = s.s / s.y with s, y the steps in x and in the gradient.
    double ss = 0, sy = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double s = double(trial[i]) - double(x[i]), yv = double(g_trial[i]) - double(g[i]);
      ss += s * s;
      sy += s * yv;
    }
    alpha = sy > 0 ? std::clamp(ss / sy, kAlphaMin, kAlphaMax) : kAlphaMax;
    x.swap(trial);
    g.swap(g_trial);
    fx = f_trial;
    recent.push_back(fx);
    if (recent.size() > kMemory) recent.pop_front();
    // Stagnation: float32 resolves f to a few ulps; once a window of iterations gains less than
    // that, the remaining (flat) directions cannot be resolved.
    if (fx < best - kResolvable * std::abs(best)) {
      best = fx;
      best_iteration = iteration;
    } else if (iteration - best_iteration >= kPatience) {
      break;
    }
  }
  // The last accepted point has not been checked yet.
  if (projected_step(1.0) < most_stationary) most_stationary_x = x;
  return {std::move(most_stationary_x), iteration};
}

}  // namespace

LpmSolution solve_lpm_nonconvex(const LpmProblem& problem, const NonconvexOptions& options) {
  problem.validate();
  const SingleThreadScope single_thread;
  const auto started = std::chrono::steady_clock::now();
  const int64_t k_count = problem.classes;
  const int64_t dim = options.feature_dim > 0 ? options.feature_dim : 2 * k_count;
  PEEL_CHECK(options.feature_dim >= 0 && dim <= 100000,
             "solve_lpm_nonconvex: feature dimension p must be in [1, 100000], got {}", options.feature_dim);
  PEEL_CHECK(options.starts >= 1 && options.max_iterations >= 1 && options.tolerance >= 0,
             "solve_lpm_nonconvex: bad options (starts {}, max_iterations {}, tolerance {})", options.starts,
             options.max_iterations, options.tolerance);
  const double budget_w = problem.trace_budget_w(), budget_h = problem.trace_budget_h();
  const AutogradObjective f(k_count, dim, problem.class_weights());
  const size_t half = static_cast<size_t>(k_count * dim);

  Generator root(options.seed);
  LpmSolution best;
  best.objective = std::numeric_limits<double>::infinity();
  int64_t total_iterations = 0;
  for (int64_t start = 0; start < options.starts; ++start) {
    Generator gen = root.fork(static_cast<uint64_t>(start));
    std::vector<float> x(2 * half);
    for (float& v : x) v = gen.normal();
    // Start on the budget spheres (the constraints are active at the optimum).
    for (int block = 0; block < 2; ++block) {
      double sq = 0;
      for (size_t i = block * half; i < (block + 1) * half; ++i) sq += double(x[i]) * double(x[i]);
      const double s = std::sqrt((block == 0 ? budget_w : budget_h) / sq);
      for (size_t i = block * half; i < (block + 1) * half; ++i) x[i] = static_cast<float>(x[i] * s);
    }
    StartResult r = spectral_projected_gradient(f, std::move(x), budget_w, budget_h, options);
    total_iterations += r.iterations;

    // Features then classifiers as rows, in double, scaled to be exactly feasible.
    MatrixD rows = MatrixD::zeros(2 * k_count, dim);
    for (int64_t k = 0; k < k_count; ++k)
      for (int64_t c = 0; c < dim; ++c) {
        rows(k, c) = r.x[half + static_cast<size_t>(k * dim + c)];
        rows(k_count + k, c) = r.x[static_cast<size_t>(k * dim + c)];
      }
    for (int block = 0; block < 2; ++block) {
      double sq = 0;
      for (int64_t k = 0; k < k_count; ++k)
        for (int64_t c = 0; c < dim; ++c) sq += rows(block * k_count + k, c) * rows(block * k_count + k, c);
      const double budget = block == 0 ? budget_h : budget_w;
      if (sq <= budget) continue;
      const double s = std::sqrt(budget / sq);
      for (int64_t k = 0; k < k_count; ++k)
        for (int64_t c = 0; c < dim; ++c) rows(block * k_count + k, c) *= s;
    }
    MatrixD gram = matmul(rows, transpose(rows));
    const double objective = lpm_objective(gram, problem);
    if (objective < best.objective) {
      best.objective = objective;
      best.gram = std::move(gram);
    }
  }
  best.gap = lpm_certified_gap(best.gram, problem);
  best.geometry = lpm_geometry(best.gram, problem);
  best.iterations = total_iterations;
  best.feature_dim = dim;
  best.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return best;
}

}  // namespace peel
