#include "kernels/cpu/quant_blocks.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cpu/dtype.h"

namespace expertd::kernels {
namespace {

constexpr DType kQuantTypes[] = {DType::kQ8_0, DType::kQ4_0, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K, DType::kMXFP4};

uint16_t Load16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

// Element i of a row, straight from the byte layouts as GGML documents them
// (ggml-common.h), one element at a time with offsets into raw bytes: a
// second reading of the formats, independent of quant_blocks.cc's structs
// and block loops.
float ReferenceValue(DType dtype, const uint8_t* row, int64_t i) {
  switch (dtype) {
    case DType::kQ8_0: {  // d[2] qs[32]
      const uint8_t* b = row + i / 32 * 34;
      return F16ToF32(Load16(b)) * static_cast<float>(static_cast<int8_t>(b[2 + i % 32]));
    }
    case DType::kQ4_0: {  // d[2] qs[16]: element k < 16 low nibble of qs[k], else high nibble of qs[k - 16]
      const uint8_t* b = row + i / 32 * 18;
      const int64_t k = i % 32;
      const int q = k < 16 ? (b[2 + k] & 15) : (b[2 + k - 16] >> 4);
      return F16ToF32(Load16(b)) * static_cast<float>(q - 8);
    }
    case DType::kQ4_K:
    case DType::kQ5_K: {  // d[2] dmin[2] scales[12] (qh[32]) qs[128]
      const bool q5 = dtype == DType::kQ5_K;
      const uint8_t* b = row + i / 256 * (q5 ? 176 : 144);
      const uint8_t* s = b + 4;
      const uint8_t* qh = b + 16;
      const uint8_t* qs = b + (q5 ? 48 : 16);
      const int64_t k = i % 256;
      const int j = static_cast<int>(k / 32);  // sub-block
      const int64_t l = k % 32;
      const uint8_t byte = qs[32 * (k / 64) + l];
      int q = (k % 64) < 32 ? (byte & 15) : (byte >> 4);
      if (q5) q += ((qh[l] >> j) & 1) * 16;
      int sc, m;
      if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
      } else {
        sc = (s[j + 4] & 15) + 16 * (s[j - 4] >> 6);
        m = (s[j + 4] >> 4) + 16 * (s[j] >> 6);
      }
      const float d = F16ToF32(Load16(b)), dmin = F16ToF32(Load16(b + 2));
      return (d * static_cast<float>(sc)) * static_cast<float>(q) - dmin * static_cast<float>(m);
    }
    case DType::kQ6_K: {  // ql[128] qh[64] scales[16] d[2]
      const uint8_t* b = row + i / 256 * 210;
      const int64_t k = i % 256;
      const int64_t h = k / 128, t = k % 128 / 32, l = k % 32;
      const uint8_t low_byte = b[64 * h + 32 * (t % 2) + l];
      const int low = t < 2 ? (low_byte & 15) : (low_byte >> 4);
      const int high = (b[128 + 32 * h + l] >> (2 * t)) & 3;
      const auto scale = static_cast<int8_t>(b[192 + k / 16]);
      return (F16ToF32(Load16(b + 208)) * static_cast<float>(scale)) * static_cast<float>(low + 16 * high - 32);
    }
    case DType::kMXFP4: {  // e qs[16]: nibbles as Q4_0's; E2M1 codes: sign bit 3, then e1 e0 m
      const uint8_t* b = row + i / 32 * 17;
      const int64_t k = i % 32;
      const int q = k < 16 ? (b[1 + k] & 15) : (b[1 + k - 16] >> 4);
      const int exponent = (q >> 1) & 3, mantissa = q & 1;
      // E2M1: exponent 0 is subnormal (0 or 0.5), else 2^(exponent - 1) * (1 + mantissa / 2).
      const float magnitude = exponent == 0 ? 0.5f * static_cast<float>(mantissa)
                                            : std::ldexp(1.0f + 0.5f * static_cast<float>(mantissa), exponent - 1);
      // The block's scale is 2^(e - 127) on the E2M1 values themselves. Code
      // 8 (E2M1's -0) reads as +0, as GGML's integer value table has it.
      if (magnitude == 0) return 0.0f;
      return std::ldexp((q & 8) ? -magnitude : magnitude, static_cast<int>(b[0]) - 127);
    }
    case DType::kF32:
    case DType::kBF16:
    case DType::kF16:
      break;
  }
  return NAN;
}

// Random bytes, with every f16 scale a finite value of either sign.
std::vector<uint8_t> RandomBlocks(DType dtype, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> bytes(static_cast<size_t>(DTypeBytes(dtype, n)));
  for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> scale(-2.0f, 2.0f);
  const int64_t block_bytes = DTypeBlockBytes(dtype);
  for (int64_t off = 0; off < static_cast<int64_t>(bytes.size()); off += block_bytes) {
    auto put = [&](int64_t at) {
      const uint16_t h = F32ToF16(scale(rng));
      bytes[static_cast<size_t>(off + at)] = static_cast<uint8_t>(h & 0xFF);
      bytes[static_cast<size_t>(off + at + 1)] = static_cast<uint8_t>(h >> 8);
    };
    if (dtype == DType::kMXFP4) {
      continue;  // any E8M0 byte is a power of two
    } else if (dtype == DType::kQ6_K) {
      put(208);
    } else {
      put(0);
      if (dtype == DType::kQ4_K || dtype == DType::kQ5_K) put(2);
    }
  }
  return bytes;
}

bool SameBits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

std::vector<float> Dequantized(DType dtype, const void* blocks, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n), NAN);
  DequantizeRow(dtype, blocks, n, out.data());
  return out;
}

