// A run folder holds one run, whole: `peel train` and `peel reproduce` refuse, before any training
// and changing nothing, a folder of other settings, a second writer, a run that cannot be
// continued, a bad config.json, a full disk, a missing gnuplot and a diverging run; each with a
// message that names what is wrong and what to do.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "tests/support/cli.h"

using namespace peel::testing;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

std::vector<std::string> train_args(const fs::path& out, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{kPeel,       "train", "--dataset", "synthetic", "--n-major",  "40",
                                "--epochs",  "3",     "--batch",   "32",        "--lr",       "0.05",
                                "--threads", "1",     "--quiet",   "--out",     out.string(), "--test-limit",
                                "100"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// No temporary file of an atomic write may stay behind.
std::vector<std::string> leftovers(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& [name, bytes] : snapshot(dir))
    if (name.find(".tmp") != std::string::npos) names.push_back(name);
  return names;
}

}  // namespace

TEST(CliRunFolder, AnExistingRunNeedsResumeOrForce) {
  const fs::path dir = fresh_dir("existing");
  ASSERT_EQ(run(train_args(dir)).exit_code, 0);
  const auto before = snapshot(dir);

  const RunResult again = run(train_args(dir, {"--seed", "7"}));
  EXPECT_NE(again.exit_code, 0);
  EXPECT_THAT(again.output, AllOf(HasSubstr(dir.string()), HasSubstr("already holds a run"), HasSubstr("--resume"),
                                  HasSubstr("--force")));
  EXPECT_EQ(snapshot(dir), before);

  const RunResult forced = run(train_args(dir, {"--seed", "7", "--force"}));
  ASSERT_EQ(forced.exit_code, 0) << forced.output;
  const fs::path fresh = fresh_dir("existing_fresh");
  ASSERT_EQ(run(train_args(fresh, {"--seed", "7"})).exit_code, 0);
  EXPECT_EQ(read_file(dir / "metrics.csv"), read_file(fresh / "metrics.csv"));
  const auto old_metrics = std::find_if(before.begin(), before.end(), [](auto& f) { return f.first == "metrics.csv"; });
  ASSERT_NE(old_metrics, before.end());
  EXPECT_NE(read_file(dir / "metrics.csv"), old_metrics->second);  // seed 7 differs from seed 666
  fs::remove_all(dir);
  fs::remove_all(fresh);
}

