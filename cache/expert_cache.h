#ifndef EXPERTD_CACHE_EXPERT_CACHE_H_
#define EXPERTD_CACHE_EXPERT_CACHE_H_

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cache/eviction_policy.h"
#include "cache/expert_key.h"
#include "cache/readiness.h"
#include "cache/slot_tier.h"
#include "cache/tier_stats.h"
#include "io/aligned_buffer.h"
#include "io/expert_file.h"
#include "io/expert_reader.h"

namespace expertd::cache {

// Copies into the device tier that have completed so far (all threads), as
// the device copier times them: what execution placement weighs a copy's
// cost with. Zero where the copier does not time its copies (host memory).
struct DeviceCopyStats {
  uint64_t copies = 0;
  uint64_t bytes = 0;
  // Each copy's own time (CUDA: on the copy stream, between events recorded
  // before and after it, not its wait behind earlier copies), summed.
  uint64_t copy_ns = 0;
};

struct CacheStats {
  TierStats dram;
  TierStats device;  // slots == 0 without a device tier
  DeviceCopyStats device_copies;
  uint64_t passes = 0;

  // The tier compute reads experts from: the device tier when there is one.
  const TierStats& compute() const { return device.slots > 0 ? device : dram; }
};

// The device tier's backend: where device slots live, how DRAM slots are
// prepared for DMA, and the copy from a DRAM slot into a device slot. The
// host-memory stand-in (the default) carves device slots out of one host
// allocation and copies with memcpy; the CUDA tier (cache/cuda_device_tier.h)
// carves them out of one cudaMalloc, pins the DRAM slots and copies on a
// copy stream without waiting for it.
class DeviceCopier {
 public:
  // `count` slots of `slot_bytes` each, as one allocation (never one per
  // expert): slot i starts at base + i * slot_bytes. `owner` keeps the
  // allocation alive; each slot carved from it holds a reference, so the
  // memory goes when its last slot does (a shrink can free it).
  struct SlotMemory {
    std::byte* base = nullptr;
    std::shared_ptr<void> owner;
  };

