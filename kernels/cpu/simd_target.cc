#include "kernels/cpu/simd_target.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/simd_target.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace expertd::kernels {
namespace HWY_NAMESPACE {

// Compiled once per target; dispatch runs the copy the kernels would run.
const char* CompiledTargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace HWY_NAMESPACE
}  // namespace expertd::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace expertd::kernels {

HWY_EXPORT(CompiledTargetName);

const char* SimdTargetName() { return HWY_DYNAMIC_DISPATCH(CompiledTargetName)(); }

absl::Status RestrictSimdTarget(std::string_view name) {
  const std::string wanted = absl::AsciiStrToUpper(absl::string_view(name.data(), name.size()));
  hwy::DisableTargets(0);  // a previous restriction's targets are candidates again
  std::vector<std::string> available;
  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    if (wanted == hwy::TargetName(target)) {
      // A lower bit is a better target: disabling every bit below this one
      // leaves it the best supported, which dispatch then picks (Highway's
      // documented way to avoid an unwanted best target).
      hwy::DisableTargets(target - 1);
      if (wanted != SimdTargetName()) {
        return absl::InternalError(absl::StrCat("asked for SIMD target ", wanted, " but dispatch chose ",
                                                SimdTargetName()));
      }
      return absl::OkStatus();
    }
    available.emplace_back(hwy::TargetName(target));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("SIMD target \"", absl::string_view(name.data(), name.size()),
                   "\" is not one this binary was built for and this CPU runs; choose one of ",
                   absl::StrJoin(available, ", ")));
}

}  // namespace expertd::kernels
#endif  // HWY_ONCE
