// GGML block formats: dequantisation, quantisation, activation rows and the
// plain-loop dot products.
//
// This file is compiled with -ffp-contract=off (CMakeLists.txt): a dequantised
// value is "(d * sc) * q - (dmin * m)" rounded step by step, never fused into
// an FMA on one target and not on another, so values are the same bits on
// every machine and equal the element-wise reference in the tests.

#include "kernels/cpu/quant_blocks.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "kernels/cpu/dtype.h"

namespace expertd::kernels {
namespace {

constexpr int kQK = 256;  // elements of a K-quant super-block

int NearestInt(float v) { return static_cast<int>(std::lrintf(v)); }

// ---------------------------------------------------------------- dequant

void DequantQ8_0(const BlockQ8_0* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i, y += 32) {
    const float d = F16ToF32(b[i].d);
    for (int l = 0; l < 32; ++l) y[l] = d * static_cast<float>(b[i].qs[l]);
  }
}

void DequantQ4_0(const BlockQ4_0* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i, y += 32) {
    const float d = F16ToF32(b[i].d);
    for (int l = 0; l < 16; ++l) {
      y[l] = d * static_cast<float>((b[i].qs[l] & 0xF) - 8);
      y[l + 16] = d * static_cast<float>((b[i].qs[l] >> 4) - 8);
    }
  }
}

void DequantMXFP4(const BlockMXFP4* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i, y += 32) {
    const float d = Mxfp4Scale(b[i].e);
    for (int l = 0; l < 16; ++l) {
      y[l] = d * static_cast<float>(kMxfp4Values[b[i].qs[l] & 0xF]);
      y[l + 16] = d * static_cast<float>(kMxfp4Values[b[i].qs[l] >> 4]);
    }
  }
}

void DequantQ4_K(const BlockQ4_K* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i) {
    const float d = F16ToF32(b[i].d);
    const float dmin = F16ToF32(b[i].dmin);
    for (int c = 0; c < 4; ++c, y += 64) {
      uint8_t sc0, m0, sc1, m1;
      Q4KScaleMin(b[i].scales, 2 * c, &sc0, &m0);
      Q4KScaleMin(b[i].scales, 2 * c + 1, &sc1, &m1);
      const float d0 = d * sc0, min0 = dmin * m0, d1 = d * sc1, min1 = dmin * m1;
      const uint8_t* q = b[i].qs + 32 * c;
      for (int l = 0; l < 32; ++l) y[l] = d0 * static_cast<float>(q[l] & 0xF) - min0;
      for (int l = 0; l < 32; ++l) y[l + 32] = d1 * static_cast<float>(q[l] >> 4) - min1;
    }
  }
}

void DequantQ5_K(const BlockQ5_K* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i) {
    const float d = F16ToF32(b[i].d);
    const float dmin = F16ToF32(b[i].dmin);
    for (int c = 0; c < 4; ++c, y += 64) {
      uint8_t sc0, m0, sc1, m1;
      Q4KScaleMin(b[i].scales, 2 * c, &sc0, &m0);
      Q4KScaleMin(b[i].scales, 2 * c + 1, &sc1, &m1);
      const float d0 = d * sc0, min0 = dmin * m0, d1 = d * sc1, min1 = dmin * m1;
      const uint8_t* q = b[i].qs + 32 * c;
      const uint8_t* qh = b[i].qh;
      for (int l = 0; l < 32; ++l) {
        const int v = (q[l] & 0xF) | (((qh[l] >> (2 * c)) & 1) << 4);
        y[l] = d0 * static_cast<float>(v) - min0;
      }
      for (int l = 0; l < 32; ++l) {
        const int v = (q[l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4);
        y[l + 32] = d1 * static_cast<float>(v) - min1;
      }
    }
  }
}

