// The square-loss study's measurements during training (experiments/collapse/rank_over_training.h,
// --measure-rank and --measure-mse-decomposition): a short run writes the rank and decomposition
// columns and one spectra file per measurement; their values are the library functions' on the
// checkpointed model; measuring changes nothing else of the run; a resumed run writes the same
// files; --force removes the old spectra; weight normalisation is measured through the weight the
// layer applies.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>

#include "autograd/variable.h"
#include "experiments/collapse/mse_decomposition.h"
#include "experiments/collapse/rank_over_training.h"
#include "experiments/run/config.h"
#include "experiments/run/data.h"
#include "experiments/run/folder.h"
#include "experiments/run/measure.h"
#include "nn/layers.h"
#include "nn/normalization.h"
#include "tensor/random.h"
#include "tests/support/cli.h"

using namespace peel;
using namespace peel::testing;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::Not;

namespace {

// 4 epochs on synthetic data (200 training images), measured every 2: a second or two on 2 cores.
std::vector<std::string> train_args(const fs::path& out, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{kPeel,
                                "train",
                                "--dataset",
                                "synthetic",
                                "--n-major",
                                "20",
                                "--epochs",
                                "4",
                                "--batch",
                                "32",
                                "--lr",
                                "0.05",
                                "--loss",
                                "mse",
                                "--threads",
                                "2",
                                "--test-limit",
                                "100",
                                "--quiet",
                                "--out",
                                out.string(),
                                "--metrics-every",
                                "2"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}
const std::vector<std::string> kMeasure{"--measure-rank", "--measure-mse-decomposition", "--rank-epsilon", "0.01"};

std::map<std::string, double> last_row(const fs::path& dir) {
  const MetricsTable t = read_metrics_csv((dir / "metrics.csv").string());
  std::map<std::string, double> row;
  for (size_t i = 0; i < t.columns.size(); ++i) row[t.columns[i]] = t.rows.back()[i];
  return row;
}

bool is_square_loss_column(const std::string& name) {
  for (const char* prefix :
       {"rank_", "stable_rank_", "sigma_max_", "frobenius_norm_", "mse_", "lnc1", "lnc23", "lperp"})
    if (name.rfind(prefix, 0) == 0) return true;
  return false;
}

}  // namespace

TEST(RankOverTraining, OffByDefaultAndNothingElseChangesWhenOn) {
  const fs::path plain = fresh_dir("sq_plain"), measured = fresh_dir("sq_measured");
  ASSERT_EQ(run(train_args(plain)).exit_code, 0);
  std::vector<std::string> args = train_args(measured);
  args.insert(args.end(), kMeasure.begin(), kMeasure.end());
  const RunResult r = run(args);
  ASSERT_EQ(r.exit_code, 0) << r.output;

  const MetricsTable a = read_metrics_csv((plain / "metrics.csv").string()),
                     b = read_metrics_csv((measured / "metrics.csv").string());
  for (const std::string& c : a.columns) EXPECT_FALSE(is_square_loss_column(c)) << c;
  EXPECT_FALSE(fs::exists(plain / "spectra"));
  // The measured run has every column of the plain one, with the same values, then its own.
  ASSERT_EQ(b.rows.size(), 2u);
  ASSERT_GT(b.columns.size(), a.columns.size());
  for (size_t i = 0; i < a.columns.size(); ++i) {
    ASSERT_EQ(b.columns[i], a.columns[i]);
    for (size_t row = 0; row < a.rows.size(); ++row)
      if (!std::isnan(a.rows[row][i])) EXPECT_EQ(b.rows[row][i], a.rows[row][i]) << a.columns[i];
  }
  for (size_t i = a.columns.size(); i < b.columns.size(); ++i) EXPECT_TRUE(is_square_loss_column(b.columns[i]));
  for (const char* c : {"rank_conv1.weight", "rank_rel_conv5.weight", "stable_rank_fc.weight", "rank_classifier",
                        "rank_class_means", "lnc1", "lnc23", "lperp", "mse_decomposition_residual"})
    EXPECT_THAT(b.columns, Contains(c));
  // And the same trained model.
  const auto model_a = nn::read_state((plain / "checkpoint.peel").string()),
             model_b = nn::read_state((measured / "checkpoint.peel").string());
  ASSERT_EQ(model_a.size(), model_b.size());
  for (size_t i = 0; i < model_a.size(); ++i)
    if (model_a[i].first.rfind("model.", 0) == 0) {
      const Tensor x = model_a[i].second.contiguous(), y = model_b[i].second.contiguous();
      ASSERT_EQ(x.numel(), y.numel());
      EXPECT_TRUE(std::equal(x.data(), x.data() + x.numel(), y.data())) << model_a[i].first;
    }
  // One spectra file before training and one per measurement.
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(measured / "spectra")) files.push_back(e.path().filename().string());
  std::sort(files.begin(), files.end());
  EXPECT_THAT(files, ElementsAre("epoch-000.json", "epoch-002.json", "epoch-004.json"));
  const nlohmann::json initial = nlohmann::json::parse(read_file(measured / "spectra" / "epoch-000.json"));
  EXPECT_EQ(initial["epoch"], 0);
  EXPECT_EQ(initial["relative_tolerance"], 0.01);
  EXPECT_EQ(initial["matrices"]["conv2.weight"]["rank"], 32);  // a Gaussian initialisation has full rank
  fs::remove_all(plain);
  fs::remove_all(measured);
}

