#include "bench/expert_reads.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <numeric>
#include <random>

namespace expertd::bench {

std::vector<ExpertRead> SlotReads(const io::ExpertFile& file) {
  const io::ExpertFileLayout& layout = file.layout();
  std::vector<ExpertRead> reads;
  for (uint32_t layer = 0; layer < layout.num_layers; ++layer) {
    for (uint32_t e = 0; e < layout.num_experts; ++e) {
      auto extent = file.Find(static_cast<int>(layer), static_cast<int>(e));
      if (extent.ok()) reads.push_back({extent->offset, layout.slot_bytes()});
    }
  }
  return reads;
}

absl::Status GrowReadBuffers(std::vector<io::AlignedBuffer>& buffers, size_t count, uint64_t bytes) {
  while (buffers.size() < count) {
    absl::StatusOr<io::AlignedBuffer> buffer = io::AlignedBuffer::Allocate(bytes);
    if (!buffer.ok()) return buffer.status();
    buffers.push_back(std::move(*buffer));
  }
  return absl::OkStatus();
}

double MeasureExpertReads(io::ExpertReader& reader, const std::vector<ExpertRead>& reads,
                          std::vector<io::AlignedBuffer>& buffers, double seconds, std::string* error) {
  struct Run {
    std::mutex mu;
    std::condition_variable cv;
    int outstanding = 0;
    uint64_t bytes = 0;
    std::string error;
    std::mt19937_64 rng{42};
    std::chrono::steady_clock::time_point deadline;
  } run;
  run.deadline = std::chrono::steady_clock::now() +
                 std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(seconds));
  std::function<void(size_t)> submit_next;
  submit_next = [&](size_t slot) {
    const ExpertRead* read;
    {
      std::lock_guard<std::mutex> lock(run.mu);
      read = &reads[run.rng() % reads.size()];
    }
    reader.Submit(read->offset, read->length, buffers[slot].data(),
                  [&, slot, length = read->length](absl::Status status) {
                    bool again;
                    {
                      std::lock_guard<std::mutex> lock(run.mu);
                      if (status.ok()) {
                        run.bytes += length;
                      } else if (run.error.empty()) {
                        run.error = std::string(status.message());
                      }
                      again = status.ok() && std::chrono::steady_clock::now() < run.deadline;
                      if (!again && --run.outstanding == 0) run.cv.notify_all();
                    }
                    if (again) submit_next(slot);
                  });
  };
  const auto start = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(run.mu);
    run.outstanding = static_cast<int>(buffers.size());
  }
  for (size_t i = 0; i < buffers.size(); ++i) submit_next(i);
  std::unique_lock<std::mutex> lock(run.mu);
  run.cv.wait(lock, [&] { return run.outstanding == 0; });
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  *error = run.error;
  return static_cast<double>(run.bytes) / elapsed;
}

double MeasureBatchSeconds(io::ExpertReader& reader, const std::vector<ExpertRead>& reads, int experts_per_layer,
                           std::vector<io::AlignedBuffer>& buffers, int batch, double seconds, int min_batches,
                           std::string* error) {
  std::mutex mu;
  std::condition_variable cv;
  int outstanding = 0;
  std::mt19937_64 rng(7);
  std::vector<int> order(static_cast<size_t>(experts_per_layer));
  const size_t layers = reads.size() / static_cast<size_t>(experts_per_layer);
  double total = 0;
  int batches = 0;
  const auto start = std::chrono::steady_clock::now();
  while (error->empty() &&
         (batches < min_batches || std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() <
                                       seconds)) {
    // Chosen before the clock starts: the batch's time is the reads' alone.
    const size_t first = (rng() % layers) * static_cast<size_t>(experts_per_layer);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    const auto batch_start = std::chrono::steady_clock::now();
    {
      std::lock_guard<std::mutex> lock(mu);
      outstanding = batch;
    }
    for (int i = 0; i < batch; ++i) {
      const ExpertRead& read = reads[first + static_cast<size_t>(order[static_cast<size_t>(i)])];
      reader.Submit(read.offset, read.length, buffers[static_cast<size_t>(i)].data(), [&](absl::Status status) {
        std::lock_guard<std::mutex> lock(mu);
        if (!status.ok() && error->empty()) *error = std::string(status.message());
        if (--outstanding == 0) cv.notify_all();
      });
    }
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return outstanding == 0; });
    total += std::chrono::duration<double>(std::chrono::steady_clock::now() - batch_start).count();
    ++batches;
  }
  return batches > 0 ? total / batches : 0.0;
}

}  // namespace expertd::bench
