#ifndef EXPERTD_CACHE_TIER_STATS_H_
#define EXPERTD_CACHE_TIER_STATS_H_

#include <cstdint>
#include <string>

namespace expertd::cache {

// Figures of one tier since creation.
//
// Every demand access (compute asking for an expert) is counted once, when
// the layer asks for it (TryAcquire, StartLoad(prefetch=false) or Acquire,
// whichever comes first), as exactly one of
//   hit     ready in this tier, and not brought in by a prefetch since it
//           was last asked for;
//   hidden  ready in this tier because a prefetch brought it in: the miss
//           that prefetching hid;
//   miss    not ready: a demand load started, or the access joined a load in
//           flight (a late prefetch among them); wait_ns is its stall.
// A load that compute started itself is a miss even when it has finished by
// the time compute waits for it: counting it at Acquire instead made those
// loads hits (51% "hits" at 6 slots where no access ever found its expert
// ready).
struct TierStats {
  uint64_t hits = 0;              // demand accesses that found the expert ready (not by a prefetch)
  uint64_t hidden = 0;            // demand accesses that found it ready because a prefetch brought it
  uint64_t misses = 0;            // demand accesses that had to load or wait for a load
  uint64_t collision_misses = 0;  // misses on an expert evicted earlier in the same pass
  uint64_t shared_loads = 0;      // misses that joined a load already in flight
  uint64_t evictions = 0;
  uint64_t wrong_guesses_recycled = 0;  // evictions of a prefetch whose layer ran without it (SlotTier::TakeSlot)
  // Prefetch fills whose reads were cancelled before they all reached the
  // disk, their layer having routed without them (ExpertCache::LayerRouted):
  // not loads, not errors.
  uint64_t prefetches_cancelled = 0;
  uint64_t loads = 0;             // fills started (demand and prefetch)
  uint64_t prefetches = 0;        // fills started by Prefetch
  uint64_t bytes_loaded = 0;      // the loaded bundles' own bytes (their index lengths)
  // DRAM: bytes read from the expert file: each load's bundle rounded up to
  // the file's alignment, what O_DIRECT makes the disk deliver (a mixed
  // precision file's q4 bundles cost their own size, not its widest slot).
  uint64_t bytes_read = 0;
  uint64_t wait_ns = 0;           // stall: time the misses spent waiting for their fills
  uint64_t load_errors = 0;
  uint64_t checksum_failures = 0;  // loads whose bytes did not match the file's checksum (part of load_errors)
  // DRAM: bundle bytes hashed against the file's checksums: every demand
  // load's as it lands, a prefetch's only at its first use.
  uint64_t bytes_checked = 0;
  uint64_t load_ns = 0;           // summed duration of completed fills
  uint64_t completed_loads = 0;   // fills that finished, with or without error
  // DRAM: time with at least one file read in flight. Reads overlap (up to
  // the reader's queue depth), so load_ns / completed_loads, the latency of
  // one read, understates what the file delivers; bytes_loaded over this is
  // the throughput with loads overlapping (read_bytes_per_second()).
  uint64_t read_busy_ns = 0;
  uint64_t late_prefetches = 0;   // misses that found a prefetch of their expert still loading
  int slots = 0;
  std::string policy;

  uint64_t accesses() const { return hits + hidden + misses; }
  // Shares of accesses; hit_rate() + hidden_rate() + miss_rate() == 1.
  double hit_rate() const { return Share(hits); }
  double hidden_rate() const { return Share(hidden); }
  double miss_rate() const { return Share(misses); }
  // Of the accesses that would have missed without prefetch, the share that
  // prefetch made ready in time.
  double hidden_miss_share() const {
    return hidden + misses == 0 ? 0.0 : static_cast<double>(hidden) / (hidden + misses);
  }
  double mean_load_seconds() const { return completed_loads == 0 ? 0.0 : load_ns / 1e9 / completed_loads; }
  double read_bytes_per_second() const { return read_busy_ns == 0 ? 0.0 : bytes_loaded / (read_busy_ns / 1e9); }

 private:
  double Share(uint64_t n) const { return accesses() == 0 ? 0.0 : static_cast<double>(n) / accesses(); }
};

}  // namespace expertd::cache

#endif  // EXPERTD_CACHE_TIER_STATS_H_