void DequantQ6_K(const BlockQ6_K* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i) {
    const float d = F16ToF32(b[i].d);
    for (int h = 0; h < 2; ++h, y += 128) {
      const uint8_t* ql = b[i].ql + 64 * h;
      const uint8_t* qh = b[i].qh + 32 * h;
      const int8_t* sc = b[i].scales + 8 * h;
      for (int l = 0; l < 32; ++l) {
        const int s = l / 16;
        const int q0 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q1 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q2 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q3 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = (d * sc[s]) * static_cast<float>(q0);
        y[l + 32] = (d * sc[s + 2]) * static_cast<float>(q1);
        y[l + 64] = (d * sc[s + 4]) * static_cast<float>(q2);
        y[l + 96] = (d * sc[s + 6]) * static_cast<float>(q3);
      }
    }
  }
}

// ---------------------------------------------------------------- quantise

void QuantQ8_0(const float* x, int64_t blocks, BlockQ8_0* out) {
  for (int64_t i = 0; i < blocks; ++i, x += 32) {
    float amax = 0;
    for (int l = 0; l < 32; ++l) amax = std::max(amax, std::fabs(x[l]));
    // Codes are taken against the stored (f16-rounded) scale, the one the
    // reader multiplies by.
    out[i].d = F32ToF16(amax / 127.0f);
    const float d = F16ToF32(out[i].d);
    for (int l = 0; l < 32; ++l) {
      out[i].qs[l] = static_cast<int8_t>(d > 0 ? std::clamp(NearestInt(x[l] / d), -127, 127) : 0);
    }
  }
}

void QuantQ4_0(const float* x, int64_t blocks, BlockQ4_0* out) {
  for (int64_t i = 0; i < blocks; ++i, x += 32) {
    // The value of largest magnitude takes code 0 (-8 after the offset), the
    // end of the range with one more step; the scale's sign follows it.
    float vmax = 0;
    for (int l = 0; l < 32; ++l) {
      if (std::fabs(x[l]) > std::fabs(vmax)) vmax = x[l];
    }
    out[i].d = F32ToF16(vmax / -8.0f);
    const float d = F16ToF32(out[i].d);
    uint8_t q[32];
    for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(d != 0 ? std::clamp(NearestInt(x[l] / d) + 8, 0, 15) : 8);
    for (int l = 0; l < 16; ++l) out[i].qs[l] = static_cast<uint8_t>(q[l] | (q[l + 16] << 4));
  }
}

// The code whose value times d is nearest x (the first of equals, as GGML's
// best_index_mxfp4).
uint8_t NearestMxfp4Code(float x, float d) {
  uint8_t best = 0;
  float best_error = std::fabs(kMxfp4Values[0] * d - x);
  for (uint8_t q = 1; q < 16; ++q) {
    const float error = std::fabs(kMxfp4Values[q] * d - x);
    if (error < best_error) {
      best = q;
      best_error = error;
    }
  }
  return best;
}

// GGML's exponent, floor(log2(max|x|)) - 2 + 127, puts max|x| at 4 to 8
// times the scale's half-step, so values above 6 steps clip to 6; the
// exponent one up never clips but is twice as coarse. Each block takes
// whichever of the two gives the smaller squared error (never worse than
// GGML's, better on blocks with a lone large value).
void QuantMXFP4(const float* x, int64_t blocks, BlockMXFP4* out) {
  for (int64_t i = 0; i < blocks; ++i, x += 32) {
    float amax = 0;
    for (int l = 0; l < 32; ++l) amax = std::max(amax, std::fabs(x[l]));
    out[i].e = 0;
    std::memset(out[i].qs, 0, sizeof(out[i].qs));
    if (!(amax > 0) || !std::isfinite(amax)) continue;
    const int base = std::clamp(static_cast<int>(std::floor(std::log2(amax))) - 2 + 127, 0, 254);
    float best_error = std::numeric_limits<float>::infinity();
    for (int e = base; e <= base + 1; ++e) {
      const float d = Mxfp4Scale(static_cast<uint8_t>(e));
      uint8_t q[32];
      float error = 0;
      for (int l = 0; l < 32; ++l) {
        q[l] = NearestMxfp4Code(x[l], d);
        const float diff = kMxfp4Values[q[l]] * d - x[l];
        error += diff * diff;
      }
      if (error < best_error) {
        best_error = error;
        out[i].e = static_cast<uint8_t>(e);
        for (int l = 0; l < 16; ++l) out[i].qs[l] = static_cast<uint8_t>(q[l] | (q[l + 16] << 4));
      }
    }
  }
}

