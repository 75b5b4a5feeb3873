#include "cache/slot_tier.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace expertd::cache {

SlotTier::SlotTier(std::string name, std::unique_ptr<EvictionPolicy> policy, bool wrong_guesses_first)
    : name_(std::move(name)), policy_(std::move(policy)), wrong_guesses_first_(wrong_guesses_first) {
  stats_.policy = std::string(policy_->name());
}

Slot* SlotTier::Find(const ExpertKey& key) const {
  auto it = resident_.find(key);
  return it == resident_.end() ? nullptr : it->second;
}

Slot* SlotTier::FindReady(const ExpertKey& key) const {
  Slot* slot = Find(key);
  return slot != nullptr && slot->state == Slot::State::kReady ? slot : nullptr;
}

void SlotTier::AddSlot(std::unique_ptr<Slot> slot) {
  free_.push_back(slot.get());
  slots_.push_back(std::move(slot));
  stats_.slots = slot_count();
}

void SlotTier::DestroySlot(Slot* slot) {
  free_.erase(std::remove(free_.begin(), free_.end(), slot), free_.end());
  // A recycled guess may still be listed (guesses_ is pruned lazily).
  guesses_.erase(std::remove(guesses_.begin(), guesses_.end(), slot), guesses_.end());
  slots_.erase(std::find_if(slots_.begin(), slots_.end(), [&](const std::unique_ptr<Slot>& s) { return s.get() == slot; }));
  stats_.slots = slot_count();
}

Slot* SlotTier::TakeSlot(uint64_t pass) {
  if (!free_.empty()) {
    Slot* slot = free_.back();
    free_.pop_back();
    return slot;
  }
  Slot* slot = wrong_guesses_first_ ? TakeWrongGuess() : nullptr;
  if (slot == nullptr) {
    auto victim = policy_->PickVictim([&](const ExpertKey& key) { return Evictable(*resident_.at(key)); });
    if (!victim) return nullptr;
    slot = resident_.at(*victim);
  }
  Evict(slot, pass);
  return slot;
}

bool SlotTier::Evictable(const Slot& slot) {
  return slot.state == Slot::State::kReady && slot.pins == 0 && slot.copy_source == nullptr;
}

Slot* SlotTier::TakeWrongGuess() {
  Slot* found = nullptr;
  // Drops what is no longer an unclaimed prefetch while it looks.
  auto end = std::remove_if(guesses_.begin(), guesses_.end(), [&](Slot* s) {
    if (s->state == Slot::State::kFree || !s->prefetched) return true;
    if (found == nullptr && Evictable(*s) && s->guess.LayerRan(pass_, layer_)) {
      found = s;
      return true;
    }
    return false;
  });
  guesses_.erase(end, guesses_.end());
  if (found != nullptr) ++stats_.wrong_guesses_recycled;
  return found;
}

void SlotTier::Evict(Slot* slot, uint64_t pass) {
  const ExpertKey key = slot->key;
  resident_.erase(key);
  policy_->OnRemove(key);
  evicted_in_pass_[key] = pass;
  ++stats_.evictions;
  slot->state = Slot::State::kFree;
  slot->prefetched = false;
}

void SlotTier::ReturnSlot(Slot* slot) { free_.push_back(slot); }

void SlotTier::BeginFill(Slot* slot, const ExpertKey& key, bool prefetch) {
  slot->state = Slot::State::kLoading;
  slot->key = key;
  slot->load = std::make_shared<SlotLoad>();
  slot->load_start = std::chrono::steady_clock::now();
  slot->prefetched = prefetch;
  slot->unchecked = false;
  if (prefetch) {
    slot->guess = PrefetchGuess::Made(key.layer, pass_, layer_);
    guesses_.push_back(slot);
  }
  slot->ready = Readiness();
  resident_[key] = slot;
  policy_->OnInsert(key, prefetch);
  ++stats_.loads;
  if (prefetch) ++stats_.prefetches;
}

