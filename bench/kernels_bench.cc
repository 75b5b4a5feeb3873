// CPU kernel benchmarks. Decode is bound by how fast weights stream from
// memory, so the numbers that matter are bytes of weights per second and how
// close MatVec gets to a plain SIMD read of the same amount of memory.
//
// Run: kernels_bench [--simd-target AVX2] [--benchmark_filter=...]; the last
// lines printed are the bf16 MatVec / memory-read ratios on 1 and 2 threads,
// from this run's numbers: on one large matrix, and on expert-shaped matrices
// run one after another as decode runs them. --simd-target runs the kernels
// another CPU would (AVX2 on an AVX-512 host, kernels/cpu/simd_target.h);
// `--benchmark_filter=cached_quant` alone compares the quantised kernels'
// arithmetic between targets in seconds.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <cstring>

#include "kernels/cpu/dtype.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/cpu/simd_target.h"
#include "kernels/cpu/thread_pool.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "bench/kernels_bench.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace expertd::bench {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Sums floats with eight independent accumulators: the cheapest loop that
// touches every byte, i.e. the read bandwidth ceiling for MatVec.
float SumFloats(const float* HWY_RESTRICT p, int64_t count) {
  const hn::ScalableTag<float> d;
  const size_t lanes = hn::Lanes(d);
  const auto n = static_cast<size_t>(count);
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  auto a4 = hn::Zero(d), a5 = hn::Zero(d), a6 = hn::Zero(d), a7 = hn::Zero(d);
  size_t i = 0;
  for (; i + 8 * lanes <= n; i += 8 * lanes) {
    a0 = hn::Add(a0, hn::LoadU(d, p + i));
    a1 = hn::Add(a1, hn::LoadU(d, p + i + lanes));
    a2 = hn::Add(a2, hn::LoadU(d, p + i + 2 * lanes));
    a3 = hn::Add(a3, hn::LoadU(d, p + i + 3 * lanes));
    a4 = hn::Add(a4, hn::LoadU(d, p + i + 4 * lanes));
    a5 = hn::Add(a5, hn::LoadU(d, p + i + 5 * lanes));
    a6 = hn::Add(a6, hn::LoadU(d, p + i + 6 * lanes));
    a7 = hn::Add(a7, hn::LoadU(d, p + i + 7 * lanes));
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += p[i];
  const auto sum = hn::Add(hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)),
                           hn::Add(hn::Add(a4, a5), hn::Add(a6, a7)));
  return hn::GetLane(hn::SumOfLanes(d, sum)) + tail;
}

}  // namespace HWY_NAMESPACE
}  // namespace expertd::bench
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace expertd::bench {
namespace {

using kernels::ThreadPool;
using kernels::WeightMatrix;

HWY_EXPORT(SumFloats);

constexpr int64_t kBufferBytes = int64_t{512} << 20;
constexpr int64_t kDim = 16384;  // 16384 x 16384 bf16 = 512 MiB

// Buffers shared by all benchmarks, allocated and touched once in main.
struct Buffers {
  std::unique_ptr<float[]> floats;       // kBufferBytes of f32 (also an 8192 x 16384 f32 matrix)
  std::unique_ptr<uint16_t[]> bf16;      // kDim x kDim bf16
  // kDim x kDim elements in each of kBenchQuantTypes: the expert
  // benchmarks' matrices in those formats, the same count of them as in bf16.
  std::map<expertd::DType, std::unique_ptr<uint8_t[]>> quantised;
  std::vector<float> x;                  // 8 x kDim activations
  std::vector<float> y;                  // 8 x kDim outputs
};

void MemoryRead(benchmark::State& state, const Buffers* buffers) {
  ThreadPool pool(static_cast<int>(state.range(0)));
  const int64_t count = kBufferBytes / static_cast<int64_t>(sizeof(float));
  // 1 MiB blocks: coarse enough to stream, fine enough to balance threads.
  constexpr int64_t kBlock = (int64_t{1} << 20) / sizeof(float);
  const int64_t blocks = count / kBlock;
  std::vector<float> partial(static_cast<size_t>(blocks));
  for (auto _ : state) {
    pool.ParallelFor(blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        partial[static_cast<size_t>(b)] =
            HWY_DYNAMIC_DISPATCH(SumFloats)(buffers->floats.get() + b * kBlock, kBlock);
      }
    });
    benchmark::DoNotOptimize(partial.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * kBufferBytes);
}

WeightMatrix Bf16Matrix(const Buffers* buffers) {
  return WeightMatrix{DType::kBF16, buffers->bf16.get(), kDim, kDim};
}

WeightMatrix F32Matrix(const Buffers* buffers) {
  return WeightMatrix{DType::kF32, buffers->floats.get(),
                      kBufferBytes / static_cast<int64_t>(sizeof(float)) / kDim, kDim};
}

void MatVecBench(benchmark::State& state, const Buffers* buffers, DType dtype) {
  ThreadPool pool(static_cast<int>(state.range(0)));
  const WeightMatrix w = dtype == DType::kBF16 ? Bf16Matrix(buffers) : F32Matrix(buffers);
  auto* y = const_cast<float*>(buffers->y.data());
  for (auto _ : state) {
    kernels::MatVec(w, buffers->x.data(), y, &pool);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * w.size_bytes());
}

void MatMulBench(benchmark::State& state, const Buffers* buffers) {
  ThreadPool pool(static_cast<int>(state.range(0)));
  const int64_t batch = state.range(1);
  const WeightMatrix w = Bf16Matrix(buffers);
  auto* y = const_cast<float*>(buffers->y.data());
  for (auto _ : state) {
    kernels::MatMul(w, buffers->x.data(), batch, y, &pool);
    benchmark::ClobberMemory();
  }
  // Weight bytes per second; each weight is read once for the whole batch.
  state.SetBytesProcessed(state.iterations() * w.size_bytes());
  state.counters["GFLOP/s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * 2.0 * static_cast<double>(w.rows * w.cols) *
          static_cast<double>(batch) / 1e9,
      benchmark::Counter::kIsRate);
}

// Decode's real access pattern: many expert-sized matrices one after another
// (each a MatVec of its own, as a layer's routed experts are), each read from
// memory once. The 512 MiB bf16 buffer is cut into consecutive rows x cols
// matrices and one iteration runs MatVec over each of them in turn.
void ExpertMatVecBench(benchmark::State& state, const Buffers* buffers) {
  ThreadPool pool(static_cast<int>(state.range(0)));
  const int64_t rows = state.range(1), cols = state.range(2);
  const int64_t per_matrix = rows * cols;
  const int64_t matrices = kDim * kDim / per_matrix;
  auto* y = const_cast<float*>(buffers->y.data());
  for (auto _ : state) {
    for (int64_t m = 0; m < matrices; ++m) {
      const WeightMatrix w{DType::kBF16, buffers->bf16.get() + m * per_matrix, rows, cols};
      kernels::MatVec(w, buffers->x.data(), y, &pool);
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * matrices * per_matrix * 2);
}

// ExpertMatVecBench on GGML blocks: the same shapes and matrix count, the
// weights in Buffers::quantised; bytes are the quantised weight bytes.
void ExpertMatVecQuantBench(benchmark::State& state, const Buffers* buffers, DType dtype) {
  ThreadPool pool(static_cast<int>(state.range(0)));
  const int64_t rows = state.range(1), cols = state.range(2);
  const int64_t matrix_bytes = rows * DTypeBytes(dtype, cols);
  const int64_t matrices = kDim * kDim / (rows * cols);
  const uint8_t* base = buffers->quantised.at(dtype).get();
  auto* y = const_cast<float*>(buffers->y.data());
  for (auto _ : state) {
    for (int64_t m = 0; m < matrices; ++m) {
      const WeightMatrix w{dtype, base + m * matrix_bytes, rows, cols};
      kernels::MatVec(w, buffers->x.data(), y, &pool);
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * matrices * matrix_bytes);
}

constexpr DType kBenchQuantTypes[] = {DType::kQ8_0, DType::kQ4_0, DType::kQ4_K, DType::kQ6_K, DType::kMXFP4};

// The kernels' arithmetic speed apart from memory: one 256 x 2048 matrix
// (at most 1 MiB, cache-resident) on the calling thread, timed in that
// thread's CPU time, which other processes on a busy machine do not inflate.
// Every dtype, so the ratios say which formats are compute-bound.
void CachedMatVecBench(benchmark::State& state, DType dtype) {
  constexpr int64_t kRows = 256, kCols = 2048;
  std::vector<float> values(static_cast<size_t>(kRows * kCols));
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i % 29) * 0.01f - 0.14f;
  std::vector<uint8_t> weights(static_cast<size_t>(kRows * DTypeBytes(dtype, kCols)));
  for (int64_t r = 0; r < kRows; ++r) {
    kernels::QuantizeRow(dtype, values.data() + r * kCols, kCols, weights.data() + r * DTypeBytes(dtype, kCols));
  }
  const WeightMatrix w{dtype, weights.data(), kRows, kCols};
  std::vector<float> x(static_cast<size_t>(kCols), 0.5f), y(static_cast<size_t>(kRows));
  for (auto _ : state) {
    kernels::MatVec(w, x.data(), y.data(), nullptr);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * w.size_bytes());
  state.counters["Gelem/s"] = benchmark::Counter(static_cast<double>(state.iterations()) * kRows * kCols / 1e9,
                                                 benchmark::Counter::kIsRate);
}

// The quantised kernels at expert shapes, apart from memory: one rows x cols
// matrix (Q4_K 1024 x 2048 is 1.2 MB, Q6_K 1.7 MB: in L2 and L3) times
// `batch` activation rows (1: decode's MatVec; 4 and 8: batched decode and
// short prefills, MatMul) on the calling thread, in its CPU time. Its 16
// distinct rows are quantised once and repeated (the K-quant search over
// every row would take longer than the benchmark; the speed does not depend
// on the values).
void CachedQuantBench(benchmark::State& state, DType dtype) {
  const int64_t rows = state.range(0), cols = state.range(1), batch = state.range(2);
  constexpr int64_t kDistinct = 16;
  const int64_t row_bytes = DTypeBytes(dtype, cols);
  std::vector<float> values(static_cast<size_t>(kDistinct * cols));
  uint32_t seed = 777;
  for (float& v : values) {
    seed = seed * 1664525u + 1013904223u;
    v = (static_cast<float>(seed >> 8) / 16777216.0f - 0.5f) * 0.1f;
  }
  std::vector<uint8_t> weights(static_cast<size_t>(rows * row_bytes));
  kernels::QuantizeRow(dtype, values.data(), kDistinct * cols, weights.data());
  for (int64_t r = kDistinct; r < rows; ++r) {
    std::memcpy(weights.data() + r * row_bytes, weights.data() + (r % kDistinct) * row_bytes,
                static_cast<size_t>(row_bytes));
  }
  const WeightMatrix w{dtype, weights.data(), rows, cols};
  std::vector<float> x(static_cast<size_t>(batch * cols)), y(static_cast<size_t>(batch * rows));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 23) * 0.05f - 0.5f;
  for (auto _ : state) {
    if (batch == 1) {
      kernels::MatVec(w, x.data(), y.data(), nullptr);
    } else {
      kernels::MatMul(w, x.data(), batch, y.data(), nullptr);
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * w.size_bytes());
  state.counters["Gelem/s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * static_cast<double>(rows * cols * batch) / 1e9,
      benchmark::Counter::kIsRate);
}

// kDim x kDim elements of `dtype`: 1 Mi random-ish values quantised once
// (quantising all of them would take longer than the benchmarks) and their
// blocks repeated; the kernels' speed does not depend on the values.
std::unique_ptr<uint8_t[]> QuantisedBuffer(DType dtype) {
  constexpr int64_t kSample = int64_t{1} << 20;
  std::vector<float> values(static_cast<size_t>(kSample));
  uint32_t state = 12345;
  for (float& v : values) {
    state = state * 1664525u + 1013904223u;
    v = (static_cast<float>(state >> 8) / 16777216.0f - 0.5f) * 0.1f;
  }
  const int64_t sample_bytes = DTypeBytes(dtype, kSample);
  std::vector<uint8_t> sample(static_cast<size_t>(sample_bytes));
  kernels::QuantizeRow(dtype, values.data(), kSample, sample.data());
  const int64_t total = DTypeBytes(dtype, kDim * kDim);
  auto buffer = std::make_unique<uint8_t[]>(static_cast<size_t>(total));
  for (int64_t off = 0; off < total; off += sample_bytes) {
    std::memcpy(buffer.get() + off, sample.data(), static_cast<size_t>(std::min(sample_bytes, total - off)));
  }
  return buffer;
}

// Expert matrices of the supported families: gate/up [ffn][hidden] and
// down [hidden][ffn].
struct ExpertShape {
  const char* family;
  int64_t rows, cols;
};
constexpr ExpertShape kExpertShapes[] = {
    {"olmoe-1b-7b gate/up", 1024, 2048}, {"olmoe-1b-7b down", 2048, 1024},
    {"qwen3-30b-a3b gate/up", 768, 2048}, {"qwen3-30b-a3b down", 2048, 768},
    {"mixtral-8x7b gate/up", 14336, 4096}, {"mixtral-8x7b down", 4096, 14336},
    {"gpt-oss-20b gate/up/down", 2880, 2880},
};

// Remembers bytes_per_second of every run so main can print the ratio.
class RecordingReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.run_type != Run::RT_Iteration) continue;
      const auto it = run.counters.find("bytes_per_second");
      if (it == run.counters.end()) continue;
      // Best of the repetitions: other processes on a small machine only
      // ever make a pass slower, so the fastest is the least disturbed.
      double& best = bytes_per_second_[run.benchmark_name()];
      best = std::max(best, it->second.value);
    }
    ConsoleReporter::ReportRuns(runs);
  }

  // Best bytes/s of the benchmark whose name starts with `prefix`, or 0.
  double BytesPerSecond(const std::string& prefix) const {
    for (const auto& [name, value] : bytes_per_second_) {
      if (name.rfind(prefix, 0) == 0) return value;
    }
    return 0.0;
  }

 private:
  std::map<std::string, double> bytes_per_second_;
};

}  // namespace
}  // namespace expertd::bench

