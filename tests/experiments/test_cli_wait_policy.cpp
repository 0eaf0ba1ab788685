// peel runs its OpenMP threads with a short spin before they sleep (tensor/threads.h), unless the
// user chose a waiting policy: libgomp reads it only at load time, so peel executes itself again
// with GOMP_SPINCOUNT set. The benchmark's JSON line reports the policy the step ran with.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tensor/threads.h"
#include "tests/support/cli.h"

using namespace peel::testing;

namespace {

// The JSON line that `peel bench train-step` prints last, for one tiny step, in the given environment.
nlohmann::json bench_json(const SpawnOptions& options) {
  const RunResult r = run({kPeel, "bench", "train-step", "--batch", "2", "--warmup", "1", "--repetitions", "1",
                           "--steps", "1", "--threads", "2"},
                          options);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // The last line (the JSON object may hold nested ones).
  const std::string& text = r.output;
  const size_t end = text.find_last_not_of('\n');
  const size_t start = end == std::string::npos ? 0 : text.rfind('\n', end);
  const std::string line = text.substr(start == std::string::npos ? 0 : start + 1);
  const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
  return j.is_object() ? j : nlohmann::json::object();
}

TEST(CliWaitPolicy, PeelSetsTheShortSpinWhenNoPolicyIsChosen) {
  const nlohmann::json j = bench_json({.unset_env = {"GOMP_SPINCOUNT", "OMP_WAIT_POLICY"}});
  EXPECT_EQ(j["gomp_spincount"], peel::kSpinCount);
  EXPECT_TRUE(j["omp_wait_policy"].is_null());
}

TEST(CliWaitPolicy, TheUsersChoiceIsKept) {
  nlohmann::json j = bench_json({.set_env = {{"GOMP_SPINCOUNT", "12345"}}, .unset_env = {"OMP_WAIT_POLICY"}});
  EXPECT_EQ(j["gomp_spincount"], "12345");
  j = bench_json({.set_env = {{"OMP_WAIT_POLICY", "active"}}, .unset_env = {"GOMP_SPINCOUNT"}});
  EXPECT_TRUE(j["gomp_spincount"].is_null());  // not overridden: the user asked for libgomp's active policy
  EXPECT_EQ(j["omp_wait_policy"], "active");
}

}  // namespace