double Rmse(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
  return std::sqrt(sum / static_cast<double>(a.size()));
}

std::vector<float> QuantRoundTrip(DType dtype, const std::vector<float>& x) {
  const auto n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> blocks(static_cast<size_t>(DTypeBytes(dtype, n)));
  QuantizeRow(dtype, x.data(), n, blocks.data());
  return Dequantized(dtype, blocks.data(), n);
}

TEST(QuantBlocksTest, DequantizeMatchesElementwiseReferenceBitForBit) {
  for (DType dtype : kQuantTypes) {
    SCOPED_TRACE(DTypeName(dtype));
    constexpr int64_t kN = 256 * 6;
    for (uint32_t seed = 1; seed <= 4; ++seed) {
      const std::vector<uint8_t> blocks = RandomBlocks(dtype, kN, seed);
      const std::vector<float> fast = Dequantized(dtype, blocks.data(), kN);
      for (int64_t i = 0; i < kN; ++i) {
        const float want = ReferenceValue(dtype, blocks.data(), i);
        ASSERT_TRUE(SameBits(fast[static_cast<size_t>(i)], want))
            << "seed " << seed << " element " << i << ": " << fast[static_cast<size_t>(i)] << " vs " << want;
      }
      // ConvertToF32 is the same dequantisation (the engine's path for
      // embeddings and small tensors).
      std::vector<float> converted(static_cast<size_t>(kN), NAN);
      ConvertToF32(dtype, blocks.data(), kN, converted.data());
      ASSERT_EQ(std::memcmp(converted.data(), fast.data(), fast.size() * sizeof(float)), 0);
    }
  }
}

// The kernels' inline f16 conversion is F16ToF32 for every one of the 65536
// halves, infinities, NaNs and subnormals included.
TEST(QuantBlocksTest, HalfToFloatIsF16ToF32) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = HalfToFloat(static_cast<uint16_t>(h)), b = F16ToF32(static_cast<uint16_t>(h));
    ASSERT_TRUE(SameBits(a, b)) << std::hex << h;
  }
}

// Q8_0's codes are round(x / d) against the stored scale (error <= d / 2);
// Q4_0 puts the largest magnitude on code -8, so the other end may clip by
// up to one step (error <= |d|).
TEST(QuantBlocksTest, Q8_0AndQ4_0ErrorsWithinTheirStep) {
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(32 * 64);
  for (float& v : x) v = dist(rng);
  x[7] = 0;  // an all-zero block too
  for (int i = 32; i < 64; ++i) x[static_cast<size_t>(i)] = 0;
  for (DType dtype : {DType::kQ8_0, DType::kQ4_0}) {
    SCOPED_TRACE(DTypeName(dtype));
    std::vector<uint8_t> blocks(static_cast<size_t>(DTypeBytes(dtype, static_cast<int64_t>(x.size()))));
    QuantizeRow(dtype, x.data(), static_cast<int64_t>(x.size()), blocks.data());
    const std::vector<float> y = Dequantized(dtype, blocks.data(), static_cast<int64_t>(x.size()));
    for (size_t i = 0; i < x.size(); ++i) {
      const uint8_t* block = blocks.data() + i / 32 * DTypeBlockBytes(dtype);
      const float d = std::fabs(F16ToF32(Load16(block)));
      const float bound = (dtype == DType::kQ8_0 ? 0.5f : 1.0f) * d * (1 + 1e-5f);
      ASSERT_LE(std::fabs(y[i] - x[i]), bound) << "element " << i;
    }
    for (size_t i = 32; i < 64; ++i) EXPECT_EQ(y[i], 0.0f);
  }
}

