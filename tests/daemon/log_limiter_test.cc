#include "daemon/log_limiter.h"

#include <chrono>
#include <thread>

#include "gtest/gtest.h"

namespace expertd::daemon {
namespace {

TEST(LogLimiterTest, AllowsAFewLinesPerWindowAndCountsTheRest) {
  LogLimiter limiter(/*per_window=*/3, std::chrono::milliseconds(200));
  uint64_t suppressed = 99;
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(limiter.Allow(&suppressed)) << i;
    EXPECT_EQ(suppressed, 0u);
  }
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(limiter.Allow(&suppressed)) << "a flood is cut at 3 lines";
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  // The first line of the next window tells how many were left out.
  EXPECT_TRUE(limiter.Allow(&suppressed));
  EXPECT_EQ(suppressed, 5u);
  EXPECT_TRUE(limiter.Allow(&suppressed));
  EXPECT_EQ(suppressed, 0u);
}

}  // namespace
}  // namespace expertd::daemon
