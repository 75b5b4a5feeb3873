#include "bench/expert_reads.h"

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
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

}  // namespace expertd::bench
