// `peel lpm`: solve the Layer-Peeled Model at one imbalance ratio R, or sweep Fang et al.'s grid of R
// (K = 10, K_A = 5, E_H = 5, E_W = 1, R = 10^(0.1 i), i = 0..40 by default) and report where the
// minority classifiers collapse. See experiments/lpm.h and docs/lpm.md.
#include "experiments/lpm/lpm.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>

#include "experiments/cli/commands.h"
#include "experiments/lpm/from_run.h"
#include "tensor/error.h"
#include "tensor/io/file_io.h"

namespace peel::cli {

namespace {

struct LpmArgs {
  LpmProblem problem;
  std::string solver = "sdp";
  bool json = false;
  bool sweep = false;
  std::string out;
  std::string from_run;  // a training run's folder: fit the model to it
  SdpOptions sdp;
  NonconvexOptions nonconvex;
};

double mean_over(const std::vector<double>& v, int64_t begin, int64_t end) {
  if (end <= begin) return std::nan("");
  double s = 0;
  for (int64_t i = begin; i < end; ++i) s += v[static_cast<size_t>(i)];
  return s / static_cast<double>(end - begin);
}

// The per-solution fields shared by the single-R JSON, the sweep JSON and the CSV.
nlohmann::ordered_json solution_json(const LpmSolution& s, const LpmProblem& problem) {
  const LpmGeometry& g = s.geometry;
  nlohmann::ordered_json j;
  j["objective"] = s.objective;
  j["objective_reference_scale"] = s.objective * problem.reference_scale();
  j["gap"] = s.gap;
  j["minority_cosine"] = g.minority_cosine.mean;
  j["minority_cosine_std"] = g.minority_cosine.std;
  j["minority_row_cosine"] = g.minority_row_cosine.mean;
  j["minority_row_cosine_std"] = g.minority_row_cosine.std;
  j["majority_cosine"] = g.majority_cosine.mean;
  j["majority_cosine_std"] = g.majority_cosine.std;
  j["majority_row_cosine"] = g.majority_row_cosine.mean;
  j["majority_row_cosine_std"] = g.majority_row_cosine.std;
  j["minority_feature_cosine"] = g.minority_feature_cosine.mean;
  j["majority_feature_cosine"] = g.majority_feature_cosine.mean;
  j["minority_classifier_distance"] = g.minority_classifier_distance;
  j["minority_vanished"] = g.minority_vanished;
  j["majority_vanished"] = g.majority_vanished;
  j["mean_classifier_norm_sq"] = g.mean_classifier_norm_sq;
  j["mean_feature_norm_sq"] = g.mean_feature_norm_sq;
  j["classifier_norms"] = g.classifier_norms;
  j["feature_norms"] = g.feature_norms;
  j["feature_dim"] = s.feature_dim;
  j["iterations"] = s.iterations;
  j["seconds"] = s.seconds;
  return j;
}

nlohmann::ordered_json point_json(const LpmPoint& p, const LpmProblem& base) {
  LpmProblem problem = base;
  problem.ratio = p.ratio;
  nlohmann::ordered_json j;
  j["ratio"] = p.ratio;
  j["effective_ratio"] = p.ratio / problem.minority_weight;
  const nlohmann::ordered_json primary = solution_json(p.primary(), problem);
  for (const auto& [key, value] : primary.items()) j[key] = value;
  if (p.sdp && p.nonconvex) {
    j["nonconvex"] = solution_json(*p.nonconvex, problem);
    j["relative_disagreement"] = p.relative_disagreement();
  }
  return j;
}

nlohmann::ordered_json problem_json(const LpmProblem& p, const std::string& solver) {
  return {{"classes", p.classes},
          {"majority", p.majority},
          {"e_w", p.e_w},
          {"e_h", p.e_h},
          {"minority_weight", p.minority_weight},
          {"solver", solver}};
}

std::string fixed(double v, int digits) {
  return std::isnan(v) ? std::string("nan") : fmt::format("{:.{}f}", v, digits);
}

void print_solution(const char* name, const LpmSolution& s, const LpmProblem& problem) {
  const LpmGeometry& g = s.geometry;
  const int64_t k = problem.classes, ka = problem.majority;
  fmt::print(
      "{}: objective {:.7f} (mean training CE; Fang et al.'s scale {:.7f}), certified gap {:.1e}, "
      "p = {}, {} iterations, {:.3f} s\n",
      name, s.objective, s.objective * problem.reference_scale(), s.gap, s.feature_dim, s.iterations, s.seconds);
  fmt::print("  minority classifier cosine {} +- {}   (Fang et al.'s row-of-X cosine {} +- {})\n",
             fixed(g.minority_cosine.mean, 6), fixed(g.minority_cosine.std, 6), fixed(g.minority_row_cosine.mean, 6),
             fixed(g.minority_row_cosine.std, 6));
  fmt::print("  majority classifier cosine {} +- {}   (Fang et al.'s row-of-X cosine {} +- {})\n",
             fixed(g.majority_cosine.mean, 6), fixed(g.majority_cosine.std, 6), fixed(g.majority_row_cosine.mean, 6),
             fixed(g.majority_row_cosine.std, 6));
  fmt::print("  feature cosine: minority {}, majority {}\n", fixed(g.minority_feature_cosine.mean, 6),
             fixed(g.majority_feature_cosine.mean, 6));
  fmt::print("  mean ||w_i - w_j|| over minority pairs {}\n", fixed(g.minority_classifier_distance, 6));
  if (g.minority_vanished + g.majority_vanished > 0)
    fmt::print("  vanished rows (||w_k|| ~ 0, cosines undefined, left out): {} minority, {} majority\n",
               g.minority_vanished, g.majority_vanished);
  fmt::print("  ||w_k||: majority mean {}, minority mean {}; (1/K) sum ||w_k||^2 = {:.6f} (E_W = {})\n",
             fixed(mean_over(g.classifier_norms, 0, ka), 6), fixed(mean_over(g.classifier_norms, ka, k), 6),
             g.mean_classifier_norm_sq, problem.e_w);
  fmt::print("  ||h_k||: majority mean {}, minority mean {}; (1/K) sum ||h_k||^2 = {:.6f} (E_H = {})\n",
             fixed(mean_over(g.feature_norms, 0, ka), 6), fixed(mean_over(g.feature_norms, ka, k), 6),
             g.mean_feature_norm_sq, problem.e_h);
}

void run_single(const LpmArgs& args) {
  const auto started = std::chrono::steady_clock::now();
  const LpmPoint point = solve_lpm(args.problem, parse_lpm_solver(args.solver), args.sdp, args.nonconvex);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  nlohmann::ordered_json j = problem_json(args.problem, args.solver);
  const nlohmann::ordered_json fields = point_json(point, args.problem);
  for (const auto& [key, value] : fields.items()) j[key] = value;
  j["wall_seconds"] = seconds;
  if (!args.out.empty()) io::write_file_atomic(args.out, j.dump(2) + "\n");
  if (args.json) {
    fmt::print("{}\n", j.dump());
    return;
  }
  const LpmProblem& p = args.problem;
  fmt::print(
      "Layer-Peeled Model: K = {} ({} majority, {} minority), R = {:g}, w_r = {:g} (effective R/w_r = {:g}), "
      "E_W = {:g}, E_H = {:g}\n",
      p.classes, p.majority, p.minority(), p.ratio, p.minority_weight, p.ratio / p.minority_weight, p.e_w, p.e_h);
  if (point.sdp) print_solution("sdp", *point.sdp, p);
  if (point.nonconvex) print_solution("nonconvex", *point.nonconvex, p);
  if (point.sdp && point.nonconvex)
    fmt::print("nonconvex vs sdp objective: relative difference {:.2e}\n", point.relative_disagreement());
  fmt::print("wall time {:.3f} s\n", seconds);
}

std::string sweep_csv(const LpmSweep& sweep, const LpmProblem& problem) {
  std::string csv;
  for (size_t i = 0; i < sweep.points.size(); ++i) {
    const nlohmann::ordered_json j = point_json(sweep.points[i], problem);
    std::vector<std::string> names, values;
    for (auto& [key, value] : j.items()) {
      if (value.is_object()) {  // the nonconvex solution: its scalars, prefixed
        for (auto& [k2, v2] : value.items())
          if (v2.is_number()) {
            names.push_back("nonconvex_" + k2);
            values.push_back(fmt::format("{:.10g}", v2.get<double>()));
          }
      } else if (value.is_array()) {
        for (size_t c = 0; c < value.size(); ++c) {
          names.push_back(fmt::format("{}_{}", key.substr(0, key.size() - 1), c));  // classifier_norm_3
          values.push_back(fmt::format("{:.10g}", value[c].get<double>()));
        }
      } else {
        names.push_back(key);
        values.push_back(value.is_null() ? "nan" : fmt::format("{:.10g}", value.get<double>()));
      }
    }
    if (i == 0) csv += fmt::format("{}\n", fmt::join(names, ","));
    csv += fmt::format("{}\n", fmt::join(values, ","));
  }
  return csv;
}

void run_sweep(const LpmArgs& args) {
  LpmSweepConfig config;
  config.problem = args.problem;
  config.solver = parse_lpm_solver(args.solver);
  config.sdp = args.sdp;
  config.nonconvex = args.nonconvex;
  const LpmSweep sweep = lpm_sweep(config);
  const LpmProblem& p = args.problem;

  nlohmann::ordered_json j = problem_json(p, args.solver);
  auto optional_json = [](const std::optional<double>& v) {
    return v ? nlohmann::ordered_json(*v) : nlohmann::ordered_json();
  };
  j["collapse_tolerance"] = config.collapse_tolerance;
  j["collapse_ratio"] = optional_json(sweep.collapse_ratio);
  j["collapse_ratio_refined"] = optional_json(sweep.collapse_ratio_refined);
  j["collapse_ratio_row_cosine"] = optional_json(sweep.collapse_ratio_row_cosine);
  j["max_relative_disagreement"] = sweep.max_relative_disagreement;
  j["seconds"] = sweep.seconds;
  j["points"] = nlohmann::ordered_json::array();
  for (const LpmPoint& point : sweep.points) j["points"].push_back(point_json(point, p));

  if (!args.out.empty()) {
    const bool as_json = args.out.size() >= 5 && args.out.compare(args.out.size() - 5, 5, ".json") == 0;
    io::write_file_atomic(args.out, as_json ? j.dump(2) + "\n" : sweep_csv(sweep, p));
  }
  if (args.json) {
    fmt::print("{}\n", j.dump());
    return;
  }
  const bool both = config.solver == LpmSolver::Both;
  fmt::print(
      "Layer-Peeled Model sweep: K = {} ({} majority, {} minority), E_W = {:g}, E_H = {:g}, w_r = {:g}, solver {}\n",
      p.classes, p.majority, p.minority(), p.e_w, p.e_h, p.minority_weight, args.solver);
  fmt::print("{:>10} {:>11} {:>10} {:>9} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8}{}\n", "R", "objective", "min_cos",
             "min_std", "min_rowcos", "maj_cos", "maj_rowcos", "|w|_maj", "|w|_min", "gap",
             both ? "   nonconvex  rel_diff  nc_min_cos" : "");
  for (const LpmPoint& point : sweep.points) {
    const LpmSolution& s = point.primary();
    const LpmGeometry& g = s.geometry;
    std::string extra;
    if (both)
      extra = fmt::format(" {:11.7f} {:9.1e} {:11.6f}", point.nonconvex->objective, point.relative_disagreement(),
                          point.nonconvex->geometry.minority_cosine.mean);
    const bool gone = g.minority_count >= 2 && g.minority_vanished == g.minority_count;  // all w_k = 0
    fmt::print("{:>10.4g} {:11.7f} {:>10} {:>9} {:>10} {:>10} {:>10} {:>8} {:>8} {:8.1e}{}\n", point.ratio, s.objective,
               gone ? "vanished" : fixed(g.minority_cosine.mean, 6), fixed(g.minority_cosine.std, 6),
               gone ? "vanished" : fixed(g.minority_row_cosine.mean, 6), fixed(g.majority_cosine.mean, 6),
               fixed(g.majority_row_cosine.mean, 6), fixed(mean_over(g.classifier_norms, 0, p.majority), 4),
               fixed(mean_over(g.classifier_norms, p.majority, p.classes), 4), s.gap, extra);
  }
  auto show = [](const std::optional<double>& v) {
    return v ? fmt::format("{:.4g}", *v) : std::string("none in the grid");
  };
  fmt::print(
      "minority collapse (cosine > 1 - {:g}): first grid R = {}; crossing by bisection R = {}; "
      "with Fang et al.'s row-of-X cosine: first grid R = {}\n",
      config.collapse_tolerance, show(sweep.collapse_ratio), show(sweep.collapse_ratio_refined),
      show(sweep.collapse_ratio_row_cosine));
  if (both)
    fmt::print("largest nonconvex vs sdp relative objective difference: {:.2e}\n", sweep.max_relative_disagreement);
  fmt::print("{} solves in {:.3f} s\n", sweep.points.size(), sweep.seconds);
}

// `peel lpm --from-run DIR`: the model fitted to a run at each measured epoch (experiments/lpm/from_run.h).
void run_from_run(const LpmArgs& args) {
  const LpmRunFit fit = fit_lpm_to_run(args.from_run);
  const RunImbalance& run = fit.imbalance;
  nlohmann::ordered_json j;
  j["run"] = fit.dir;
  j["classes"] = run.classes;
  j["majority"] = run.majority;
  j["ratio"] = run.ratio();
  j["minority_weight"] = run.minority_weight;
  j["authors_minority_cosine"] = fit.authors_minority_cosine;
  j["epochs"] = nlohmann::ordered_json::array();
  for (const LpmFitRow& r : fit.rows)
    j["epochs"].push_back({{"epoch", r.epoch},
                           {"network_minority_cosine", r.network_minority_cosine},
                           {"e_w", r.budgets.e_w},
                           {"e_h", r.budgets.e_h},
                           {"e_h_centred", r.budgets.e_h_centred},
                           {"fitted_minority_cosine", r.fitted_minority_cosine},
                           {"fitted_vanished", r.fitted_collapsed},
                           {"fitted_centred_minority_cosine", r.fitted_centred_minority_cosine},
                           {"fitted_centred_vanished", r.fitted_centred_collapsed}});
  if (!args.out.empty()) io::write_file_atomic(args.out, j.dump(2) + "\n");
  if (args.json) {
    fmt::print("{}\n", j.dump());
    return;
  }
  fmt::print("Layer-Peeled Model fitted to {}: K = {} ({} majority), R = {:g}, w_r = {:g}\n", fit.dir, run.classes,
             run.majority, run.ratio(), run.minority_weight);
  fmt::print("at the authors' constants (E_W = 1, E_H = 5): minority cosine {}\n",
             fixed(fit.authors_minority_cosine, 4));
  fmt::print("{:>6} {:>9} {:>9} {:>9} {:>9} {:>12} {:>12}\n", "epoch", "network", "E_W", "E_H", "E_H cent", "LPM(E_H)",
             "LPM(E_H c)");
  auto shown = [](double cosine, bool vanished) { return vanished ? std::string("vanished") : fixed(cosine, 4); };
  for (const LpmFitRow& r : fit.rows)
    fmt::print("{:>6} {:>9} {:>9.4g} {:>9.4g} {:>9.4g} {:>12} {:>12}\n", r.epoch, fixed(r.network_minority_cosine, 4),
               r.budgets.e_w, r.budgets.e_h, r.budgets.e_h_centred, shown(r.fitted_minority_cosine, r.fitted_collapsed),
               shown(r.fitted_centred_minority_cosine, r.fitted_centred_collapsed));
}

// CLI11 check: a finite number > lower (or >= lower when `inclusive`), with a readable message.
CLI::Validator finite_above(double lower, bool inclusive) {
  return CLI::Validator(
      [lower, inclusive](std::string& text) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(text, v)) return "not a number: " + text;
        if (!std::isfinite(v) || (inclusive ? v < lower : v <= lower))
          return fmt::format("must be a finite number {} {:g}, got {}", inclusive ? ">=" : ">", lower, text);
        return {};
      },
      fmt::format("{}{:g}", inclusive ? ">=" : ">", lower));
}

}  // namespace

