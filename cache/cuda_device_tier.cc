#include "cache/cuda_device_tier.h"

#include <cuda_runtime_api.h>

#include <atomic>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace expertd::cache {

using kernels::cuda::CudaStatus;

// One cudaMalloc carved into `count` slots, with two events per slot around
// its latest copy (timing events: the copy's time is the span between them).
struct CudaDeviceTier::Arena : std::enable_shared_from_this<Arena> {
  CudaDeviceTier* owner = nullptr;
  kernels::cuda::DeviceBuffer memory;
  std::vector<kernels::cuda::Event> started;  // one per slot, before its copy
  std::vector<kernels::cuda::Event> ready;    // one per slot, after its copy
  size_t slot_bytes = 0;

  ~Arena() {
    if (owner != nullptr) owner->Forget(this);
  }
};

// The completion of one copy: the slot's `ready` event. The cache starts no
// other copy into the slot before it has seen this one complete, so the
// events are this copy's for as long as anyone asks. It keeps the arena (its
// events) alive, and counts the copy in the figures the first time it is
// seen complete.
class CudaDeviceTier::CopyFence : public Readiness::Fence {
 public:
  CopyFence(std::shared_ptr<Arena> arena, int slot, size_t bytes, std::shared_ptr<SharedStats> stats)
      : arena_(std::move(arena)), slot_(slot), bytes_(bytes), stats_(std::move(stats)) {}

  bool IsReady() const override {
    if (seen_.load(std::memory_order_acquire)) return true;
    const cudaError_t state = cudaEventQuery(event());
    if (state == cudaErrorNotReady) return false;
    Seen(state);
    return true;  // done, with or without an error (Wait reports it)
  }
  absl::Status Wait() const override {
    const cudaError_t state = cudaEventSynchronize(event());
    Seen(state);
    return CudaStatus(state, absl::StrCat("waiting for a VRAM copy of ", bytes_, " bytes"));
  }
  void* stream_event() const override { return event(); }

 private:
  cudaEvent_t event() const { return arena_->ready[slot_].get(); }
  void Seen(cudaError_t state) const {
    if (seen_.exchange(true, std::memory_order_acq_rel)) return;
    uint64_t ns = 0;
    if (state == cudaSuccess) {
      absl::StatusOr<float> ms = arena_->ready[slot_].MillisecondsSince(arena_->started[slot_]);
      if (ms.ok()) ns = static_cast<uint64_t>(static_cast<double>(*ms) * 1e6);
    }
    std::lock_guard lock(stats_->mu);
    ++stats_->stats.copies;
    stats_->stats.bytes += bytes_;
    stats_->stats.copy_ns += ns;
  }

  const std::shared_ptr<Arena> arena_;
  const int slot_;
  const size_t bytes_;
  const std::shared_ptr<SharedStats> stats_;
  mutable std::atomic<bool> seen_{false};  // the first to see it done counts it
};

absl::StatusOr<std::unique_ptr<CudaDeviceTier>> CudaDeviceTier::Create(int device) {
  std::string why_none;
  auto count = kernels::cuda::CudaDeviceCount(&why_none);
  if (!count.ok()) return count.status();
  if (*count == 0) return absl::FailedPreconditionError(absl::StrCat("no CUDA device for the VRAM tier: ", why_none));
  if (device < 0 || device >= *count) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA device ", device, " requested, ", *count, " present"));
  }
  if (absl::Status s = CudaStatus(cudaSetDevice(device), absl::StrCat("cudaSetDevice(", device, ")")); !s.ok()) {
    return s;
  }
  auto stream = kernels::cuda::Stream::Create();
  if (!stream.ok()) return stream.status();
  return std::unique_ptr<CudaDeviceTier>(new CudaDeviceTier(device, std::move(*stream)));
}

CudaDeviceTier::CudaDeviceTier(int device, kernels::cuda::Stream copy_stream)
    : device_(device), copy_stream_(std::move(copy_stream)) {}

CudaDeviceTier::~CudaDeviceTier() {
  (void)copy_stream_.Synchronize();
  std::lock_guard lock(mu_);
  // Arenas that outlive us (a caller keeping SlotMemory) must not call back.
  for (auto& [base, arena] : arenas_) arena->owner = nullptr;
}

