// `peel bench train-step` and `peel bench infer`: the JSON line they end with, and their refusals.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "tests/support/cli.h"

using namespace peel::testing;
using ::testing::HasSubstr;

namespace {

nlohmann::json last_json_line(const std::string& output) {
  // The last line (the JSON object may hold nested ones).
  const std::string& text = output;
  const size_t end = text.find_last_not_of('\n');
  const size_t start = end == std::string::npos ? 0 : text.rfind('\n', end);
  const std::string line = text.substr(start == std::string::npos ? 0 : start + 1);
  const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
  return j.is_object() ? j : nlohmann::json::object();
}

TEST(CliBench, InferTimesTheEvalForwardOfEachModel) {
  for (const char* model : {"small_cnn", "resnet18"}) {
    const RunResult r = run({kPeel, "bench", "infer", "--model", model, "--width", "0.25", "--batch", "4", "--warmup",
                             "1", "--repetitions", "3", "--batches", "2", "--threads", "2"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const nlohmann::json j = last_json_line(r.output);
    EXPECT_EQ(j["mode"], "infer");
    EXPECT_EQ(j["model"], model);
    EXPECT_EQ(j["batch"], 4);
    EXPECT_GT(j["images_per_sec"].get<double>(), 0);
    EXPECT_LE(j["images_per_sec_min"].get<double>(), j["images_per_sec"].get<double>());
    EXPECT_TRUE(j["output_finite"].get<bool>());
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 4) << r.output;  // 3 repetitions + JSON
  }
}

TEST(CliBench, TrainStepSaysWhetherBatchNormAndThePoolRanAsOneOp) {
  for (bool fuse : {true, false}) {
    std::vector<std::string> args{kPeel,     "bench",   "train-step", "--model",   "small_cnn",
                                  "--batch", "4",       "--warmup",   "1",         "--repetitions",
                                  "2",       "--steps", "1",          "--threads", "1"};
    if (!fuse) args.emplace_back("--no-fuse");
    const RunResult r = run(args);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const nlohmann::json j = last_json_line(r.output);
    EXPECT_EQ(j["batch_norm_pool_fused"], fuse);
    EXPECT_GT(j["images_per_sec"].get<double>(), 0);
  }
}

TEST(CliBench, BadOptionsAreRefusedNamingThem) {
  RunResult r = run({kPeel, "bench", "infer", "--batch", "0"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("--batch"));
  r = run({kPeel, "bench", "infer", "--model", "alexnet"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("alexnet"));
}

}  // namespace
