// `peel reproduce square-loss` end to end on a tiny setting (synthetic data, 10 images per class,
// 1 epoch per run; the sweep's 14 runs take well under a minute): the report folder, its figures,
// report.json with the rank table, the summary and four claims whose verdicts come from the runs;
// every run measured with the rank measures, spectra and the MSE decomposition; a second call with
// other settings refused before any training; --stop-after ends early without a report.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/support/cli.h"

using namespace peel::testing;
using ::testing::AllOf;
using ::testing::AnyOf;
using ::testing::Contains;
using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

std::vector<std::string> square_loss_args(const fs::path& out, const std::string& epochs) {
  return {kPeel,      "reproduce", "square-loss", "--dataset", "synthetic", "--n-major", "10",
          "--epochs", epochs,      "--threads",   "1",         "--quiet",   "--out",     out.string()};
}

const std::vector<std::string> kRuns{
    "bn-wd0",      "bn-wd0.0001",         "bn-wd0.0005",         "bn-wd0.001",          "bn-wd0.005",
    "wn-wd0",      "wn-wd0.0001",         "wn-wd0.0005",         "wn-wd0.001",          "wn-wd0.005",
    "ce-wd0.0005", "bn-wd0.0005-batch16", "bn-wd0.0005-batch64", "bn-wd0.0005-batch256"};

}  // namespace

TEST(CliReproduceSquareLoss, ReportOnSyntheticData) {
  const fs::path out = fresh_dir("square_loss");
  const RunResult r = run(square_loss_args(out, "1"));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  const std::string html = read_file(out / "report.html");
  size_t figures = 0;
  for (size_t at = html.find("<svg"); at != std::string::npos; at = html.find("<svg", at + 1)) ++figures;
  EXPECT_EQ(figures, 20u);
  EXPECT_THAT(html, AllOf(HasSubstr("What this shows"), HasSubstr("Summary of every run"), Not(HasSubstr("<script"))));

  const nlohmann::json report = nlohmann::json::parse(read_file(out / "report.json"));
  ASSERT_EQ(report["figures"].size(), 20u);
  for (const auto& figure : report["figures"]) {
    EXPECT_THAT(read_file(out / figure["png"].get<std::string>()), ::testing::StartsWith("\x89PNG"));
    EXPECT_FALSE(figure["series"].empty());
  }
  EXPECT_EQ(report["tables"]["summary"]["rows"].size(), kRuns.size());
  EXPECT_EQ(report["tables"]["ranks_at_the_end"]["rows"].size(), kRuns.size());
  ASSERT_EQ(report["claims"].size(), 4u);
  for (const auto& claim : report["claims"]) {
    EXPECT_THAT(claim["verdict"].get<std::string>(),
                AnyOf(Eq("supported"), Eq("partly supported"), Eq("not supported")));
    EXPECT_THAT(claim["evidence"].get<std::string>(), HasSubstr("Threshold"));
  }

  for (const std::string& name : kRuns) {
    SCOPED_TRACE(name);
    const fs::path dir = out / "runs" / name;
    EXPECT_TRUE(fs::exists(dir / "summary.json"));
    EXPECT_TRUE(fs::exists(dir / "spectra" / "epoch-000.json"));
    EXPECT_TRUE(fs::exists(dir / "spectra" / "epoch-001.json"));
    const std::string header = read_file(dir / "metrics.csv").substr(0, read_file(dir / "metrics.csv").find('\n'));
    EXPECT_THAT(header, AllOf(HasSubstr("rank_conv5.weight"), HasSubstr("stable_rank_fc.weight"),
                              HasSubstr("rank_class_means"), HasSubstr("lperp")));
  }
  const nlohmann::json wn = nlohmann::json::parse(read_file(out / "runs" / "wn-wd0.001" / "config.json"));
  EXPECT_EQ(wn["norm"], "wn");
  EXPECT_EQ(wn["wn_init"], "data");  // Salimans & Kingma's start, at the WN half's own lr
  EXPECT_EQ(wn["lr"], 0.05);
  EXPECT_EQ(wn["loss"], "mse");
  EXPECT_EQ(wn["weight_decay"], 1e-3);
  const nlohmann::json b16 = nlohmann::json::parse(read_file(out / "runs" / "bn-wd0.0005-batch16" / "config.json"));
  EXPECT_EQ(b16["batch"], 16);
  EXPECT_EQ(nlohmann::json::parse(read_file(out / "runs" / "ce-wd0.0005" / "config.json"))["loss"], "ce");

  // The same --out with other settings is refused before any training, naming the field.
  const auto before = snapshot(out);
  const RunResult other = run(square_loss_args(out, "2"));
  EXPECT_NE(other.exit_code, 0);
  EXPECT_THAT(other.output, AllOf(HasSubstr("runs/bn-wd0 holds a run with other settings"),
                                  HasSubstr("epochs: 1 (in the folder) vs 2 (asked)"), HasSubstr("--force")));
  EXPECT_EQ(snapshot(out), before);
  fs::remove_all(out);
}

TEST(CliReproduceSquareLoss, StopAfterEndsTheFirstRunEarlyWithoutAReport) {
  const fs::path out = fresh_dir("square_loss_stop");
  std::vector<std::string> args = square_loss_args(out, "2");
  args.insert(args.end(), {"--stop-after", "1"});
  const RunResult r = run(args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(out / "runs" / "bn-wd0" / "checkpoint.peel"));
  EXPECT_FALSE(fs::exists(out / "runs" / "bn-wd0.0001"));
  EXPECT_FALSE(fs::exists(out / "report.html"));
  fs::remove_all(out);
}
