#ifndef EXPERTD_CACHE_SLOT_TIER_H_
#define EXPERTD_CACHE_SLOT_TIER_H_

// One tier of the expert cache (DRAM or device): an array of equal slots, its
// free list, the map of the experts it holds (loading or ready), its eviction
// policy and its figures. The tier knows nothing of where its bytes come from
// (file reads, device copies): ExpertCache (cache/expert_cache.h) fills slots
// and hands them out; the tier only keeps its own books consistent.
//
// Not thread-safe: the cache calls every method with its mutex held.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "cache/eviction_policy.h"
#include "cache/expert_key.h"
#include "cache/prefetch_guess.h"
#include "cache/readiness.h"
#include "cache/tier_stats.h"
#include "io/aligned_buffer.h"

namespace expertd::cache {

// The outcome of one fill, shared by everyone waiting for it.
struct SlotLoad {
  bool done = false;
  absl::Status status;
  // Ended by SlotTier::DropFill (a cancelled prefetch): not an error for
  // whoever joined it, who starts a load of their own instead.
  bool dropped = false;
};

// One slot of a tier.
//   free     on the free list, no key;
//   loading  in the map, `load` set, never pinned, never a victim;
//   ready    in the map; pinned while `pins` > 0, a victim only at 0 and
//            once its copy (below) has completed.
// A device slot is ready once its copy has been started: `ready` says when
// the bytes are there, and `copy_source`, the DRAM slot the copy reads from,
// stays pinned until then (the cache releases it when it sees the copy done).
struct Slot {
  enum class State { kFree, kLoading, kReady };
  std::byte* data = nullptr;  // the tier's slot_bytes
  // DRAM slots own their buffer (a shrink frees exactly what it removes);
  // device slots are carved from a shared allocation that `arena` keeps.
  io::AlignedBuffer memory;
  std::shared_ptr<void> arena;
  // The copier's preparation of a DRAM slot (CUDA: its host registration);
  // declared after `memory` so it is released first.
  std::shared_ptr<void> host_prepared;
  State state = State::kFree;
  ExpertKey key;
  int pins = 0;
  std::shared_ptr<SlotLoad> load;  // while loading
  std::chrono::steady_clock::time_point load_start;
  bool prefetched = false;  // filled by a prefetch and not yet asked for by compute
  bool fill_cancelled = false;  // while loading: its reads were cancelled (ExpertCache::LayerRouted)
  // DRAM: the fill is a prefetch's read, whose bytes are checked against the
  // file's checksum at their first use rather than as they land
  // (ExpertCache::CheckedLocked); never pinned until checked.
  bool unchecked = false;
  PrefetchGuess guess;  // while `prefetched`: the pass and layer it was for
  Readiness ready;             // the fill's copy (device slots); ready otherwise
  Slot* copy_source = nullptr;  // device slots: the DRAM slot a pending copy reads
};

class SlotTier {
 public:
  // wrong_guesses_first: TakeSlot recycles a prefetched expert whose layer
  // has run without asking for it before it asks the policy for a victim
  // (see TakeSlot).
  SlotTier(std::string name, std::unique_ptr<EvictionPolicy> policy, bool wrong_guesses_first = true);
  SlotTier(const SlotTier&) = delete;
  SlotTier& operator=(const SlotTier&) = delete;

  const std::string& name() const { return name_; }
  EvictionPolicy& policy() { return *policy_; }
  TierStats& stats() { return stats_; }
  const TierStats& stats() const { return stats_; }
  int slot_count() const { return static_cast<int>(slots_.size()); }
  // Every slot, in no particular order (registering DRAM buffers, preparing
  // them for DMA).
  const std::vector<std::unique_ptr<Slot>>& slots() const { return slots_; }

  // The slot holding key, loading or ready; null when the tier lacks it.
  Slot* Find(const ExpertKey& key) const;
  // The slot holding key ready; null when it lacks it or it is loading.
  Slot* FindReady(const ExpertKey& key) const;
  bool Holds(const ExpertKey& key) const { return Find(key) != nullptr; }

