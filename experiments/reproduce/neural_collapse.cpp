// `peel reproduce neural-collapse`: Papyan, Han and Donoho (PNAS 2020), one balanced run measured every
// epoch through the terminal phase of training.
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

// ---- Neural collapse (Papyan, Han, Donoho 2020) --------------------------------------------------

std::string reproduce_neural_collapse(const ReproduceConfig& rc) {
  TrainConfig c = shared_recipe(rc);
  c.dataset = rc.dataset.empty() ? "mnist" : rc.dataset;
  c.model = !rc.model.empty() ? rc.model : rc.paper ? "resnet18" : "small_cnn";
  // Papyan et al.'s 350 epochs (x0.1 at 116 and 233) by default too, on a subset small enough for
  // half an hour on 2 cores: 300 training images per class and the first 2000 test images (an
  // epoch then trains 3000 images and evaluates 5000; docs/neural-collapse.md has the timing).
  c.n_major = rc.n_major > 0 ? rc.n_major : rc.paper ? 0 : 300;  // balanced subset: n images per class
  c.epochs = rc.epochs > 0 ? rc.epochs : 350;
  c.test_limit = rc.paper ? 0 : 2000;
  c.lr = rc.paper ? 0.0679 : 0.05;  // Papyan et al.'s notebook uses 0.0679 for CE
  // Every second epoch: 175 points on the curves, and the default fits half an hour on the slower of
  // the machines it was timed on (docs/neural-collapse.md). Measuring does not change the training.
  c.metrics_every = rc.paper ? 1 : 2;
  c.global_mean = GlobalMean::ClassMeans;  // Papyan et al. centre on the mean of the class means
  const SweepRun run{"balanced", "balanced", c};
  const std::vector<json> summaries = run_sweep({run}, rc);
  if (summaries.empty()) return {};
  const json& summary = summaries[0];
  RunMetrics m = read_run_metrics(rc, run);

  // The terminal phase starts at the first epoch with zero training error.
  std::vector<double> tpt;
  for (size_t i = 0; i < m["epoch"].size(); ++i)
    if (m["train_accuracy"][i] >= 1.0) {
      tpt.push_back(m["epoch"][i]);
      break;
    }

  Report report("Neural collapse, reproduced with peel");
  report.paragraph(fmt::format(
      "Papyan, Han and Donoho (PNAS 2020): trained past zero training error, the penultimate features "
      "collapse to their "
      "class means (NC1), the centred means form a simplex ETF (NC2), the classifier aligns with them "
      "(NC3) and the network "
      "decides like the nearest class centre (NC4). Scale: {} on {}, {} training images per class, {} "
      "epochs, batch {}, SGD lr "
      "{} (x0.1 at 1/3 and 2/3), momentum {}, weight decay {}, seed {}; metrics on the training set every "
      "epoch, centred on the "
      "mean of the class means; test accuracy on {}. {}",
      c.model, c.dataset, c.n_major > 0 ? std::to_string(c.n_major) : std::string("all"), c.epochs, c.batch, c.lr,
      c.momentum, c.weight_decay, c.seed,
      c.test_limit > 0 ? fmt::format("the first {} test images", c.test_limit) : std::string("the whole test set"),
      tpt.empty() ? "Training error did not reach zero in this run."
                  : fmt::format("Training error first reached zero at epoch {:g} (dashed line).", tpt[0])));
  auto panel = [&](const std::string& title, const std::string& y_label,
                   const std::vector<std::pair<std::string, std::string>>& cols, bool log_y) {
    Plot p{.title = title, .x_label = "epoch", .y_label = y_label, .log_x = true, .log_y = log_y};
    p.vertical_lines = tpt;
    p.vertical_label = "zero train error";
    for (const auto& [col, label] : cols) p.series.push_back({label, m["epoch"], m[col], "lines"});
    report.figure(p, "");
  };
  panel("Accuracy", "accuracy", {{"train_accuracy", "train"}, {"test_accuracy", "test"}}, false);
  panel("NC1: within-class variability collapse", "Tr(Sigma_W Sigma_B^+)/K", {{"nc1", "NC1"}}, true);
  panel("NC2: equinorm", "std/mean of norms",
        {{"nc2_equinorm_means", "class means"}, {"nc2_equinorm_classifier", "classifier rows"}}, true);
  panel("NC2: equiangularity", "std of pairwise cosines",
        {{"nc2_equiangular_means", "class means"}, {"nc2_equiangular_classifier", "classifier rows"}}, true);
  panel("NC2: maximal angle", "mean |cos + 1/(K-1)|",
        {{"nc2_maxangle_means", "class means"}, {"nc2_maxangle_classifier", "classifier rows"}}, true);
  panel("NC3: self-duality", "||W/||W|| - M/||M|| ||^2", {{"nc3", "NC3"}}, true);
  panel("NC4: agreement with nearest class centre", "fraction of mismatches", {{"nc4", "NC4"}}, true);
  // The paper's end-of-training values beside this run's (docs/neural-collapse.md: ranges read off
  // Papyan et al.'s figures, approximate), and the verdicts they give.
  struct PaperRange {
    const char* column;
    const char* label;
    double low, high;  // the paper's end values lie in [low, high]
  };
  const std::vector<PaperRange> ranges{{"nc1", "NC1", 1e-3, 1e-1},
                                       {"nc2_equinorm_means", "NC2 equinorm (class means)", 0, 0.1},
                                       {"nc2_equiangular_means", "NC2 equiangularity (class means)", 0.01, 0.05},
                                       {"nc2_maxangle_means", "NC2 mean |cos + 1/(K-1)| (class means)", 0.01, 0.05},
                                       {"nc3", "NC3 self-duality", 0.05, 0.3},
                                       {"nc4", "NC4 mismatch with NCC", 0, 0.01}};
  std::vector<std::vector<json>> range_rows;
  auto end_value = [&](const char* column) { return value_or_nan(summary, column); };
  for (const PaperRange& r : ranges) {
    const double v = end_value(r.column);
    const char* where = v < r.low ? "below (more collapsed)" : v <= r.high ? "within" : "above (less collapsed)";
    range_rows.push_back({r.label, format_number(v), fmt::format("{:g} to {:g}", r.low, r.high), where});
  }
  report.table("paper_ranges", {"metric", "this run, last epoch", "Papyan et al., epoch 350 (approx.)", "here"},
               range_rows);

  // NC1 through the terminal phase: its value when training error first vanished, and at the end.
  double nc1_at_tpt = std::nan("");
  for (size_t i = 0; i < m["epoch"].size(); ++i)
    if (!tpt.empty() && m["epoch"][i] == tpt[0]) nc1_at_tpt = m["nc1"][i];
  const double nc1_end = end_value("nc1");
  const double tpt_fall = nc1_at_tpt / nc1_end;
  const std::string at_scale = "peel reproduce neural-collapse --paper";
  std::vector<Claim> claims;
  claims.push_back(
      {"NC1: trained past zero training error, within-class variability collapses (NC1 falls by orders of magnitude "
       "through the terminal phase).",
       tpt.empty()       ? Verdict::not_tested
       : tpt_fall >= 100 ? Verdict::supported
       : tpt_fall >= 10  ? Verdict::partly_supported
                         : Verdict::not_supported,
       tpt.empty() ? std::string("training error never reached zero")
                   : fmt::format("NC1 {} at epoch {:g} (zero training error), {} at the end: {}x lower (supported: "
                                 "100x or more; partly: 10x).",
                                 format_number(nc1_at_tpt), tpt[0], format_number(nc1_end), format_number(tpt_fall)),
       at_scale});
  const double maxangle = end_value("nc2_maxangle_means"), equinorm = end_value("nc2_equinorm_means");
  claims.push_back({"NC2: the centred class means approach a simplex ETF (equal norms, angles of -1/(K-1)).",
                    maxangle < 0.05 && equinorm < 0.1   ? Verdict::supported
                    : maxangle < 0.15 && equinorm < 0.3 ? Verdict::partly_supported
                                                        : Verdict::not_supported,
                    fmt::format("at the end: mean |cos + 1/(K-1)| {}, equinorm {} (supported: below 0.05 and 0.1, "
                                "the paper's end values; partly: below 0.15 and 0.3).",
                                format_number(maxangle), format_number(equinorm)),
                    at_scale});
  const double nc3 = end_value("nc3");
  claims.push_back({"NC3: the classifier rows align with the centred class means (self-duality).",
                    nc3 <= 0.3   ? Verdict::supported
                    : nc3 <= 0.6 ? Verdict::partly_supported
                                 : Verdict::not_supported,
                    fmt::format("||W/||W|| - M/||M|| ||^2 = {} at the end (supported: at most 0.3, the top of the "
                                "paper's range; partly: at most 0.6).",
                                format_number(nc3)),
                    at_scale});
  const double nc4 = end_value("nc4");
  claims.push_back({"NC4: the network decides like the nearest class centre.",
                    nc4 <= 0.01   ? Verdict::supported
                    : nc4 <= 0.05 ? Verdict::partly_supported
                                  : Verdict::not_supported,
                    fmt::format("mismatch with the nearest-class-centre rule on the training set: {} at the end "
                                "(supported: at most 1%; partly: at most 5%).",
                                format_number(nc4)),
                    at_scale});
  report.claims(claims);

  report.summary_table({"balanced"}, {summary},
                       {"train_accuracy", "test_accuracy", "nc1", "nc2_equinorm_means", "nc2_equinorm_classifier",
                        "nc2_equiangular_means", "nc2_equiangular_classifier", "nc2_maxangle_means",
                        "nc2_maxangle_classifier", "nc3", "nc4", "wall_seconds"});
  report.write(rc.out_dir);
  return rc.out_dir + "/report.html";
}

}  // namespace peel