// Relative RMSE of a round trip on normal weights, a property of each
// format's bits per weight (measured on this input: q8_0 0.0053, q4_0 0.0855,
// q4_k 0.0692, q5_k 0.0342, q6_k 0.0168, mxfp4 0.1089: a power-of-two
// scale costs it against q4_0's f16 one); the bounds leave ~20% headroom.
TEST(QuantBlocksTest, RoundTripRelativeRmse) {
  std::mt19937 rng(6);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<float> x(256 * 32);
  for (float& v : x) v = dist(rng);
  const std::pair<DType, double> bounds[] = {
      {DType::kQ8_0, 0.0064}, {DType::kQ4_0, 0.103}, {DType::kQ4_K, 0.083},
      {DType::kQ5_K, 0.041},  {DType::kQ6_K, 0.020}, {DType::kMXFP4, 0.13}};
  for (auto [dtype, bound] : bounds) {
    SCOPED_TRACE(DTypeName(dtype));
    const double rel = Rmse(QuantRoundTrip(dtype, x), x) / 0.02;
    EXPECT_LT(rel, bound);
    std::printf("%s: relative rmse %.4f\n", std::string(DTypeName(dtype)).c_str(), rel);
  }
}

// Constant rows and zero rows survive exactly or nearly so; no NaN from a
// zero scale.
TEST(QuantBlocksTest, ConstantAndZeroRows) {
  for (DType dtype : kQuantTypes) {
    SCOPED_TRACE(DTypeName(dtype));
    for (float value : {0.0f, 0.5f, -0.25f}) {
      const std::vector<float> x(512, value);
      const std::vector<float> y = QuantRoundTrip(dtype, x);
      for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(y[i], value, 1e-3f) << "value " << value << " element " << i;
    }
  }
}

// ---------------------------------------------------------------- GGML

struct Reference {
  std::vector<float> input;
  // per format: GGML's blocks, GGML's dequantisation (first values), RMSE
  std::vector<std::string> formats;
  std::vector<std::vector<uint8_t>> blocks;
  std::vector<std::vector<float>> dequant;
  std::vector<double> rmse;
};

float FloatFromHex(const std::string& hex) {
  const auto bits = static_cast<uint32_t>(std::stoul(hex, nullptr, 16));
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

std::vector<Reference> LoadReference() {
  std::ifstream in(EXPERTD_QUANT_REFERENCE);
  std::vector<Reference> refs;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream s(line);
    std::string kind;
    s >> kind;
    if (kind == "input") {
      std::string name;
      int n = 0;
      s >> name >> n;
      refs.emplace_back();
      std::string hex;
      while (s >> hex) refs.back().input.push_back(FloatFromHex(hex));
    } else if (kind == "quant" && !refs.empty()) {
      Reference& r = refs.back();
      std::string format, input, blocks_hex;
      double rmse = 0;
      s >> format >> input >> rmse >> blocks_hex;
      r.formats.push_back(format);
      r.rmse.push_back(rmse);
      std::vector<uint8_t> bytes;
      for (size_t i = 0; i + 1 < blocks_hex.size(); i += 2) {
        bytes.push_back(static_cast<uint8_t>(std::stoul(blocks_hex.substr(i, 2), nullptr, 16)));
      }
      r.blocks.push_back(std::move(bytes));
      std::vector<float> values;
      std::string hex;
      while (s >> hex) values.push_back(FloatFromHex(hex));
      r.dequant.push_back(std::move(values));
    }
  }
  return refs;
}