TEST(CliRunFolder, ResumeTakesTheFoldersSettingsAndRefusesNewOnes) {
  const fs::path dir = fresh_dir("resume_settings");
  ASSERT_EQ(run(train_args(dir, {"--stop-after", "1"})).exit_code, 0);
  const auto before = snapshot(dir);
  const RunResult r = run({kPeel, "train", "--resume", dir.string(), "--epochs", "10"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, AllOf(HasSubstr("--epochs"), HasSubstr("config.json")));
  EXPECT_EQ(snapshot(dir), before);
  // Execution settings may change.
  const RunResult threads = run({kPeel, "train", "--resume", dir.string(), "--threads", "2", "--quiet"});
  EXPECT_EQ(threads.exit_code, 0) << threads.output;
  fs::remove_all(dir);
}

TEST(CliRunFolder, ASecondWriterIsRefusedAndTheFirstRunIsUnharmed) {
  const fs::path dir = fresh_dir("two_writers"), alone = fresh_dir("two_writers_alone");
  const std::vector<std::string> args = train_args(dir, {"--epochs", "8"});
  const pid_t first = spawn(args, dir.string() + ".log");
  ASSERT_TRUE(wait_until([&] { return fs::exists(dir / "config.json"); }));
  const RunResult second = run(train_args(dir, {"--epochs", "8", "--force"}));
  EXPECT_NE(second.exit_code, 0);
  EXPECT_THAT(second.output, AllOf(HasSubstr("in use"), HasSubstr("pid")));
  int status = 0;
  ::waitpid(first, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << read_file(dir.string() + ".log");
  ASSERT_EQ(run(train_args(alone, {"--epochs", "8"})).exit_code, 0);
  EXPECT_EQ(read_file(dir / "metrics.csv"), read_file(alone / "metrics.csv"));
  fs::remove(dir.string() + ".log");
  fs::remove_all(dir);
  fs::remove_all(alone);
}

TEST(CliRunFolder, AMissingCheckpointIsRefusedWhenMetricsWouldBeLost) {
  const fs::path dir = fresh_dir("no_checkpoint");
  ASSERT_EQ(run(train_args(dir, {"--stop-after", "2"})).exit_code, 0);
  fs::remove(dir / "checkpoint.peel");
  const auto before = snapshot(dir);
  const RunResult r = run({kPeel, "train", "--resume", dir.string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, AllOf(HasSubstr("no checkpoint.peel"), HasSubstr("2 epochs"), HasSubstr("--force")));
  EXPECT_EQ(snapshot(dir), before);

  // With nothing measured yet there is nothing to lose: it starts from epoch 1 and says so.
  fs::remove(dir / "metrics.csv");
  const RunResult restart = run({kPeel, "train", "--resume", dir.string()});
  EXPECT_EQ(restart.exit_code, 0) << restart.output;
  EXPECT_THAT(restart.output, HasSubstr("starts from epoch 1"));
  EXPECT_TRUE(fs::exists(dir / "summary.json"));

  const RunResult nothing = run({kPeel, "train", "--resume", fresh_dir("nothing_here").string()});
  EXPECT_NE(nothing.exit_code, 0);
  EXPECT_THAT(nothing.output, HasSubstr("holds no run"));
  fs::remove_all(dir);
}

TEST(CliRunFolder, ABadConfigIsRefusedNamingTheFileAndTheField) {
  const fs::path dir = fresh_dir("bad_config");
  ASSERT_EQ(run(train_args(dir, {"--stop-after", "1"})).exit_code, 0);
  const std::string config = read_file(dir / "config.json");

  std::ofstream(dir / "config.json") << config.substr(0, config.size() / 2);  // truncated
  RunResult r = run({kPeel, "train", "--resume", dir.string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, AllOf(HasSubstr((dir / "config.json").string()), HasSubstr("not valid JSON")));

  nlohmann::json j = nlohmann::json::parse(config);
  j["loss"] = "hinge";
  std::ofstream(dir / "config.json") << j.dump();
  r = run({kPeel, "train", "--resume", dir.string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, AllOf(HasSubstr("config.json"), HasSubstr("'loss'"), HasSubstr("hinge")));

  j = nlohmann::json::parse(config);
  j["epochs"] = "many";
  std::ofstream(dir / "config.json") << j.dump();
  r = run({kPeel, "train", "--resume", dir.string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, AllOf(HasSubstr("config.json"), HasSubstr("wrong type")));

  // An older config.json without the newer fields still loads (they take their defaults).
  j = nlohmann::json::parse(config);
  j.erase("warmup_epochs");
  j.erase("milestones");
  std::ofstream(dir / "config.json") << j.dump();
  r = run({kPeel, "train", "--resume", dir.string(), "--quiet"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  fs::remove_all(dir);
}

TEST(CliRunFolder, ABadMetricsFileIsRefusedNamingLineAndColumn) {
  const fs::path dir = fresh_dir("bad_metrics");
  ASSERT_EQ(run(train_args(dir, {"--stop-after", "2"})).exit_code, 0);
  std::string metrics = read_file(dir / "metrics.csv");
  const size_t second_line = metrics.find('\n') + 1;
  const size_t cell = metrics.find(',', second_line) + 1;  // the lr of epoch 1
  metrics.replace(cell, metrics.find(',', cell) - cell, "0.1x");
  std::ofstream(dir / "metrics.csv") << metrics;
  const RunResult r = run({kPeel, "train", "--resume", dir.string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, AllOf(HasSubstr("metrics.csv"), HasSubstr("line 2"), HasSubstr("'lr'"), HasSubstr("0.1x")));
  fs::remove_all(dir);
}

TEST(CliRunFolder, AFullDiskFailsNamingTheFileAndLeavesNothingHalfWritten) {
  // Before any training: config.json cannot be written.
  const fs::path dir = fresh_dir("full_disk_early");
  RunResult r = run(train_args(dir), {.file_size_limit = 200});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, AllOf(HasSubstr("config.json"), HasSubstr("File too large")));
  EXPECT_THAT(leftovers(dir), ::testing::IsEmpty());
  EXPECT_FALSE(fs::exists(dir / "config.json"));

  // After the first epoch: the checkpoint (about 400 KB) does not fit; the metrics written
  // before it are whole, and no temporary file stays behind.
  const fs::path late = fresh_dir("full_disk_late");
  r = run(train_args(late), {.file_size_limit = 64 * 1024});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, AllOf(HasSubstr("checkpoint.peel"), HasSubstr("File too large")));
  EXPECT_THAT(leftovers(late), ::testing::IsEmpty());
  EXPECT_FALSE(fs::exists(late / "checkpoint.peel"));
  EXPECT_THAT(read_file(late / "metrics.csv"), ::testing::EndsWith("\n"));
  fs::remove_all(dir);
  fs::remove_all(late);
}

TEST(CliRunFolder, ADivergingRunStopsSayingWhere) {
  const fs::path dir = fresh_dir("diverging");
  const RunResult r = run(train_args(dir, {"--lr", "1e30"}));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, AllOf(HasSubstr("training diverged at epoch 1, step"), Not(HasSubstr("LAPACK"))));
  EXPECT_FALSE(fs::exists(dir / "summary.json"));
  fs::remove_all(dir);
}

TEST(CliRunFolder, BadFlagsFailWithAClearMessage) {
  RunResult r = run({kPeel, "train", "--dataset", "imagenet", "--out", "/tmp/x"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("imagenet"));
  r = run({kPeel, "train", "--ratio", "0.5", "--out", "/tmp/x"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("--ratio"));
  r = run({kPeel, "train", "--loss", "hinge", "--out", "/tmp/x"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, AllOf(HasSubstr("hinge"), HasSubstr("ce, mse")));
  r = run({kPeel, "train", "--allreduce", "sideways", "--out", "/tmp/x"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, AllOf(HasSubstr("sideways"), HasSubstr("after, overlap")));
  r = run({kPeel, "train", "--bucket-kib", "0", "--out", "/tmp/x"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("--bucket-kib"));
  r = run({kPeel, "train", "--seed", "-1", "--out", "/tmp/x"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("--seed"));
  r = run({kPeel, "train", "--dataset", "mnist", "--data", "/nonexistent", "--out", fresh_dir("no_data").string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("/nonexistent"));
  r = run({kPeel, "nosuchcommand"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, AllOf(HasSubstr("nosuchcommand"), HasSubstr("train")));
  r = run({kPeel, "train"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("--out"));
}

TEST(CliRunFolder, TooManyThreadsAreCappedWithAWarning) {
  const fs::path dir = fresh_dir("threads");
  const RunResult r = run(train_args(dir, {"--threads", "1000", "--epochs", "1"}));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("--threads 1000 is more than the"));
  const nlohmann::json config = nlohmann::json::parse(read_file(dir / "config.json"));
  EXPECT_LE(config["found"]["threads_used"].get<int>(), 1024);
  EXPECT_LT(config["threads"].get<int>(), 1000);
  fs::remove_all(dir);
}

// ---- peel reproduce ---------------------------------------------------------------------------

namespace {
std::vector<std::string> reproduce_args(const fs::path& out, const std::string& epochs) {
  return {kPeel,      "reproduce", "minority-collapse", "--dataset", "synthetic", "--n-major", "40",
          "--epochs", epochs,      "--threads",         "2",         "--quiet",   "--out",     out.string()};
}
}  // namespace

TEST(CliReproduce, MinorityCollapseReportOnSyntheticData) {
  const fs::path out = fresh_dir("mc");
  std::vector<std::string> args = reproduce_args(out, "1");
  args.insert(args.end(), {"--seeds", "2"});
  const RunResult r = run(args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string html = read_file(out / "report.html");
  size_t figures = 0;
  for (size_t at = html.find("<svg"); at != std::string::npos; at = html.find("<svg", at + 1)) ++figures;
  EXPECT_EQ(figures, 9u);
  EXPECT_THAT(html, AllOf(HasSubstr("Layer-Peeled Model (true cosine)"), HasSubstr("Summary of every run"),
                          HasSubstr("LPM fitted to the network"), HasSubstr("What this shows")));
  EXPECT_THAT(html, Not(HasSubstr("<script")));  // self-contained: nothing to fetch or run
  // Beside it: every figure as a PNG, and report.json with each figure's data and each table.
  const nlohmann::json report = nlohmann::json::parse(read_file(out / "report.json"));
  ASSERT_EQ(report["figures"].size(), 9u);
  for (const auto& figure : report["figures"]) {
    EXPECT_THAT(read_file(out / figure["png"].get<std::string>()), ::testing::StartsWith("\x89PNG"));
    EXPECT_FALSE(figure["series"].empty());
  }
  EXPECT_EQ(report["tables"]["summary"]["rows"].size(), 5u);
  EXPECT_EQ(report["tables"]["lpm_fitted"]["rows"].size(), 5u);
  // Four claims, each with a verdict computed from the runs and the command that tests it at scale.
  ASSERT_EQ(report["claims"].size(), 4u);
  for (const auto& claim : report["claims"]) {
    EXPECT_THAT(claim["verdict"].get<std::string>(),
                ::testing::AnyOf("supported", "partly supported", "not supported"));
    EXPECT_THAT(claim["at_paper_scale"].get<std::string>(), HasSubstr("--paper"));
  }
  // n_A = 40 caps the largest ratio at R = 40 (one image per minority class): five configurations.
  for (const char* run_name : {"R1", "R10", "R40", "R40-oversample", "R40-reweight"}) {
    EXPECT_TRUE(fs::exists(out / "runs" / run_name / "summary.json")) << run_name;
    EXPECT_TRUE(fs::exists(out / "runs" / (std::string(run_name) + "-seed1") / "summary.json")) << run_name;
  }
  // Each point is the mean over the seeds, with their spread beside it.
  const auto cosine_of = [&](const std::string& run_name) {
    return nlohmann::json::parse(read_file(out / "runs" / run_name / "summary.json"))["minority_cosine"].get<double>();
  };
  const nlohmann::json& spread = report["tables"]["seed_spread"]["rows"];
  ASSERT_EQ(spread.size(), 5u);
  const double a = cosine_of("R10"), b = cosine_of("R10-seed1");
  EXPECT_NEAR(spread[1][2].get<double>(), (a + b) / 2, 1e-12);
  EXPECT_NEAR(spread[1][3].get<double>(), std::abs(a - b) / std::sqrt(2.0), 1e-12);

  // The same --out with other settings is refused before any training, naming the field.
  const auto before = snapshot(out);
  args = reproduce_args(out, "2");
  args.insert(args.end(), {"--seeds", "2"});
  const RunResult other = run(args);
  EXPECT_NE(other.exit_code, 0);
  EXPECT_THAT(other.output, AllOf(HasSubstr("runs/R1 holds a run with other settings"),
                                  HasSubstr("epochs: 1 (in the folder) vs 2 (asked)"), HasSubstr("--force")));
  EXPECT_EQ(snapshot(out), before);
  fs::remove_all(out);
}

TEST(CliReproduce, NeuralCollapseReportSetsTheRunBesideThePaper) {
  const fs::path out = fresh_dir("nc");
  const RunResult r = run({kPeel, "reproduce", "neural-collapse", "--dataset", "synthetic", "--n-major", "20",
                           "--epochs", "3", "--threads", "2", "--quiet", "--out", out.string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json report = nlohmann::json::parse(read_file(out / "report.json"));
  EXPECT_EQ(report["tables"]["paper_ranges"]["rows"].size(), 6u);
  ASSERT_EQ(report["claims"].size(), 4u);  // NC1 to NC4, each with a verdict from the run's numbers
  for (const auto& claim : report["claims"])
    EXPECT_THAT(claim["at_paper_scale"].get<std::string>(), HasSubstr("--paper"));
  const nlohmann::json config = nlohmann::json::parse(read_file(out / "runs" / "balanced" / "config.json"));
  EXPECT_EQ(config["found"]["milestones"], nlohmann::json::array({1, 2}));  // 1/3 and 2/3 of the epochs
  fs::remove_all(out);
}

TEST(CliReproduce, MitigationReportSetsOversamplingBesideTheEffectiveRatio) {
  const fs::path out = fresh_dir("mitigation");
  const RunResult r = run({kPeel, "reproduce", "mitigation", "--dataset", "synthetic", "--n-major", "100", "--epochs",
                           "1", "--threads", "2", "--quiet", "--out", out.string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json report = nlohmann::json::parse(read_file(out / "report.json"));
  const nlohmann::json& rows = report["tables"]["mitigation"]["rows"];
  ASSERT_EQ(rows.size(), 4u);  // w_r = 1, 10, 100 and reweighting
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_DOUBLE_EQ(rows[i][1].get<double>(), std::pow(10.0, static_cast<double>(i)));          // w_r
    EXPECT_DOUBLE_EQ(rows[i][2].get<double>(), 100.0 / std::pow(10.0, static_cast<double>(i)));  // R / w_r
  }
  const nlohmann::json config = nlohmann::json::parse(read_file(out / "runs" / "oversample-x10" / "config.json"));
  EXPECT_EQ(config["found"]["class_counts"][9], 1);  // "fixed=small": n_A / R = 1 image per minority class
  EXPECT_EQ(config["oversample_factor"], 10);
  EXPECT_EQ(report["claims"].size(), 2u);
  // Two seeds by default: each configuration again with seed + 1, averaged, its spread in the table.
  const nlohmann::json second = nlohmann::json::parse(read_file(out / "runs" / "oversample-x10-seed1" / "config.json"));
  EXPECT_EQ(second["seed"], config["seed"].get<uint64_t>() + 1);
  ASSERT_EQ(report["tables"]["seed_spread"]["rows"].size(), 4u);
  EXPECT_THAT(report["tables"]["seed_spread"]["rows"][0][1].get<std::string>(), HasSubstr(", "));  // two values
  EXPECT_GE(rows[0][4].get<double>(), 0.0);  // the minority cosine's std over the seeds
  fs::remove_all(out);
}

TEST(CliReproduce, WithoutGnuplotItFailsBeforeTraining) {
  const fs::path out = fresh_dir("no_gnuplot");
  const RunResult r = run(reproduce_args(out, "1"), {.path_env = "/nonexistent"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, AllOf(HasSubstr("gnuplot"), HasSubstr("before training")));
  EXPECT_FALSE(fs::exists(out / "runs" / "R1" / "config.json"));
  fs::remove_all(out);
}

TEST(CliReproduce, StopAfterEndsTheFirstRunEarlyWithoutAReport) {
  const fs::path out = fresh_dir("stop_after");
  std::vector<std::string> args = reproduce_args(out, "3");
  args.insert(args.end(), {"--stop-after", "1"});
  const RunResult r = run(args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(out / "runs" / "R1" / "checkpoint.peel"));
  EXPECT_FALSE(fs::exists(out / "runs" / "R10"));
  EXPECT_FALSE(fs::exists(out / "report.html"));
  fs::remove_all(out);
}