int main(int argc, char** argv) {
  using namespace expertd::bench;  // NOLINT: benchmark registration only
  // --simd-target NAME (or =NAME) is ours; the rest is Google Benchmark's.
  std::string simd_target;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--simd-target" && i + 1 < argc) {
      simd_target = argv[++i];
    } else if (arg.rfind("--simd-target=", 0) == 0) {
      simd_target = arg.substr(std::strlen("--simd-target="));
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (!simd_target.empty()) {
    if (const absl::Status s = expertd::kernels::RestrictSimdTarget(simd_target); !s.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
      return 1;
    }
  }
  std::printf("simd target: %s\n", expertd::kernels::SimdTargetName());

  Buffers buffers;
  const int64_t float_count = kBufferBytes / static_cast<int64_t>(sizeof(float));
  buffers.floats = std::make_unique<float[]>(static_cast<size_t>(float_count));
  buffers.bf16 = std::make_unique<uint16_t[]>(static_cast<size_t>(kDim * kDim));
  // Small non-zero values, written once so every page is resident before timing.
  for (int64_t i = 0; i < float_count; ++i) {
    buffers.floats[static_cast<size_t>(i)] = static_cast<float>(i % 17) * 0.01f - 0.08f;
  }
  for (int64_t i = 0; i < kDim * kDim; ++i) {
    buffers.bf16[static_cast<size_t>(i)] =
        expertd::kernels::F32ToBF16(static_cast<float>(i % 13) * 0.01f - 0.06f);
  }
  for (const expertd::DType dtype : kBenchQuantTypes) buffers.quantised[dtype] = QuantisedBuffer(dtype);
  buffers.x.resize(static_cast<size_t>(8 * kDim));
  for (size_t i = 0; i < buffers.x.size(); ++i) buffers.x[i] = static_cast<float>(i % 7) * 0.1f;
  buffers.y.resize(static_cast<size_t>(8 * kDim));

  const Buffers* b = &buffers;
  // Wall time, since the work also runs on the pool's worker threads.
  const auto configure = [](benchmark::internal::Benchmark* bm) {
    bm->UseRealTime()->Unit(benchmark::kMillisecond);
  };
  // Memory read and bf16 MatVec are registered in alternating rounds so both
  // see the same machine conditions; the ratio printed at the end uses the
  // best round of each.
  constexpr int kRounds = 3;
  for (int round = 0; round < kRounds; ++round) {
    for (const int threads : {1, 2}) {
      configure(benchmark::RegisterBenchmark("memory_read", MemoryRead, b)->Arg(threads));
      configure(benchmark::RegisterBenchmark("matvec_bf16", MatVecBench, b, expertd::DType::kBF16)
                    ->Arg(threads));
    }
  }
  for (const int threads : {1, 2}) {
    configure(benchmark::RegisterBenchmark("matvec_f32", MatVecBench, b, expertd::DType::kF32)
                  ->Arg(threads));
    configure(benchmark::RegisterBenchmark("matmul_bf16", MatMulBench, b)->Args({threads, 8}));
  }

  for (const expertd::DType dtype : expertd::kAllDTypes) {
    benchmark::RegisterBenchmark(("cached_matvec_" + std::string(expertd::DTypeName(dtype))).c_str(),
                                 CachedMatVecBench, dtype)
        ->Unit(benchmark::kMicrosecond);
  }

  constexpr int64_t kCachedQuantShapes[][2] = {{1024, 2048}, {2048, 1024}, {2880, 2880}};
  constexpr int64_t kCachedQuantBatches[] = {1, 4, 8};
  for (const expertd::DType dtype : kBenchQuantTypes) {
    for (const auto& shape : kCachedQuantShapes) {
      if (shape[1] % expertd::DTypeBlockElements(dtype) != 0) continue;  // 2880: 32-element blocks only
      for (const int64_t batch : kCachedQuantBatches) {
        benchmark::RegisterBenchmark(("cached_quant_" + std::string(expertd::DTypeName(dtype))).c_str(),
                                     CachedQuantBench, dtype)
            ->Args({shape[0], shape[1], batch})
            ->Unit(benchmark::kMicrosecond);
      }
    }
  }

  for (const int threads : {1, 2}) {
    for (const ExpertShape& shape : kExpertShapes) {
      configure(benchmark::RegisterBenchmark("expert_matvec_bf16", ExpertMatVecBench, b)
                    ->Args({threads, shape.rows, shape.cols}));
      for (const expertd::DType dtype : kBenchQuantTypes) {
        if (shape.cols % expertd::DTypeBlockElements(dtype) != 0) continue;
        configure(benchmark::RegisterBenchmark(("expert_matvec_" + std::string(expertd::DTypeName(dtype))).c_str(),
                                               ExpertMatVecQuantBench, b, dtype)
                      ->Args({threads, shape.rows, shape.cols}));
      }
    }
  }

  RecordingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  // Arithmetic alone (cache-resident, CPU time): elements per second.
  const double cached_bf16 = reporter.BytesPerSecond("cached_matvec_bf16") / 2;
  for (const expertd::DType dtype : expertd::kAllDTypes) {
    const std::string name(expertd::DTypeName(dtype));
    const double bytes = reporter.BytesPerSecond("cached_matvec_" + name);
    if (bytes <= 0 || cached_bf16 <= 0) continue;
    const double elements = bytes / (static_cast<double>(expertd::DTypeBlockBytes(dtype)) /
                                     static_cast<double>(expertd::DTypeBlockElements(dtype)));
    std::printf("cache-resident %s matvec (1 thread, CPU time): %.1f Gelem/s, %.1f GB/s of weights, %.2f x bf16\n",
                name.c_str(), elements / 1e9, bytes / 1e9, elements / cached_bf16);
  }

  // The quantised kernels' arithmetic at expert shapes (CPU time, 1 thread).
  for (const expertd::DType dtype : kBenchQuantTypes) {
    for (const auto& shape : kCachedQuantShapes) {
      if (shape[1] % expertd::DTypeBlockElements(dtype) != 0) continue;  // 2880: 32-element blocks only
      for (const int64_t batch : kCachedQuantBatches) {
        const std::string name(expertd::DTypeName(dtype));
        const double bytes = reporter.BytesPerSecond("cached_quant_" + name + "/" + std::to_string(shape[0]) + "/" +
                                                     std::to_string(shape[1]) + "/" + std::to_string(batch));
        if (bytes <= 0) continue;
        const double weights = static_cast<double>(shape[0] * expertd::DTypeBytes(dtype, shape[1]));
        std::printf("cache-resident %s %lldx%lld batch %lld (%s, 1 thread, CPU time): %.1f us, %.1f Gelem/s\n",
                    name.c_str(), static_cast<long long>(shape[0]), static_cast<long long>(shape[1]),
                    static_cast<long long>(batch), expertd::kernels::SimdTargetName(), weights / bytes * 1e6,
                    bytes / weights * static_cast<double>(shape[0] * shape[1] * batch) / 1e9);
      }
    }
  }

  // Quantised experts against bf16: weight GB/s, and the time of a MatVec
  // over the same shape as a fraction of bf16's (below 1 is faster).
  for (const int threads : {1, 2}) {
    const std::string suffix = "/" + std::to_string(threads) + "/";
    for (const ExpertShape& shape : kExpertShapes) {
      const std::string args = suffix + std::to_string(shape.rows) + "/" + std::to_string(shape.cols) + "/";
      const double bf16 = reporter.BytesPerSecond("expert_matvec_bf16" + args);
      if (bf16 <= 0) continue;
      const double bf16_seconds = static_cast<double>(shape.rows * shape.cols * 2) / bf16;
      for (const expertd::DType dtype : kBenchQuantTypes) {
        const std::string name(expertd::DTypeName(dtype));
        const double quant = reporter.BytesPerSecond("expert_matvec_" + name + args);
        if (quant <= 0) continue;
        const double seconds = static_cast<double>(shape.rows * expertd::DTypeBytes(dtype, shape.cols)) / quant;
        std::printf("expert-shaped %s matvec (%d threads), %s %lldx%lld: %.1f GB/s, time / bf16 time %.2f\n",
                    name.c_str(), threads, shape.family, static_cast<long long>(shape.rows),
                    static_cast<long long>(shape.cols), quant / 1e9, seconds / bf16_seconds);
      }
    }
  }

  for (const int threads : {1, 2}) {
    const std::string suffix = "/" + std::to_string(threads) + "/";
    const double memory = reporter.BytesPerSecond("memory_read" + suffix);
    if (memory <= 0) continue;
    const double matvec = reporter.BytesPerSecond("matvec_bf16" + suffix);
    if (matvec > 0) {
      std::printf("best of %d: memory read %.1f GB/s, bf16 matvec %.1f GB/s (%d threads)\n",
                  kRounds, memory / 1e9, matvec / 1e9, threads);
      std::printf("bf16 matvec / memory read bandwidth (%d threads): %.2f\n", threads,
                  matvec / memory);
    }
    for (const ExpertShape& shape : kExpertShapes) {
      const double expert = reporter.BytesPerSecond("expert_matvec_bf16" + suffix + std::to_string(shape.rows) +
                                                    "/" + std::to_string(shape.cols) + "/");
      if (expert <= 0) continue;
      std::printf("expert-shaped bf16 matvec / memory read (%d threads), %s %lldx%lld: %.1f GB/s, %.2f\n", threads,
                  shape.family, static_cast<long long>(shape.rows), static_cast<long long>(shape.cols),
                  expert / 1e9, expert / memory);
    }
  }
  return 0;
}
#endif  // HWY_ONCE
