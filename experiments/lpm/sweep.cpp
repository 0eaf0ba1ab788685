// Solving the Layer-Peeled Model at one R or over a grid of R, and locating Minority Collapse.
#include <chrono>
#include <cmath>
#include <limits>

#include "experiments/lpm/lpm.h"
#include "tensor/error.h"

namespace peel {

const char* to_string(LpmSolver solver) {
  switch (solver) {
    case LpmSolver::Sdp:
      return "sdp";
    case LpmSolver::Nonconvex:
      return "nonconvex";
    case LpmSolver::Both:
      return "both";
  }
  return "?";
}

LpmSolver parse_lpm_solver(std::string_view name) {
  if (name == "sdp") return LpmSolver::Sdp;
  if (name == "nonconvex") return LpmSolver::Nonconvex;
  if (name == "both") return LpmSolver::Both;
  PEEL_FAIL("lpm: unknown solver '{}' (expected sdp, nonconvex or both)", name);
}

const LpmSolution& LpmPoint::primary() const {
  if (sdp) return *sdp;
  PEEL_CHECK(nonconvex.has_value(), "LpmPoint::primary: no solver ran at R = {}", ratio);
  return *nonconvex;
}

double LpmPoint::relative_disagreement() const {
  if (!sdp || !nonconvex) return std::numeric_limits<double>::quiet_NaN();
  return std::abs(nonconvex->objective - sdp->objective) / std::abs(sdp->objective);
}

LpmPoint solve_lpm(const LpmProblem& problem, LpmSolver solver, const SdpOptions& sdp,
                   const NonconvexOptions& nonconvex, const MatrixD* sdp_warm_start) {
  LpmPoint point;
  point.ratio = problem.ratio;
  if (solver != LpmSolver::Nonconvex) point.sdp = solve_lpm_sdp(problem, sdp, sdp_warm_start);
  if (solver != LpmSolver::Sdp) point.nonconvex = solve_lpm_nonconvex(problem, nonconvex);
  return point;
}

std::vector<double> authors_ratio_grid() {
  std::vector<double> grid;
  for (int i = 0; i <= 40; ++i) grid.push_back(std::pow(10.0, 0.1 * i));
  return grid;
}

LpmSweep lpm_sweep(const LpmSweepConfig& config) {
  PEEL_CHECK(!config.ratios.empty(), "lpm_sweep: no ratios to solve");
  PEEL_CHECK(config.collapse_tolerance > 0 && config.collapse_tolerance < 2,
             "lpm_sweep: collapse tolerance must be in (0, 2), got {}", config.collapse_tolerance);
  const auto started = std::chrono::steady_clock::now();
  LpmSweep sweep;
  LpmProblem problem = config.problem;
  MatrixD previous;  // warm start: the SDP solution at the previous R
  for (double ratio : config.ratios) {
    problem.ratio = ratio;
    problem.validate();
    LpmPoint point =
        solve_lpm(problem, config.solver, config.sdp, config.nonconvex, previous.values.empty() ? nullptr : &previous);
    if (point.sdp) previous = point.sdp->gram;
    sweep.points.push_back(std::move(point));
  }

  std::optional<size_t> first_collapsed;
  bool any_compared = false;
  for (size_t i = 0; i < sweep.points.size(); ++i) {
    const LpmPoint& p = sweep.points[i];
    const LpmGeometry& g = p.primary().geometry;
    if (!sweep.collapse_ratio && g.minority_collapsed(config.collapse_tolerance)) {
      sweep.collapse_ratio = p.ratio;
      first_collapsed = i;
    }
    if (!sweep.collapse_ratio_row_cosine && g.minority_collapsed(config.collapse_tolerance, true))
      sweep.collapse_ratio_row_cosine = p.ratio;
    if (p.sdp && p.nonconvex) {
      sweep.max_relative_disagreement = std::max(sweep.max_relative_disagreement, p.relative_disagreement());
      any_compared = true;
    }
  }
  if (!any_compared) sweep.max_relative_disagreement = std::numeric_limits<double>::quiet_NaN();

  // Bisection on log R between the last grid point below the threshold and the first above it.
  if (config.refine_collapse && first_collapsed && *first_collapsed > 0) {
    double lo = config.ratios[*first_collapsed - 1], hi = config.ratios[*first_collapsed];
    const LpmPoint& below = sweep.points[*first_collapsed - 1];
    if (lo < hi) {
      MatrixD warm = below.sdp ? below.sdp->gram : MatrixD{};
      while (hi / lo - 1 > 1e-4) {
        problem.ratio = std::sqrt(lo * hi);
        const LpmSolution s = solve_lpm_sdp(problem, config.sdp, warm.values.empty() ? nullptr : &warm);
        (s.geometry.minority_collapsed(config.collapse_tolerance) ? hi : lo) = problem.ratio;
        warm = s.gram;
      }
      sweep.collapse_ratio_refined = std::sqrt(lo * hi);
    }
  }
  sweep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return sweep;
}

}  // namespace peel