  // Adds a new, free slot (a growth).
  void AddSlot(std::unique_ptr<Slot> slot);
  // Destroys a slot that TakeSlot handed out and nobody filled (a shrink).
  void DestroySlot(Slot* slot);
  // A slot for a new fill: one off the free list, else a wrong guess (a
  // prefetched expert whose layer has run without asking for it), else the
  // policy's victim; victims are ready, unpinned slots with no copy pending
  // (evicted now: counted, remembered for collision misses in `pass`). Null
  // when every slot is loading or pinned. The slot is the caller's until
  // BeginFill, ReturnSlot or DestroySlot.
  //
  // Why wrong guesses go first: a prefetch inserts its expert as the most
  // recently used (or, for least-stale, a current) entry, so a policy keeps
  // a wrong guess for long and evicts something useful for it instead. With
  // a predictor of precision ~0.5 that cost about one hit per wrong guess
  // (bench/README.md, "Wrong guesses go first"). Recycling them first makes
  // the wrong half of the prefetches share a few slots among themselves.
  Slot* TakeSlot(uint64_t pass);
  // Gives back a slot from TakeSlot that was not filled.
  void ReturnSlot(Slot* slot);

  // Marks `slot` (from TakeSlot) loading `key`; the policy hears of the
  // insert. Counted as a load (and a prefetch when `prefetch`).
  void BeginFill(Slot* slot, const ExpertKey& key, bool prefetch);
  // Ends the fill of a loading slot: ready on success; on failure the key
  // leaves the tier and the slot goes back on the free list. Wakes no one:
  // the cache does, since waiters wait on its condition variable.
  void FinishFill(Slot* slot, const absl::Status& status);
  // Ends the fill of a loading slot whose reads were cancelled: the key
  // leaves the tier and the slot goes back on the free list, as a failed
  // fill does, but counted as a cancelled prefetch, not a load error.
  void DropFill(Slot* slot);
  // Removes a ready, unpinned slot whose bytes failed their check at first
  // use (Slot::unchecked): the key leaves the tier, the slot goes back on
  // the free list, counted as a load error.
  void Discard(Slot* slot);
  // The slots loading a prefetch for (pass, layer) that no demand access
  // has asked for and whose reads are not cancelled yet: the candidates
  // for ExpertCache::LayerRouted.
  std::vector<Slot*> UnclaimedLoadingGuesses(uint64_t pass, int layer) const;

  void Pin(Slot* slot) { ++slot->pins; }
  void Unpin(Slot* slot) { --slot->pins; }

  // Demand accounting (TierStats). A demand access that found `slot` ready:
  // hidden when an unclaimed prefetch brought it, else a hit.
  void CountReady(Slot* slot);
  // A demand access that did not find key ready in this tier (`pass` for
  // collision misses); joining a load in flight is a shared load, and a late
  // prefetch when a prefetch started it.
  void CountMiss(const ExpertKey& key, uint64_t pass);
  // The keys StartLoad(prefetch=false) counted in this layer and whose
  // Acquire has not come yet: NoteAsked adds one, WasAsked looks, TakeAsked
  // looks and forgets. A few per layer (the layer's misses), searched
  // linearly.
  void NoteAsked(const ExpertKey& key) { asked_.push_back(key); }
  bool WasAsked(const ExpertKey& key) const;
  bool TakeAsked(const ExpertKey& key);
  // A pass starts (its number, ascending), then each of its MoE layers: the
  // asked list is cleared (an access that never reached Acquire, an error,
  // cannot hide a later one) and the policy told.
  void BeginPass(uint64_t pass);
  void BeginLayer(int layer);

  // Map/slot agreement, pin counts, free list, slot count figure.
  absl::Status CheckInvariants() const;

 private:
  std::string name_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<Slot*> free_;
  absl::flat_hash_map<ExpertKey, Slot*> resident_;  // loading or ready
  std::unique_ptr<EvictionPolicy> policy_;
  // The pass in which each key was last evicted: a miss on a key evicted in
  // the current pass is a collision miss (SpecMD).
  absl::flat_hash_map<ExpertKey, uint64_t> evicted_in_pass_;
  std::vector<ExpertKey> asked_;
  TierStats stats_;
  // Where the engine is: (pass_, layer_), layer_ -1 before the pass's first
  // MoE layer.
  uint64_t pass_ = 0;
  int layer_ = -1;
  const bool wrong_guesses_first_;
  // Slots a prefetch filled, possibly stale (a claimed or recycled slot
  // stays until the next look): the candidates for a wrong guess.
  std::vector<Slot*> guesses_;
  static bool Evictable(const Slot& slot);
  // Takes a slot's key out of the tier (the policy hears) and puts the slot
  // on the free list: a fill that failed or was dropped, a discarded slot.
  void Release(Slot* slot);
  Slot* TakeWrongGuess();
  void Evict(Slot* slot, uint64_t pass);
};

}  // namespace expertd::cache

#endif  // EXPERTD_CACHE_SLOT_TIER_H_