absl::StatusOr<DeviceCopier::SlotMemory> CudaDeviceTier::AllocateSlots(int count, size_t slot_bytes) {
  if (count <= 0 || slot_bytes == 0) {
    return absl::InvalidArgumentError(absl::StrCat(count, " device slots of ", slot_bytes, " bytes"));
  }
  if (absl::Status s = CudaStatus(cudaSetDevice(device_), "cudaSetDevice"); !s.ok()) return s;
  auto arena = std::make_shared<Arena>();
  auto memory = kernels::cuda::DeviceBuffer::Allocate(static_cast<size_t>(count) * slot_bytes);
  if (!memory.ok()) return memory.status();
  arena->memory = std::move(*memory);
  arena->slot_bytes = slot_bytes;
  arena->started.reserve(static_cast<size_t>(count));
  arena->ready.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    auto started = kernels::cuda::Event::Create(/*timing=*/true);
    if (!started.ok()) return started.status();
    auto ready = kernels::cuda::Event::Create(/*timing=*/true);
    if (!ready.ok()) return ready.status();
    arena->started.push_back(std::move(*started));
    arena->ready.push_back(std::move(*ready));
  }
  SlotMemory out;
  out.base = arena->memory.as<std::byte>();
  {
    std::lock_guard lock(mu_);
    arena->owner = this;
    arenas_[out.base] = arena.get();
  }
  out.owner = std::move(arena);
  return out;
}

absl::StatusOr<std::shared_ptr<void>> CudaDeviceTier::PrepareHostSlot(std::byte* data, size_t bytes) {
  auto registration = kernels::cuda::HostRegistration::Register(data, bytes);
  if (!registration.ok()) {
    return absl::Status(registration.status().code(),
                        absl::StrCat("pinning a DRAM slot for the VRAM tier: ", registration.status().message()));
  }
  return std::shared_ptr<void>(std::make_shared<kernels::cuda::HostRegistration>(std::move(*registration)));
}

void CudaDeviceTier::Forget(Arena* arena) {
  std::lock_guard lock(mu_);
  for (auto it = arenas_.begin(); it != arenas_.end(); ++it) {
    if (it->second == arena) {
      arenas_.erase(it);
      return;
    }
  }
}

std::pair<CudaDeviceTier::Arena*, int> CudaDeviceTier::FindLocked(const std::byte* address) const {
  auto it = arenas_.upper_bound(address);
  if (it == arenas_.begin()) return {nullptr, -1};
  --it;
  Arena* arena = it->second;
  const size_t offset = static_cast<size_t>(address - it->first);
  const size_t index = offset / arena->slot_bytes;
  if (index >= arena->ready.size()) return {nullptr, -1};
  return {arena, static_cast<int>(index)};
}

cudaEvent_t CudaDeviceTier::ReadyEvent(const std::byte* device_slot) const {
  std::lock_guard lock(mu_);
  auto [arena, index] = FindLocked(device_slot);
  return arena == nullptr ? nullptr : arena->ready[index].get();
}

absl::StatusOr<Readiness> CudaDeviceTier::CopyAsync(std::byte* device_dst, const std::byte* host_src,
                                                    size_t bytes) {
  std::shared_ptr<Arena> arena;
  int index = -1;
  {
    std::lock_guard lock(mu_);
    auto [found, slot] = FindLocked(device_dst);
    // The slot being filled holds its arena, so it is alive here.
    if (found != nullptr && bytes <= found->slot_bytes) arena = found->weak_from_this().lock();
    index = slot;
  }
  if (arena == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("VRAM tier copy of ", bytes,
                                                   " bytes to an address outside its device slots"));
  }
  // The cache calls this from whichever thread missed; the runtime's current
  // device is per thread.
  if (absl::Status s = CudaStatus(cudaSetDevice(device_), "cudaSetDevice"); !s.ok()) return s;
  cudaStream_t stream = copy_stream_.get();
  if (absl::Status s = arena->started[index].Record(stream); !s.ok()) return s;
  if (absl::Status s = CudaStatus(cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, stream),
                                  absl::StrCat("copying ", bytes, " bytes into VRAM"));
      !s.ok()) {
    return s;
  }
  if (absl::Status s = arena->ready[index].Record(stream); !s.ok()) return s;
  // No wait here: the cache keeps the DRAM slot pinned until it sees the
  // event done, and compute waits for the event where it runs.
  return Readiness(std::make_shared<const CopyFence>(std::move(arena), index, bytes, stats_));
}

absl::Status CudaDeviceTier::Copy(std::byte* device_dst, const std::byte* host_src, size_t bytes) {
  absl::StatusOr<Readiness> ready = CopyAsync(device_dst, host_src, bytes);
  if (!ready.ok()) return ready.status();
  return ready->Wait();  // this slot's event only, not the stream
}

DeviceCopyStats CudaDeviceTier::copy_stats() const {
  std::lock_guard lock(stats_->mu);
  return stats_->stats;
}

}  // namespace expertd::cache