// x ~ scale * q - min, q in [0, nmax], scale >= 0, min >= 0: least squares
// over q assignments started from a grid of scales around range / nmax
// (a plain min-max fit wastes levels on outliers), two refits each.
struct ScaleMin {
  float scale;
  float min;
};

ScaleMin FitScaleMin(const float* x, int n, int nmax) {
  float lo = 0, hi = x[0];
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  if (hi <= lo) return {0.0f, -lo};
  ScaleMin best{(hi - lo) / static_cast<float>(nmax), -lo};
  double best_err = std::numeric_limits<double>::infinity();
  for (int step = -10; step <= 10; ++step) {
    float scale = (hi - lo) / (static_cast<float>(nmax) + 0.1f * static_cast<float>(step));
    float offset = lo;  // x ~ scale * q + offset, offset <= 0
    for (int iter = 0; iter < 3 && scale > 0; ++iter) {
      double sq = 0, sx = 0, sqq = 0, sqx = 0;
      for (int i = 0; i < n; ++i) {
        const int q = std::clamp(NearestInt((x[i] - offset) / scale), 0, nmax);
        sq += q;
        sx += x[i];
        sqq += static_cast<double>(q) * q;
        sqx += static_cast<double>(q) * x[i];
      }
      const double det = n * sqq - sq * sq;
      double s = 0, b = 0;
      if (det > 0) {
        s = (n * sqx - sq * sx) / det;
        b = (sx - s * sq) / n;
      }
      if (b > 0 || det <= 0) {  // the format's offset is -min <= 0
        b = 0;
        s = sqq > 0 ? sqx / sqq : 0;
      }
      if (s <= 0) break;
      scale = static_cast<float>(s);
      offset = static_cast<float>(b);
      double err = 0;
      for (int i = 0; i < n; ++i) {
        const int q = std::clamp(NearestInt((x[i] - offset) / scale), 0, nmax);
        const double e = static_cast<double>(scale) * q + offset - x[i];
        err += e * e;
      }
      if (err < best_err) {
        best_err = err;
        best = {scale, -offset};
      }
    }
  }
  return best;
}

// The 6-bit scale and min codes of 8 sub-blocks, packed as Q4KScaleMin reads them.
void PackScalesMins(const uint8_t sc[8], const uint8_t m[8], uint8_t* scales) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    scales[j + 4] = static_cast<uint8_t>((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
  }
}

