// `peel reproduce minority-collapse`: Fang, He, Long and Su (PNAS 2021), the sweep over the imbalance
// ratio R with both mitigations, beside the Layer-Peeled Model's prediction.
#include <fmt/format.h>

#include <cmath>

#include "experiments/lpm/from_run.h"
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
  // The default scale: n_A = 500 and 30 epochs, each configuration with 2 seeds, so that it finishes
  // within half an hour on 2 cores of the slowest machine it was timed on (docs/minority-collapse.md,
  // "Choice of scale"). --paper is the authors' protocol (n_A = 6000, 350 epochs, one seed).
  TrainConfig base = shared_recipe(rc);
  base.dataset = rc.dataset.empty() ? "fashion-mnist" : rc.dataset;
  base.model = !rc.model.empty() ? rc.model : rc.paper ? "vgg11_lpm" : "small_cnn";
  base.majority_classes = 5;
  base.n_major = rc.n_major > 0 ? rc.n_major : rc.paper ? 6000 : 500;
  base.epochs = rc.epochs > 0 ? rc.epochs : rc.paper ? 350 : 30;
  base.lr = 0.1;
  base.metrics_every = 10;  // 3 measurements at the default length: evaluation would otherwise cost a quarter
  base.global_mean = GlobalMean::AllSamples;  // as the authors' code centres the class means

  // The authors' ratios, the largest one capped at n_A: R = n_A leaves one image per minority class,
  // the regime of the paper's R = 1000 at n_A >= 1000 (R > n_A would leave the minority empty).
  const double r_top = std::min(1000.0, static_cast<double>(base.n_major));
  std::vector<double> ratios;
  for (double r : {1.0, 10.0, 100.0})
    if (r < r_top) ratios.push_back(r);
  ratios.push_back(r_top);
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
  const size_t oversampled = runs.size(), reweighted = runs.size() + 1;  // indices into runs
  runs.push_back(oversample);
  runs.push_back(reweight);

  const int64_t seeds = seed_count(rc);
  const std::vector<SweepRun> all_runs = over_seeds(runs, seeds);
  const std::vector<json> per_run = run_sweep(all_runs, rc);
  if (per_run.empty()) return {};
  const std::vector<json> summaries = mean_over_seeds(per_run, runs.size(), seeds);

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

  // The model fitted to each trained network: its own E_W and E_H, class counts and minority weight.
  // fits[s * runs.size() + i]: configuration i, seed s.
  std::vector<LpmRunFit> fits;
  for (const SweepRun& run : all_runs) fits.push_back(fit_lpm_to_run(rc.out_dir + "/runs/" + run.name, true));
  auto fitted_cosine_of = [](const LpmRunFit& f, BudgetCentring centring) {
    const LpmFitRow& r = f.rows.back();
    if (centring == BudgetCentring::centred) return r.fitted_centred_collapsed ? 1.0 : r.fitted_centred_minority_cosine;
    return r.fitted_collapsed ? 1.0 : r.fitted_minority_cosine;  // every minority row at 0: all "parallel"
  };
  auto fitted_cosine = [&](size_t config, BudgetCentring centring) {  // mean over the seeds
    std::vector<double> v;
    for (int64_t s = 0; s < seeds; ++s) v.push_back(fitted_cosine_of(fits[s * runs.size() + config], centring));
    return seed_spread(v).mean;
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
    // One seed: the spread of the pairwise cosines; several: the spread of the mean over seeds.
    net_cos_std.push_back(value_or_nan(summaries[i], seeds > 1 ? "minority_cosine_seed_std" : "minority_cosine_std"));
    acc_major.push_back(value_or_nan(summaries[i], "test_accuracy_majority"));
    acc_minor.push_back(value_or_nan(summaries[i], "test_accuracy_minority"));
  }
  Plot cos_plot{.title = "Minority Collapse: cosine between minority classifier rows",
                .x_label = "imbalance ratio R",
                .y_label = "mean pairwise cosine (minority rows of W)",
                .log_x = true};
  cos_plot.y_min = -0.3;
  cos_plot.y_max = 1.05;
  cos_plot.series.push_back({seeds > 1 ? fmt::format("network (no mitigation), mean +- std over {} seeds", seeds)
                                       : std::string("network (no mitigation), mean +- std over minority pairs"),
                             net_r, net_cos, "linespoints", net_cos_std});
  cos_plot.series.push_back({"Layer-Peeled Model (true cosine)", lpm_r, lpm_cos, "lines"});
  cos_plot.series.push_back({"Layer-Peeled Model (authors' row cosine)", lpm_r, lpm_row_cos, "lines dashtype 2"});
  const double over_cos = value_or_nan(summaries[oversampled], "minority_cosine"),
               rew_cos = value_or_nan(summaries[reweighted], "minority_cosine");
  cos_plot.series.push_back({"network, oversampling", {r_max}, {over_cos}, "points pt 7 ps 1.5"});
  cos_plot.series.push_back({"network, reweighting", {r_max}, {rew_cos}, "points pt 5 ps 1.5"});
  const double lpm_mitigated = lpm_cosine_at(r_max, r_max);
  cos_plot.series.push_back({"LPM with minority weight R", {r_max}, {lpm_mitigated}, "points pt 9 ps 1.5"});
  std::vector<double> fit_cos, fit_cos_centred;
  for (size_t i = 0; i < ratios.size(); ++i) {
    fit_cos.push_back(fitted_cosine(i, BudgetCentring::uncentred));
    fit_cos_centred.push_back(fitted_cosine(i, BudgetCentring::centred));
  }
  cos_plot.series.push_back(
      {"LPM fitted to the network (E_H about the mean)", net_r, fit_cos_centred, "linespoints dashtype 3 pt 13"});
  cos_plot.series.push_back(
      {"LPM fitted to the network (E_H as written)", net_r, fit_cos, "linespoints dashtype 4 pt 11"});
  report.figure(cos_plot,
                "The y-axis of the paper's Minority Collapse figures. The model's full curve uses the authors' "
                "constants (K = 10, K<sub>A</sub> = 5, E<sub>H</sub> = 5, E<sub>W</sub> = 1); the fitted points solve "
                "the model with each trained network's own budgets E<sub>W</sub> = (1/K)&Sigma;||w<sub>k</sub>||<sup>2"
                "</sup> and E<sub>H</sub> = (1/K)&Sigma;<sub>k</sub>(1/n<sub>k</sub>)&Sigma;<sub>i</sub>||h<sub>k,i"
                "</sub>||<sup>2</sup> (as the model's constraint is written, and about the features' global mean, "
                "which the classifier's bias absorbs) and its own class counts. A fitted value of 1 means the model "
                "sent every minority row to zero.");

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
                             {value_or_nan(summaries[oversampled], "test_accuracy_minority")},
                             "points pt 7 ps 1.5"});
  acc_plot.series.push_back({"minority, reweighting",
                             {r_max},
                             {value_or_nan(summaries[reweighted], "test_accuracy_minority")},
                             "points pt 5 ps 1.5"});
  acc_plot.series.push_back({"majority, oversampling",
                             {r_max},
                             {value_or_nan(summaries[oversampled], "test_accuracy_majority")},
                             "points pt 6 ps 1.5"});
  acc_plot.series.push_back({"majority, reweighting",
                             {r_max},
                             {value_or_nan(summaries[reweighted], "test_accuracy_majority")},
                             "points pt 4 ps 1.5"});
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

  // The fit over training, for the largest R without mitigation that is not 1.
  const size_t over_epochs = ratios.size() >= 3 ? ratios.size() - 2 : ratios.size() - 1;
  const LpmRunFit epochs_fit = fit_lpm_to_run(rc.out_dir + "/runs/" + runs[over_epochs].name);
  {
    std::vector<double> e, net, fitted, fitted_centred;
    for (const LpmFitRow& r : epochs_fit.rows) {
      e.push_back(static_cast<double>(r.epoch));
      net.push_back(r.network_minority_cosine);
      fitted.push_back(r.fitted_collapsed ? 1.0 : r.fitted_minority_cosine);
      fitted_centred.push_back(r.fitted_centred_collapsed ? 1.0 : r.fitted_centred_minority_cosine);
    }
    Plot p{.title =
               fmt::format("Minority cosine over training at R = {:g}: network and fitted model", ratios[over_epochs]),
           .x_label = "epoch",
           .y_label = "minority classifier cosine"};
    p.series.push_back({"network", e, net, "linespoints"});
    p.series.push_back({"LPM fitted (E_H about the mean)", e, fitted_centred, "linespoints dashtype 3"});
    p.series.push_back({"LPM fitted (E_H as written)", e, fitted, "linespoints dashtype 4"});
    p.series.push_back({"LPM, authors' constants",
                        {e.front(), e.back()},
                        {epochs_fit.authors_minority_cosine, epochs_fit.authors_minority_cosine},
                        "lines dashtype 2"});
    report.figure(p,
                  "The model solved with the budgets the network has at each measured epoch "
                  "(peel lpm --from-run DIR prints the same numbers for any run).");
  }
  std::vector<std::vector<json>> fit_rows;
  double gap_authors = 0, gap_fitted = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    const LpmFitRow& r = fits[i].rows.back();  // the first seed's budgets
    const double net = value_or_nan(summaries[i], "minority_cosine");
    const double authors = i < ratios.size() ? lpm_cosine_at(ratios[i], 1.0) : lpm_mitigated;
    const double centred = fitted_cosine(i, BudgetCentring::centred),
                 uncentred = fitted_cosine(i, BudgetCentring::uncentred);
    if (i < ratios.size() && ratios[i] > 1) {  // the minority cosine is defined by imbalance for R > 1
      gap_authors += std::abs(net - authors);
      gap_fitted += std::min(std::abs(net - centred), std::abs(net - uncentred));
    }
    fit_rows.push_back(
        {runs[i].label, net, authors, uncentred, centred, r.budgets.e_w, r.budgets.e_h, r.budgets.e_h_centred});
  }
  report.table("lpm_fitted",
               {"run", "network minority cosine", "LPM, authors' constants", "LPM fitted (E_H as written)",
                "LPM fitted (E_H about the mean)", "network E_W", "network E_H", "network E_H about the mean"},
               fit_rows);
  const double gap_closed = gap_authors > 0 ? 1.0 - gap_fitted / gap_authors : std::nan("");
  report.value("lpm_fit_gap_closed", gap_closed);
  report.paragraph(fmt::format(
      "Summed over R &gt; 1 without mitigation, the network's distance to the model at the authors' constants is {}; "
      "to the nearer of the two fitted models it is {}: fitting the budgets closes {} of the gap.",
      format_number(gap_authors), format_number(gap_fitted),
      std::isnan(gap_closed) ? std::string("-") : fmt::format("{:.0f}%", 100 * gap_closed)));

  // The seed-to-seed spread of each configuration.
  {
    std::vector<std::vector<json>> rows;
    for (size_t i = 0; i < runs.size(); ++i) {
      rows.push_back({runs[i].label, seed_by_seed(per_run, runs.size(), seeds, i, "minority_cosine"),
                      value_or_nan(summaries[i], "minority_cosine"),
                      value_or_nan(summaries[i], "minority_cosine_seed_std"),
                      value_or_nan(summaries[i], "test_accuracy_minority"),
                      value_or_nan(summaries[i], "test_accuracy_minority_seed_std")});
    }
    report.table("seed_spread",
                 {"run", fmt::format("minority cosine, seeds {}..{}", base.seed, base.seed + seeds - 1), "mean",
                  "std over seeds", "minority test accuracy, mean", "std over seeds"},
                 rows);
    if (seeds == 1)
      report.paragraph(
          "One seed per point (--seeds N runs N; the spread over seeds is then in this table and on "
          "the error bars).");
  }

  // ---- What this shows: verdicts from the numbers above, against the thresholds stated in each.
  std::vector<Claim> claims;
  auto numbers = [](const std::vector<double>& v) {
    std::vector<std::string> text;
    for (double x : v) text.push_back(format_number(x));
    return fmt::format("{}", fmt::join(text, ", "));
  };
  {
    bool rising = true;
    for (size_t i = 1; i < net_cos.size(); ++i) rising = rising && net_cos[i] >= net_cos[i - 1] - 0.02;
    const double rise = net_cos.back() - net_cos.front();
    claims.push_back(
        {"As R grows, the minority classifier rows grow parallel (their mean cosine rises towards 1).",
         rising && rise > 0.3 ? Verdict::supported
         : rise > 0.1         ? Verdict::partly_supported
                              : Verdict::not_supported,
         fmt::format("minority cosine {} at R = {}; rises by {} from the smallest to the largest R (supported: "
                     "non-decreasing within 0.02 and a rise above 0.3; partly: a rise above 0.1).",
                     numbers(net_cos), fmt::join(net_r, ", "), format_number(rise)),
         "peel reproduce minority-collapse --paper"});
    const double acc_drop = acc_minor.front() - acc_minor.back();
    claims.push_back({"Minority Collapse caps the minority classes' test accuracy.",
                      acc_minor.back() < 0.5 * acc_minor.front() ? Verdict::supported
                      : acc_drop > 0.1                           ? Verdict::partly_supported
                                                                 : Verdict::not_supported,
                      fmt::format("minority test accuracy {} at R = {}, majority {} (supported: at the largest R "
                                  "below half its value at the smallest; partly: a drop above 0.1).",
                                  numbers(acc_minor), fmt::join(net_r, ", "), numbers(acc_major)),
                      "peel reproduce minority-collapse --paper"});
    const double plain_cos = net_cos.back(), plain_acc = acc_minor.back();
    const double over_acc = value_or_nan(summaries[oversampled], "test_accuracy_minority"),
                 rew_acc = value_or_nan(summaries[reweighted], "test_accuracy_minority");
    const int mitigated = (over_cos < plain_cos - 0.1 && over_acc > plain_acc + 0.05) +
                          (rew_cos < plain_cos - 0.1 && rew_acc > plain_acc + 0.05);
    claims.push_back(
        {"Oversampling and loss reweighting mitigate Minority Collapse.",
         mitigated == 2   ? Verdict::supported
         : mitigated == 1 ? Verdict::partly_supported
                          : Verdict::not_supported,
         fmt::format("at R = {:g}: minority cosine {} plain, {} oversampled, {} reweighted; minority "
                     "accuracy {}, {}, {} (a mitigation counts when it lowers the cosine by 0.1 and raises "
                     "the accuracy by 0.05).",
                     r_max, format_number(plain_cos), format_number(over_cos), format_number(rew_cos),
                     format_number(plain_acc), format_number(over_acc), format_number(rew_acc)),
         "peel reproduce minority-collapse --paper"});
    double worst = 0;
    for (size_t i = 1; i < ratios.size(); ++i)
      worst = std::max(worst, std::min(std::abs(net_cos[i] - fit_cos[i]), std::abs(net_cos[i] - fit_cos_centred[i])));
    claims.push_back(
        {"The Layer-Peeled Model predicts Minority Collapse of the trained network.",
         worst < 0.15       ? Verdict::supported
         : gap_closed > 0.3 ? Verdict::partly_supported
                            : Verdict::not_supported,
         fmt::format("largest distance between the network and the nearer fitted model over R &gt; 1: {}; "
                     "the fit closes {} of the distance to the authors'-constants model (supported: within "
                     "0.15 at every R; partly: the fit closes more than 30%).",
                     format_number(worst), format_number(gap_closed)),
         "peel reproduce minority-collapse --paper"});
  }
  report.claims(claims);

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
