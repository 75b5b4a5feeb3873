#include "kernels/cpu/simd_target.h"

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

}  // namespace expertd::kernels
#endif  // HWY_ONCE
