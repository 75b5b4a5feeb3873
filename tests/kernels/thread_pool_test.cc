#include "kernels/cpu/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

namespace expertd::kernels {
namespace {

class ThreadPoolTest : public ::testing::TestWithParam<int> {};

TEST_P(ThreadPoolTest, CoversEveryIndexExactlyOnce) {
  ThreadPool pool(GetParam());
  for (const int64_t n : {1, 2, 3, 7, 64, 1000, 4099}) {
    for (const int64_t min_chunk : {0, 1, 3, 16, 5000}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::mutex mu;
      std::vector<std::pair<int64_t, int64_t>> ranges;
      pool.ParallelFor(n, min_chunk, [&](int64_t begin, int64_t end) {
        ASSERT_LE(0, begin);
        ASSERT_LT(begin, end);
        ASSERT_LE(end, n);
        for (int64_t i = begin; i < end; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
        std::lock_guard<std::mutex> lock(mu);
        ranges.emplace_back(begin, end);
      });
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "n=" << n << " i=" << i;
      }
      for (const auto& [begin, end] : ranges) {
        if (end != n) {
          EXPECT_GE(end - begin, min_chunk) << "n=" << n;
        }
      }
    }
  }
}

TEST_P(ThreadPoolTest, ZeroOrNegativeCountCallsNothing) {
  ThreadPool pool(GetParam());
  int calls = 0;
  pool.ParallelFor(0, 1, [&](int64_t, int64_t) { ++calls; });
  pool.ParallelFor(-5, 1, [&](int64_t, int64_t) { ++calls; });
  EXPECT_EQ(calls, 0);
}

TEST_P(ThreadPoolTest, ManyBackToBackCalls) {
  ThreadPool pool(GetParam());
  constexpr int kCalls = 20000;
  constexpr int64_t kN = 37;
  std::atomic<int64_t> total{0};
  for (int call = 0; call < kCalls; ++call) {
    std::atomic<int64_t> sum{0};
    pool.ParallelFor(kN, 1, [&](int64_t begin, int64_t end) {
      int64_t local = 0;
      for (int64_t i = begin; i < end; ++i) local += i + call;
      sum.fetch_add(local);
    });
    // The call must not return before every range is done.
    ASSERT_EQ(sum.load(), kN * (kN - 1) / 2 + kN * call) << "call " << call;
    total.fetch_add(sum.load());
  }
  EXPECT_GT(total.load(), 0);
}

TEST_P(ThreadPoolTest, UsesAtMostNumThreadsThreads) {
  ThreadPool pool(GetParam());
  EXPECT_EQ(pool.num_threads(), GetParam());
  std::mutex mu;
  std::set<std::thread::id> ids;
  for (int call = 0; call < 50; ++call) {
    pool.ParallelFor(1000, 1, [&](int64_t, int64_t) {
      std::lock_guard<std::mutex> lock(mu);
      ids.insert(std::this_thread::get_id());
    });
  }
  EXPECT_LE(static_cast<int>(ids.size()), GetParam());
  if (GetParam() == 1) {
    EXPECT_EQ(*ids.begin(), std::this_thread::get_id());
  }
}

TEST_P(ThreadPoolTest, DestroyWithoutWork) { ThreadPool pool(GetParam()); }

INSTANTIATE_TEST_SUITE_P(Threads, ThreadPoolTest, ::testing::Values(1, 2, 3, 4));

TEST(ThreadPoolSingleTest, NonPositiveThreadCountMeansCallerOnly) {
  ThreadPool pool(0);
  EXPECT_EQ(pool.num_threads(), 1);
  int64_t covered = 0;
  pool.ParallelFor(10, 1, [&](int64_t begin, int64_t end) { covered += end - begin; });
  EXPECT_EQ(covered, 10);
}

}  // namespace
}  // namespace expertd::kernels
