// `peel reproduce normalization`: Qiao, Wang, Liu, Shen and Yuille, "Rethinking Normalization and
// Elimination Singularity in Neural Networks" (arXiv 1911.09738), with FRN (Singh & Krishnan): each
// model trained with BN at batch 128 (the reference), then at a micro-batch with BN, GN, GN+WS,
// BCN+WS (EstBN batch part), FRN and LN, measuring the elimination-singularity instruments
// (experiments/normalization/elimination.h) every epoch; plus EstBN's moving speed r for BCN+WS.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "experiments/report/plot.h"
#include "experiments/report/report.h"
#include "experiments/reproduce/reproduce.h"
#include "experiments/reproduce/sweep.h"
#include "experiments/run/folder.h"
#include "tensor/error.h"

namespace peel {

using nlohmann::json;

namespace {

// The thresholds the verdicts below compare against (stated in the report and docs/normalization.md).
constexpr double kAccuracyMargin = 0.02;    // test accuracy: a difference smaller than this is a tie
constexpr double kEliminatedMargin = 0.01;  // eliminated-channel fraction: likewise
constexpr double kReferenceBatch = 128;     // the large-batch reference
constexpr double kFrnOverGnMargin = 0.01;   // FRN's claim: > 1% better than GN at small batches

struct ModelSpec {
  std::string model;
  double width;
};

struct NormRun {
  std::string key;  // the run's name within its model: bn-b128, bn, gn, ...
  std::string label;
  nn::Norm norm;
  bool micro;
};

const std::vector<NormRun>& norm_runs() {
  static const std::vector<NormRun> runs{{"bn-b128", "BN, batch 128", nn::Norm::bn, false},
                                         {"bn", "BN", nn::Norm::bn, true},
                                         {"gn", "GN", nn::Norm::gn, true},
                                         {"gn+ws", "GN+WS", nn::Norm::gn_ws, true},
                                         {"bcn+ws", "BCN+WS (EstBN)", nn::Norm::bcn_ws, true},
                                         {"frn", "FRN+TLU", nn::Norm::frn, true},
                                         {"ln", "LN", nn::Norm::ln, true}};
  return runs;
}

// The activation sites of a run, in network order: the <site> of its es_<site>_eliminated columns.
std::vector<std::string> sites_in_order(const ReproduceConfig& rc, const SweepRun& run) {
  const std::string prefix = "es_", suffix = "_eliminated";
  std::vector<std::string> sites;
  for (const std::string& c : read_metrics_csv(rc.out_dir + "/runs/" + run.name + "/metrics.csv").columns)
    if (c.rfind(prefix, 0) == 0 && c != prefix + "eliminated" && c.size() > prefix.size() + suffix.size() &&
        c.compare(c.size() - suffix.size(), suffix.size(), suffix) == 0)
      sites.push_back(c.substr(prefix.size(), c.size() - prefix.size() - suffix.size()));
  return sites;
}

double last(const std::vector<double>& v) { return v.empty() ? NAN : v.back(); }

// The lowest q05 of z over a run's sites at its last measured epoch: how close its most endangered
// channels are to their floor, in standard deviations.
double lowest_z_q05(const RunMetrics& m, const std::vector<std::string>& sites) {
  double lowest = INFINITY;
  for (const std::string& s : sites) {
    const auto it = m.find("es_" + s + "_prez_q05");
    if (it != m.end() && !it->second.empty() && !std::isnan(it->second.back()))
      lowest = std::min(lowest, it->second.back());
  }
  return std::isinf(lowest) && lowest > 0 ? NAN : lowest;
}

Verdict over_models(const std::vector<bool>& holds) {
  const auto n = std::count(holds.begin(), holds.end(), true);
  if (holds.empty()) return Verdict::not_tested;
  return n == static_cast<long>(holds.size()) ? Verdict::supported
         : n > 0                              ? Verdict::partly_supported
                                              : Verdict::not_supported;
}

// A model's name for figure titles: gnuplot's enhanced text would set small_cnn's "_c" as a subscript.
std::string in_title(std::string model) {
  std::replace(model.begin(), model.end(), '_', ' ');
  return model;
}

std::string pct(double v) { return std::isnan(v) ? "-" : fmt::format("{:.1f}%", 100 * v); }

}  // namespace

std::string reproduce_normalization(const ReproduceConfig& rc) {
  const int64_t micro = rc.micro_batch > 0 ? rc.micro_batch : 2;
  std::vector<ModelSpec> models{{"small_cnn", 1.0}, {"resnet18", 0.25}};
  if (!rc.model.empty()) models = {{rc.model, rc.model == "small_cnn" ? 1.0 : 0.25}};
  const std::vector<double> speeds{0.001, 0.01, 0.1};  // EstBN's r; 0.01 is peel's default (the main run)

  // The default scale: about 9 CPU-minutes on one thread, measured (docs/normalization.md, "How long
  // the default takes"); --paper: the whole training set and a long schedule.
  TrainConfig base = shared_recipe(rc);
  base.dataset = rc.dataset.empty() ? "fashion-mnist" : rc.dataset;
  base.n_major = rc.n_major > 0 ? rc.n_major : rc.paper ? 0 : 80;
  base.epochs = rc.epochs > 0 ? rc.epochs : rc.paper ? 160 : 5;
  if (rc.paper) {
    base.milestones = {80, 120};
  } else {
    base.schedule = Schedule::cosine;  // a 5-epoch multistep would spend 4 of them at lr/10 and lr/100
  }
  base.test_limit = rc.paper ? 0 : 2000;
  base.metrics_every = rc.paper ? 5 : 1;
  base.elimination_probe = 512;
  const double reference_lr = 0.1;  // at batch 128; the micro-batch lr is scaled linearly with the batch

  std::vector<SweepRun> runs;
  std::vector<std::vector<size_t>> by_model(models.size());  // indices into runs, in norm_runs() order
  std::vector<size_t> speed_runs;                            // the first model's bcn+ws at each r
  for (size_t mi = 0; mi < models.size(); ++mi) {
    const ModelSpec& spec = models[mi];
    for (const NormRun& nr : norm_runs()) {
      SweepRun run{fmt::format("{}-{}", spec.model, nr.key),
                   nr.micro ? fmt::format("{}, batch {}", nr.label, micro) : nr.label, base};
      TrainConfig& c = run.config;
      c.model = spec.model;
      c.width = spec.width;
      c.norm = nr.norm;
      c.batch = nr.micro ? micro : static_cast<int64_t>(kReferenceBatch);
      c.lr = reference_lr * static_cast<double>(c.batch) / kReferenceBatch;
      if (nr.norm == nn::Norm::bcn_ws)
        c.bcn_batch_part = nr.micro ? nn::BcnBatchPart::estimated : nn::BcnBatchPart::batch;
      by_model[mi].push_back(runs.size());
      runs.push_back(run);
    }
  }
  const SweepRun bcn_main = runs[by_model[0][4]];
  for (double r : speeds) {
    if (static_cast<float>(r) == static_cast<float>(bcn_main.config.estbn_moving_speed)) {
      speed_runs.push_back(by_model[0][4]);
      continue;
    }
    SweepRun run = bcn_main;
    run.name = fmt::format("{}-r{:g}", bcn_main.name, r);
    run.label = fmt::format("{}, r = {:g}", bcn_main.label, r);
    run.config.estbn_moving_speed = r;
    speed_runs.push_back(runs.size());
    runs.push_back(run);
  }

  const std::vector<json> summaries = run_sweep(runs, rc);
  if (summaries.empty()) return {};
  std::vector<RunMetrics> metrics;
  for (const SweepRun& run : runs) metrics.push_back(read_run_metrics(rc, run));

  Report report("Normalisation and elimination singularities, reproduced with peel");
  report.paragraph(fmt::format(
      "Qiao, Wang, Liu, Shen and Yuille (arXiv 1911.09738): channel-based normalisations (LN, GN) do not keep a "
      "network away from <i>elimination singularities</i> (channels that are off for every input), batch "
      "normalisation does, and Batch-Channel Normalisation (BCN) with weight standardisation (WS) brings that "
      "property to micro-batch training. FRN+TLU (Singh &amp; Krishnan, arXiv 1911.09737) is a batch-independent "
      "alternative. Scale of these runs: {} on {}, {} training images per class, {} epochs, SGD momentum {}, weight "
      "decay {}, lr {} at batch 128 and lr &times; batch/128 at micro-batch {} (equal epochs, linear scaling), "
      "{} schedule, seed {}; test accuracy on {} test images. Elimination instruments every {} epoch(s) on a "
      "fixed probe of {} training images in eval mode (docs/normalization.md). {}",
      fmt::join(
          [&] {
            std::vector<std::string> names;
            for (const ModelSpec& s : models) names.push_back(fmt::format("{} (width {:g})", s.model, s.width));
            return names;
          }(),
          ", "),
      base.dataset, base.n_major > 0 ? std::to_string(base.n_major) : std::string("all"), base.epochs, base.momentum,
      base.weight_decay, reference_lr, micro, rc.paper ? "multistep (x0.1 at 80 and 120)" : "cosine", base.seed,
      base.test_limit > 0 ? std::to_string(base.test_limit) : std::string("all"), base.metrics_every,
      base.elimination_probe,
      rc.paper ? "This is the longer protocol (--paper): the BCN paper's own CIFAR protocol is not in its released "
                 "code, so it is the common CIFAR ResNet schedule."
               : "A short protocol, to run in about half an hour on 2 cores; --paper runs the whole training set "
                 "for 160 epochs."));

  // ---- Curves per model
  for (size_t mi = 0; mi < models.size(); ++mi) {
    const std::string& model = models[mi].model;
    const std::string title_model = in_title(model);
    report.section(fmt::format("{} (width {:g})", model, models[mi].width));
    auto curves = [&](const std::string& column, const std::string& title, const std::string& y_label, bool log_y) {
      Plot p{
          .title = fmt::format("{}: {}", title_model, title), .x_label = "epoch", .y_label = y_label, .log_y = log_y};
      for (size_t i : by_model[mi]) p.series.push_back({runs[i].label, metrics[i]["epoch"], metrics[i][column]});
      report.figure(p, "");
    };
    curves("test_accuracy", "test accuracy", "test accuracy", false);
    curves("train_loss", "training loss (running mean over the epoch)", "cross-entropy", true);
    curves("es_eliminated", "eliminated channels, all activation sites", "fraction of channels eliminated", false);

    // Per layer: the eliminated fraction at the last epoch, one line per norm.
    const std::vector<std::string> sites = sites_in_order(rc, runs[by_model[mi][0]]);
    Plot per_layer{.title = fmt::format("{}: eliminated channels per activation site, last epoch", title_model),
                   .x_label = "activation site (1 = first)",
                   .y_label = "fraction of channels eliminated"};
    std::vector<std::vector<json>> layer_rows;
    for (size_t i : by_model[mi]) {
      const std::vector<std::string> own = sites_in_order(rc, runs[i]);
      Series s{runs[i].label, {}, {}};
      std::vector<json> row{runs[i].label};
      for (size_t k = 0; k < own.size(); ++k) {
        s.x.push_back(static_cast<double>(k + 1));
        s.y.push_back(last(metrics[i]["es_" + own[k] + "_eliminated"]));
        row.push_back(s.y.back());
      }
      per_layer.series.push_back(s);
      layer_rows.push_back(row);
    }
    report.figure(per_layer, fmt::format("Sites in network order: {}.", fmt::join(sites, ", ")));
    std::vector<std::string> layer_columns{"run"};
    layer_columns.insert(layer_columns.end(), sites.begin(), sites.end());
    report.table(model + "_eliminated_per_site", layer_columns, layer_rows,
                 "Fraction of each site's channels eliminated on the probe at the last epoch.");

    // Per layer over training, one figure per run.
    for (size_t i : by_model[mi]) {
      const std::vector<std::string> own = sites_in_order(rc, runs[i]);
      Plot p{.title = fmt::format("{}, {}: eliminated channels per site over training", title_model, runs[i].label),
             .x_label = "epoch",
             .y_label = "fraction of channels eliminated"};
      p.y_min = 0;
      for (const std::string& s : own)
        p.series.push_back({s, metrics[i]["epoch"], metrics[i]["es_" + s + "_eliminated"], "lines"});
      report.figure(p, "");
    }
  }

  // ---- Final table
  report.section("At the end of training");
  std::vector<std::vector<json>> final_rows;
  std::vector<std::vector<double>> lowest_z(models.size());
  for (size_t mi = 0; mi < models.size(); ++mi)
    for (size_t i : by_model[mi]) {
      const double z = lowest_z_q05(metrics[i], sites_in_order(rc, runs[i]));
      lowest_z[mi].push_back(z);
      final_rows.push_back({models[mi].model, runs[i].label, runs[i].config.batch, runs[i].config.lr,
                            value_or_nan(summaries[i], "test_accuracy"), value_or_nan(summaries[i], "train_accuracy"),
                            value_or_nan(summaries[i], "train_loss"), value_or_nan(summaries[i], "es_eliminated"), z,
                            value_or_nan(summaries[i], "wall_seconds")});
    }
  report.table("final",
               {"model", "norm", "batch", "lr", "test accuracy", "train accuracy", "train loss (last epoch)",
                "eliminated fraction", "lowest site q05 of z", "wall seconds"},
               final_rows,
               "z = (mean - floor)/std of a channel's pre-activation on the probe; the column is the smallest, over "
               "activation sites, of the 5% quantile over that site's channels.");

  // ---- EstBN's moving speed
  report.section("EstBN's moving speed r (BCN+WS at micro-batch)",
                 "The official code's r (<code>estbn_moving_speed</code>) is set by a training script it does not "
                 "include; peel's default is 0.01.");
  std::vector<std::vector<json>> speed_rows;
  Plot speed_plot{
      .title = fmt::format("{}, BCN+WS at batch {}: test accuracy against r", in_title(models[0].model), micro),
      .x_label = "EstBN moving speed r",
      .y_label = "test accuracy",
      .log_x = true};
  Series speed_series{"test accuracy, last epoch", {}, {}};
  for (size_t k = 0; k < speeds.size(); ++k) {
    const size_t i = speed_runs[k];
    speed_rows.push_back({speeds[k], value_or_nan(summaries[i], "test_accuracy"),
                          value_or_nan(summaries[i], "train_loss"), value_or_nan(summaries[i], "es_eliminated")});
    speed_series.x.push_back(speeds[k]);
    speed_series.y.push_back(value_or_nan(summaries[i], "test_accuracy"));
  }
  speed_plot.series.push_back(speed_series);
  report.figure(speed_plot, "");
  report.table("estbn_moving_speed", {"r", "test accuracy", "train loss", "eliminated fraction"}, speed_rows);

  // ---- What this shows: verdicts from the numbers and the thresholds stated here.
  auto acc = [&](size_t mi, size_t k) { return value_or_nan(summaries[by_model[mi][k]], "test_accuracy"); };
  auto elim = [&](size_t mi, size_t k) { return value_or_nan(summaries[by_model[mi][k]], "es_eliminated"); };
  enum { kBn128, kBn, kGn, kGnWs, kBcnWs, kFrn, kLn };
  std::vector<bool> bn_degrades, channel_closer, ws_helps, bcn_matches, frn_beats_gn;
  std::string e_bn, e_channel, e_ws, e_bcn, e_frn;
  for (size_t mi = 0; mi < models.size(); ++mi) {
    const std::string& m = models[mi].model;
    bn_degrades.push_back(acc(mi, kBn) < acc(mi, kBn128) - kAccuracyMargin);
    e_bn += fmt::format("{}: BN at batch 128 {}, at batch {} {}. ", m, pct(acc(mi, kBn128)), micro, pct(acc(mi, kBn)));
    // Closer to elimination: more eliminated channels than the BN reference, or the same and a lower z.
    auto closer = [&](size_t k) {
      return elim(mi, k) > elim(mi, kBn128) + kEliminatedMargin ||
             (std::abs(elim(mi, k) - elim(mi, kBn128)) <= kEliminatedMargin && lowest_z[mi][k] < lowest_z[mi][kBn128]);
    };
    channel_closer.push_back(closer(kGn) && closer(kLn));
    e_channel += fmt::format("{}: eliminated fraction / lowest z: BN@128 {} / {:.2f}, GN {} / {:.2f}, LN {} / {:.2f}. ",
                             m, pct(elim(mi, kBn128)), lowest_z[mi][kBn128], pct(elim(mi, kGn)), lowest_z[mi][kGn],
                             pct(elim(mi, kLn)), lowest_z[mi][kLn]);
    ws_helps.push_back(elim(mi, kGnWs) <= elim(mi, kGn) && acc(mi, kGnWs) > acc(mi, kGn));
    e_ws += fmt::format("{}: GN {} acc, {} eliminated; GN+WS {} acc, {} eliminated. ", m, pct(acc(mi, kGn)),
                        pct(elim(mi, kGn)), pct(acc(mi, kGnWs)), pct(elim(mi, kGnWs)));
    bcn_matches.push_back(acc(mi, kBcnWs) >= acc(mi, kGnWs) - kAccuracyMargin / 2 &&
                          acc(mi, kBcnWs) >= acc(mi, kBn128) - kAccuracyMargin);
    e_bcn += fmt::format("{}: BCN+WS {}, GN+WS {}, BN@128 {}. ", m, pct(acc(mi, kBcnWs)), pct(acc(mi, kGnWs)),
                         pct(acc(mi, kBn128)));
    frn_beats_gn.push_back(acc(mi, kFrn) > acc(mi, kGn) + kFrnOverGnMargin);
    e_frn += fmt::format("{}: FRN {}, GN {}. ", m, pct(acc(mi, kFrn)), pct(acc(mi, kGn)));
  }
  const std::string paper_cmd = "peel reproduce normalization --paper --dataset cifar10 --out DIR";
  report.claims({
      {fmt::format("BN degrades at micro-batch: test accuracy at batch {} is lower than at batch 128 (here: by more "
                   "than {:g} points)",
                   micro, 100 * kAccuracyMargin),
       over_models(bn_degrades), e_bn, paper_cmd},
      {fmt::format("Channel-based normalisations (GN, LN) sit closer to elimination singularities than BN (here: "
                   "eliminated fraction more than {:g} points above BN at batch 128's, or within that and a lower "
                   "lowest-z; both GN and LN)",
                   100 * kEliminatedMargin),
       over_models(channel_closer), e_channel, paper_cmd},
      {"WS moves GN away from elimination singularities and improves it (here: GN+WS eliminates no larger a "
       "fraction than GN and its test accuracy is higher)",
       over_models(ws_helps), e_ws, paper_cmd},
      {fmt::format("BCN+WS at micro-batch matches GN+WS and approaches BN at batch 128 (here: at most {:g} points "
                   "below GN+WS and {:g} below BN at batch 128)",
                   100 * kAccuracyMargin / 2, 100 * kAccuracyMargin),
       over_models(bcn_matches), e_bcn, paper_cmd},
      {fmt::format("FRN+TLU beats GN at small batches by more than {:g} point (FRN paper's abstract)",
                   100 * kFrnOverGnMargin),
       over_models(frn_beats_gn), e_frn, paper_cmd},
  });
  report.paragraph(fmt::format(
      "One seed per setting; at this scale a test-accuracy difference of about a point is within run-to-run "
      "noise, which is why the verdicts use margins of {:g} points for accuracy and {:g} for the eliminated "
      "fraction.",
      100 * kAccuracyMargin, 100 * kEliminatedMargin));

  std::vector<std::string> labels;
  for (const SweepRun& run : runs) labels.push_back(run.name);
  report.summary_table(labels, summaries,
                       {"test_accuracy", "train_accuracy", "train_loss", "es_eliminated", "nc1", "wall_seconds",
                        "train_images_per_sec"});
  report.write(rc.out_dir);
  return rc.out_dir + "/report.html";
}

}  // namespace peel