// Codes q[256] in [0, nmax] plus d, dmin and packed scales for one Q4_K/Q5_K
// super-block. After the 6-bit scale codes are fixed, each sub-block tries
// the neighbouring codes too and keeps the pair with the least error.
void QuantKSuper(const float* x, int nmax, uint16_t* d_out, uint16_t* dmin_out, uint8_t* scales, uint8_t* q) {
  ScaleMin fits[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    fits[j] = FitScaleMin(x + 32 * j, 32, nmax);
    max_scale = std::max(max_scale, fits[j].scale);
    max_min = std::max(max_min, fits[j].min);
  }
  *d_out = F32ToF16(max_scale / 63.0f);
  *dmin_out = F32ToF16(max_min / 63.0f);
  const float d = F16ToF32(*d_out), dmin = F16ToF32(*dmin_out);
  uint8_t sc[8], m[8];
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    const int sc0 = d > 0 ? std::clamp(NearestInt(fits[j].scale / d), 0, 63) : 0;
    const int m0 = dmin > 0 ? std::clamp(NearestInt(fits[j].min / dmin), 0, 63) : 0;
    double best_err = std::numeric_limits<double>::infinity();
    for (int a = std::max(0, sc0 - 1); a <= std::min(63, sc0 + 1); ++a) {
      for (int b = std::max(0, m0 - 1); b <= std::min(63, m0 + 1); ++b) {
        const float ds = d * static_cast<float>(a), dm = dmin * static_cast<float>(b);
        double err = 0;
        uint8_t codes[32];
        for (int l = 0; l < 32; ++l) {
          codes[l] = static_cast<uint8_t>(ds > 0 ? std::clamp(NearestInt((xs[l] + dm) / ds), 0, nmax) : 0);
          const double e = static_cast<double>(ds * static_cast<float>(codes[l]) - dm) - xs[l];
          err += e * e;
        }
        if (err < best_err) {
          best_err = err;
          sc[j] = static_cast<uint8_t>(a);
          m[j] = static_cast<uint8_t>(b);
          std::memcpy(q + 32 * j, codes, 32);
        }
      }
    }
  }
  PackScalesMins(sc, m, scales);
}

void QuantQ4_K(const float* x, int64_t blocks, BlockQ4_K* out) {
  for (int64_t i = 0; i < blocks; ++i, x += kQK) {
    uint8_t q[kQK];
    QuantKSuper(x, 15, &out[i].d, &out[i].dmin, out[i].scales, q);
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) out[i].qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
    }
  }
}

void QuantQ5_K(const float* x, int64_t blocks, BlockQ5_K* out) {
  for (int64_t i = 0; i < blocks; ++i, x += kQK) {
    uint8_t q[kQK];
    QuantKSuper(x, 31, &out[i].d, &out[i].dmin, out[i].scales, q);
    std::memset(out[i].qh, 0, sizeof(out[i].qh));
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t lo = q[64 * c + l], hi = q[64 * c + 32 + l];
        out[i].qs[32 * c + l] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
        out[i].qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
    }
  }
}

// x ~ scale * q, q in [-32, 31]: the value of largest magnitude is put near
// either end of the range (the scale may be negative), each start refitted
// by least squares twice; the least squared error wins.
float FitSymmetric(const float* x, int n) {
  float vmax = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > std::fabs(vmax)) vmax = x[i];
  }
  if (vmax == 0) return 0;
  float best = vmax / 31.0f;
  double best_err = std::numeric_limits<double>::infinity();
  for (int end = 0; end < 2; ++end) {
    for (int step = -6; step <= 6; ++step) {
      float scale = end == 0 ? -vmax / (32.0f + 0.1f * static_cast<float>(step))
                             : vmax / (31.0f + 0.1f * static_cast<float>(step));
      for (int iter = 0; iter < 2; ++iter) {
        double sqq = 0, sqx = 0;
        for (int i = 0; i < n; ++i) {
          const int q = std::clamp(NearestInt(x[i] / scale), -32, 31);
          sqq += static_cast<double>(q) * q;
          sqx += static_cast<double>(q) * x[i];
        }
        if (sqq <= 0) break;
        scale = static_cast<float>(sqx / sqq);
        if (scale == 0) break;
        double err = 0;
        for (int i = 0; i < n; ++i) {
          const int q = std::clamp(NearestInt(x[i] / scale), -32, 31);
          const double e = static_cast<double>(scale) * q - x[i];
          err += e * e;
        }
        if (err < best_err) {
          best_err = err;
          best = scale;
        }
      }
    }
  }
  return best;
}