TEST(RankOverTraining, ColumnsAndSpectraAreTheLibraryFunctionsOnTheSavedModel) {
  const fs::path dir = fresh_dir("sq_values");
  std::vector<std::string> args = train_args(dir, {"--weight-decay", "1e-3", "--mse-target-scale", "2"});
  args.insert(args.end(), kMeasure.begin(), kMeasure.end());
  const RunResult r = run(args);
  ASSERT_EQ(r.exit_code, 0) << r.output;

  // The model as the last checkpoint holds it, measured here as the run did.
  const TrainConfig c = read_train_config((dir / "config.json").string());
  const TrainingData data = load_training_data(c);
  auto model = nn::make_model({.name = c.model,
                               .classes = data.train.num_classes,
                               .in_channels = data.train.channels(),
                               .seed = c.seed,
                               .norm = c.norm});
  std::vector<std::pair<std::string, Tensor>> state;
  for (auto& [name, t] : nn::read_state((dir / "checkpoint.peel").string()))
    if (name.rfind("model.", 0) == 0) state.emplace_back(name.substr(6), t);
  nn::assign_state(model->state(), state, "checkpoint");
  const Evaluation train = evaluate(*model, data.train);

  const RankOptions rank_options{.relative_tolerance = 0.01};
  const RankReport ranks =
      rank_report(*model, train.features, data.train.labels, data.train.num_classes, c.global_mean, rank_options);
  const MseDecomposition mse = mse_decomposition({.features = train.features,
                                                  .labels = data.train.labels,
                                                  .num_classes = data.train.num_classes,
                                                  .classifier_weight = model->classifier().weight.value(),
                                                  .classifier_bias = model->classifier().bias.value(),
                                                  .lambda = training_lambda(1e-3, data.train.num_classes),
                                                  .target_scale = 2});
  const std::map<std::string, double> row = last_row(dir);
  MetricColumns expected = ranks.to_columns();
  for (const auto& column : mse.to_columns()) expected.push_back(column);
  for (const auto& [name, value] : expected) {
    ASSERT_TRUE(row.count(name)) << name;
    if (std::isnan(value))
      EXPECT_TRUE(std::isnan(row.at(name))) << name;
    else
      EXPECT_NEAR(row.at(name), value, 1e-9 * std::max(1.0, std::abs(value))) << name;
  }
  EXPECT_EQ(row.at("mse_lambda"), 10 * 1e-3 / 2);  // K wd / 2
  EXPECT_EQ(row.at("mse_target_scale"), 2);
  EXPECT_LT(std::abs(row.at("mse_decomposition_residual")), 1e-10 * row.at("mse_loss"));

  nlohmann::json spectra = nlohmann::json::parse(read_file(dir / "spectra" / "epoch-004.json"));
  EXPECT_EQ(spectra["epoch"], 4);
  spectra.erase("epoch");
  const nlohmann::json want = ranks.to_json();
  ASSERT_EQ(spectra["matrices"].size(), want["matrices"].size());
  for (const auto& [name, m] : want["matrices"].items()) {
    EXPECT_EQ(spectra["matrices"][name]["rank"], m["rank"]) << name;
    EXPECT_EQ(spectra["matrices"][name]["rank_rel"], m["rank_rel"]) << name;
    const auto got = spectra["matrices"][name]["singular_values"].get<std::vector<double>>(),
               exp = m["singular_values"].get<std::vector<double>>();
    ASSERT_EQ(got.size(), exp.size()) << name;
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], exp[i], 1e-9 * exp[0]) << name << " s_" << i;
  }
  fs::remove_all(dir);
}