// GGML's blocks dequantise to GGML's values, and our quantiser's RMSE on the
// same inputs is at most GGML's reference quantiser's plus 3%.
TEST(QuantBlocksTest, AgreesWithGgml) {
  const std::vector<Reference> refs = LoadReference();
  ASSERT_EQ(refs.size(), 3u) << "reading " << EXPERTD_QUANT_REFERENCE;
  for (const Reference& r : refs) {
    ASSERT_EQ(r.input.size(), 2048u);
    ASSERT_EQ(r.formats.size(), 6u);
    for (size_t f = 0; f < r.formats.size(); ++f) {
      const std::optional<DType> dtype = DTypeFromName(r.formats[f]);
      ASSERT_TRUE(dtype.has_value()) << r.formats[f];
      SCOPED_TRACE(r.formats[f]);
      const auto n = static_cast<int64_t>(r.input.size());
      ASSERT_EQ(static_cast<int64_t>(r.blocks[f].size()), DTypeBytes(*dtype, n));
      const std::vector<float> ours = Dequantized(*dtype, r.blocks[f].data(), n);
      for (size_t i = 0; i < r.dequant[f].size(); ++i) {
        ASSERT_TRUE(SameBits(ours[i], r.dequant[f][i])) << "element " << i << ": " << ours[i] << " vs ggml " << r.dequant[f][i];
      }
      const double ggml_rmse = Rmse(ours, r.input);
      EXPECT_NEAR(ggml_rmse, r.rmse[f], 1e-6 * r.rmse[f]);
      const double our_rmse = Rmse(QuantRoundTrip(*dtype, r.input), r.input);
      EXPECT_LE(our_rmse, 1.03 * r.rmse[f]) << "ours " << our_rmse << " ggml " << r.rmse[f];
      std::printf("%s: rmse ours %.4g, ggml %.4g (%.3f)\n", r.formats[f].c_str(), our_rmse, r.rmse[f],
                  our_rmse / r.rmse[f]);
    }
  }
}

// ---------------------------------------------------------------- dots

// DotQuantRowScalar is exact integer sums scaled in f32: it equals the f64
// dot of the dequantised weights with the dequantised activations up to f32
// rounding of the per-block steps. Against the f32 activations themselves
// each element of x moved by at most its block's d / 2, which bounds the
// difference by sum_i |w_i| * d(i) / 2.
TEST(QuantBlocksTest, ScalarDotMatchesDequantisedDot) {
  std::mt19937 rng(9);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  constexpr int64_t kN = 1024;
  for (DType dtype : kQuantTypes) {
    SCOPED_TRACE(DTypeName(dtype));
    for (int trial = 0; trial < 8; ++trial) {
      std::vector<float> w(kN), x(kN);
      for (float& v : w) v = dist(rng) * 0.05f;
      for (float& v : x) v = dist(rng);
      std::vector<uint8_t> wq(static_cast<size_t>(DTypeBytes(dtype, kN)));
      QuantizeRow(dtype, w.data(), kN, wq.data());
      std::vector<uint8_t> xq(static_cast<size_t>(ActivationRowBytes(dtype, kN)));
      QuantizeActivationRow(dtype, x.data(), kN, xq.data());
      const std::vector<float> wd = Dequantized(dtype, wq.data(), kN);
      const int block = DTypeBlockElements(dtype) == 32 ? 32 : 256;
      double exact = 0, against_x = 0, abs_sum = 0, bound = 0;
      for (int64_t i = 0; i < kN; ++i) {
        float xd, d;
        if (block == 32) {
          const auto* a = reinterpret_cast<const ActQ8_32*>(xq.data()) + i / 32;
          d = a->d;
          xd = a->d * a->qs[i % 32];
        } else {
          const auto* a = reinterpret_cast<const ActQ8_K*>(xq.data()) + i / 256;
          d = a->d;
          xd = a->d * a->qs[i % 256];
        }
        const double wi = wd[static_cast<size_t>(i)];
        exact += wi * xd;
        against_x += wi * x[static_cast<size_t>(i)];
        abs_sum += std::fabs(wi * xd);
        bound += std::fabs(wi) * d / 2;
      }
      const float dot = DotQuantRowScalar(dtype, wq.data(), xq.data(), kN);
      EXPECT_NEAR(dot, exact, 1e-5 * abs_sum) << "trial " << trial;
      EXPECT_NEAR(dot, against_x, bound * (1 + 1e-3) + 1e-5 * abs_sum) << "trial " << trial;
    }
  }
}

}  // namespace
}  // namespace expertd::kernels
