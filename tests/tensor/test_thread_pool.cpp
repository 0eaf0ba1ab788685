// parallel_for on peel's pool (tensor/thread_pool.h): every chunk runs once, the split is fixed by
// n, grain and the thread count, exceptions reach the caller, nesting and concurrent callers work.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "tensor/threads.h"

namespace peel {
namespace {

using ::testing::Each;
using ::testing::ElementsAre;

class ThreadPool : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_ = num_threads();
    set_num_threads(4);  // more chunks than this machine's cores: workers are often late
  }
  void TearDown() override { set_num_threads(saved_); }

 private:
  int saved_ = 1;
};

// The ranges parallel_for handed out, sorted.
std::vector<std::pair<int64_t, int64_t>> ranges_of(int64_t n, int64_t grain) {
  std::mutex m;
  std::set<std::pair<int64_t, int64_t>> seen;
  parallel_for(n, grain, [&](int64_t b, int64_t e) {
    const std::lock_guard<std::mutex> lock(m);
    seen.insert({b, e});
  });
  return {seen.begin(), seen.end()};
}

TEST_F(ThreadPool, SplitsIntoTheSameContiguousChunksEveryCall) {
  EXPECT_THAT(ranges_of(10, 1), ElementsAre(std::pair<int64_t, int64_t>{0, 2}, std::pair<int64_t, int64_t>{2, 5},
                                            std::pair<int64_t, int64_t>{5, 7}, std::pair<int64_t, int64_t>{7, 10}));
  EXPECT_THAT(ranges_of(10, 4), ElementsAre(std::pair<int64_t, int64_t>{0, 5}, std::pair<int64_t, int64_t>{5, 10}));
  EXPECT_THAT(ranges_of(3, 4), ElementsAre(std::pair<int64_t, int64_t>{0, 3}));  // too little: inline
  for (int i = 0; i < 200; ++i) ASSERT_EQ(ranges_of(1001, 1), ranges_of(1001, 1));
}

TEST_F(ThreadPool, RunsEveryIndexExactlyOnceOverManyBackToBackCalls) {
  std::vector<std::atomic<int>> hits(997);
  for (int call = 0; call < 2000; ++call)
    parallel_for(static_cast<int64_t>(hits.size()), 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1, std::memory_order_relaxed);
    });
  std::vector<int> counts;
  for (const auto& h : hits) counts.push_back(h.load());
  EXPECT_THAT(counts, Each(2000));
}

TEST_F(ThreadPool, RethrowsAChunksExceptionAfterTheOtherChunksFinishAndStaysUsable) {
  std::atomic<int> finished{0};
  EXPECT_THROW(parallel_for(4, 1,
                            [&](int64_t b, int64_t) {
                              if (b == 2) throw std::runtime_error("chunk 2 failed");
                              finished.fetch_add(1);
                            }),
               std::runtime_error);
  EXPECT_EQ(finished.load(), 3);
  std::atomic<int64_t> sum{0};
  parallel_for(100, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) sum += i;
  });
  EXPECT_EQ(sum.load(), 4950);
}

TEST_F(ThreadPool, NestedCallsRunInlineOnTheChunksThread) {
  std::atomic<int> inner_chunks{0}, outer_chunks{0};
  parallel_for(4, 1, [&](int64_t, int64_t) {
    outer_chunks.fetch_add(1);
    const auto me = std::this_thread::get_id();
    parallel_for(8, 1, [&](int64_t, int64_t) {
      EXPECT_EQ(std::this_thread::get_id(), me);
      inner_chunks.fetch_add(1);
    });
  });
  EXPECT_EQ(outer_chunks.load(), 4);
  EXPECT_EQ(inner_chunks.load(), 4);  // one inline call per outer chunk, covering all 8
}

TEST_F(ThreadPool, CallersOnSeveralThreadsEachGetTheirWholeJob) {
  auto job = [](int64_t n) {
    int64_t total = 0;
    for (int rep = 0; rep < 300; ++rep) {
      std::atomic<int64_t> sum{0};
      parallel_for(n, 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) sum += i;
      });
      total += sum.load();
    }
    return total;
  };
  int64_t a = 0, b = 0;
  std::thread other([&] { a = job(1000); });
  b = job(777);
  other.join();
  EXPECT_EQ(a, 300 * (999 * 1000 / 2));
  EXPECT_EQ(b, 300 * (776 * 777 / 2));
}

}  // namespace
}  // namespace peel
