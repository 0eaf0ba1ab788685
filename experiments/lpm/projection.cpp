// Euclidean projection onto C = {X PSD, tr X_HH <= a, tr X_WW <= b} (X is 2K x 2K, H = the first K
// coordinates, W = the last K).
//
// Clipping the eigenvalues of Y and then fixing the traces is not the projection: the trace
// constraints and the cone interact. With multipliers (lambda_h, lambda_w) >= 0 for the two traces,
// the Lagrangian (1/2)||X - Y||^2 + lambda_h (<P_H, X> - a) + lambda_w (<P_W, X> - b) is minimised
// over the PSD cone by X(lambda) = Pi_PSD(Y - lambda_h P_H - lambda_w P_W), and the dual function
//   phi(lambda) = -(1/2) ||Pi_PSD(Y - lambda_h P_H - lambda_w P_W)||_F^2 - lambda_h a - lambda_w b (+ const)
// is concave and C^1 with gradient (tr_H X(lambda) - a, tr_W X(lambda) - b). The projection is
// X(lambda*) for lambda* maximising phi over lambda >= 0 (KKT: lambda >= 0, residual <= 0,
// complementarity). That is a 2-variable problem; we solve it by projected Newton. Its Hessian
// comes from the derivative of Pi_PSD at Y' = Q diag(d) Q^T (Daleckii-Krein):
//   D Pi[E] = Q (Gamma o (Q^T E Q)) Q^T,  Gamma_ij = (d_i^+ - d_j^+) / (d_i - d_j)  (1 when both d > 0),
// so d^2 phi / d lambda_A d lambda_B = -sum_ij Gamma_ij (Q^T P_A Q)_ij (Q^T P_B Q)_ij. Each Newton
// step costs one eigh (LAPACK dsyevd). See docs/lpm.md.
#include <algorithm>
#include <cmath>

#include "experiments/lpm/lpm.h"
#include "tensor/error.h"

