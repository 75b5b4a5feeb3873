#include "bench/read_bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <vector>

namespace expertd::bench {
namespace {

// Integer sums vectorise without -ffast-math and cannot be reassociated away.
// count is a multiple of 4.
uint64_t SumWords(const uint64_t* words, size_t count) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  for (size_t i = 0; i < count; i += 4) {
    a += words[i];
    b += words[i + 1];
    c += words[i + 2];
    d += words[i + 3];
  }
  return a + b + c + d;
}

}  // namespace

double MeasureReadBandwidth(kernels::ThreadPool& pool, int64_t bytes, int repeats) {
  const int64_t words = bytes / 8;
  std::unique_ptr<uint64_t[]> buffer(new uint64_t[words]);
  // Touch every page so the timing excludes page faults.
  for (int64_t i = 0; i < words; ++i) buffer[i] = static_cast<uint64_t>(i);
  constexpr int64_t kBlockWords = (int64_t{1} << 20) / 8;
  const int64_t blocks = words / kBlockWords;
  std::vector<uint64_t> partial(blocks);
  double best_seconds = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    pool.ParallelFor(blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t block = begin; block < end; ++block) {
        partial[block] = SumWords(buffer.get() + block * kBlockWords, kBlockWords);
      }
    });
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best_seconds = std::min(best_seconds, seconds);
  }
  // Keep the sums observable so the loop is not optimised out.
  volatile uint64_t sink = 0;
  for (uint64_t p : partial) sink = sink + p;
  return static_cast<double>(blocks * kBlockWords * 8) / best_seconds;
}

}  // namespace expertd::bench
