#ifndef EXPERTD_CACHE_READINESS_H_
#define EXPERTD_CACHE_READINESS_H_

// When a pinned slot's bytes are there. A device fill is a copy that the
// backend may still be doing when the cache hands the slot out: the pin
// carries the copy's completion instead of the cache blocking the host on it
// (the shape of RocksDB's tiered secondary cache, whose handles have IsReady
// and Wait). A consumer on the host calls Wait() before reading; one on a
// device stream waits on stream_event() there (CUDA: cudaStreamWaitEvent), so
// the host never blocks per expert.
//
// No CUDA type appears here: the backend's event is an opaque handle, so
// cache/ and its CPU-only users build without the CUDA headers.

#include <memory>
#include <utility>

#include "absl/status/status.h"

namespace expertd::cache {

class Readiness {
 public:
  // A backend's completion of one copy (the CUDA tier: the event recorded
  // on its copy stream after it). Shared by every pin of the slot.
  class Fence {
   public:
    virtual ~Fence() = default;
    // Whether the copy is done (with or without an error); never blocks.
    virtual bool IsReady() const = 0;
    // Blocks the calling thread until the copy has completed; its error, if
    // the copy failed after it was started.
    virtual absl::Status Wait() const = 0;
    // What a device stream can wait on (CUDA: the cudaEvent_t), or null
    // when the backend has none (then Wait on the host).
    virtual void* stream_event() const { return nullptr; }
  };

  // Ready now: resident weights, DRAM slots (a file read finishes before its
  // slot is handed out) and copies that completed at once.
  Readiness() = default;
  explicit Readiness(std::shared_ptr<const Fence> fence) : fence_(std::move(fence)) {}

  bool IsReady() const { return fence_ == nullptr || fence_->IsReady(); }
  absl::Status Wait() const { return fence_ == nullptr ? absl::OkStatus() : fence_->Wait(); }
  // Null when there is nothing to wait for on a stream: ready from the
  // start, or a backend without stream events (then Wait()).
  void* stream_event() const { return fence_ == nullptr ? nullptr : fence_->stream_event(); }

 private:
  std::shared_ptr<const Fence> fence_;
};

}  // namespace expertd::cache

#endif  // EXPERTD_CACHE_READINESS_H_
