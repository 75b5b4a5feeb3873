#ifndef EXPERTD_CACHE_CUDA_DEVICE_TIER_H_
#define EXPERTD_CACHE_CUDA_DEVICE_TIER_H_

// The VRAM tier of the expert cache (built only with CUDA): device slots
// carved from one cudaMalloc per growth (no per-expert allocation), every
// DRAM slot pinned with cudaHostRegister (the same buffers io_uring reads
// into), and host-to-device copies on one dedicated copy stream, each slot
// with its own event. A copy is started and not waited for: the pin carries
// the slot's event (cache/readiness.h), so the compute stream waits for its
// expert's copy on the GPU (cudaStreamWaitEvent) and the host does not.

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "absl/status/statusor.h"
#include "cache/expert_cache.h"
#include "kernels/cuda/runtime.h"

namespace expertd::cache {

// Its copy figures (copy_stats) count a copy once it is seen complete: when
// the cache (or a reader) finds its event done; the cache looks at every
// copy before it reuses the slot, so each is counted once.
class CudaDeviceTier : public DeviceCopier {
 public:
  // Binds to `device` and creates the copy stream. Fails with
  // kFailedPrecondition when there is no driver or device.
  static absl::StatusOr<std::unique_ptr<CudaDeviceTier>> Create(int device = 0);
  ~CudaDeviceTier() override;

  // Enqueues the copy on the copy stream and records the slot's event after
  // it; the readiness is that event. host_src must be pinned (a prepared
  // DRAM slot) for the copy to be asynchronous DMA.
  absl::StatusOr<Readiness> CopyAsync(std::byte* device_dst, const std::byte* host_src, size_t bytes) override;
  // CopyAsync, then a host wait for that slot's event only.
  absl::Status Copy(std::byte* device_dst, const std::byte* host_src, size_t bytes) override;
  absl::StatusOr<SlotMemory> AllocateSlots(int count, size_t slot_bytes) override;
  absl::StatusOr<std::shared_ptr<void>> PrepareHostSlot(std::byte* data, size_t bytes) override;

  // The event recorded after the last copy into the slot at device_slot
  // (a pin's data()): a compute stream can cudaStreamWaitEvent on it instead
  // of a host wait. Null for an address outside every slot allocation.
  cudaEvent_t ReadyEvent(const std::byte* device_slot) const;
  cudaStream_t copy_stream() const { return copy_stream_.get(); }
  int device() const { return device_; }
  DeviceCopyStats copy_stats() const override;

  struct Arena;
  class CopyFence;
  // Copy figures, shared with the fences that add to them (which may be
  // looked at after the tier is gone).
  struct SharedStats {
    std::mutex mu;  // guards stats
    DeviceCopyStats stats;
  };

 private:
  CudaDeviceTier(int device, kernels::cuda::Stream copy_stream);
  // The arena holding `address` and the slot index within it; mu_ held.
  std::pair<Arena*, int> FindLocked(const std::byte* address) const;
  void Forget(Arena* arena);

  const int device_;
  kernels::cuda::Stream copy_stream_;

  mutable std::mutex mu_;  // guards arenas_
  // Live slot allocations by base address. Arenas remove themselves on
  // destruction, which the cache guarantees happens before ours (its tiers
  // are destroyed before its copier).
  std::map<const std::byte*, Arena*> arenas_;
  std::shared_ptr<SharedStats> stats_ = std::make_shared<SharedStats>();
};

}  // namespace expertd::cache

#endif  // EXPERTD_CACHE_CUDA_DEVICE_TIER_H_