void QuantQ6_K(const float* x, int64_t blocks, BlockQ6_K* out) {
  for (int64_t i = 0; i < blocks; ++i, x += kQK) {
    float fits[16];
    float max_abs = 0;
    for (int j = 0; j < 16; ++j) {
      fits[j] = FitSymmetric(x + 16 * j, 16);
      max_abs = std::max(max_abs, std::fabs(fits[j]));
    }
    out[i].d = F32ToF16(max_abs / 127.0f);
    const float d = F16ToF32(out[i].d);
    uint8_t q[kQK];
    for (int j = 0; j < 16; ++j) {
      const int code = d > 0 ? std::clamp(NearestInt(fits[j] / d), -127, 127) : 0;
      out[i].scales[j] = static_cast<int8_t>(code);
      const float ds = d * static_cast<float>(code);
      for (int l = 0; l < 16; ++l) {
        q[16 * j + l] = static_cast<uint8_t>(ds != 0 ? std::clamp(NearestInt(x[16 * j + l] / ds), -32, 31) + 32 : 32);
      }
    }
    for (int h = 0; h < 2; ++h) {
      const uint8_t* qq = q + 128 * h;
      for (int l = 0; l < 32; ++l) {
        out[i].ql[64 * h + l] = static_cast<uint8_t>((qq[l] & 0xF) | ((qq[l + 64] & 0xF) << 4));
        out[i].ql[64 * h + 32 + l] = static_cast<uint8_t>((qq[l + 32] & 0xF) | ((qq[l + 96] & 0xF) << 4));
        out[i].qh[32 * h + l] = static_cast<uint8_t>((qq[l] >> 4) | ((qq[l + 32] >> 4) << 2) |
                                                     ((qq[l + 64] >> 4) << 4) | ((qq[l + 96] >> 4) << 6));
      }
    }
  }
}

// ---------------------------------------------------------------- activations

// q = round(x / d), d = max|x| / 127; returns d. Runs once per activation
// row and call, so it rounds without a libm call: adding and subtracting
// 1.5 * 2^23 rounds to the nearest integer (ties to even, as lrintf) any
// value below 2^22 in magnitude, and |x * id| <= 127.5 here.
float QuantizeQ8(const float* x, int n, int8_t* q) {
  float amax = 0;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f;
  const float id = d > 0 ? 1.0f / d : 0.0f;
  constexpr float kRound = 12582912.0f;
  for (int i = 0; i < n; ++i) {
    const float rounded = (x[i] * id + kRound) - kRound;
    q[i] = static_cast<int8_t>(rounded >= -127.0f ? (rounded <= 127.0f ? rounded : 127.0f) : -127.0f);
  }
  return d;
}

// ---------------------------------------------------------------- dots

float DotQ8_0(const BlockQ8_0* w, const ActQ8_32* x, int64_t blocks) {
  float acc = 0;
  for (int64_t i = 0; i < blocks; ++i) {
    int32_t sum = 0;
    for (int l = 0; l < 32; ++l) sum += w[i].qs[l] * x[i].qs[l];
    acc += (F16ToF32(w[i].d) * x[i].d) * static_cast<float>(sum);
  }
  return acc;
}

float DotQ4_0(const BlockQ4_0* w, const ActQ8_32* x, int64_t blocks) {
  float acc = 0;
  for (int64_t i = 0; i < blocks; ++i) {
    int32_t sum = 0;
    for (int l = 0; l < 16; ++l) {
      sum += ((w[i].qs[l] & 0xF) - 8) * x[i].qs[l] + ((w[i].qs[l] >> 4) - 8) * x[i].qs[l + 16];
    }
    acc += (F16ToF32(w[i].d) * x[i].d) * static_cast<float>(sum);
  }
  return acc;
}

float DotMXFP4(const BlockMXFP4* w, const ActQ8_32* x, int64_t blocks) {
  float acc = 0;
  for (int64_t i = 0; i < blocks; ++i) {
    int32_t sum = 0;
    for (int l = 0; l < 16; ++l) {
      sum += kMxfp4Values[w[i].qs[l] & 0xF] * x[i].qs[l] + kMxfp4Values[w[i].qs[l] >> 4] * x[i].qs[l + 16];
    }
    acc += (Mxfp4Scale(w[i].e) * x[i].d) * static_cast<float>(sum);
  }
  return acc;
}

