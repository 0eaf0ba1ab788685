// The normalisation study end to end: `peel train --elimination-probe N` adds the es_* columns
// without changing anything else a run computes, and keeps them through a resume;
// `peel reproduce normalization` writes its report folder (figures, tables, claims with verdicts).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/support/cli.h"

using namespace peel::testing;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

std::vector<std::string> train_args(const fs::path& out, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{kPeel,       "train", "--dataset", "synthetic", "--n-major",  "30",
                                "--epochs",  "3",     "--batch",   "16",        "--lr",       "0.05",
                                "--threads", "1",     "--quiet",   "--out",     out.string(), "--test-limit",
                                "60"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> cells;
  std::stringstream in(line);
  for (std::string cell; std::getline(in, cell, ',');) cells.push_back(cell);
  return cells;
}

// metrics.csv as rows of cells, header first.
std::vector<std::vector<std::string>> csv(const fs::path& file) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream lines(read_file(file));
  for (std::string line; std::getline(lines, line);) rows.push_back(split(line));
  return rows;
}

// The same rows without the columns whose names start with "es_".
std::vector<std::vector<std::string>> without_es(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::vector<std::string>> out;
  for (const auto& row : rows) {
    out.emplace_back();
    for (size_t i = 0; i < row.size(); ++i)
      if (rows[0][i].rfind("es_", 0) != 0) out.back().push_back(row[i]);
  }
  return out;
}

}  // namespace

TEST(CliElimination, TheProbeAddsItsColumnsAndChangesNothingElse) {
  const fs::path plain = fresh_dir("es_plain"), probed = fresh_dir("es_probed");
  ASSERT_EQ(run(train_args(plain)).exit_code, 0);
  const RunResult r = run(train_args(probed, {"--elimination-probe", "24"}));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  const auto plain_rows = csv(plain / "metrics.csv"), probed_rows = csv(probed / "metrics.csv");
  ASSERT_EQ(probed_rows.size(), 4u);                                        // header and 3 measured epochs
  EXPECT_THAT(plain_rows[0], Not(Contains(::testing::StartsWith("es_"))));  // off by default: metrics.csv as before
  // small_cnn's 5 sites, each with its eliminated fraction and 3 x 5 quantiles, after the overall fraction.
  const auto& header = probed_rows[0];
  EXPECT_EQ(std::count_if(header.begin(), header.end(), [](const std::string& c) { return c.rfind("es_", 0) == 0; }),
            1 + 5 * 16);
  EXPECT_THAT(header, AllOf(Contains("es_eliminated"), Contains("es_bn1_eliminated"), Contains("es_bn5_prez_q95"),
                            Contains("es_bn3_premean_q50"), Contains("es_bn2_prestd_q05")));
  // Measured in eval mode, the probe leaves the training untouched: every other cell is the same.
  EXPECT_EQ(without_es(probed_rows), plain_rows);
  const size_t fraction = std::find(header.begin(), header.end(), "es_eliminated") - header.begin();
  for (size_t row = 1; row < probed_rows.size(); ++row) {
    const double v = std::stod(probed_rows[row][fraction]);
    EXPECT_TRUE(v >= 0 && v <= 1) << v;
  }
  EXPECT_EQ(nlohmann::json::parse(read_file(probed / "config.json"))["elimination_probe"], 24);
  EXPECT_TRUE(nlohmann::json::parse(read_file(probed / "summary.json")).contains("es_eliminated"));
  fs::remove_all(plain);
  fs::remove_all(probed);
}