namespace peel {

namespace {

// The dual at one multiplier pair, with the eigendecomposition that produced it.
struct DualPoint {
  double lambda_h = 0, lambda_w = 0;
  Eigh eig;
  double phi = 0;                         // dual value without the constant (1/2)||Y||^2
  double residual_h = 0, residual_w = 0;  // tr_H X - a, tr_W X - b
};

DualPoint evaluate_dual(const MatrixD& y, int64_t k_count, double a, double b, double lambda_h, double lambda_w) {
  const int64_t n = 2 * k_count;
  MatrixD shifted = y;
  for (int64_t i = 0; i < n; ++i) shifted(i, i) -= i < k_count ? lambda_h : lambda_w;
  DualPoint p;
  p.lambda_h = lambda_h;
  p.lambda_w = lambda_w;
  p.eig = eigh(shifted);
  double trace_h = 0, trace_w = 0, square_sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = p.eig.values[static_cast<size_t>(i)];
    if (d <= 0) continue;
    double mass_h = 0, mass_w = 0;  // how much of eigenvector i lies on the H / W coordinates
    for (int64_t r = 0; r < n; ++r) (r < k_count ? mass_h : mass_w) += p.eig.vectors(r, i) * p.eig.vectors(r, i);
    trace_h += d * mass_h;
    trace_w += d * mass_w;
    square_sum += d * d;
  }
  p.residual_h = trace_h - a;
  p.residual_w = trace_w - b;
  p.phi = -0.5 * square_sum - lambda_h * a - lambda_w * b;
  return p;
}

// -Hessian of phi, [[m_hh, m_hw], [m_hw, m_ww]] (positive semidefinite).
struct Curvature {
  double hh = 0, hw = 0, ww = 0;
};

Curvature dual_curvature(const Eigh& eig, int64_t k_count) {
  const int64_t n = 2 * k_count;
  const MatrixD& q = eig.vectors;
  Curvature m;
  for (int64_t i = 0; i < n; ++i) {
    const double di = eig.values[static_cast<size_t>(i)];
    for (int64_t j = 0; j < n; ++j) {
      const double dj = eig.values[static_cast<size_t>(j)];
      double gamma;
      if (di > 0 && dj > 0)
        gamma = 1;
      else if (di <= 0 && dj <= 0)
        continue;
      else
        gamma = (std::max(di, 0.0) - std::max(dj, 0.0)) / (di - dj);
      double a_ij = 0, b_ij = 0;  // (Q^T P_H Q)_ij and (Q^T P_W Q)_ij
      for (int64_t r = 0; r < n; ++r) (r < k_count ? a_ij : b_ij) += q(r, i) * q(r, j);
      m.hh += gamma * a_ij * a_ij;
      m.hw += gamma * a_ij * b_ij;
      m.ww += gamma * b_ij * b_ij;
    }
  }
  return m;
}

double kkt_violation(const DualPoint& p) {
  return std::max(std::abs(p.lambda_h - std::max(0.0, p.lambda_h + p.residual_h)),
                  std::abs(p.lambda_w - std::max(0.0, p.lambda_w + p.residual_w)));
}

// sum over positive eigenvalues d_i q_i q_i^T.
MatrixD positive_part(const Eigh& eig) {
  const int64_t n = eig.vectors.rows;
  MatrixD x = MatrixD::zeros(n, n);
  for (int64_t i = 0; i < n; ++i) {
    const double d = eig.values[static_cast<size_t>(i)];
    if (d <= 0) continue;
    for (int64_t r = 0; r < n; ++r) {
      const double qr = d * eig.vectors(r, i);
      for (int64_t c = 0; c < n; ++c) x(r, c) += qr * eig.vectors(c, i);
    }
  }
  return x;
}

// Scales the H (or W) rows and columns of X so that its trace meets the budget exactly when round-off
// left it a hair above: a congruence, so X stays PSD.
void enforce_budget(MatrixD& x, int64_t k_count, bool feature_block, double budget) {
  const int64_t n = 2 * k_count, begin = feature_block ? 0 : k_count;
  double trace = 0;
  for (int64_t i = begin; i < begin + k_count; ++i) trace += x(i, i);
  if (trace <= budget) return;
  const double s = std::sqrt(budget / trace);
  for (int64_t i = begin; i < begin + k_count; ++i)
    for (int64_t c = 0; c < n; ++c) {
      x(i, c) *= s;
      x(c, i) *= s;
    }
}

void check_inputs(const MatrixD& y, int64_t k_count, double a, double b, const char* op) {
  PEEL_CHECK(k_count >= 1 && y.rows == 2 * k_count && y.cols == 2 * k_count,
             "{}: expected a {}x{} matrix (2K x 2K for K = {}), got {}x{}", op, 2 * k_count, 2 * k_count, k_count,
             y.rows, y.cols);
  PEEL_CHECK(std::isfinite(a) && std::isfinite(b) && a >= 0 && b >= 0,
             "{}: trace budgets must be finite and >= 0, got {} and {}", op, a, b);
  for (double v : y.values) PEEL_CHECK(std::isfinite(v), "{}: the matrix has a non-finite entry ({})", op, v);
}

}  // namespace

