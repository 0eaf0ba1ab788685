// `peel reproduce mitigation`: Fang, He, Long and Su's oversampling figure, in their "fixed=small"
// setting: a few minority images per class, the majority R times as many, each minority image seen
// w_r times per epoch. The Layer-Peeled Model says oversampling by w_r acts as the effective ratio
// R / w_r; the report sets the network's minority accuracy and cosine beside that prediction.
#include <fmt/format.h>

#include <cmath>

#include "experiments/lpm/from_run.h"
#include "experiments/lpm/lpm.h"
#include "experiments/report/plot.h"
#include "experiments/report/report.h"
#include "experiments/reproduce/reproduce.h"
#include "experiments/reproduce/sweep.h"

namespace peel {

using nlohmann::json;

std::string reproduce_mitigation(const ReproduceConfig& rc) {
  // The authors: 6 minority images per class (Fashion-MNIST), R = 1000 (6000 per majority class),
  // w_r up to 1000, vgg11_lpm, 350 epochs. The default scales R to 100 (600 per majority class) and
  // w_r to {1, 10, 100}, small_cnn, 30 epochs, each configuration with 2 seeds, to fit 30 minutes on
  // 2 cores: one seed at 70 epochs took 23 minutes on an idle AVX2 machine, two at 40 epochs 29
  // (docs/minority-collapse.md, "The mitigation sweep").
  const int64_t minority_per_class = 6;
  const double ratio = rc.paper ? 1000 : 100;
  TrainConfig base = shared_recipe(rc);
  base.dataset = rc.dataset.empty() ? "fashion-mnist" : rc.dataset;
  base.model = !rc.model.empty() ? rc.model : rc.paper ? "vgg11_lpm" : "small_cnn";
  base.majority_classes = 5;
  base.ratio = ratio;
  base.n_major = rc.n_major > 0 ? rc.n_major : static_cast<int64_t>(minority_per_class * ratio);
  base.epochs = rc.epochs > 0 ? rc.epochs : rc.paper ? 350 : 30;
  base.lr = 0.1;
  base.metrics_every = 10;
  base.global_mean = GlobalMean::AllSamples;

  std::vector<double> factors{1, 10, 100};
  if (rc.paper) factors.push_back(1000);
  std::vector<SweepRun> runs;
  for (double w : factors) {
    SweepRun run{fmt::format("oversample-x{:g}", w), fmt::format("oversampling x{:g}", w), base};
    if (w > 1) {
      run.config.sampler = Sampler::oversample;
      run.config.oversample_factor = static_cast<int64_t>(w);
    }
    runs.push_back(run);
  }
  SweepRun reweight{"reweight", fmt::format("loss reweighting x{:g} (= R)", ratio), base};
  reweight.config.class_weights = ClassWeights::inverse;
  runs.push_back(reweight);

  const int64_t seeds = seed_count(rc);
  const std::vector<SweepRun> all_runs = over_seeds(runs, seeds);
  const std::vector<json> per_run = run_sweep(all_runs, rc);
  if (per_run.empty()) return {};
  const std::vector<json> summaries = mean_over_seeds(per_run, runs.size(), seeds);

  // The model at the authors' constants and fitted to each run (its own budgets, class counts and
  // w_r), at the run's R and weight w_r; the fitted cosine is the mean over the seeds.
  LpmProblem authors;
  authors.classes = 10;
  authors.majority = 5;
  authors.ratio = ratio;
  std::vector<double> w_r, net_cos, net_cos_std, net_acc_minor, net_acc_minor_std, net_acc_major, lpm_cos, fitted_cos;
  std::vector<std::vector<json>> rows, seed_rows;
  {
    SingleThreadScope single_thread;
    for (size_t i = 0; i < runs.size(); ++i) {
      std::vector<double> fitted_per_seed;
      double weight = 0;
      for (int64_t s = 0; s < seeds; ++s) {
        const size_t run = s * runs.size() + i;
        const LpmRunFit fit = fit_lpm_to_run(rc.out_dir + "/runs/" + all_runs[run].name, true);
        const LpmFitRow& last = fit.rows.back();
        weight = fit.imbalance.minority_weight;  // the configuration's, the same for every seed
        fitted_per_seed.push_back(last.fitted_centred_collapsed ? 1.0 : last.fitted_centred_minority_cosine);
      }
      authors.minority_weight = weight;
      const double model = solve_lpm(authors, LpmSolver::Sdp).primary().geometry.minority_cosine.mean;
      const double fitted = seed_spread(fitted_per_seed).mean;
      const double cos = value_or_nan(summaries[i], "minority_cosine"),
                   cos_std = value_or_nan(summaries[i], "minority_cosine_seed_std");
      const double minor = value_or_nan(summaries[i], "test_accuracy_minority"),
                   minor_std = value_or_nan(summaries[i], "test_accuracy_minority_seed_std"),
                   major = value_or_nan(summaries[i], "test_accuracy_majority");
      rows.push_back({runs[i].label, weight, ratio / weight, cos, cos_std, model, fitted, minor, minor_std, major});
      seed_rows.push_back({runs[i].label, seed_by_seed(per_run, runs.size(), seeds, i, "minority_cosine"),
                           seed_by_seed(per_run, runs.size(), seeds, i, "test_accuracy_minority")});
      if (i < factors.size()) {
        w_r.push_back(weight);
        net_cos.push_back(cos);
        net_cos_std.push_back(cos_std);
        net_acc_minor.push_back(minor);
        net_acc_minor_std.push_back(minor_std);
        net_acc_major.push_back(major);
        lpm_cos.push_back(model);
        fitted_cos.push_back(fitted);
      }
    }
  }

  Report report("Mitigating Minority Collapse by oversampling, reproduced with peel");
  report.paragraph(fmt::format(
      "Fang, He, Long and Su (PNAS 2021), the oversampling experiment in their \"fixed=small\" setting: 5 minority "
      "classes of {} training images each, 5 majority classes of R times as many, every minority image seen w<sub>r"
      "</sub> times per epoch. The Layer-Peeled Model predicts that oversampling by w<sub>r</sub> acts like the "
      "imbalance ratio R/w<sub>r</sub>. Scale here: R = {:g}, {} on {}, {} epochs, batch {}, SGD lr {} (x0.1 at 1/3 "
      "and 2/3), momentum {}, weight decay {}, {}. Each point is the mean over the seeds; the error bars are the "
      "sample standard deviation over them. {}",
      minority_per_class, ratio, base.model, base.dataset, base.epochs, base.batch, base.lr, base.momentum,
      base.weight_decay,
      seeds > 1 ? fmt::format("seeds {} to {}", base.seed, base.seed + static_cast<uint64_t>(seeds) - 1)
                : fmt::format("seed {}", base.seed),
      rc.paper ? "This is the authors' protocol."
               : "The authors use R = 1000, w_r up to 1000, vgg11 and 350 epochs (run with --paper)."));
  Plot acc{.title = "Test accuracy against the oversampling factor",
           .x_label = "oversampling factor w_r",
           .y_label = "test accuracy",
           .log_x = true};
  acc.y_min = 0;
  acc.y_max = 1.02;
  acc.series.push_back({"minority classes", w_r, net_acc_minor, "linespoints", net_acc_minor_std});
  acc.series.push_back({"majority classes", w_r, net_acc_major, "linespoints"});
  report.figure(acc, "On the full, balanced test set.");
  Plot cos{.title = "Minority classifier cosine against the oversampling factor",
           .x_label = "oversampling factor w_r",
           .y_label = "mean pairwise cosine (minority rows of W)",
           .log_x = true};
  cos.y_min = -0.3;
  cos.y_max = 1.05;
  cos.series.push_back({"network", w_r, net_cos, "linespoints", net_cos_std});
  cos.series.push_back({"LPM at R/w_r, authors' constants", w_r, lpm_cos, "linespoints dashtype 2"});
  cos.series.push_back({"LPM fitted to the network (E_H about the mean)", w_r, fitted_cos, "linespoints dashtype 3"});
  report.figure(cos, "A fitted value of 1 means the model sent every minority row to zero.");
  report.table("mitigation",
               {"run", "minority weight w_r", "effective ratio R/w_r", "network minority cosine", "its std over seeds",
                "LPM, authors' constants", "LPM fitted", "minority test accuracy", "its std over seeds",
                "majority test accuracy"},
               rows);
  report.table("seed_spread", {"run", "minority cosine, seed by seed", "minority test accuracy, seed by seed"},
               seed_rows);

  // What this shows.
  const double acc_gain = net_acc_minor.back() - net_acc_minor.front();
  const double cos_drop = net_cos.front() - net_cos.back();
  bool rising = true;
  for (size_t i = 1; i < net_acc_minor.size(); ++i) rising = rising && net_acc_minor[i] >= net_acc_minor[i - 1] - 0.02;
  const std::string at_scale = "peel reproduce mitigation --paper";
  std::vector<Claim> claims;
  claims.push_back(
      {"Oversampling the minority classes mitigates Minority Collapse: minority accuracy rises and the minority "
       "classifier rows spread apart as w_r grows.",
       rising && acc_gain > 0.1 && cos_drop > 0.1 ? Verdict::supported
       : acc_gain > 0.05 || cos_drop > 0.1        ? Verdict::partly_supported
                                                  : Verdict::not_supported,
       fmt::format("from w_r = 1 to {:g}: minority test accuracy {} to {} (std over seeds {} and {}), minority "
                   "cosine {} to {} (std {} and {}) (supported: accuracy non-decreasing within 0.02, up by more "
                   "than 0.1, cosine down by more than 0.1).",
                   w_r.back(), format_number(net_acc_minor.front()), format_number(net_acc_minor.back()),
                   format_number(net_acc_minor_std.front()), format_number(net_acc_minor_std.back()),
                   format_number(net_cos.front()), format_number(net_cos.back()), format_number(net_cos_std.front()),
                   format_number(net_cos_std.back())),
       at_scale});
  bool same_order = true;  // the network's cosine falls where the model's does
  for (size_t i = 1; i < net_cos.size(); ++i)
    same_order = same_order && ((lpm_cos[i] <= lpm_cos[i - 1] + 1e-9) == (net_cos[i] <= net_cos[i - 1] + 0.02));
  double worst = 0;
  for (size_t i = 0; i < net_cos.size(); ++i) worst = std::max(worst, std::abs(net_cos[i] - fitted_cos[i]));
  claims.push_back(
      {"Oversampling by w_r acts as the Layer-Peeled Model's effective ratio R/w_r.",
       same_order && worst < 0.15 ? Verdict::supported
       : same_order               ? Verdict::partly_supported
                                  : Verdict::not_supported,
       fmt::format("the network's cosine moves with the model's at every step of w_r: {}; largest distance to the "
                   "fitted model {} (supported: same direction and within 0.15; partly: same direction).",
                   same_order ? "yes" : "no", format_number(worst)),
       at_scale});
  report.claims(claims);
  report.summary_table(
      [&] {
        std::vector<std::string> labels;
        for (const SweepRun& run : runs) labels.push_back(run.label);
        return labels;
      }(),
      summaries,
      {"train_accuracy", "test_accuracy", "test_accuracy_majority", "test_accuracy_minority", "minority_cosine",
       "majority_cosine", "nc1", "wall_seconds"});
  report.write(rc.out_dir);
  return rc.out_dir + "/report.html";
}

}  // namespace peel
