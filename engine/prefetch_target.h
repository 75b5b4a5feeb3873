#ifndef EXPERTD_ENGINE_PREFETCH_TARGET_H_
#define EXPERTD_ENGINE_PREFETCH_TARGET_H_

#include <cstdint>

namespace expertd::engine {

// What the prefetcher (engine/prefetcher.h) may do to the expert store, and
// all it may read of it: start a read, count the reads in flight, and the
// running totals its per-layer budget is measured from. The cache glue
// (CachedExperts, engine/expert_source.h) implements it over the tiered
// cache; the prefetcher never sees the cache itself, so a test can give it
// a fake store and the cache can change shape behind it.
class PrefetchTarget {
 public:
  // Running totals since the store was created.
  struct Figures {
    uint64_t bytes_read = 0;    // from the expert file, demand and prefetch
    // Time with at least one file read in flight: reads overlap, so
    // bytes_read over this is the throughput a budget can spend.
    uint64_t read_busy_ns = 0;
    // Time compute stalled waiting for experts in the compute tier: the part
    // of a layer's time that was I/O, not compute.
    uint64_t compute_stall_ns = 0;
  };

  virtual ~PrefetchTarget() = default;
  // Starts reading the expert towards the compute tier unless it is there
  // or on its way; never waits. Whether a read was started.
  virtual bool StartPrefetch(int layer, int expert) = 0;
  // Reads from the file in flight now, demand and prefetch.
  virtual int reads_in_flight() const = 0;
  virtual Figures figures() const = 0;
  // The bytes one expert's read moves.
  virtual uint64_t expert_bytes() const = 0;
  // Experts the compute tier holds at once: the room a layer's own experts
  // and the predicted ones share.
  virtual int compute_slots() const = 0;
};

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_PREFETCH_TARGET_H_