void register_lpm_command(CLI::App& app) {
  auto args = std::make_shared<LpmArgs>();
  auto* cmd =
      app.add_subcommand("lpm", "Solve the Layer-Peeled Model (Fang et al. 2021) and predict Minority Collapse");
  cmd->add_option("--classes", args->problem.classes, "Number of classes K")
      ->check(CLI::Range(2, 1000))
      ->capture_default_str();
  cmd->add_option("--majority", args->problem.majority, "Number of majority classes K_A (classes 0..K_A-1)")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  auto* ratio = cmd->add_option("--ratio", args->problem.ratio, "Imbalance ratio R = n_A / n_B")
                    ->check(finite_above(1, true))
                    ->capture_default_str();
  cmd->add_option("--e-w", args->problem.e_w, "E_W: bound on (1/K) sum ||w_k||^2")
      ->check(finite_above(0, false))
      ->capture_default_str();
  cmd->add_option("--e-h", args->problem.e_h, "E_H: bound on (1/K) sum ||h_k||^2")
      ->check(finite_above(0, false))
      ->capture_default_str();
  cmd->add_option("--minority-weight", args->problem.minority_weight,
                  "w_r: minority loss weight (oversampling by w_r or reweighting by w_r)")
      ->check(finite_above(0, false))
      ->capture_default_str();
  cmd->add_option("--solver", args->solver, "sdp (convex relaxation, double), nonconvex (autograd, float32) or both")
      ->check(CLI::IsMember({"sdp", "nonconvex", "both"}))
      ->capture_default_str();
  cmd->add_flag("--json", args->json, "Print one JSON object as the last line");
  cmd->add_flag("--sweep", args->sweep, "Sweep Fang et al.'s grid R = 10^(0.1 i), i = 0..40")->excludes(ratio);
  cmd->add_option(
      "--out", args->out,
      "Also write the result to FILE, atomically (one R: JSON; sweep: JSON if FILE ends in .json, else CSV)");
  cmd->add_option("--from-run", args->from_run,
                  "Fit the model to a training run's folder: its budgets E_W, E_H at every measured epoch, "
                  "its class counts and mitigation")
      ->check(CLI::ExistingDirectory)
      ->excludes(ratio)
      ->excludes("--sweep");
  cmd->add_option("--feature-dim", args->nonconvex.feature_dim, "Nonconvex solver: feature dimension p (0 = 2K)")
      ->check(CLI::Range(int64_t{0}, int64_t{100000}))
      ->capture_default_str();
  cmd->add_option("--starts", args->nonconvex.starts, "Nonconvex solver: random starts")
      ->check(CLI::Range(int64_t{1}, int64_t{1000}))
      ->capture_default_str();
  cmd->add_option("--seed", args->nonconvex.seed, "Nonconvex solver: seed of the random starts")->capture_default_str();
  cmd->add_option("--tolerance", args->sdp.tolerance,
                  "SDP solver: stop at certified gap <= tolerance * max(1, objective)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->callback([args] {
    PEEL_CHECK(args->problem.majority <= args->problem.classes, "lpm: --majority {} exceeds --classes {}",
               args->problem.majority, args->problem.classes);
    args->problem.validate();
    if (!args->from_run.empty())
      run_from_run(*args);
    else if (args->sweep)
      run_sweep(*args);
    else
      run_single(*args);
  });
}

}  // namespace peel::cli
