#include "kernels/cpu/dtype.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace expertd::kernels {
namespace {

bool IsNanF16(uint16_t bits) { return (bits & 0x7C00) == 0x7C00 && (bits & 0x3FF) != 0; }
bool IsNanBF16(uint16_t bits) { return (bits & 0x7F80) == 0x7F80 && (bits & 0x7F) != 0; }

// Value of a non-NaN f16 bit pattern, from its definition, in double.
double F16Value(uint16_t bits) {
  const double sign = (bits & 0x8000) ? -1.0 : 1.0;
  const int exponent = (bits >> 10) & 0x1F;
  const int mantissa = bits & 0x3FF;
  if (exponent == 0x1F) return sign * std::numeric_limits<double>::infinity();
  if (exponent == 0) return sign * std::ldexp(mantissa, -24);
  return sign * std::ldexp(1024 + mantissa, exponent - 25);
}

// Nearest representable value by search, ties to the even encoding; the
// values of positive encodings [0, max_code] increase with the code.
// `overflow_threshold` is the smallest magnitude that rounds to infinity.
template <class ValueFn>
uint16_t NearestCode(double v, uint16_t max_code, uint16_t inf_code, double overflow_threshold,
                     ValueFn value) {
  const uint16_t sign = std::signbit(v) ? 0x8000 : 0;
  const double a = std::fabs(v);
  if (a >= overflow_threshold) return sign | inf_code;
  uint32_t lo = 0, hi = max_code;  // invariant: value(lo) <= a (a >= 0 = value(0))
  while (lo < hi) {
    const uint32_t mid = (lo + hi + 1) / 2;
    if (value(static_cast<uint16_t>(mid)) <= a) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  uint32_t best = lo;
  if (lo < max_code) {
    const double below = a - value(static_cast<uint16_t>(lo));
    const double above = value(static_cast<uint16_t>(lo + 1)) - a;
    if (above < below || (above == below && (lo & 1))) best = lo + 1;
  }
  return static_cast<uint16_t>(sign | best);
}

uint16_t ReferenceF32ToF16(float f) {
  // 65520 = midpoint of 65504 and 2^16; ties to even round it up.
  return NearestCode(f, 0x7BFF, 0x7C00, 65520.0, F16Value);
}

uint16_t ReferenceF32ToBF16(float f) {
  const auto bf16_value = [](uint16_t bits) {
    return static_cast<double>(std::bit_cast<float>(static_cast<uint32_t>(bits) << 16));
  };
  // Largest bf16 is (2 - 2^-7) * 2^127; the midpoint to 2^128 overflows.
  const double overflow = std::ldexp(2.0 - std::ldexp(1.0, -8), 127);
  return NearestCode(f, 0x7F7F, 0x7F80, overflow, bf16_value);
}

std::vector<float> InterestingFloats() {
  std::vector<float> values = {0.0f,
                               -0.0f,
                               1.0f,
                               -1.0f,
                               65504.0f,
                               65519.99f,
                               65520.0f,
                               65536.0f,
                               1e10f,
                               std::ldexp(1.0f, -24),
                               std::ldexp(1.0f, -25),
                               std::ldexp(1.0f, -25) * 1.0000001f,
                               std::ldexp(3.0f, -26),
                               std::ldexp(3.0f, -25),
                               std::ldexp(1.0f, -14),
                               std::ldexp(1.0f, -14) * 0.99999994f,
                               std::numeric_limits<float>::max(),
                               std::numeric_limits<float>::min(),
                               std::numeric_limits<float>::denorm_min(),
                               1.00390625f,   // bf16 tie, even below
                               1.01171875f,   // bf16 tie, odd below
                               1.00048828125f,  // f16 tie, even below
                               1.00146484375f}; // f16 tie, odd below
  std::mt19937 rng(1234);
  std::uniform_int_distribution<uint32_t> any_bits;
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  std::uniform_int_distribution<int> exponent(-30, 18);  // across the f16 range
  for (int i = 0; i < 200000; ++i) {
    const float f = std::bit_cast<float>(any_bits(rng));
    if (!std::isnan(f)) values.push_back(f);
    values.push_back(std::ldexp(mantissa(rng), exponent(rng)) * (i % 2 ? 1.0f : -1.0f));
  }
  return values;
}

TEST(DTypeTest, F16ToF32MatchesDefinitionForEveryCode) {
  for (uint32_t code = 0; code <= 0xFFFF; ++code) {
    const auto bits = static_cast<uint16_t>(code);
    const float f = F16ToF32(bits);
    if (IsNanF16(bits)) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << code;
      continue;
    }
    EXPECT_EQ(static_cast<double>(f), F16Value(bits)) << std::hex << code;
    EXPECT_EQ(std::signbit(f), (bits & 0x8000) != 0) << std::hex << code;
  }
}

TEST(DTypeTest, F16RoundTripsEveryCode) {
  for (uint32_t code = 0; code <= 0xFFFF; ++code) {
    const auto bits = static_cast<uint16_t>(code);
    const uint16_t back = F32ToF16(F16ToF32(bits));
    if (IsNanF16(bits)) {
      EXPECT_TRUE(IsNanF16(back)) << std::hex << code;
    } else {
      EXPECT_EQ(back, bits) << std::hex << code;
    }
  }
}

TEST(DTypeTest, BF16RoundTripsEveryCode) {
  for (uint32_t code = 0; code <= 0xFFFF; ++code) {
    const auto bits = static_cast<uint16_t>(code);
    const float f = BF16ToF32(bits);
    EXPECT_EQ(std::bit_cast<uint32_t>(f), code << 16);
    const uint16_t back = F32ToBF16(f);
    if (IsNanBF16(bits)) {
      EXPECT_TRUE(IsNanBF16(back)) << std::hex << code;
    } else {
      EXPECT_EQ(back, bits) << std::hex << code;
    }
  }
}

TEST(DTypeTest, F32ToF16RoundsToNearestEven) {
  for (const float f : InterestingFloats()) {
    ASSERT_EQ(F32ToF16(f), ReferenceF32ToF16(f)) << f << " bits " << std::hex
                                                 << std::bit_cast<uint32_t>(f);
  }
}

TEST(DTypeTest, F32ToBF16RoundsToNearestEven) {
  for (const float f : InterestingFloats()) {
    ASSERT_EQ(F32ToBF16(f), ReferenceF32ToBF16(f)) << f << " bits " << std::hex
                                                   << std::bit_cast<uint32_t>(f);
  }
}

TEST(DTypeTest, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(F32ToF16(inf), 0x7C00);
  EXPECT_EQ(F32ToF16(-inf), 0xFC00);
  EXPECT_EQ(F32ToF16(-0.0f), 0x8000);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7BFF);
  EXPECT_EQ(F32ToF16(65520.0f), 0x7C00);
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -25)), 0x0000);  // tie to even zero
  EXPECT_EQ(F32ToF16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 units: tie to even 2
  EXPECT_TRUE(IsNanF16(F32ToF16(nan)));
  EXPECT_TRUE(IsNanF16(F32ToF16(-nan)));
  // A NaN whose payload lies only in the bits that are dropped must stay NaN.
  EXPECT_TRUE(IsNanF16(F32ToF16(std::bit_cast<float>(0x7F800001u))));
  EXPECT_TRUE(IsNanBF16(F32ToBF16(std::bit_cast<float>(0x7F800001u))));
  EXPECT_TRUE(IsNanBF16(F32ToBF16(nan)));
  EXPECT_EQ(F32ToBF16(inf), 0x7F80);
  EXPECT_EQ(F32ToBF16(-inf), 0xFF80);
  EXPECT_EQ(F32ToBF16(std::numeric_limits<float>::max()), 0x7F80);  // rounds up
  EXPECT_EQ(F16ToF32(0x7C00), inf);
  EXPECT_EQ(F16ToF32(0xFC00), -inf);
  EXPECT_TRUE(std::isnan(F16ToF32(0x7E00)));
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(F16ToF32(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(BF16ToF32(0x3F80), 1.0f);
}

TEST(DTypeTest, ConvertToF32MatchesScalar) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits16(0, 0xFFFF);
  std::uniform_real_distribution<float> value(-100.0f, 100.0f);
  for (const int64_t n : {0, 1, 7, 33, 1000}) {
    std::vector<uint16_t> half(static_cast<size_t>(n));
    for (auto& h : half) h = static_cast<uint16_t>(bits16(rng));
    std::vector<float> out(static_cast<size_t>(n));
    ConvertToF32(DType::kBF16, half.data(), n, out.data());
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(BF16ToF32(half[i])));
    }
    ConvertToF32(DType::kF16, half.data(), n, out.data());
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(F16ToF32(half[i])));
    }
    std::vector<float> full(static_cast<size_t>(n));
    for (auto& f : full) f = value(rng);
    ConvertToF32(DType::kF32, full.data(), n, out.data());
    EXPECT_EQ(out, full);
  }
}

}  // namespace
}  // namespace expertd::kernels
