// `peel reproduce minority-collapse`: Fang, He, Long and Su (PNAS 2021), the sweep over the imbalance
// ratio R with both mitigations, beside the Layer-Peeled Model's prediction.
#include <fmt/format.h>

#include <cmath>

#include "experiments/lpm/lpm.h"
#include "experiments/report/plot.h"
#include "experiments/report/report.h"
#include "experiments/reproduce/reproduce.h"
#include "experiments/reproduce/sweep.h"
#include "tensor/error.h"

namespace peel {

using nlohmann::json;

// ---- Minority Collapse (Fang, He, Long, Su 2021) -------------------------------------------------

std::string reproduce_minority_collapse(const ReproduceConfig& rc) {
  // The default scale finishes in about half an hour on 2 cores; --paper is the authors' protocol.
  TrainConfig base = shared_recipe(rc);
  base.dataset = rc.dataset.empty() ? "fashion-mnist" : rc.dataset;
  base.model = !rc.model.empty() ? rc.model : rc.paper ? "vgg11_lpm" : "small_cnn";
  base.majority_classes = 5;
  base.n_major = rc.n_major > 0 ? rc.n_major : rc.paper ? 6000 : 1000;
  base.epochs = rc.epochs > 0 ? rc.epochs : rc.paper ? 350 : 70;
  base.lr = 0.1;
  base.metrics_every = rc.paper ? 10 : 5;
  base.global_mean = GlobalMean::AllSamples;  // as the authors' code centres the class means

  const std::vector<double> ratios{1, 10, 100, 1000};
  std::vector<SweepRun> runs;
  for (double r : ratios) {
    SweepRun run{fmt::format("R{:g}", r), fmt::format("R = {:g}", r), base};
    run.config.ratio = r;
    runs.push_back(run);
  }
  const double r_max = ratios.back();
  SweepRun oversample{fmt::format("R{:g}-oversample", r_max), fmt::format("R = {:g}, oversampling x{:g}", r_max, r_max),
                      base};
  oversample.config.ratio = r_max;
  oversample.config.sampler = Sampler::oversample;
  SweepRun reweight{fmt::format("R{:g}-reweight", r_max), fmt::format("R = {:g}, loss reweighting x{:g}", r_max, r_max),
                    base};
  reweight.config.ratio = r_max;
  reweight.config.class_weights = ClassWeights::inverse;
  runs.push_back(oversample);
  runs.push_back(reweight);

  const std::vector<json> summaries = run_sweep(runs, rc);
  if (summaries.empty()) return {};

  // The Layer-Peeled Model's prediction on the authors' grid (K = 10, K_A = 5, E_H = 5, E_W = 1),
  // without mitigation and with the minority weighted by R_max (what both mitigations do to it).
  LpmSweepConfig lpm;
  lpm.problem.classes = 10;
  lpm.problem.majority = 5;
  LpmSweep plain_lpm = lpm_sweep(lpm);
  std::vector<double> lpm_r, lpm_cos, lpm_row_cos;
  for (const LpmPoint& p : plain_lpm.points) {
    lpm_r.push_back(p.ratio);
    lpm_cos.push_back(p.primary().geometry.minority_cosine.mean);
    lpm_row_cos.push_back(p.primary().geometry.minority_row_cosine.mean);
  }
  auto lpm_cosine_at = [&](double r, double weight) {
    LpmProblem problem = lpm.problem;
    problem.ratio = r;
    problem.minority_weight = weight;
    return solve_lpm(problem, LpmSolver::Sdp).primary().geometry.minority_cosine.mean;
  };

  // ---- Figures
  Report report("Minority Collapse, reproduced with peel");
  report.paragraph(fmt::format(
      "Fang, He, Long and Su (PNAS 2021): with K<sub>A</sub> = 5 majority classes of n<sub>A</sub> training images "
      "and 5 minority classes of &lfloor;n<sub>A</sub>/R&rfloor;, the minority classifier rows grow parallel as R "
      "grows. "
      "Scale of these runs: {} on {}, n<sub>A</sub> = {}, {} epochs, batch {}, SGD lr {} (x0.1 at 1/3 and 2/3 of the "
      "epochs), momentum {}, weight decay {}, seed {}. {}",
      base.model, base.dataset, base.n_major, base.epochs, base.batch, base.lr, base.momentum, base.weight_decay,
      base.seed,
      rc.paper ? "This is the paper's protocol."
               : "The paper uses n<sub>A</sub> = 6000 and 350 epochs (run with --paper)."));

  std::vector<double> net_r, net_cos, net_cos_std, acc_major, acc_minor;
  for (size_t i = 0; i < ratios.size(); ++i) {
    net_r.push_back(ratios[i]);
    net_cos.push_back(value_or_nan(summaries[i], "minority_cosine"));
    net_cos_std.push_back(value_or_nan(summaries[i], "minority_cosine_std"));
    acc_major.push_back(value_or_nan(summaries[i], "test_accuracy_majority"));
    acc_minor.push_back(value_or_nan(summaries[i], "test_accuracy_minority"));
  }
  Plot cos_plot{.title = "Minority Collapse: cosine between minority classifier rows",
                .x_label = "imbalance ratio R",
                .y_label = "mean pairwise cosine (minority rows of W)",
                .log_x = true};
  cos_plot.y_min = -0.3;
  cos_plot.y_max = 1.05;
  cos_plot.series.push_back({"network (no mitigation), mean +- std", net_r, net_cos, "linespoints", net_cos_std});
  cos_plot.series.push_back({"Layer-Peeled Model (true cosine)", lpm_r, lpm_cos, "lines"});
  cos_plot.series.push_back({"Layer-Peeled Model (authors' row cosine)", lpm_r, lpm_row_cos, "lines dashtype 2"});
  const double over_cos = value_or_nan(summaries[4], "minority_cosine"),
               rew_cos = value_or_nan(summaries[5], "minority_cosine");
  cos_plot.series.push_back({"network, oversampling", {r_max}, {over_cos}, "points pt 7 ps 1.5"});
  cos_plot.series.push_back({"network, reweighting", {r_max}, {rew_cos}, "points pt 5 ps 1.5"});
  const double lpm_mitigated = lpm_cosine_at(r_max, r_max);
  cos_plot.series.push_back({"LPM with minority weight R", {r_max}, {lpm_mitigated}, "points pt 9 ps 1.5"});
  report.figure(cos_plot,
                "The y-axis of the paper's Minority Collapse figures. The model's curve uses the authors' "
                "constants (K = 10, K<sub>A</sub> = 5, E<sub>H</sub> = 5, E<sub>W</sub> = 1); the network has its own "
                "effective norm budgets, so agreement is expected in shape (rise with R) rather than in value.");

  Plot acc_plot{.title = "Test accuracy against the imbalance ratio",
                .x_label = "imbalance ratio R",
                .y_label = "test accuracy",
                .log_x = true};
  acc_plot.y_min = 0;
  acc_plot.y_max = 1.02;
  acc_plot.series.push_back({"majority classes", net_r, acc_major});
  acc_plot.series.push_back({"minority classes", net_r, acc_minor});
  acc_plot.series.push_back({"minority, oversampling",
                             {r_max},
                             {value_or_nan(summaries[4], "test_accuracy_minority")},
                             "points pt 7 ps 1.5"});
  acc_plot.series.push_back(
      {"minority, reweighting", {r_max}, {value_or_nan(summaries[5], "test_accuracy_minority")}, "points pt 5 ps 1.5"});
  acc_plot.series.push_back({"majority, oversampling",
                             {r_max},
                             {value_or_nan(summaries[4], "test_accuracy_majority")},
                             "points pt 6 ps 1.5"});
  acc_plot.series.push_back(
      {"majority, reweighting", {r_max}, {value_or_nan(summaries[5], "test_accuracy_majority")}, "points pt 4 ps 1.5"});
  report.figure(acc_plot, "Majority and minority test accuracy on the full, balanced test set.");

  // Collapse metrics against epoch, one line per run.
  const std::vector<std::pair<std::string, std::string>> nc_panels{
      {"nc1", "NC1 = Tr(Sigma_W Sigma_B^+)/K"},
      {"nc2_equinorm_means", "NC2 equinorm (class means)"},
      {"nc2_maxangle_means", "NC2 mean |cos + 1/(K-1)| (class means)"},
      {"nc3", "NC3 self-duality"},
      {"nc4", "NC4 mismatch with nearest class centre"},
      {"minority_cosine", "minority classifier cosine"}};
  std::vector<RunMetrics> metrics;
  for (const SweepRun& run : runs) metrics.push_back(read_run_metrics(rc, run));
  for (const auto& [column, title] : nc_panels) {
    Plot p{.title = title + " against epoch",
           .x_label = "epoch",
           .y_label = column,
           .log_y = column == "nc1" || column == "nc4" || column == "nc3"};
    for (size_t i = 0; i < runs.size(); ++i)
      p.series.push_back({runs[i].label, metrics[i]["epoch"], metrics[i][column]});
    report.figure(p, "");
  }

  // How far the model is from the network, per R.
  report.section("The Layer-Peeled Model beside the network");
  std::vector<std::vector<json>> agreement;
  for (size_t i = 0; i < ratios.size(); ++i) {
    const double model_cos = lpm_cosine_at(ratios[i], 1.0);
    agreement.push_back({fmt::format("{:g}", ratios[i]), net_cos[i], model_cos, net_cos[i] - model_cos});
  }
  agreement.push_back({fmt::format("{:g}, oversampling (LPM: minority weight {:g})", r_max, r_max), over_cos,
                       lpm_mitigated, over_cos - lpm_mitigated});
  agreement.push_back({fmt::format("{:g}, reweighting (LPM: minority weight {:g})", r_max, r_max), rew_cos,
                       lpm_mitigated, rew_cos - lpm_mitigated});
  report.table("lpm_beside_network", {"R", "network minority cosine", "LPM minority cosine", "difference"}, agreement);
  if (plain_lpm.collapse_ratio)
    report.paragraph(fmt::format(
        "In the model, the minority rows collapse (cosine above 1 - 10<sup>-3</sup>) from R = {:.4g} on the "
        "authors' grid.",
        *plain_lpm.collapse_ratio));

  std::vector<std::string> labels;
  for (const SweepRun& run : runs) labels.push_back(run.label);
  report.summary_table(labels, summaries,
                       {"train_accuracy", "test_accuracy", "test_accuracy_majority", "test_accuracy_minority",
                        "minority_cosine", "minority_cosine_std", "majority_cosine", "nc1", "nc2_equinorm",
                        "nc2_equiangular", "nc2_maxangle", "nc3", "nc4", "wall_seconds"});
  report.write(rc.out_dir);
  return rc.out_dir + "/report.html";
}

}  // namespace peel
