#include "kernels/cpu/simd_target.h"

#include <gtest/gtest.h>

#include <cctype>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "hwy/targets.h"

namespace expertd::kernels {
namespace {

// Every target this binary has and this CPU runs can be chosen by name, in
// any case, and dispatch then runs it; a name that is not one of them is
// refused with the ones that are.
TEST(SimdTargetTest, RestrictsDispatchToTheNamedTarget) {
  const std::string best = SimdTargetName();
  int64_t worst = 0;
  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    const std::string name = hwy::TargetName(target);
    ASSERT_TRUE(RestrictSimdTarget(name).ok()) << name;
    EXPECT_EQ(SimdTargetName(), name);
    worst = target;
  }
  ASSERT_NE(worst, 0);
  // Lower case, and back to the best one after a restriction to the worst.
  std::string lower = best;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  ASSERT_TRUE(RestrictSimdTarget(lower).ok());
  EXPECT_EQ(SimdTargetName(), best);

  const absl::Status bad = RestrictSimdTarget("NOT_A_TARGET");
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find(best), absl::string_view::npos) << bad.message();
  EXPECT_EQ(SimdTargetName(), best);  // a refused name leaves no restriction behind
  hwy::DisableTargets(0);
}

}  // namespace
}  // namespace expertd::kernels
