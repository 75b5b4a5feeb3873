#include "cache/cuda_device_tier.h"

#include <cuda_runtime_api.h>

#include <chrono>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace expertd::cache {

using kernels::cuda::CudaStatus;

// One cudaMalloc carved into `count` slots, with an event per slot.
struct CudaDeviceTier::Arena {
  CudaDeviceTier* owner = nullptr;
  kernels::cuda::DeviceBuffer memory;
  std::vector<kernels::cuda::Event> ready;  // one per slot
  size_t slot_bytes = 0;

  ~Arena() {
    if (owner != nullptr) owner->Forget(this);
  }
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
  arena->ready.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    auto event = kernels::cuda::Event::Create();
    if (!event.ok()) return event.status();
    arena->ready.push_back(std::move(*event));
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

absl::Status CudaDeviceTier::Copy(std::byte* device_dst, const std::byte* host_src, size_t bytes) {
  cudaEvent_t ready;
  {
    std::lock_guard lock(mu_);
    auto [arena, index] = FindLocked(device_dst);
    if (arena == nullptr || bytes > arena->slot_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("VRAM tier copy of ", bytes,
                                                     " bytes to an address outside its device slots"));
    }
    ready = arena->ready[index].get();
  }
  const auto start = std::chrono::steady_clock::now();
  // The cache calls Copy from whichever thread missed; the runtime's current
  // device is per thread.
  if (absl::Status s = CudaStatus(cudaSetDevice(device_), "cudaSetDevice"); !s.ok()) return s;
  if (absl::Status s = CudaStatus(cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice,
                                                  copy_stream_.get()),
                                  absl::StrCat("copying ", bytes, " bytes into VRAM"));
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CudaStatus(cudaEventRecord(ready, copy_stream_.get()), "cudaEventRecord"); !s.ok()) return s;
  // The DRAM slot stays pinned by the cache until we return, so the copy
  // must be complete: wait for this slot's event only, not the stream.
  if (absl::Status s = CudaStatus(cudaEventSynchronize(ready), "waiting for a VRAM copy"); !s.ok()) return s;
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
  std::lock_guard lock(mu_);
  ++stats_.copies;
  stats_.bytes += bytes;
  stats_.copy_ns += static_cast<uint64_t>(ns);
  return absl::OkStatus();
}

CudaCopyStats CudaDeviceTier::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

}  // namespace expertd::cache