void SlotTier::FinishFill(Slot* slot, const absl::Status& status) {
  stats_.load_ns +=
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - slot->load_start).count();
  ++stats_.completed_loads;
  std::shared_ptr<SlotLoad> load = std::move(slot->load);
  load->done = true;
  load->status = status;
  if (status.ok()) {
    slot->state = Slot::State::kReady;
    return;
  }
  ++stats_.load_errors;
  Release(slot);
}

void SlotTier::Discard(Slot* slot) {
  ++stats_.load_errors;
  Release(slot);
}

void SlotTier::DropFill(Slot* slot) {
  std::shared_ptr<SlotLoad> load = std::move(slot->load);
  load->done = true;
  load->dropped = true;
  load->status = absl::CancelledError(
      absl::StrCat("the prefetch of ", slot->key.ToString(), " was cancelled: its layer ran without it"));
  ++stats_.prefetches_cancelled;
  Release(slot);
}

void SlotTier::Release(Slot* slot) {
  resident_.erase(slot->key);
  policy_->OnRemove(slot->key);
  slot->state = Slot::State::kFree;
  slot->prefetched = false;
  slot->fill_cancelled = false;
  slot->unchecked = false;
  free_.push_back(slot);
}

std::vector<Slot*> SlotTier::UnclaimedLoadingGuesses(uint64_t pass, int layer) const {
  std::vector<Slot*> found;
  for (Slot* slot : guesses_) {
    if (slot->state == Slot::State::kLoading && slot->prefetched && !slot->fill_cancelled &&
        slot->guess.pass == pass && slot->guess.layer == layer) {
      found.push_back(slot);
    }
  }
  return found;
}

void SlotTier::CountReady(Slot* slot) {
  if (std::exchange(slot->prefetched, false)) {
    ++stats_.hidden;
  } else {
    ++stats_.hits;
  }
}

void SlotTier::CountMiss(const ExpertKey& key, uint64_t pass) {
  ++stats_.misses;
  if (Slot* slot = Find(key)) {
    // Loading: the access joins the load in flight.
    ++stats_.shared_loads;
    if (std::exchange(slot->prefetched, false)) ++stats_.late_prefetches;
  }
  auto evicted = evicted_in_pass_.find(key);
  if (evicted != evicted_in_pass_.end() && evicted->second == pass) ++stats_.collision_misses;
}

bool SlotTier::WasAsked(const ExpertKey& key) const {
  return std::find(asked_.begin(), asked_.end(), key) != asked_.end();
}

bool SlotTier::TakeAsked(const ExpertKey& key) {
  auto it = std::find(asked_.begin(), asked_.end(), key);
  if (it == asked_.end()) return false;
  *it = asked_.back();
  asked_.pop_back();
  return true;
}

void SlotTier::BeginPass(uint64_t pass) {
  pass_ = pass;
  layer_ = -1;
  policy_->OnPassStart();
}

void SlotTier::BeginLayer(int layer) {
  layer_ = layer;
  asked_.clear();
  policy_->OnLayerStart(layer);
}

absl::Status SlotTier::CheckInvariants() const {
  auto fail = [&](absl::string_view what) {
    return absl::InternalError(absl::StrCat(name_, " tier invariant broken: ", what));
  };
  if (free_.size() + resident_.size() != slots_.size()) return fail("free + resident != slots");
  for (const Slot* slot : free_) {
    if (slot->state != Slot::State::kFree || slot->pins != 0 || slot->copy_source != nullptr) {
      return fail("a free slot is in use");
    }
  }
  for (const auto& [key, slot] : resident_) {
    if (slot->key != key) return fail("a slot holds another key than its map entry");
    if (slot->state == Slot::State::kFree) return fail("a resident slot is free");
    if ((slot->state == Slot::State::kLoading) != (slot->load != nullptr)) return fail("load/state mismatch");
    if (slot->pins < 0) return fail("negative pins");
    if (slot->state == Slot::State::kLoading && slot->pins != 0) return fail("a loading slot is pinned");
    if (slot->state == Slot::State::kReady && slot->unchecked && slot->pins != 0) {
      return fail("a slot is pinned before its bytes were checked");
    }
  }
  if (stats_.slots != slot_count()) return fail("slot count stat is stale");
  return absl::OkStatus();
}

}  // namespace expertd::cache
