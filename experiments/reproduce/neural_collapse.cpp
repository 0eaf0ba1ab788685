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
  c.n_major = rc.n_major > 0 ? rc.n_major : rc.paper ? 0 : 500;  // balanced subset: n images per class
  c.epochs = rc.epochs > 0 ? rc.epochs : rc.paper ? 350 : 100;
  c.lr = rc.paper ? 0.0679 : 0.05;  // Papyan et al.'s notebook uses 0.0679 for CE
  c.metrics_every = 1;
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
  report.paragraph(
      fmt::format("Papyan, Han and Donoho (PNAS 2020): trained past zero training error, the penultimate features "
                  "collapse to their "
                  "class means (NC1), the centred means form a simplex ETF (NC2), the classifier aligns with them "
                  "(NC3) and the network "
                  "decides like the nearest class centre (NC4). Scale: {} on {}, {} training images per class, {} "
                  "epochs, batch {}, SGD lr "
                  "{} (x0.1 at 1/3 and 2/3), momentum {}, weight decay {}, seed {}; metrics on the training set every "
                  "epoch, centred on the "
                  "mean of the class means. {}",
                  c.model, c.dataset, c.n_major > 0 ? std::to_string(c.n_major) : std::string("all"), c.epochs, c.batch,
                  c.lr, c.momentum, c.weight_decay, c.seed,
                  tpt.empty() ? "Training error did not reach zero in this run."
                              : fmt::format("Training error first reached zero at epoch {:g} (dashed line).", tpt[0])));
  auto panel = [&](const std::string& title, const std::string& y_label,
                   std::vector<std::pair<std::string, std::string>> cols, bool log_y) {
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
  report.summary_table({"balanced"}, {summary},
                       {"train_accuracy", "test_accuracy", "nc1", "nc2_equinorm_means", "nc2_equinorm_classifier",
                        "nc2_equiangular_means", "nc2_equiangular_classifier", "nc2_maxangle_means",
                        "nc2_maxangle_classifier", "nc3", "nc4", "wall_seconds"});
  report.write(rc.out_dir);
  return rc.out_dir + "/report.html";
}

}  // namespace peel
