// GPU bandwidth figures, all from one run so they compare directly:
//   1. plain cudaMemcpy host-to-device from cudaMallocHost memory (the link's
//      ceiling), one large copy at a time;
//   2. the VRAM tier's copy path (CudaDeviceTier::Copy: expert-sized copies
//      from cudaHostRegister'ed DRAM slots into slots of one device
//      allocation, on its copy stream, waiting on each slot's event);
//   3. the bf16 matrix-vector kernel's weight bandwidth (and batch 8), on
//      OLMoE-1B-7B-shaped matrices.
// Without a device it prints "no CUDA device" and exits 0.
//
//   gpu_bench [--copy-mib 256] [--expert-mib 12] [--slots 16] [--reps 20]

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "cache/cuda_device_tier.h"
#include "io/aligned_buffer.h"
#include "kernels/cpu/dtype.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/runtime.h"

namespace {

namespace kc = expertd::kernels::cuda;

#define BENCH_CHECK(expr)                                                    \
  do {                                                                       \
    const absl::Status bench_status = (expr);                                \
    if (!bench_status.ok()) {                                                \
      std::fprintf(stderr, "gpu_bench: %s\n", bench_status.ToString().c_str()); \
      return 1;                                                              \
    }                                                                        \
  } while (false)

#define BENCH_ASSIGN(lhs, expr)                                              \
  auto lhs##_or = (expr);                                                    \
  BENCH_CHECK(lhs##_or.status());                                            \
  auto lhs = std::move(*lhs##_or)

double GBps(double bytes, double seconds) { return bytes / seconds / 1e9; }

int PlainPinnedCopy(size_t bytes, int reps) {
  BENCH_ASSIGN(host, kc::PinnedHostBuffer::Allocate(bytes));
  BENCH_ASSIGN(device, kc::DeviceBuffer::Allocate(bytes));
  BENCH_ASSIGN(stream, kc::Stream::Create());
  BENCH_ASSIGN(start, kc::Event::Create(/*timing=*/true));
  BENCH_ASSIGN(stop, kc::Event::Create(/*timing=*/true));
  std::memset(host.data(), 1, bytes);
  BENCH_CHECK(kc::CudaStatus(cudaMemcpy(device.data(), host.data(), bytes, cudaMemcpyHostToDevice), "warm-up"));
  BENCH_CHECK(start.Record(stream.get()));
  for (int r = 0; r < reps; ++r) {
    BENCH_CHECK(kc::CudaStatus(
        cudaMemcpyAsync(device.data(), host.data(), bytes, cudaMemcpyHostToDevice, stream.get()), "copy"));
  }
  BENCH_CHECK(stop.Record(stream.get()));
  BENCH_CHECK(stop.Synchronize());
  BENCH_ASSIGN(ms, stop.MillisecondsSince(start));
  std::printf("plain pinned cudaMemcpy H2D: %zu MiB x %d: %.2f GB/s\n", bytes >> 20, reps,
              GBps(static_cast<double>(bytes) * reps, ms / 1e3));
  return 0;
}

int VramTierCopy(size_t slot_bytes, int slots, int reps) {
  BENCH_ASSIGN(tier, expertd::cache::CudaDeviceTier::Create());
  BENCH_ASSIGN(device_slots, tier->AllocateSlots(slots, slot_bytes));
  std::vector<expertd::io::AlignedBuffer> dram;
  std::vector<std::shared_ptr<void>> pins;
  for (int i = 0; i < slots; ++i) {
    BENCH_ASSIGN(buffer, expertd::io::AlignedBuffer::Allocate(slot_bytes));
    std::memset(buffer.data(), i, slot_bytes);
    BENCH_ASSIGN(pin, tier->PrepareHostSlot(buffer.data(), slot_bytes));
    dram.push_back(std::move(buffer));
    pins.push_back(std::move(pin));
  }
  auto copy_all = [&]() -> absl::Status {
    for (int i = 0; i < slots; ++i) {
      absl::Status s = tier->Copy(device_slots.base + static_cast<size_t>(i) * slot_bytes, dram[i].data(), slot_bytes);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  };
  BENCH_CHECK(copy_all());  // warm-up
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) BENCH_CHECK(copy_all());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("VRAM tier copy (%zu MiB experts, one at a time, pinned DRAM slots): %d copies: %.2f GB/s, %.1f us each\n",
              slot_bytes >> 20, slots * reps, GBps(static_cast<double>(slot_bytes) * slots * reps, seconds),
              seconds * 1e6 / (slots * reps));
  pins.clear();  // unregister before the buffers go
  return 0;
}

int MatVecBandwidth(int64_t rows, int64_t cols, int batch, int reps, const char* what) {
  const size_t weight_bytes = static_cast<size_t>(rows * cols) * 2;
  std::vector<uint16_t> w(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < w.size(); ++i) w[i] = expertd::kernels::F32ToBF16(static_cast<float>(i % 17) * 0.01f);
  std::vector<float> x(static_cast<size_t>(batch * cols), 0.5f);
  BENCH_ASSIGN(d_w, kc::DeviceBuffer::Allocate(weight_bytes));
  BENCH_ASSIGN(d_x, kc::DeviceBuffer::Allocate(x.size() * sizeof(float)));
  BENCH_ASSIGN(d_y, kc::DeviceBuffer::Allocate(static_cast<size_t>(batch * rows) * sizeof(float)));
  BENCH_CHECK(d_w.CopyFromHost(w.data(), weight_bytes));
  BENCH_CHECK(d_x.CopyFromHost(x.data(), x.size() * sizeof(float)));
  BENCH_ASSIGN(stream, kc::Stream::Create());
  BENCH_ASSIGN(start, kc::Event::Create(/*timing=*/true));
  BENCH_ASSIGN(stop, kc::Event::Create(/*timing=*/true));
  expertd::kernels::WeightMatrix matrix{
      .dtype = expertd::DType::kBF16, .data = d_w.data(), .rows = rows, .cols = cols};
  BENCH_CHECK(kc::MatMul(matrix, d_x.as<float>(), batch, d_y.as<float>(), stream.get()));  // warm-up
  BENCH_CHECK(start.Record(stream.get()));
  for (int r = 0; r < reps; ++r) BENCH_CHECK(kc::MatMul(matrix, d_x.as<float>(), batch, d_y.as<float>(), stream.get()));
  BENCH_CHECK(stop.Record(stream.get()));
  BENCH_CHECK(stop.Synchronize());
  BENCH_ASSIGN(ms, stop.MillisecondsSince(start));
  std::printf("bf16 %s %lldx%lld batch %d: %.1f us, %.1f GB/s of weights\n", what, static_cast<long long>(rows),
              static_cast<long long>(cols), batch, ms * 1e3 / reps, GBps(static_cast<double>(weight_bytes) * reps, ms / 1e3));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"GPU copy and kernel bandwidth"};
  int copy_mib = 256;
  int expert_mib = 12;  // OLMoE-1B-7B: 3 x 2048 x 1024 bf16
  int slots = 16;
  int reps = 20;
  app.add_option("--copy-mib", copy_mib, "size of the plain pinned copy");
  app.add_option("--expert-mib", expert_mib, "expert (slot) size for the VRAM tier copies");
  app.add_option("--slots", slots, "device slots copied round-robin");
  app.add_option("--reps", reps, "repetitions");
  CLI11_PARSE(app, argc, argv);

  std::string why_none;
  auto count = kc::CudaDeviceCount(&why_none);
  if (!count.ok()) {
    std::fprintf(stderr, "gpu_bench: %s\n", count.status().ToString().c_str());
    return 1;
  }
  if (*count == 0) {
    std::printf("no CUDA device: %s\n", why_none.c_str());
    return 0;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) std::printf("device 0: %s\n", prop.name);

  if (int rc = PlainPinnedCopy(static_cast<size_t>(copy_mib) << 20, reps); rc != 0) return rc;
  if (int rc = VramTierCopy(static_cast<size_t>(expert_mib) << 20, slots, reps); rc != 0) return rc;
  // OLMoE-1B-7B shapes: expert gate/up (1024x2048), down (2048x1024), and
  // the 50304x2048 output head as a large dense matrix.
  for (int batch : {1, 8}) {
    if (int rc = MatVecBandwidth(1024, 2048, batch, reps * 10, "expert up"); rc != 0) return rc;
    if (int rc = MatVecBandwidth(2048, 1024, batch, reps * 10, "expert down"); rc != 0) return rc;
    if (int rc = MatVecBandwidth(50304, 2048, batch, reps, "output head"); rc != 0) return rc;
  }
  return 0;
}
