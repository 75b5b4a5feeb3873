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

// GGML's block formats: names as llama.cpp spells them (lower case), sizes
// of its block structs (ggml-common.h).
TEST(DTypeTest, QuantisedBlocks) {
  const struct {
    DType dtype;
    const char* name;
    int64_t elements;
    int64_t bytes;
  } blocks[] = {{DType::kQ8_0, "q8_0", 32, 34},
                {DType::kQ4_0, "q4_0", 32, 18},
                {DType::kQ4_K, "q4_k", 256, 144},
                {DType::kQ5_K, "q5_k", 256, 176},
                {DType::kQ6_K, "q6_k", 256, 210}};
  for (const auto& b : blocks) {
    EXPECT_EQ(DTypeName(b.dtype), b.name);
    EXPECT_EQ(DTypeBlockElements(b.dtype), b.elements);
    EXPECT_EQ(DTypeBlockBytes(b.dtype), b.bytes);
    EXPECT_TRUE(DTypeIsQuantized(b.dtype));
  }
  // An OLMoE expert row of 2048 in Q4_K: 8 super-blocks.
  EXPECT_EQ(DTypeBytes(DType::kQ4_K, 2048), 8 * 144);
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) EXPECT_FALSE(DTypeIsQuantized(dtype));
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