  virtual ~DeviceCopier() = default;
  // Fills the device slot at device_dst; returns once its bytes are there.
  virtual absl::Status Copy(std::byte* device_dst, const std::byte* host_src, size_t bytes) = 0;
  // Starts filling the device slot at device_dst and returns without
  // waiting: the bytes are there once the returned readiness says so. The
  // cache keeps host_src unchanged (its DRAM slot pinned) and the device
  // slot alive until then, and never starts a second copy into a slot
  // before the first has completed. An error here means nothing was
  // started. Default: Copy, ready at once.
  virtual absl::StatusOr<Readiness> CopyAsync(std::byte* device_dst, const std::byte* host_src, size_t bytes);
  // Default: aligned host memory.
  virtual absl::StatusOr<SlotMemory> AllocateSlots(int count, size_t slot_bytes);
  // Called for every DRAM slot when it is created, with its memory; the
  // returned handle (may be null) is released before that memory is freed.
  // The CUDA tier pins the slot here (cudaHostRegister) so copies from it
  // are asynchronous DMA at full link speed. Default: nothing.
  virtual absl::StatusOr<std::shared_ptr<void>> PrepareHostSlot(std::byte* data, size_t bytes) {
    return std::shared_ptr<void>();
  }
  // The copies completed so far. Default: none timed.
  virtual DeviceCopyStats copy_stats() const { return {}; }
};
std::unique_ptr<DeviceCopier> MakeHostMemoryCopier();

struct ExpertCacheOptions {
  // A tier never gets more slots than the file has experts (every expert
  // resident): a larger budget is lowered to that, and logged. So is one
  // given to Resize.
  uint64_t dram_budget_bytes = 0;
  uint64_t device_budget_bytes = 0;  // 0: no device tier; DRAM is the compute tier
  std::string policy = "least-stale";
  PolicyOptions policy_options;      // num_layers / num_experts filled from the file
  // The fewest slots a tier may have: one layer's experts per token (k), so a
  // layer can always run. A smaller budget is a configuration error.
  int min_slots = 1;
  bool verify_checksums = true;
  std::unique_ptr<DeviceCopier> device_copier;  // default: host memory
  // With a device tier: StartLoad and Prefetch also bring the expert on
  // into the device tier (a copier thread does the copies), so predictions
  // land in the compute tier, as they do without a device tier.
  bool prefetch_to_device = true;
  // A tier recycles a wrong guess (a prefetched expert whose layer has run
  // without asking for it) before it asks its policy for a victim
  // (SlotTier::TakeSlot). false: the policy alone decides, as before.
  bool wrong_guesses_first = true;
};

// The tiered expert cache: NVMe file -> DRAM slots -> device slots. Every
// slot has one size (the file's slot_bytes, its widest bundle), so each tier
// is an array of equal slots: a SlotTier (cache/slot_tier.h) with its own
// policy and figures. A file of mixed precision per expert
// (engine/precision_plan.h) saves disk bytes, not slots: a miss reads only
// its bundle rounded up to the file's alignment (TierStats::bytes_read), but
// a q4 bundle still takes a whole slot sized for the widest; slots of
// several sizes are not done (io/FORMAT.md, "Why one slot size"). This class moves
// experts between the tiers (file reads into DRAM, copies into the device
// tier) and hands out pins.
//
// Slot states: free, loading, ready; a ready slot may be pinned (ref-counted)
// by compute. Loading and pinned slots are never victims. A load in flight is
// shared by every demand access and prefetch of that expert: no expert is
// read twice at once. A device fill does not wait for its copy: the slot is
// ready (pinnable) once the copy is started, and its pins carry the copy's
// readiness; until the copy is seen complete the slot is no victim and the
// DRAM slot it reads from stays pinned.
//
// All state, the tiers' included, is guarded by one mutex; reads complete
// on the reader's thread and hand over through it. (std::mutex rather than
// absl::Mutex: Debian's Abseil is not built for ThreadSanitizer, which then
// cannot see absl::Mutex and reports false races; the stress test runs under
// TSan in CI.)
class ExpertCache {
 public:
  // Keeps the expert's bundle in the compute tier alive while it exists.
  class Pin {
   public:
    Pin() = default;
    Pin(Pin&& other) noexcept;
    Pin& operator=(Pin&& other) noexcept;
    ~Pin();
    // In the tier's memory (device memory for a device tier): read it only
    // once readiness() says the bytes are there.
    const std::byte* data() const { return data_; }
    const ExpertKey& key() const { return key_; }
    // When data() holds the expert: at once for a DRAM slot; for a device
    // slot, once the copy that filled it has completed. Host readers Wait();
    // a device stream waits on its stream_event(). Valid while the pin is.
    const Readiness& readiness() const { return readiness_; }

   private:
    friend class ExpertCache;
    // Hands the slot's reference to the cache without unpinning it (a
    // device fill keeps its DRAM source pinned until its copy completes).
    Slot* Disown();
    ExpertCache* cache_ = nullptr;
    SlotTier* tier_ = nullptr;  // the tier holding slot_
    Slot* slot_ = nullptr;
    const std::byte* data_ = nullptr;
    ExpertKey key_;
    Readiness readiness_;
  };

  // file and reader must outlive the cache.
  static absl::StatusOr<std::unique_ptr<ExpertCache>> Create(const io::ExpertFile& file, io::ExpertReader& reader,
                                                             ExpertCacheOptions options);
  ~ExpertCache();  // waits for loads in flight

