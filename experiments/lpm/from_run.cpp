#include "experiments/lpm/from_run.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "experiments/run/folder.h"
#include "tensor/error.h"

namespace peel {

namespace {

// The class counts that config.json records under "found" (what the data turned out to be).
std::vector<int64_t> recorded_class_counts(const std::string& config_path) {
  std::ifstream in(config_path);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  PEEL_CHECK(j.is_object() && j.contains("found") && j["found"].contains("class_counts") &&
                 j["found"]["class_counts"].is_array(),
             "{}: no found.class_counts (is it a peel training run's config.json?)", config_path);
  return j["found"]["class_counts"].get<std::vector<int64_t>>();
}

// The minority cosine of the LPM's solution, or NaN with `vanished` set when the model gave up on
// every minority class (all w_k = 0: "collapsed" to one point, cosine undefined).
double solved_minority_cosine(const LpmProblem& problem, bool& vanished) {
  const LpmSolution s = solve_lpm(problem, LpmSolver::Sdp).primary();
  vanished = s.geometry.minority_count >= 2 && s.geometry.minority_vanished == s.geometry.minority_count;
  return s.geometry.minority_cosine.mean;
}

}  // namespace

LpmRunFit fit_lpm_to_run(const std::string& dir, bool last_only) {
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  const std::string metrics_path = (std::filesystem::path(dir) / "metrics.csv").string();
  const TrainConfig config = read_train_config(config_path);
  LpmRunFit fit;
  fit.dir = dir;
  fit.imbalance = run_imbalance(config, recorded_class_counts(config_path));
  PEEL_CHECK(std::filesystem::exists(metrics_path), "{}: not found (has the run measured an epoch yet?)", metrics_path);
  const MetricsTable table = read_metrics_csv(metrics_path);
  PEEL_CHECK(!table.rows.empty(), "{}: no measured epoch yet", metrics_path);
  for (const char* column : {"lpm_e_w", "lpm_e_h", "lpm_e_h_centred", "minority_cosine"})
    PEEL_CHECK(!table.column(column).empty(),
               "{}: no '{}' column (the run was made before peel measured the LPM's budgets; train it again)",
               metrics_path, column);

  const double nan = std::numeric_limits<double>::quiet_NaN();
  const bool defined = std::isfinite(fit.imbalance.ratio());  // no minority images: no model to solve
  SingleThreadScope single_thread;                            // the solver's matrices are tiny (see lpm.h)
  LpmProblem authors;
  authors.classes = fit.imbalance.classes;
  authors.majority = fit.imbalance.majority;
  authors.ratio = fit.imbalance.ratio();
  authors.minority_weight = fit.imbalance.minority_weight;
  bool vanished = false;
  fit.authors_minority_cosine = defined ? solved_minority_cosine(authors, vanished) : nan;

  const std::vector<double> epochs = table.column("epoch"), e_w = table.column("lpm_e_w"),
                            e_h = table.column("lpm_e_h"), e_hc = table.column("lpm_e_h_centred"),
                            cosine = table.column("minority_cosine");
  for (size_t i = last_only ? table.rows.size() - 1 : 0; i < table.rows.size(); ++i) {
    LpmFitRow row;
    row.epoch = static_cast<int64_t>(epochs[i]);
    row.network_minority_cosine = cosine[i];
    row.budgets = {.e_w = e_w[i], .e_h = e_h[i], .e_h_centred = e_hc[i]};
    row.fitted_minority_cosine = row.fitted_centred_minority_cosine = nan;
    if (defined) {
      row.fitted_minority_cosine = solved_minority_cosine(
          fitted_problem(fit.imbalance, row.budgets, BudgetCentring::uncentred), row.fitted_collapsed);
      row.fitted_centred_minority_cosine = solved_minority_cosine(
          fitted_problem(fit.imbalance, row.budgets, BudgetCentring::centred), row.fitted_centred_collapsed);
    }
    fit.rows.push_back(row);
  }
  return fit;
}

}  // namespace peel