// Q4_K and Q5_K: sum_j sc_j * dot(q_j, x_j) and sum_j m_j * sum(x_j) are
// exact integers; the block contributes d_x * (d * the first - dmin * the second).
template <typename Block>
float DotK(const Block* w, const ActQ8_K* x, int64_t blocks) {
  float acc = 0;
  for (int64_t i = 0; i < blocks; ++i) {
    int32_t scaled = 0, mins = 0;
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      Q4KScaleMin(w[i].scales, j, &sc, &m);
      const int c = j / 2, shift = 4 * (j % 2);
      int32_t sum = 0;
      for (int l = 0; l < 32; ++l) {
        int q = (w[i].qs[32 * c + l] >> shift) & 0xF;
        if constexpr (std::is_same_v<Block, BlockQ5_K>) q |= ((w[i].qh[l] >> j) & 1) << 4;
        sum += q * x[i].qs[32 * j + l];
      }
      scaled += sc * sum;
      mins += m * (x[i].bsums[2 * j] + x[i].bsums[2 * j + 1]);
    }
    acc += (x[i].d * F16ToF32(w[i].d)) * static_cast<float>(scaled) -
           (x[i].d * F16ToF32(w[i].dmin)) * static_cast<float>(mins);
  }
  return acc;
}

float DotQ6_K(const BlockQ6_K* w, const ActQ8_K* x, int64_t blocks) {
  float acc = 0;
  for (int64_t i = 0; i < blocks; ++i) {
    int8_t q[kQK];
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = w[i].ql + 64 * h;
      const uint8_t* qh = w[i].qh + 32 * h;
      int8_t* qq = q + 128 * h;
      for (int l = 0; l < 32; ++l) {
        qq[l] = static_cast<int8_t>(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
        qq[l + 32] = static_cast<int8_t>(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
        qq[l + 64] = static_cast<int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
        qq[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
      }
    }
    int32_t scaled = 0;
    for (int j = 0; j < 16; ++j) {
      int32_t sum = 0;
      for (int l = 0; l < 16; ++l) sum += q[16 * j + l] * x[i].qs[16 * j + l];
      scaled += w[i].scales[j] * sum;
    }
    acc += (x[i].d * F16ToF32(w[i].d)) * static_cast<float>(scaled);
  }
  return acc;
}

}  // namespace

void DequantizeRow(DType dtype, const void* blocks, int64_t n, float* out) {
  const int64_t count = n / DTypeBlockElements(dtype);
  switch (dtype) {
    case DType::kF32:
    case DType::kBF16:
    case DType::kF16:
      ConvertToF32(dtype, blocks, n, out);
      return;
    case DType::kQ8_0: DequantQ8_0(static_cast<const BlockQ8_0*>(blocks), count, out); return;
    case DType::kQ4_0: DequantQ4_0(static_cast<const BlockQ4_0*>(blocks), count, out); return;
    case DType::kQ4_K: DequantQ4_K(static_cast<const BlockQ4_K*>(blocks), count, out); return;
    case DType::kQ5_K: DequantQ5_K(static_cast<const BlockQ5_K*>(blocks), count, out); return;
    case DType::kQ6_K: DequantQ6_K(static_cast<const BlockQ6_K*>(blocks), count, out); return;
    case DType::kMXFP4: DequantMXFP4(static_cast<const BlockMXFP4*>(blocks), count, out); return;
  }
}

void QuantizeRow(DType dtype, const float* x, int64_t n, void* blocks) {
  const int64_t count = n / DTypeBlockElements(dtype);
  switch (dtype) {
    case DType::kF32:
      std::memcpy(blocks, x, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kBF16: {
      auto* out = static_cast<uint16_t*>(blocks);
      for (int64_t i = 0; i < n; ++i) out[i] = F32ToBF16(x[i]);
      return;
    }
    case DType::kF16: {
      auto* out = static_cast<uint16_t*>(blocks);
      for (int64_t i = 0; i < n; ++i) out[i] = F32ToF16(x[i]);
      return;
    }
    case DType::kQ8_0: QuantQ8_0(x, count, static_cast<BlockQ8_0*>(blocks)); return;
    case DType::kQ4_0: QuantQ4_0(x, count, static_cast<BlockQ4_0*>(blocks)); return;
    case DType::kQ4_K: QuantQ4_K(x, count, static_cast<BlockQ4_K*>(blocks)); return;
    case DType::kQ5_K: QuantQ5_K(x, count, static_cast<BlockQ5_K*>(blocks)); return;
    case DType::kQ6_K: QuantQ6_K(x, count, static_cast<BlockQ6_K*>(blocks)); return;
    case DType::kMXFP4: QuantMXFP4(x, count, static_cast<BlockMXFP4*>(blocks)); return;
  }
}

int64_t ActivationRowBytes(DType dtype, int64_t n) {
  switch (dtype) {
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kMXFP4:
      return n / 32 * static_cast<int64_t>(sizeof(ActQ8_32));
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return n / kQK * static_cast<int64_t>(sizeof(ActQ8_K));
    case DType::kF32:
    case DType::kBF16:
    case DType::kF16:
      break;
  }
  return 0;  // float weights take the f32 activations themselves
}

void QuantizeActivationRow(DType dtype, const float* x, int64_t n, void* out) {
  switch (dtype) {
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kMXFP4: {
      auto* blocks = static_cast<ActQ8_32*>(out);
      for (int64_t i = 0; i < n / 32; ++i) blocks[i].d = QuantizeQ8(x + 32 * i, 32, blocks[i].qs);
      return;
    }
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K: {
      auto* blocks = static_cast<ActQ8_K*>(out);
      for (int64_t i = 0; i < n / kQK; ++i) {
        blocks[i].d = QuantizeQ8(x + kQK * i, kQK, blocks[i].qs);
        for (int g = 0; g < 16; ++g) {
          int sum = 0;
          for (int l = 0; l < 16; ++l) sum += blocks[i].qs[16 * g + l];
          blocks[i].bsums[g] = static_cast<int16_t>(sum);
        }
      }
      return;
    }
    case DType::kF32:
    case DType::kBF16:
    case DType::kF16:
      return;
  }
}

float DotQuantRowScalar(DType dtype, const void* w_row, const void* x_row, int64_t n) {
  const int64_t count = n / DTypeBlockElements(dtype);
  switch (dtype) {
    case DType::kQ8_0:
      return DotQ8_0(static_cast<const BlockQ8_0*>(w_row), static_cast<const ActQ8_32*>(x_row), count);
    case DType::kQ4_0:
      return DotQ4_0(static_cast<const BlockQ4_0*>(w_row), static_cast<const ActQ8_32*>(x_row), count);
    case DType::kQ4_K:
      return DotK(static_cast<const BlockQ4_K*>(w_row), static_cast<const ActQ8_K*>(x_row), count);
    case DType::kQ5_K:
      return DotK(static_cast<const BlockQ5_K*>(w_row), static_cast<const ActQ8_K*>(x_row), count);
    case DType::kQ6_K:
      return DotQ6_K(static_cast<const BlockQ6_K*>(w_row), static_cast<const ActQ8_K*>(x_row), count);
    case DType::kMXFP4:
      return DotMXFP4(static_cast<const BlockMXFP4*>(w_row), static_cast<const ActQ8_32*>(x_row), count);
    case DType::kF32:
    case DType::kBF16:
    case DType::kF16:
      break;
  }
  return 0;  // not a quantised dtype: MatVec handles floats itself
}

}  // namespace expertd::kernels
