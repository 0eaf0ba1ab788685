// The peel program end to end: a training run killed with SIGKILL and resumed ends with exactly
// the numbers of an uninterrupted run; bad flags fail with a clear message and a non-zero exit.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

namespace fs = std::filesystem;

extern char** environ;

namespace {

const std::string kPeel = std::string(PEEL_BINARY_DIR) + "/peel";

fs::path fresh_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("peel_cli_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(dir);
  return dir;
}

pid_t spawn(const std::vector<std::string>& args, const std::string& log) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  EXPECT_EQ(posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

int run(const std::vector<std::string>& args, std::string* output = nullptr) {
  const std::string log = fs::temp_directory_path() / ("peel_cli_log_" + std::to_string(::getpid()));
  pid_t pid = spawn(args, log);
  int status = 0;
  waitpid(pid, &status, 0);
  if (output) {
    std::stringstream ss;
    ss << std::ifstream(log).rdbuf();
    *output = ss.str();
  }
  fs::remove(log);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::vector<std::string> train_args(const fs::path& out) {
  return {kPeel,       "train", "--dataset", "synthetic", "--model",         "small_cnn", "--majority", "5",
          "--n-major", "120",   "--ratio",   "10",        "--epochs",        "6",         "--batch",    "32",
          "--lr",      "0.05",  "--threads", "2",         "--metrics-every", "2",         "--out",      out.string()};
}

std::string read(const fs::path& p) {
  std::stringstream ss;
  ss << std::ifstream(p).rdbuf();
  return ss.str();
}

// summary.json without the wall-clock entries, which legitimately differ between runs.
nlohmann::json timeless_summary(const fs::path& dir) {
  nlohmann::json j = nlohmann::json::parse(read(dir / "summary.json"));
  j.erase("wall_seconds");
  j.erase("train_images_per_sec");
  return j;
}

}  // namespace

TEST(CliTrain, KilledRunResumesToTheSameNumbers) {
  const fs::path whole = fresh_dir("whole"), killed = fresh_dir("killed");
  ASSERT_EQ(run(train_args(whole)), 0);

  // Start the same run, SIGKILL it once its first checkpoint exists, then resume it.
  pid_t pid = spawn(train_args(killed), (killed.string() + ".log"));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(killed / "checkpoint.peel") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ::kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed";
  EXPECT_FALSE(fs::exists(killed / "summary.json"));
  ASSERT_EQ(run({kPeel, "train", "--resume", killed.string(), "--quiet"}), 0);

  EXPECT_EQ(read(whole / "metrics.csv"), read(killed / "metrics.csv"));
  EXPECT_EQ(timeless_summary(whole), timeless_summary(killed));
  fs::remove_all(whole);
  fs::remove_all(killed);
  fs::remove(killed.string() + ".log");
}

TEST(CliTrain, WritesConfigMetricsSummaryAndCheckpoint) {
  const fs::path out = fresh_dir("files");
  std::vector<std::string> args = train_args(out);
  args[13] = "2";  // --epochs 2
  ASSERT_EQ(run(args), 0);
  for (const char* f : {"config.json", "metrics.csv", "summary.json", "checkpoint.peel", "spectra.json"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  nlohmann::json summary = nlohmann::json::parse(read(out / "summary.json"));
  for (const char* key :
       {"train_accuracy", "test_accuracy", "test_accuracy_majority", "test_accuracy_minority", "minority_cosine",
        "majority_cosine", "nc1", "nc2_equinorm", "nc2_equiangular", "nc2_maxangle", "nc3", "nc4"})
    EXPECT_TRUE(summary.contains(key)) << key;
  nlohmann::json config = nlohmann::json::parse(read(out / "config.json"));
  EXPECT_EQ(config["global_mean"], "all-samples");
  EXPECT_EQ(config["class_counts"][9], 12);  // floor(120 / 10)
  fs::remove_all(out);
}

TEST(CliTrain, BadFlagsFailWithAClearMessage) {
  std::string out;
  EXPECT_NE(run({kPeel, "train", "--dataset", "imagenet", "--out", "/tmp/x"}, &out), 0);
  EXPECT_NE(out.find("imagenet"), std::string::npos) << out;
  EXPECT_NE(run({kPeel, "train", "--ratio", "0.5", "--out", "/tmp/x"}, &out), 0);
  EXPECT_NE(out.find("--ratio"), std::string::npos) << out;
  EXPECT_NE(run({kPeel, "train", "--dataset", "mnist", "--data", "/nonexistent", "--out", "/tmp/peel_x"}, &out), 0);
  EXPECT_NE(out.find("/nonexistent"), std::string::npos) << out;
  EXPECT_NE(run({kPeel, "nosuchcommand"}, &out), 0);
}

TEST(CliTrain, DemoLossGoesDown) {
  std::string out;
  ASSERT_EQ(run({kPeel, "demo", "--steps", "100", "--threads", "1"}, &out), 0);
  std::istringstream lines(out);
  std::vector<double> losses;
  for (std::string line; std::getline(lines, line);)
    if (auto at = line.find("loss "); at != std::string::npos) losses.push_back(std::stod(line.substr(at + 5)));
  ASSERT_GE(losses.size(), 2u);
  EXPECT_LT(losses.back(), 0.5 * losses.front());
}

TEST(CliReproduce, MinorityCollapseReportOnSyntheticData) {
  const fs::path out = fresh_dir("mc");
  std::string log;
  ASSERT_EQ(run({kPeel, "reproduce", "minority-collapse", "--dataset", "synthetic", "--n-major", "60", "--epochs", "1",
                 "--threads", "2", "--quiet", "--out", out.string()},
                &log),
            0)
      << log;
  const std::string html = read(out / "report.html");
  size_t figures = 0;
  for (size_t at = html.find("<svg"); at != std::string::npos; at = html.find("<svg", at + 1)) ++figures;
  EXPECT_EQ(figures, 8u);
  EXPECT_NE(html.find("Layer-Peeled Model (true cosine)"), std::string::npos);
  EXPECT_NE(html.find("Summary of every run"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);  // self-contained: nothing to fetch or run
  for (const char* run_name : {"R1", "R10", "R100", "R1000", "R1000-oversample", "R1000-reweight"})
    EXPECT_TRUE(fs::exists(out / "runs" / run_name / "summary.json")) << run_name;
  fs::remove_all(out);
}