TEST(RankOverTraining, AResumedRunWritesTheSameColumnsAndSpectra) {
  const fs::path whole = fresh_dir("sq_whole"), resumed = fresh_dir("sq_resumed");
  std::vector<std::string> args = train_args(whole);
  args.insert(args.end(), kMeasure.begin(), kMeasure.end());
  ASSERT_EQ(run(args).exit_code, 0);
  for (const char* stop : {"1", "2"}) {  // before and at a measured epoch
    SCOPED_TRACE(std::string("stopped after ") + stop);
    std::vector<std::string> first = train_args(resumed, {"--force", "--stop-after", stop});
    first.insert(first.end(), kMeasure.begin(), kMeasure.end());
    ASSERT_EQ(run(first).exit_code, 0);
    const RunResult r = run({kPeel, "train", "--resume", resumed.string(), "--quiet"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(read_file(resumed / "metrics.csv"), read_file(whole / "metrics.csv"));
    for (const char* f : {"epoch-000.json", "epoch-002.json", "epoch-004.json"})
      EXPECT_EQ(read_file(resumed / "spectra" / f), read_file(whole / "spectra" / f)) << f;
  }
  fs::remove_all(whole);
  fs::remove_all(resumed);
}

TEST(RankOverTraining, ForceRemovesTheSpectraOfTheRunItReplaces) {
  const fs::path dir = fresh_dir("sq_force");
  std::vector<std::string> args = train_args(dir);
  args.insert(args.end(), kMeasure.begin(), kMeasure.end());
  ASSERT_EQ(run(args).exit_code, 0);
  ASSERT_TRUE(fs::exists(dir / "spectra" / "epoch-004.json"));
  ASSERT_EQ(run(train_args(dir, {"--force", "--epochs", "2", "--measure-rank"})).exit_code, 0);
  EXPECT_TRUE(fs::exists(dir / "spectra" / "epoch-002.json"));
  EXPECT_FALSE(fs::exists(dir / "spectra" / "epoch-004.json"));
  ASSERT_EQ(run(train_args(dir, {"--force", "--epochs", "2"})).exit_code, 0);
  EXPECT_FALSE(fs::exists(dir / "spectra"));
  fs::remove_all(dir);
}

TEST(RankOverTraining, WeightNormalisedLayersAreMeasuredThroughTheWeightTheyApply) {
  auto bn = nn::make_model({.name = "small_cnn", .classes = 10, .in_channels = 1});
  auto wn = nn::make_model({.name = "small_cnn", .classes = 10, .in_channels = 1, .norm = nn::Norm::wn});
  // Give weight_g values unlike ||weight_v||, so that the applied weight differs from weight_v.
  Generator gen(3);
  for (auto& [name, p] : wn->named_parameters())
    if (name.find("weight_g") != std::string::npos) p.value().copy_(uniform(p.value().shape(), 0.1f, 3.f, gen));
  const std::vector<MatrixRank> a = weight_ranks(*bn), b = weight_ranks(*wn);
  std::vector<std::string> names_a, names_b;
  for (const MatrixRank& m : a) names_a.push_back(m.name);
  for (const MatrixRank& m : b) names_b.push_back(m.name);
  EXPECT_EQ(names_b, names_a);  // the same columns under either normalisation
  auto* conv2 = dynamic_cast<nn::WeightedLayer*>(wn->named_modules()[3].second);
  ASSERT_NE(conv2, nullptr);
  ASSERT_EQ(wn->named_modules()[3].first, "conv2");
  const Tensor applied = nn::weight_norm(conv2->weight_v, conv2->weight_g).value();
  const MatrixRank expected = weight_rank("conv2.weight", applied);
  const MatrixRank of_v = weight_rank("v", conv2->weight_v.value());
  EXPECT_EQ(b[1].name, "conv2.weight");
  ASSERT_EQ(b[1].singular_values.size(), expected.singular_values.size());
  for (size_t i = 0; i < expected.singular_values.size(); ++i)
    EXPECT_DOUBLE_EQ(b[1].singular_values[i], expected.singular_values[i]);
  EXPECT_GT(std::abs(b[1].singular_values[0] - of_v.singular_values[0]), 1e-3 * of_v.singular_values[0]);
}