TEST(CliElimination, AResumedRunHasTheSameColumnsAndNumbers) {
  const std::vector<std::string> extra{"--norm", "gn+ws", "--elimination-probe", "24"};
  const fs::path whole = fresh_dir("es_whole"), stopped = fresh_dir("es_stopped");
  ASSERT_EQ(run(train_args(whole, extra)).exit_code, 0);
  std::vector<std::string> stop = extra;
  stop.insert(stop.end(), {"--stop-after", "1"});
  ASSERT_EQ(run(train_args(stopped, stop)).exit_code, 0);
  const RunResult r = run({kPeel, "train", "--resume", stopped.string(), "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_file(stopped / "metrics.csv"), read_file(whole / "metrics.csv"));
  EXPECT_THAT(read_file(whole / "metrics.csv"), HasSubstr("es_bn1_eliminated"));
  fs::remove_all(whole);
  fs::remove_all(stopped);
}

TEST(CliElimination, ANegativeProbeIsRefused) {
  const RunResult r = run(train_args(fresh_dir("es_negative"), {"--elimination-probe", "-3"}));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("--elimination-probe"));
}

namespace {
std::vector<std::string> reproduce_args(const fs::path& out, const std::string& epochs) {
  return {kPeel,  "reproduce", "normalization", "--dataset", "synthetic", "--n-major", "6",     "--epochs",
          epochs, "--model",   "small_cnn",     "--threads", "1",         "--quiet",   "--out", out.string()};
}
}  // namespace

TEST(CliReproduce, NormalizationReportOnSyntheticData) {
  const fs::path out = fresh_dir("norm_study");
  const RunResult r = run(reproduce_args(out, "1"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string html = read_file(out / "report.html");
  EXPECT_THAT(html, AllOf(HasSubstr("What this shows"), HasSubstr("EstBN's moving speed"), Not(HasSubstr("<script"))));
  const nlohmann::json report = nlohmann::json::parse(read_file(out / "report.json"));
  // Accuracy, loss, eliminated fraction, per site at the end, per site over training for each of the 7
  // runs, and r.
  ASSERT_EQ(report["figures"].size(), 12u);
  for (const auto& figure : report["figures"]) {
    EXPECT_THAT(read_file(out / figure["png"].get<std::string>()), ::testing::StartsWith("\x89PNG"));
    EXPECT_FALSE(figure["series"].empty());
  }
  EXPECT_EQ(report["tables"]["final"]["rows"].size(), 7u);
  EXPECT_EQ(report["tables"]["estbn_moving_speed"]["rows"].size(), 3u);
  EXPECT_EQ(report["tables"]["small_cnn_eliminated_per_site"]["rows"].size(), 7u);
  EXPECT_EQ(report["tables"]["summary"]["rows"].size(), 9u);  // 7 norms and 2 more values of r
  ASSERT_EQ(report["claims"].size(), 5u);
  for (const auto& claim : report["claims"])
    EXPECT_THAT(claim["verdict"].get<std::string>(),
                ::testing::AnyOf("supported", "partly supported", "not supported"));
  for (const char* name : {"small_cnn-bn-b128", "small_cnn-bn", "small_cnn-gn", "small_cnn-gn+ws", "small_cnn-bcn+ws",
                           "small_cnn-frn", "small_cnn-ln", "small_cnn-bcn+ws-r0.001", "small_cnn-bcn+ws-r0.1"})
    EXPECT_TRUE(fs::exists(out / "runs" / name / "summary.json")) << name;
  const nlohmann::json micro = nlohmann::json::parse(read_file(out / "runs" / "small_cnn-bcn+ws" / "config.json"));
  EXPECT_EQ(micro["batch"], 2);
  EXPECT_EQ(micro["bcn_batch_part"], "estimated");
  EXPECT_EQ(micro["elimination_probe"], 512);
  EXPECT_NEAR(micro["lr"].get<double>(), 0.1 * 2 / 128, 1e-12);

  // Complete runs are kept: a second call only redraws the report.
  const auto config_before = read_file(out / "runs" / "small_cnn-gn" / "checkpoint.peel");
  ASSERT_EQ(run(reproduce_args(out, "1")).exit_code, 0);
  EXPECT_EQ(read_file(out / "runs" / "small_cnn-gn" / "checkpoint.peel"), config_before);
  fs::remove_all(out);
}

TEST(CliReproduce, NormalizationStopAfterEndsTheFirstRunWithoutAReport) {
  const fs::path out = fresh_dir("norm_stop");
  std::vector<std::string> args = reproduce_args(out, "2");
  args.insert(args.end(), {"--stop-after", "1"});
  const RunResult r = run(args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(out / "runs" / "small_cnn-bn-b128" / "checkpoint.peel"));
  EXPECT_FALSE(fs::exists(out / "runs" / "small_cnn-bn"));
  EXPECT_FALSE(fs::exists(out / "report.html"));
  fs::remove_all(out);
}
