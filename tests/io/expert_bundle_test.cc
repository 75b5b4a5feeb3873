#include "io/expert_bundle.h"

#include "gtest/gtest.h"
#include "io/expert_file.h"

namespace expertd::io {
namespace {

// gate [ffn][hidden] | up [ffn][hidden] | down [hidden][ffn], no gaps
// (FORMAT.md): with hidden 64 and ffn 24 in bf16 each matrix is 3072 bytes.
TEST(ExpertBundleLayoutTest, GateUpDownBackToBack) {
  const BundleLayout b = ExpertBundleLayout(DType::kBF16, /*hidden_size=*/64, /*intermediate_size=*/24);
  EXPECT_EQ(b.dtypes(), BundleDtypes::Uniform(DType::kBF16));
  EXPECT_EQ(b.gate.offset_bytes, 0u);
  EXPECT_EQ(b.gate.size_bytes, 3072u);
  EXPECT_EQ(b.gate.rows, 24);
  EXPECT_EQ(b.gate.cols, 64);
  EXPECT_EQ(b.up.offset_bytes, 3072u);
  EXPECT_EQ(b.up.size_bytes, 3072u);
  EXPECT_EQ(b.up.rows, 24);
  EXPECT_EQ(b.up.cols, 64);
  EXPECT_EQ(b.down.offset_bytes, 6144u);
  EXPECT_EQ(b.down.size_bytes, 3072u);
  EXPECT_EQ(b.down.rows, 64);
  EXPECT_EQ(b.down.cols, 24);
  EXPECT_EQ(b.bytes, 9216u);
}

TEST(ExpertBundleLayoutTest, EveryDtypeTilesTheBundleAndMatchesTheFile) {
  for (DType dtype : kAllDTypes) {
    SCOPED_TRACE(DTypeName(dtype));
    const BundleLayout b = ExpertBundleLayout(dtype, /*hidden_size=*/2048, /*intermediate_size=*/1024);
    EXPECT_EQ(b.gate.offset_bytes, 0u);
    EXPECT_EQ(b.up.offset_bytes, b.gate.offset_bytes + b.gate.size_bytes);
    EXPECT_EQ(b.down.offset_bytes, b.up.offset_bytes + b.up.size_bytes);
    EXPECT_EQ(b.bytes, b.down.offset_bytes + b.down.size_bytes);
    EXPECT_EQ(b.gate.size_bytes, static_cast<uint64_t>(1024 * DTypeBytes(dtype, 2048)));
    EXPECT_EQ(b.down.size_bytes, static_cast<uint64_t>(2048 * DTypeBytes(dtype, 1024)));

    // The file's expert_bytes, and so its slots, are this layout's size.
    ExpertFileLayout file;
    file.dtypes = BundleDtypes::Uniform(dtype);
    file.hidden_size = 2048;
    file.intermediate_size = 1024;
    EXPECT_EQ(file.expert_bytes(), b.bytes);
    EXPECT_EQ(file.bundle().down.offset_bytes, b.down.offset_bytes);
  }
}

// Each matrix in its own dtype (a Q4_K_M expert): the offsets follow each
// matrix's own bytes. hidden 2048, ffn 1024: q4_k rows of 2048 are 8 blocks
// of 144 bytes, q6_k rows of 1024 are 4 blocks of 210.
TEST(ExpertBundleLayoutTest, MixedDtypesSizeEachMatrixByItsOwn) {
  const BundleDtypes q4_k_m{DType::kQ4_K, DType::kQ4_K, DType::kQ6_K};
  const BundleLayout b = ExpertBundleLayout(q4_k_m, 2048, 1024);
  EXPECT_EQ(b.dtypes(), q4_k_m);
  EXPECT_EQ(b.gate.dtype, DType::kQ4_K);
  EXPECT_EQ(b.down.dtype, DType::kQ6_K);
  EXPECT_EQ(b.gate.size_bytes, 1024u * 8 * 144);
  EXPECT_EQ(b.up.offset_bytes, 1024u * 8 * 144);
  EXPECT_EQ(b.down.offset_bytes, 2u * 1024 * 8 * 144);
  EXPECT_EQ(b.down.size_bytes, 2048u * 4 * 210);
  EXPECT_EQ(b.bytes, 2u * 1024 * 8 * 144 + 2048 * 4 * 210);
  EXPECT_FALSE(q4_k_m.uniform());
  EXPECT_EQ(BundleDtypesName(q4_k_m), "q4_k/q4_k/q6_k");
  EXPECT_EQ(BundleDtypesName(BundleDtypes::Uniform(DType::kBF16)), "bf16");
  // The uniform overload is the same computation.
  EXPECT_EQ(ExpertBundleLayout(DType::kQ8_0, 2048, 1024).bytes,
            ExpertBundleLayout(BundleDtypes::Uniform(DType::kQ8_0), 2048, 1024).bytes);
}

// The OLMoE-1B-7B expert shape (hidden 2048, ffn 1024): f32 bundles are
// twice the bf16 ones, 24 MiB against 12 MiB.
TEST(ExpertBundleLayoutTest, OlmoeShapeSizes) {
  EXPECT_EQ(ExpertBundleLayout(DType::kBF16, 2048, 1024).bytes, 12u << 20);
  EXPECT_EQ(ExpertBundleLayout(DType::kF32, 2048, 1024).bytes, 24u << 20);
}

}  // namespace
}  // namespace expertd::io