  // Demand access from compute: returns once the expert is ready in the
  // compute tier, loading it (and evicting) if needed. An I/O or checksum
  // error is returned to this caller and leaves the cache consistent.
  absl::StatusOr<Pin> Acquire(const ExpertKey& key);
  // Acquire without waiting: a pin when the expert is ready in the compute
  // tier now (a device copy may still be completing: see Pin::readiness) (counted as a demand hit, or hidden when a prefetch brought it),
  // else nullopt and nothing happens, so the caller can compute what is
  // ready first and Acquire the rest after.
  std::optional<Pin> TryAcquire(const ExpertKey& key);
  // TryAcquire in DRAM: a pin of the expert's host copy when it is ready
  // there (with a device tier, whether or not the device has it), else
  // nullopt. For computing an expert on the CPU instead of copying it to the
  // device (execution placement); counted as a DRAM hit.
  std::optional<Pin> TryAcquireHostCopy(const ExpertKey& key);
  // Whether DRAM holds the expert ready now: a pure query, like IsReady.
  bool HasHostCopy(const ExpertKey& key) const;
  // Whether the expert is ready in the compute tier now. A pure query: no
  // statistics, no policy event (Roster of Experts' cache-aware routing asks
  // it for every candidate expert).
  bool IsReady(const ExpertKey& key) const;
  // Fills in flight from the file, demand and prefetch (bounds prefetching).
  int reads_in_flight() const;
  // Starts loading key into DRAM unless it is resident or loading; never
  // waits. Dropped when no slot can be freed now. Returns whether a read
  // was issued.
  bool Prefetch(const ExpertKey& key) { return StartLoad(key, /*prefetch=*/true); }
  // As Prefetch, for compute that will Acquire the expert soon: issuing all
  // of a layer's missing experts at once reads them in parallel. Not counted
  // as a prefetch. With a device tier (and prefetch_to_device) the expert is
  // then copied on into it by the copier thread, unless no device slot can
  // be freed. Returns whether a read or a copy was started.
  //
  // With prefetch false this is compute asking for the expert: the access
  // is counted now, in every tier it passes through (a miss where the
  // expert is not ready; see TierStats), and the next Acquire of the key in
  // the same layer completes that access, adding only its stall. An expert
  // already ready in the compute tier is left for Acquire to count as a hit.
  bool StartLoad(const ExpertKey& key, bool prefetch);

  // Shallow-favouring residency (Fate): loads `keys` into the compute tier
  // and keeps them pinned for the cache's lifetime, so the first layers,
  // which run before any prediction can be made, never miss. Fails when
  // they would leave fewer than min_slots slots for everything else.
  absl::Status PinPermanently(absl::Span<const ExpertKey> keys);

  // The layer cycle, for the policies.
  void BeginPass();
  void BeginLayer(int layer);
  void OnRouterScores(int layer, absl::Span<const float> probabilities);
  // `layer` has asked for every expert it will use (its StartLoads are in):
  // the prefetches made for it that it did not ask for are wrong guesses,
  // and their reads that have not reached the disk are cancelled, so they
  // no longer take the disk from the misses (io::ReadClass). Their slots
  // return to the free list once the reads already at the disk are back
  // (TierStats::prefetches_cancelled). Without a device tier only: there a
  // prefetch goes on into the device by a copy that waits for its DRAM
  // load, and that path has not run on a GPU yet.
  void LayerRouted(int layer);

  // Changes the budgets live: growing adds slots, shrinking evicts (waiting
  // for pins and loads on the slots it must remove to be released). Each
  // budget is capped at every expert resident, as at Create.
  absl::Status Resize(uint64_t dram_budget_bytes, uint64_t device_budget_bytes);

  CacheStats stats() const;
  uint64_t slot_bytes() const { return slot_bytes_; }
  bool has_device_tier() const;
  // Checks every internal invariant (tests): map/slot agreement, pin counts,
  // free list, slot counts vs budget.
  absl::Status CheckInvariants() const;

 private:
  ExpertCache(const io::ExpertFile& file, io::ExpertReader& reader, std::unique_ptr<EvictionPolicy> dram_policy,
              bool wrong_guesses_first);
  // The tier compute reads from: the device tier when there is one.
  SlotTier& compute_tier() { return device_ ? *device_ : dram_; }
  const SlotTier& compute_tier() const { return device_ ? *device_ : dram_; }
  bool is_dram(const SlotTier& tier) const { return &tier == &dram_; }

