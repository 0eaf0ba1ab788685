// `peel train` end to end: an interrupted run, resumed, ends with exactly the files of an
// uninterrupted one, wherever it was interrupted; what a run writes, and what it records.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/support/cli.h"

using namespace peel::testing;
using ::testing::HasSubstr;

namespace {

// 6 epochs on synthetic data (330 training images, 200 test images), metrics every 2: about a
// second per run on 2 cores.
std::vector<std::string> train_args(const fs::path& out, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{
      kPeel,       "train", "--dataset",    "synthetic", "--majority", "5",     "--n-major",  "60",
      "--ratio",   "10",    "--epochs",     "6",         "--batch",    "32",    "--lr",       "0.05",
      "--threads", "2",     "--test-limit", "200",       "--quiet",    "--out", out.string(), "--metrics-every",
      "2"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// summary.json without the wall-clock entries, which legitimately differ between runs.
nlohmann::json timeless_summary(const fs::path& dir) {
  nlohmann::json j = nlohmann::json::parse(read_file(dir / "summary.json"));
  j.erase("wall_seconds");
  j.erase("train_images_per_sec");
  return j;
}

int epochs_in_metrics(const fs::path& dir) {
  std::istringstream lines(read_file(dir / "metrics.csv"));
  int rows = -1;  // the header
  for (std::string line; std::getline(lines, line);) ++rows;
  return std::max(rows, 0);
}

class CliTrain : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    whole_ = new fs::path(fresh_dir("whole"));
    const RunResult r = run(train_args(*whole_));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  static void TearDownTestSuite() {
    fs::remove_all(*whole_);
    delete whole_;
  }
  // Resumes `dir` to the end and expects the uninterrupted run's metrics.csv and summary.json.
  static void expect_resumes_to_the_whole_run(const fs::path& dir) {
    const RunResult r = run({kPeel, "train", "--resume", dir.string(), "--quiet"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(read_file(dir / "metrics.csv"), read_file(*whole_ / "metrics.csv"));
    EXPECT_EQ(timeless_summary(dir), timeless_summary(*whole_));
    EXPECT_EQ(read_file(dir / "spectra.json"), read_file(*whole_ / "spectra.json"));
  }
  static fs::path* whole_;
};
fs::path* CliTrain::whole_ = nullptr;

}  // namespace

// Stopped cleanly after 1, 2 (a measured epoch) and 5 epochs (the one before the last), then resumed.
TEST_F(CliTrain, StoppedRunResumesToTheSameNumbersAtEveryEpoch) {
  for (const char* epochs : {"1", "2", "5"}) {
    SCOPED_TRACE(std::string("stopped after ") + epochs);
    const fs::path dir = fresh_dir(std::string("stopped") + epochs);
    const RunResult r = run(train_args(dir, {"--stop-after", epochs}));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_FALSE(fs::exists(dir / "summary.json"));
    EXPECT_EQ(epochs_in_metrics(dir), std::atoi(epochs) / 2);
    expect_resumes_to_the_whole_run(dir);
    fs::remove_all(dir);
  }
}

// SIGKILL at arbitrary moments: as soon as the first checkpoint exists, and at several times
// into the run (mid-epoch, between writing metrics.csv and the checkpoint, ...).
TEST_F(CliTrain, KilledRunResumesToTheSameNumbers) {
  for (int delay_ms : {-1, 300, 800}) {
    SCOPED_TRACE("kill after " + std::to_string(delay_ms) + " ms");
    const fs::path dir = fresh_dir("killed" + std::to_string(delay_ms));
    const pid_t pid = spawn(train_args(dir), dir.string() + ".log");
    if (delay_ms < 0)
      ASSERT_TRUE(wait_until([&] { return fs::exists(dir / "checkpoint.peel"); }));
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    fs::remove(dir.string() + ".log");
    if (!WIFSIGNALED(status)) continue;              // finished before the kill: nothing to resume
    if (!fs::exists(dir / "config.json")) continue;  // killed before it wrote anything
    expect_resumes_to_the_whole_run(dir);
    fs::remove_all(dir);
  }
}

TEST_F(CliTrain, ResumingACompleteRunChangesNothing) {
  const fs::path dir = fresh_dir("complete");
  fs::copy(*whole_, dir);
  const auto before = snapshot(dir);
  const RunResult r = run({kPeel, "train", "--resume", dir.string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("already complete"));
  EXPECT_EQ(snapshot(dir), before);
  fs::remove_all(dir);
}

TEST_F(CliTrain, RecordsWhatItWasAskedAndWhatItFound) {
  const nlohmann::json config = nlohmann::json::parse(read_file(*whole_ / "config.json"));
  EXPECT_EQ(config["epochs"], 6);
  EXPECT_EQ(config["loss"], "ce");
  EXPECT_EQ(config["global_mean"], "all-samples");
  EXPECT_EQ(config["found"]["class_counts"][0], 60);
  EXPECT_EQ(config["found"]["class_counts"][9], 6);  // floor(60 / 10)
  EXPECT_EQ(config["found"]["milestones"], nlohmann::json({2, 4}));

  // metrics.csv: one row per measured epoch, the learning rate of the multistep schedule.
  std::istringstream lines(read_file(*whole_ / "metrics.csv"));
  std::string header, row;
  std::getline(lines, header);
  EXPECT_THAT(header, ::testing::StartsWith("epoch,lr,train_loss,"));
  std::vector<std::pair<double, double>> epoch_lr;
  while (std::getline(lines, row)) epoch_lr.emplace_back(std::stod(row), std::stod(row.substr(row.find(',') + 1)));
  using ::testing::DoubleNear;
  using ::testing::Pair;
  EXPECT_THAT(epoch_lr, ::testing::ElementsAre(Pair(2, DoubleNear(0.05, 1e-8)), Pair(4, DoubleNear(0.005, 1e-8)),
                                               Pair(6, DoubleNear(0.0005, 1e-8))));

  // The summary is the last row; the run learned (chance is 0.1).
  const nlohmann::json summary = timeless_summary(*whole_);
  EXPECT_EQ(summary["epoch"], 6);
  EXPECT_GT(summary["train_accuracy"].get<double>(), 0.5);
  EXPECT_GT(summary["test_accuracy_majority"].get<double>(), summary["test_accuracy_minority"].get<double>() - 0.2);
  const nlohmann::json spectra = nlohmann::json::parse(read_file(*whole_ / "spectra.json"));
  EXPECT_EQ(spectra["fc.weight"]["singular_values"].size(), 10u);
}

TEST(CliTrainSchedule, OneEpochTrainsAtTheGivenRate) {
  const fs::path dir = fresh_dir("one_epoch");
  const RunResult r = run({kPeel, "train", "--dataset", "synthetic", "--n-major", "20", "--epochs", "1", "--lr", "0.05",
                           "--batch", "32", "--threads", "1", "--test-limit", "100", "--quiet", "--out", dir.string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json summary = nlohmann::json::parse(read_file(dir / "summary.json"));
  EXPECT_NEAR(summary["lr"].get<double>(), 0.05, 1e-7);  // no milestone at epoch 0
  fs::remove_all(dir);
}
