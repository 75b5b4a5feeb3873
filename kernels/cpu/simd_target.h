#ifndef EXPERTD_KERNELS_CPU_SIMD_TARGET_H_
#define EXPERTD_KERNELS_CPU_SIMD_TARGET_H_

#include <string_view>

#include "absl/status/status.h"

namespace expertd::kernels {

// The Highway target the CPU kernels run on this machine ("AVX2",
// "AVX3" = AVX-512, "AVX3_ZEN4", "AVX3_SPR", "NEON", ...): the one dynamic
// dispatch picks among those this binary was compiled for. Decode speed
// depends on it, so `expertd run` and /v1/stats say it.
const char* SimdTargetName();

// Makes the kernels dispatch to the target named `name` (as SimdTargetName
// spells it, any case) instead of the best one: the way to measure on an
// AVX-512 host the AVX2 kernels that AVX2-only CPUs run. Only targets this
// binary was compiled for and this CPU can run qualify; any other name is
// InvalidArgument listing those. Highway's dispatch table is process-wide,
// so this is for a benchmark's startup, before any kernel runs.
absl::Status RestrictSimdTarget(std::string_view name);

}  // namespace expertd::kernels

#endif  // EXPERTD_KERNELS_CPU_SIMD_TARGET_H_
