#ifndef EXPERTD_KERNELS_CPU_SIMD_TARGET_H_
#define EXPERTD_KERNELS_CPU_SIMD_TARGET_H_

namespace expertd::kernels {

// The Highway target the CPU kernels run on this machine ("AVX2",
// "AVX3" = AVX-512, "AVX3_ZEN4", "AVX3_SPR", "NEON", ...): the one dynamic
// dispatch picks among those this binary was compiled for. Decode speed
// depends on it, so `expertd run` and /v1/stats say it.
const char* SimdTargetName();

}  // namespace expertd::kernels

#endif  // EXPERTD_KERNELS_CPU_SIMD_TARGET_H_
