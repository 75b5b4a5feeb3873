#include "base/dtype.h"

#include <gtest/gtest.h>

namespace expertd {
namespace {

TEST(DTypeTest, NamesAndSizes) {
  EXPECT_EQ(DTypeName(DType::kF32), "f32");
  EXPECT_EQ(DTypeName(DType::kBF16), "bf16");
  EXPECT_EQ(DTypeName(DType::kF16), "f16");
  EXPECT_EQ(DTypeBytes(DType::kF32, 1), 4);
  EXPECT_EQ(DTypeBytes(DType::kBF16, 1), 2);
  EXPECT_EQ(DTypeBytes(DType::kF16, 1), 2);
  EXPECT_EQ(DTypeBytes(DType::kBF16, 1000), 2000);
  EXPECT_EQ(DTypeBytes(DType::kF32, 0), 0);
}

// The float types are blocks of one; the helpers must agree with each other
// for every type, so a block-quantised type added later is checked too.
TEST(DTypeTest, BlocksAreConsistent) {
  for (DType dtype : kAllDTypes) {
    SCOPED_TRACE(DTypeName(dtype));
    EXPECT_GE(DTypeBlockElements(dtype), 1);
    EXPECT_GE(DTypeBlockBytes(dtype), 1);
    EXPECT_EQ(DTypeBytes(dtype, DTypeBlockElements(dtype)), DTypeBlockBytes(dtype));
    EXPECT_EQ(DTypeBytes(dtype, 3 * DTypeBlockElements(dtype)), 3 * DTypeBlockBytes(dtype));
  }
}

TEST(DTypeTest, NamesRoundTrip) {
  for (DType dtype : kAllDTypes) {
    EXPECT_EQ(DTypeFromName(DTypeName(dtype)), dtype) << DTypeName(dtype);
  }
  EXPECT_EQ(DTypeFromName("F32"), std::nullopt);  // names are lower case
  EXPECT_EQ(DTypeFromName("keep"), std::nullopt);
  EXPECT_EQ(DTypeFromName(""), std::nullopt);
}

// Constant-evaluable, so array sizes and static_asserts may use them.
static_assert(DTypeBytes(DType::kF16, 8) == 16);
static_assert(DTypeFromName("bf16") == DType::kBF16);

}  // namespace
}  // namespace expertd
