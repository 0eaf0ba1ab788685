// `peel train --norm wn --wn-init data|norm`: the choice is a run setting (config.json, compared on
// resume), data is the default, a resumed data-initialised run continues to the same numbers, a bad
// value is refused naming the option and the choices, and a wn config.json from before the option
// reads as what those runs did (norm).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "experiments/run/config.h"
#include "tests/support/cli.h"

using namespace peel::testing;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

namespace {

std::vector<std::string> train_args(const fs::path& out, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{kPeel,       "train",  "--dataset", "synthetic", "--n-major",  "30",
                                "--epochs",  "3",      "--batch",   "16",        "--lr",       "0.05",
                                "--threads", "1",      "--quiet",   "--out",     out.string(), "--test-limit",
                                "60",        "--norm", "wn"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

nlohmann::json config_of(const fs::path& dir) { return nlohmann::json::parse(read_file(dir / "config.json")); }

}  // namespace

TEST(CliWnInit, TheChoiceIsWrittenToConfigAndChangesTheRun) {
  const fs::path data = fresh_dir("wn_data"), norm = fresh_dir("wn_norm");
  RunResult r = run(train_args(data));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run(train_args(norm, {"--wn-init", "norm"}));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(config_of(data)["wn_init"], "data");  // the default
  EXPECT_EQ(config_of(norm)["wn_init"], "norm");
  EXPECT_NE(read_file(data / "metrics.csv"), read_file(norm / "metrics.csv"));
  // A setting like the others: the folder's run and one asked with the other init differ by name
  // (what a reproduction's resume refuses; peel train --resume takes the folder's settings).
  const peel::TrainConfig stored = peel::read_train_config((data / "config.json").string());
  peel::TrainConfig asked = stored;
  asked.wn_init = peel::WnInit::norm;
  EXPECT_THAT(peel::differing_settings(stored, asked),
              ElementsAre("wn_init: \"data\" (in the folder) vs \"norm\" (asked)"));
  fs::remove_all(data);
  fs::remove_all(norm);
}

TEST(CliWnInit, AResumedRunDoesNotInitialiseAgain) {
  const fs::path whole = fresh_dir("wn_whole"), stopped = fresh_dir("wn_stopped");
  ASSERT_EQ(run(train_args(whole)).exit_code, 0);
  ASSERT_EQ(run(train_args(stopped, {"--stop-after", "1"})).exit_code, 0);
  const RunResult r = run({kPeel, "train", "--resume", stopped.string(), "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_file(stopped / "metrics.csv"), read_file(whole / "metrics.csv"));
  fs::remove_all(whole);
  fs::remove_all(stopped);
}

TEST(CliWnInit, ABadValueIsRefusedNamingTheChoices) {
  const fs::path dir = fresh_dir("wn_bad");
  const RunResult r = run(train_args(dir, {"--wn-init", "kaiming"}));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, AllOf(HasSubstr("--wn-init"), HasSubstr("'kaiming' is not one of data, norm")));
  EXPECT_FALSE(fs::exists(dir / "config.json"));
  fs::remove_all(dir);
}

TEST(CliWnInit, AnOlderWnConfigReadsAsTheNormInit) {
  // A run stopped after an epoch, its config.json rewritten without wn_init (as peel wrote it before
  // the option): the resume reads it as norm, what such a run did, and continues it unchanged.
  const fs::path whole = fresh_dir("wn_old_whole"), old = fresh_dir("wn_old");
  ASSERT_EQ(run(train_args(whole, {"--wn-init", "norm"})).exit_code, 0);
  ASSERT_EQ(run(train_args(old, {"--wn-init", "norm", "--stop-after", "1"})).exit_code, 0);
  nlohmann::json config = config_of(old);
  config.erase("wn_init");
  std::ofstream(old / "config.json") << config.dump(2);
  const RunResult r = run({kPeel, "train", "--resume", old.string(), "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_file(old / "metrics.csv"), read_file(whole / "metrics.csv"));
  EXPECT_EQ(peel::read_train_config((old / "config.json").string()).wn_init, peel::WnInit::norm);
  // Another norm's older config.json reads as the default, so its resume asks for nothing new.
  config["norm"] = "bn";
  std::ofstream(old / "config.json") << config.dump(2);
  EXPECT_EQ(peel::read_train_config((old / "config.json").string()).wn_init, peel::WnInit::data);
  fs::remove_all(whole);
  fs::remove_all(old);
}