  // "Locked" methods run with mu_ held; those given `lock` may wait on
  // changed_ (releasing it meanwhile).
  absl::StatusOr<Pin> AcquireIn(SlotTier& tier, const ExpertKey& key, bool demand);
  std::optional<Pin> TryAcquireLocked(SlotTier& tier, const ExpertKey& key);
  void Unpin(SlotTier& tier, Slot* slot);
  Pin PinLocked(SlotTier& tier, Slot* slot);
  // A slot of `tier` for a new fill, waiting while every slot is busy.
  Slot* ReserveSlotLocked(std::unique_lock<std::mutex>& lock, SlotTier& tier);
  absl::Status ResizeTierLocked(std::unique_lock<std::mutex>& lock, SlotTier& tier, int slots);
  // Fills a DRAM slot from the file; the reader's thread finishes it.
  // speculative: a prefetch's read, queued behind demand reads
  // (io::ReadClass) and tagged with its slot (ReadTag) for Promote and
  // CancelSpeculative.
  void StartFileReadLocked(Slot* slot, const ExpertKey& key, bool speculative);
  // A demand access found key's DRAM fill in flight: its reads go ahead of
  // the speculative ones still queued.
  void PromoteFillLocked(const Slot& slot);
  // Before a ready slot of `tier` is pinned: checks a prefetch's bytes
  // against the file's checksum at their first use (Slot::unchecked).
  // false when they differ: the slot is then discarded, to be read again.
  bool CheckedLocked(SlotTier& tier, Slot* slot);
  // The end of a file read started by StartFileReadLocked (status already
  // verified): figures, then the fill's end.
  void FinishFileRead(Slot* slot, const ExpertKey& key, const io::ExpertExtent& where, uint64_t read_bytes,
                      absl::Status status, bool checksum_failed);
  void FinishFileReadLocked(Slot* slot, const ExpertKey& key, const io::ExpertExtent& where, uint64_t read_bytes,
                            absl::Status status, bool checksum_failed);
  // Ends a fill in `tier` and wakes its waiters.
  void FinishFillLocked(SlotTier& tier, Slot* slot, const absl::Status& status);
  // Counts a demand access to key in each tier from the compute tier down,
  // as StartLoad(prefetch=false) does, and notes it for Acquire.
  void CountAskedLocked(const ExpertKey& key);
  // Brings key into DRAM (a demand access there when `demand`), starts its
  // copy into the device slot being filled, and finishes that fill without
  // waiting for the copy: the slot is ready with the copy's readiness, and
  // its DRAM source stays pinned until the copy completes. Releases the
  // lock meanwhile. Returns how the fill ended (its waiters see the same).
  absl::Status FillDeviceSlotLocked(std::unique_lock<std::mutex>& lock, Slot* slot, const ExpertKey& key,
                                    bool demand);
  // Releases the DRAM sources of device copies that have completed (and
  // forgets their fences: later pins are ready at once); whether any did.
  bool ReleaseFinishedCopiesLocked();
  // Waits, with the lock released, for the oldest pending copy, then
  // releases every finished one.
  void WaitForACopyLocked(std::unique_lock<std::mutex>& lock);
  // Queues key's copy into the device tier; whether it was queued.
  bool QueuePromotionLocked(const ExpertKey& key, bool prefetch);
  // The copier thread: device fills asked for by StartLoad.
  void PromoteLoop();
  absl::Status RegisterDramBuffersLocked(std::unique_lock<std::mutex>& lock);
  // The slots budget_bytes buys in `tier`, at most max_slots_ (logged when
  // it is lowered).
  int SlotsFor(const std::string& tier, uint64_t budget_bytes) const;

  const io::ExpertFile& file_;
  io::ExpertReader& reader_;
  uint64_t slot_bytes_ = 0;
  int min_slots_ = 1;
  int max_slots_ = 1;  // the file's experts (at least min_slots_): every expert resident
  bool verify_checksums_ = true;
  std::unique_ptr<DeviceCopier> copier_;

  // mu_ guards everything below it, the tiers' state included (a SlotTier
  // has no lock of its own).
  mutable std::mutex mu_;
  std::condition_variable changed_;  // a load finished, a pin was released, a slot freed
  // Declared after copier_, so they go before it (the CUDA tier's slot
  // memory must be freed while it exists).
  SlotTier dram_;
  std::unique_ptr<SlotTier> device_;  // null without a device tier
  uint64_t pass_ = 0;
  int file_reads_in_flight_ = 0;
  // When file_reads_in_flight_ last rose from 0: the open interval of
  // TierStats::read_busy_ns.
  std::chrono::steady_clock::time_point reads_busy_since_;
  std::vector<Pin> permanent_pins_;  // from PinPermanently; released first on destruction
  // Device slots whose copy had not completed when last looked at, oldest
  // first; each holds a pin on its copy_source. Looked at again at each
  // layer start, and whenever a tier has no slot to give.
  std::vector<Slot*> pending_copies_;
  bool prefetch_to_device_ = true;
  bool promoting_ = false;  // a copier thread runs (set before it starts)
  struct Promotion {
    ExpertKey key;
    bool prefetch = false;
  };
  std::deque<Promotion> promotions_;  // waiting for the copier thread
  bool stopping_ = false;
  std::thread promoter_;  // with a device tier and prefetch_to_device
};

}  // namespace expertd::cache

#endif  // EXPERTD_CACHE_EXPERT_CACHE_H_