LpmProjection project_lpm_set(const MatrixD& y, int64_t classes, double trace_h, double trace_w, double lambda_h,
                              double lambda_w) {
  check_inputs(y, classes, trace_h, trace_w, "project_lpm_set");
  const SingleThreadScope single_thread;
  double y_norm = 0;
  for (double v : y.values) y_norm += v * v;
  const double tolerance = 1e-13 * std::max({1.0, trace_h + trace_w, std::sqrt(y_norm)});
  const double lipschitz = static_cast<double>(classes);  // of grad phi: ||(<P_H, .>, <P_W, .>)||^2 = K
  int64_t eigs = 0;
  auto evaluate = [&](double lh, double lw) {
    ++eigs;
    return evaluate_dual(y, classes, trace_h, trace_w, lh, lw);
  };

  DualPoint p = evaluate(std::max(0.0, lambda_h), std::max(0.0, lambda_w));
  for (int iteration = 0; iteration < 100 && kkt_violation(p) > tolerance; ++iteration) {
    // Free variables: off their bound, or pushed off it by the gradient.
    const bool free_h = p.lambda_h > 0 || p.residual_h > 0;
    const bool free_w = p.lambda_w > 0 || p.residual_w > 0;
    const Curvature m = dual_curvature(p.eig, classes);
    double step_h = 0, step_w = 0;
    bool newton = false;
    if (free_h && free_w) {
      const double det = m.hh * m.ww - m.hw * m.hw;
      if (det > 1e-12 * std::max(1.0, m.hh * m.ww)) {
        step_h = (m.ww * p.residual_h - m.hw * p.residual_w) / det;
        step_w = (m.hh * p.residual_w - m.hw * p.residual_h) / det;
        newton = true;
      }
    } else if (free_h && m.hh > 1e-12) {
      step_h = p.residual_h / m.hh;
      newton = true;
    } else if (free_w && m.ww > 1e-12) {
      step_w = p.residual_w / m.ww;
      newton = true;
    }
    if (!newton) {  // singular curvature (e.g. X(lambda) = 0): trace_h safe gradient step
      step_h = free_h ? p.residual_h / lipschitz : 0;
      step_w = free_w ? p.residual_w / lipschitz : 0;
    }
    // Backtracking on phi (Armijo along the projected path lambda + t step, clipped at 0).
    double t = 1;
    bool accepted = false;
    for (int trial = 0; trial < 40; ++trial, t *= 0.5) {
      const double lh = std::max(0.0, p.lambda_h + t * step_h), lw = std::max(0.0, p.lambda_w + t * step_w);
      DualPoint next = evaluate(lh, lw);
      const double ascent = p.residual_h * (lh - p.lambda_h) + p.residual_w * (lw - p.lambda_w);
      if (next.phi >= p.phi + 1e-4 * ascent - 1e-15 * std::abs(p.phi)) {
        p = std::move(next);
        accepted = true;
        break;
      }
    }
    if (!accepted) break;  // no ascent left at double precision
  }
  LpmProjection out;
  out.x = positive_part(p.eig);
  enforce_budget(out.x, classes, true, trace_h);
  enforce_budget(out.x, classes, false, trace_w);
  out.lambda_h = p.lambda_h;
  out.lambda_w = p.lambda_w;
  out.eigendecompositions = eigs;
  return out;
}

MatrixD project_lpm_set_dykstra(const MatrixD& y, int64_t classes, double trace_h, double trace_w, int64_t iterations) {
  check_inputs(y, classes, trace_h, trace_w, "project_lpm_set_dykstra");
  const int64_t n = 2 * classes;
  // Projection onto the two trace half-spaces: their normals P_H, P_W are orthogonal, so each block's
  // diagonal is shifted independently.
  auto project_traces = [&](MatrixD x) {
    for (int block = 0; block < 2; ++block) {
      const int64_t begin = block == 0 ? 0 : classes;
      const double budget = block == 0 ? trace_h : trace_w;
      double trace = 0;
      for (int64_t i = begin; i < begin + classes; ++i) trace += x(i, i);
      if (trace > budget)
        for (int64_t i = begin; i < begin + classes; ++i) x(i, i) -= (trace - budget) / static_cast<double>(classes);
    }
    return x;
  };
  const SingleThreadScope single_thread;
  MatrixD x = y, p = MatrixD::zeros(n, n), q = MatrixD::zeros(n, n);
  for (int64_t it = 0; it < iterations; ++it) {
    MatrixD shifted = x;
    for (size_t i = 0; i < shifted.values.size(); ++i) shifted.values[i] += p.values[i];
    const MatrixD cone = positive_part(eigh(shifted));
    for (size_t i = 0; i < p.values.size(); ++i) p.values[i] = shifted.values[i] - cone.values[i];
    MatrixD with_q = cone;
    for (size_t i = 0; i < with_q.values.size(); ++i) with_q.values[i] += q.values[i];
    MatrixD next = project_traces(with_q);
    double change = 0;
    for (size_t i = 0; i < q.values.size(); ++i) {
      q.values[i] = with_q.values[i] - next.values[i];
      change = std::max(change, std::abs(next.values[i] - x.values[i]));
    }
    x = std::move(next);
    if (change < 1e-15 * std::max(1.0, trace_h + trace_w)) break;
  }
  return x;
}

}  // namespace peel
