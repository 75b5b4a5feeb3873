#include "cache/expert_cache.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/byte_size.h"
#include "spdlog/spdlog.h"

namespace expertd::cache {
namespace {

class HostMemoryCopier : public DeviceCopier {
 public:
  absl::Status Copy(std::byte* device_dst, const std::byte* host_src, size_t bytes) override {
    std::memcpy(device_dst, host_src, bytes);
    return absl::OkStatus();
  }
};

constexpr int kDram = 0;
constexpr int kDevice = 1;

}  // namespace

std::unique_ptr<DeviceCopier> MakeHostMemoryCopier() { return std::make_unique<HostMemoryCopier>(); }

absl::StatusOr<DeviceCopier::SlotMemory> DeviceCopier::AllocateSlots(int count, size_t slot_bytes) {
  auto buffer = io::AlignedBuffer::Allocate(static_cast<size_t>(count) * slot_bytes);
  if (!buffer.ok()) return buffer.status();
  auto owner = std::make_shared<io::AlignedBuffer>(std::move(*buffer));
  SlotMemory memory;
  memory.base = owner->data();
  memory.owner = std::move(owner);
  return memory;
}

// The outcome of one fill, shared by everyone waiting for it.
struct ExpertCache::Load {
  bool done = false;
  absl::Status status;
};

struct ExpertCache::Slot {
  enum class State { kFree, kLoading, kReady };
  std::byte* data = nullptr;  // slot_bytes_ bytes
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
  std::shared_ptr<Load> load;  // while loading
  std::chrono::steady_clock::time_point load_start;
  bool prefetched = false;  // filled by Prefetch and not yet asked for by compute
};

struct ExpertCache::Tier {
  std::string name;
  std::vector<std::unique_ptr<Slot>> slots;
  std::vector<Slot*> free;
  absl::flat_hash_map<ExpertKey, Slot*> resident;  // loading or ready
  std::unique_ptr<EvictionPolicy> policy;
  // The pass in which each key was last evicted: a miss on a key evicted in
  // the current pass is a collision miss (SpecMD).
  absl::flat_hash_map<ExpertKey, uint64_t> evicted_in_pass;
  // Keys whose demand access StartLoad(prefetch=false) has counted in this
  // tier and whose Acquire has not come yet. A few per layer (the layer's
  // misses), searched linearly; cleared at each layer start, so an access
  // that never reached Acquire (an error) cannot hide a later one.
  std::vector<ExpertKey> asked;
  TierStats stats;
};

ExpertCache::Pin::Pin(Pin&& other) noexcept { *this = std::move(other); }

ExpertCache::Pin& ExpertCache::Pin::operator=(Pin&& other) noexcept {
  if (this != &other) {
    if (cache_ != nullptr) cache_->Unpin(tier_, static_cast<Slot*>(slot_));
    cache_ = std::exchange(other.cache_, nullptr);
    slot_ = std::exchange(other.slot_, nullptr);
    tier_ = other.tier_;
    data_ = std::exchange(other.data_, nullptr);
    key_ = other.key_;
  }
  return *this;
}

ExpertCache::Pin::~Pin() {
  if (cache_ != nullptr) cache_->Unpin(tier_, static_cast<Slot*>(slot_));
}

ExpertCache::ExpertCache(const io::ExpertFile& file, io::ExpertReader& reader) : file_(file), reader_(reader) {}

int ExpertCache::SlotsFor(const std::string& tier, uint64_t budget_bytes) const {
  const uint64_t slots = budget_bytes / slot_bytes_;
  if (slots <= static_cast<uint64_t>(max_slots_)) return static_cast<int>(slots);
  // A slot beyond one per expert could never be filled: allocating it (and
  // registering it with io_uring) would only waste memory.
  const uint64_t capped_bytes = static_cast<uint64_t>(max_slots_) * slot_bytes_;
  spdlog::info("{} budget of {} ({} bytes) is more than the {} experts of {} take; using {} ({} bytes): every "
               "expert resident",
               tier, FormatByteSize(budget_bytes), budget_bytes, max_slots_, file_.path(),
               FormatByteSize(capped_bytes), capped_bytes);
  return max_slots_;
}

absl::StatusOr<std::unique_ptr<ExpertCache>> ExpertCache::Create(const io::ExpertFile& file, io::ExpertReader& reader,
                                                                  ExpertCacheOptions options) {
  auto cache = std::unique_ptr<ExpertCache>(new ExpertCache(file, reader));
  cache->slot_bytes_ = file.layout().slot_bytes();
  cache->min_slots_ = std::max(1, options.min_slots);
  cache->verify_checksums_ = options.verify_checksums;
  cache->prefetch_to_device_ = options.prefetch_to_device;
  cache->copier_ = options.device_copier ? std::move(options.device_copier) : MakeHostMemoryCopier();
  options.policy_options.num_layers = static_cast<int>(file.layout().num_layers);
  options.policy_options.num_experts = static_cast<int>(file.layout().num_experts);
  // Dense layers have no experts in the file: count what is there.
  int experts = 0;
  for (int layer = 0; layer < options.policy_options.num_layers; ++layer) {
    for (int e = 0; e < options.policy_options.num_experts; ++e) experts += file.Find(layer, e).ok() ? 1 : 0;
  }
  cache->max_slots_ = std::max(experts, cache->min_slots_);

  const uint64_t budgets[2] = {options.dram_budget_bytes, options.device_budget_bytes};
  const char* names[2] = {"dram", "device"};
  std::unique_lock lock(cache->mu_);
  for (int t = 0; t < 2; ++t) {
    if (t == kDevice && budgets[t] == 0) break;
    const int slots = cache->SlotsFor(names[t], budgets[t]);
    if (slots < cache->min_slots_) {
      return absl::InvalidArgumentError(absl::StrCat(
          names[t], " budget of ", budgets[t], " bytes holds ", slots, " experts of ", cache->slot_bytes_,
          " bytes, fewer than the ", cache->min_slots_, " one layer needs (its top-k); raise it to at least ",
          static_cast<uint64_t>(cache->min_slots_) * cache->slot_bytes_, " bytes"));
    }
    auto tier = std::make_unique<Tier>();
    tier->name = names[t];
    auto policy = MakeEvictionPolicy(options.policy, options.policy_options);
    if (!policy.ok()) return policy.status();
    tier->policy = std::move(*policy);
    tier->stats.policy = std::string(tier->policy->name());
    cache->tiers_.push_back(std::move(tier));
    if (absl::Status s = cache->ResizeTierLocked(lock, *cache->tiers_.back(), slots); !s.ok()) return s;
  }
  if (cache->tiers_.size() > 1) {
    // The DRAM slots were made before the device tier existed.
    for (auto& slot : cache->tiers_[kDram]->slots) {
      auto prepared = cache->copier_->PrepareHostSlot(slot->data, cache->slot_bytes_);
      if (!prepared.ok()) return prepared.status();
      slot->host_prepared = std::move(*prepared);
    }
  }
  if (absl::Status s = cache->RegisterDramBuffersLocked(lock); !s.ok()) return s;
  cache->promoting_ = cache->tiers_.size() > 1 && cache->prefetch_to_device_;
  const bool promote = cache->promoting_;
  lock.unlock();
  if (promote) cache->promoter_ = std::thread([raw = cache.get()] { raw->PromoteLoop(); });
  return cache;
}

ExpertCache::~ExpertCache() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    promotions_.clear();
    changed_.notify_all();
  }
  if (promoter_.joinable()) promoter_.join();  // finishes the copy it is in
  permanent_pins_.clear();
  std::unique_lock lock(mu_);
  // Reads in flight write into our slots and call back into us.
  changed_.wait(lock, [&] { return file_reads_in_flight_ == 0; });
}

bool ExpertCache::has_device_tier() const {
  std::lock_guard lock(mu_);
  return tiers_.size() > 1;
}

absl::Status ExpertCache::RegisterDramBuffersLocked(std::unique_lock<std::mutex>& lock) {
  changed_.wait(lock, [&] { return file_reads_in_flight_ == 0; });
  std::vector<iovec> buffers;
  for (const auto& slot : tiers_[kDram]->slots) buffers.push_back({slot->data, slot_bytes_});
  absl::Status status = reader_.RegisterBuffers(buffers);
  if (!status.ok()) {
    // The reader names the limit; the budget is what the user can change.
    return absl::Status(status.code(),
                        absl::StrCat("the dram budget of ", buffers.size(), " slots of ", slot_bytes_,
                                     " bytes cannot be registered for reads: ", status.message()));
  }
  return status;
}

absl::Status ExpertCache::ResizeTierLocked(std::unique_lock<std::mutex>& lock, Tier& tier, int target) {
  const bool device = &tier != tiers_[kDram].get();
  if (device && static_cast<int>(tier.slots.size()) < target) {
    // Every slot a growth adds comes from one allocation.
    const int count = target - static_cast<int>(tier.slots.size());
    auto memory = copier_->AllocateSlots(count, slot_bytes_);
    if (!memory.ok()) {
      return absl::Status(memory.status().code(), absl::StrCat("allocating ", count, " device slots of ", slot_bytes_,
                                                               " bytes: ", memory.status().message()));
    }
    for (int i = 0; i < count; ++i) {
      auto slot = std::make_unique<Slot>();
      slot->data = memory->base + static_cast<size_t>(i) * slot_bytes_;
      slot->arena = memory->owner;
      tier.free.push_back(slot.get());
      tier.slots.push_back(std::move(slot));
    }
  }
  while (static_cast<int>(tier.slots.size()) < target) {
    auto memory = io::AlignedBuffer::Allocate(slot_bytes_);
    if (!memory.ok()) return memory.status();
    auto slot = std::make_unique<Slot>();
    slot->memory = std::move(*memory);
    slot->data = slot->memory.data();
    if (tiers_.size() > 1) {
      auto prepared = copier_->PrepareHostSlot(slot->data, slot_bytes_);
      if (!prepared.ok()) return prepared.status();
      slot->host_prepared = std::move(*prepared);
    }
    tier.free.push_back(slot.get());
    tier.slots.push_back(std::move(slot));
  }
  while (static_cast<int>(tier.slots.size()) > target) {
    Slot* victim = ReserveSlotLocked(lock, tier);  // frees one slot, waiting if every slot is busy
    tier.free.erase(std::remove(tier.free.begin(), tier.free.end(), victim), tier.free.end());
    tier.slots.erase(std::find_if(tier.slots.begin(), tier.slots.end(),
                                  [&](const std::unique_ptr<Slot>& s) { return s.get() == victim; }));
  }
  tier.stats.slots = static_cast<int>(tier.slots.size());
  return absl::OkStatus();
}

// A free slot taken off the free list, else the policy's victim evicted, else
// null when every slot is loading or pinned.
ExpertCache::Slot* ExpertCache::TakeFreeSlotLocked(Tier& tier) {
  if (!tier.free.empty()) {
    Slot* slot = tier.free.back();
    tier.free.pop_back();
    return slot;
  }
  auto victim = tier.policy->PickVictim([&](const ExpertKey& key) {
    auto it = tier.resident.find(key);
    return it != tier.resident.end() && it->second->state == Slot::State::kReady && it->second->pins == 0;
  });
  if (!victim) return nullptr;
  Slot* slot = tier.resident.at(*victim);
  tier.resident.erase(*victim);
  tier.policy->OnRemove(*victim);
  tier.evicted_in_pass[*victim] = pass_;
  ++tier.stats.evictions;
  slot->state = Slot::State::kFree;
  return slot;
}

// As TakeFreeSlotLocked, waiting while every slot is busy.
ExpertCache::Slot* ExpertCache::ReserveSlotLocked(std::unique_lock<std::mutex>& lock, Tier& tier) {
  while (true) {
    if (Slot* slot = TakeFreeSlotLocked(tier)) return slot;
    changed_.wait(lock);
  }
}

void ExpertCache::BeginFillLocked(Tier& tier, Slot* slot, const ExpertKey& key, bool prefetch) {
  slot->state = Slot::State::kLoading;
  slot->key = key;
  slot->load = std::make_shared<Load>();
  slot->load_start = std::chrono::steady_clock::now();
  slot->prefetched = prefetch;
  tier.resident[key] = slot;
  tier.policy->OnInsert(key, prefetch);
  ++tier.stats.loads;
  if (prefetch) ++tier.stats.prefetches;
}

void ExpertCache::StartFileReadLocked(Tier& tier, Slot* slot, const ExpertKey& key) {
  auto extent = file_.Find(key.layer, key.expert);
  if (!extent.ok()) {
    FinishLoadLocked(tier, slot, extent.status());
    return;
  }
  if (file_reads_in_flight_++ == 0) reads_busy_since_ = std::chrono::steady_clock::now();
  const ExpertKey k = key;
  const io::ExpertExtent where = *extent;
  // The file pads every bundle to a whole slot, so the read is slot-sized
  // and aligned for O_DIRECT.
  reader_.Submit(where.offset, slot_bytes_, slot->data, [this, slot, k, where](absl::Status status) {
    bool checksum_failed = false;
    if (status.ok() && verify_checksums_) {
      status = file_.Verify(k.layer, k.expert, absl::MakeConstSpan(slot->data, where.length));
      checksum_failed = !status.ok();
    }
    if (!status.ok()) {
      status = absl::Status(status.code(), absl::StrCat("loading ", k.ToString(), ": ", status.message()));
    }
    std::lock_guard lock(mu_);
    Tier& dram = *tiers_[kDram];
    if (--file_reads_in_flight_ == 0) {
      dram.stats.read_busy_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::steady_clock::now() - reads_busy_since_).count();
    }
    if (status.ok()) dram.stats.bytes_loaded += where.length;
    if (checksum_failed) ++dram.stats.checksum_failures;
    FinishLoadLocked(dram, slot, status);
  });
}

void ExpertCache::FinishLoadLocked(Tier& tier, Slot* slot, const absl::Status& status) {
  tier.stats.load_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() -
                                                                            slot->load_start).count();
  ++tier.stats.completed_loads;
  std::shared_ptr<Load> load = std::move(slot->load);
  load->done = true;
  load->status = status;
  if (status.ok()) {
    slot->state = Slot::State::kReady;
  } else {
    ++tier.stats.load_errors;
    tier.resident.erase(slot->key);
    tier.policy->OnRemove(slot->key);
    slot->state = Slot::State::kFree;
    tier.free.push_back(slot);
  }
  changed_.notify_all();
}

ExpertCache::Pin ExpertCache::PinLocked(int tier_index, Slot* slot) {
  ++slot->pins;
  Pin pin;
  pin.cache_ = this;
  pin.slot_ = slot;
  pin.tier_ = tier_index;
  pin.data_ = slot->data;
  pin.key_ = slot->key;
  return pin;
}

absl::StatusOr<ExpertCache::Pin> ExpertCache::Acquire(const ExpertKey& key) {
  // An expert the file lacks fails its read at once, before any waiter
  // could see the load: refuse it here, or the miss loop would retry it
  // forever.
  if (absl::StatusOr<io::ExpertExtent> extent = file_.Find(key.layer, key.expert); !extent.ok()) {
    return extent.status();
  }
  int tier_index;
  {
    std::lock_guard lock(mu_);
    tier_index = static_cast<int>(tiers_.size()) - 1;
  }
  return AcquireInTier(tier_index, key, /*demand=*/true);
}

absl::StatusOr<ExpertCache::Pin> ExpertCache::AcquireInTier(int tier_index, const ExpertKey& key, bool demand) {
  const auto start = std::chrono::steady_clock::now();
  std::unique_lock lock(mu_);
  Tier& tier = *tiers_[tier_index];
  if (demand) tier.policy->OnAccess(key);
  // counted: this access is in the figures already (StartLoad counted it as
  // a miss, or we have); missed: this call found the expert not ready.
  bool counted = !demand || TakeAskedLocked(tier, key);
  const bool asked = demand && counted;
  bool missed = false;
  while (true) {
    auto it = tier.resident.find(key);
    if (it != tier.resident.end() && it->second->state == Slot::State::kReady) {
      Slot* slot = it->second;
      // The policy hears of a use the same way whether or not StartLoad
      // counted it: accounting must not change what gets evicted.
      if (demand && !missed) tier.policy->OnHit(key);
      if (!counted) CountReadyLocked(tier, slot);
      if (demand && (missed || asked)) {
        tier.stats.wait_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(
                                  std::chrono::steady_clock::now() - start).count();
      }
      return PinLocked(tier_index, slot);
    }
    if (!counted) {
      CountMissLocked(tier, key);
      counted = true;
    }
    missed = true;
    if (it != tier.resident.end()) {
      // Loading: join the load in flight.
      std::shared_ptr<Load> load = it->second->load;
      changed_.wait(lock, [&] { return load->done; });
      if (!load->status.ok()) return load->status;
      continue;
    }

    Slot* slot = ReserveSlotLocked(lock, tier);
    if (tier.resident.contains(key)) {
      // Someone else started this load while we waited for a slot.
      tier.free.push_back(slot);
      continue;
    }
    BeginFillLocked(tier, slot, key, /*prefetch=*/!demand);
    if (tier_index == kDram) {
      StartFileReadLocked(tier, slot, key);
      continue;
    }
    FillDeviceSlotLocked(lock, tier, slot, key, demand);
  }
}

void ExpertCache::CountReadyLocked(Tier& tier, Slot* slot) {
  if (std::exchange(slot->prefetched, false)) {
    ++tier.stats.hidden;
  } else {
    ++tier.stats.hits;
  }
}

void ExpertCache::CountMissLocked(Tier& tier, const ExpertKey& key) {
  ++tier.stats.misses;
  auto it = tier.resident.find(key);
  if (it != tier.resident.end()) {
    // Loading: the access joins the load in flight.
    ++tier.stats.shared_loads;
    if (std::exchange(it->second->prefetched, false)) ++tier.stats.late_prefetches;
  }
  auto evicted = tier.evicted_in_pass.find(key);
  if (evicted != tier.evicted_in_pass.end() && evicted->second == pass_) ++tier.stats.collision_misses;
}

bool ExpertCache::TakeAskedLocked(Tier& tier, const ExpertKey& key) {
  auto it = std::find(tier.asked.begin(), tier.asked.end(), key);
  if (it == tier.asked.end()) return false;
  *it = tier.asked.back();
  tier.asked.pop_back();
  return true;
}

void ExpertCache::CountAskedLocked(const ExpertKey& key) {
  // Already asked for in this layer (a second StartLoad): counted once.
  Tier& compute = *tiers_.back();
  if (std::find(compute.asked.begin(), compute.asked.end(), key) != compute.asked.end()) return;
  for (int t = static_cast<int>(tiers_.size()) - 1; t >= 0; --t) {
    Tier& tier = *tiers_[t];
    auto it = tier.resident.find(key);
    if (it != tier.resident.end() && it->second->state == Slot::State::kReady) {
      // Ready in the compute tier: Acquire will count the hit itself. Ready
      // in DRAM under a device miss: that DRAM access is counted here.
      if (&tier == &compute) return;
      CountReadyLocked(tier, it->second);
      tier.asked.push_back(key);
      return;
    }
    CountMissLocked(tier, key);
    tier.asked.push_back(key);
  }
}

void ExpertCache::FillDeviceSlotLocked(std::unique_lock<std::mutex>& lock, Tier& device, Slot* slot,
                                       const ExpertKey& key, bool demand) {
  // The device slot stays "loading" meanwhile, so others wait on it instead
  // of starting a second copy.
  lock.unlock();
  absl::Status status;
  {
    auto host = AcquireInTier(kDram, key, demand);
    status = host.ok() ? copier_->Copy(slot->data, host->data(), slot_bytes_) : host.status();
  }  // the DRAM pin is released before we take the lock again
  lock.lock();
  if (status.ok()) device.stats.bytes_loaded += slot_bytes_;
  FinishLoadLocked(device, slot, status);
}

bool ExpertCache::QueuePromotionLocked(const ExpertKey& key, bool prefetch) {
  Tier& device = *tiers_[kDevice];
  if (device.resident.contains(key)) {
    if (prefetch) device.policy->OnPrefetchHit(key);
    return false;
  }
  // Bounded: more waiting copies than device slots could only evict each
  // other before they are used.
  if (promotions_.size() >= device.slots.size()) return false;
  for (const Promotion& queued : promotions_) {
    if (queued.key == key) return false;
  }
  promotions_.push_back({key, prefetch});
  changed_.notify_all();
  return true;
}

void ExpertCache::PromoteLoop() {
  std::unique_lock lock(mu_);
  while (true) {
    changed_.wait(lock, [&] { return stopping_ || !promotions_.empty(); });
    if (stopping_) return;
    const Promotion next = promotions_.front();
    promotions_.pop_front();
    Tier& device = *tiers_[kDevice];
    // Already there (compute asked first), or its DRAM load was dropped or
    // failed: nothing to copy.
    if (device.resident.contains(next.key) || !tiers_[kDram]->resident.contains(next.key)) continue;
    // Like every early load, a copy never waits for a slot.
    Slot* slot = TakeFreeSlotLocked(device);
    if (slot == nullptr) continue;
    BeginFillLocked(device, slot, next.key, next.prefetch);
    FillDeviceSlotLocked(lock, device, slot, next.key, /*demand=*/false);
  }
}

std::optional<ExpertCache::Pin> ExpertCache::TryAcquire(const ExpertKey& key) {
  std::lock_guard lock(mu_);
  return TryAcquireLocked(static_cast<int>(tiers_.size()) - 1, key);
}

std::optional<ExpertCache::Pin> ExpertCache::TryAcquireHostCopy(const ExpertKey& key) {
  std::lock_guard lock(mu_);
  return TryAcquireLocked(kDram, key);
}

std::optional<ExpertCache::Pin> ExpertCache::TryAcquireLocked(int tier_index, const ExpertKey& key) {
  Tier& tier = *tiers_[tier_index];
  auto it = tier.resident.find(key);
  if (it == tier.resident.end() || it->second->state != Slot::State::kReady) return std::nullopt;
  Slot* slot = it->second;
  tier.policy->OnAccess(key);
  tier.policy->OnHit(key);
  if (!TakeAskedLocked(tier, key)) CountReadyLocked(tier, slot);
  return PinLocked(tier_index, slot);
}

bool ExpertCache::IsReady(const ExpertKey& key) const {
  std::lock_guard lock(mu_);
  return ReadyInLocked(*tiers_.back(), key);
}

bool ExpertCache::HasHostCopy(const ExpertKey& key) const {
  std::lock_guard lock(mu_);
  return ReadyInLocked(*tiers_[kDram], key);
}

bool ExpertCache::ReadyInLocked(const Tier& tier, const ExpertKey& key) const {
  auto it = tier.resident.find(key);
  return it != tier.resident.end() && it->second->state == Slot::State::kReady;
}

int ExpertCache::reads_in_flight() const {
  std::lock_guard lock(mu_);
  return file_reads_in_flight_;
}

bool ExpertCache::StartLoad(const ExpertKey& key, bool prefetch) {
  if (!file_.Find(key.layer, key.expert).ok()) return false;
  std::lock_guard lock(mu_);
  if (!prefetch) CountAskedLocked(key);
  Tier& dram = *tiers_[kDram];
  bool started = false;
  if (dram.resident.contains(key)) {
    // Least-Stale: a prefetch of a resident expert marks it current, so it
    // survives until the layer that wants it has run.
    if (prefetch) dram.policy->OnPrefetchHit(key);
  } else {
    Slot* slot = TakeFreeSlotLocked(dram);
    if (slot == nullptr) return false;  // everything busy: an early load never waits
    BeginFillLocked(dram, slot, key, prefetch);
    StartFileReadLocked(dram, slot, key);
    started = true;
  }
  if (promoting_) started |= QueuePromotionLocked(key, prefetch);
  return started;
}

absl::Status ExpertCache::PinPermanently(absl::Span<const ExpertKey> keys) {
  int compute_slots;
  {
    std::lock_guard lock(mu_);
    compute_slots = static_cast<int>(tiers_.back()->slots.size());
  }
  const int left = compute_slots - static_cast<int>(permanent_pins_.size() + keys.size());
  if (left < min_slots_) {
    return absl::InvalidArgumentError(absl::StrCat("keeping ", keys.size(), " experts resident leaves ", left,
                                                   " of the compute tier's ", compute_slots, " slots, fewer than the ",
                                                   min_slots_, " one layer needs"));
  }
  for (const ExpertKey& key : keys) {
    auto pin = AcquireInTier(static_cast<int>(tiers_.size()) - 1, key, /*demand=*/false);
    if (!pin.ok()) return pin.status();
    permanent_pins_.push_back(std::move(*pin));
  }
  return absl::OkStatus();
}

void ExpertCache::Unpin(int tier_index, Slot* slot) {
  std::lock_guard lock(mu_);
  --slot->pins;
  changed_.notify_all();
}

void ExpertCache::BeginPass() {
  std::lock_guard lock(mu_);
  ++pass_;
  for (auto& tier : tiers_) tier->policy->OnPassStart();
}

void ExpertCache::BeginLayer(int layer) {
  std::lock_guard lock(mu_);
  for (auto& tier : tiers_) {
    tier->asked.clear();
    tier->policy->OnLayerStart(layer);
  }
}

void ExpertCache::OnRouterScores(int layer, absl::Span<const float> probabilities) {
  std::lock_guard lock(mu_);
  for (auto& tier : tiers_) tier->policy->OnRouterScores(layer, probabilities);
}

absl::Status ExpertCache::Resize(uint64_t dram_budget_bytes, uint64_t device_budget_bytes) {
  std::unique_lock lock(mu_);
  const bool has_device = tiers_.size() > 1;
  if ((device_budget_bytes > 0) != has_device) {
    return absl::InvalidArgumentError(
        "the device tier can be resized but not added or removed at run time; restart to change it");
  }
  const uint64_t budgets[2] = {dram_budget_bytes, device_budget_bytes};
  int slots[2] = {0, 0};
  for (size_t t = 0; t < tiers_.size(); ++t) {
    slots[t] = SlotsFor(tiers_[t]->name, budgets[t]);
    if (slots[t] < min_slots_) {
      return absl::InvalidArgumentError(absl::StrCat(tiers_[t]->name, " budget of ", budgets[t], " bytes holds fewer than ",
                                                     min_slots_, " experts of ", slot_bytes_, " bytes"));
    }
  }
  for (size_t t = 0; t < tiers_.size(); ++t) {
    if (absl::Status s = ResizeTierLocked(lock, *tiers_[t], slots[t]); !s.ok()) return s;
  }
  return RegisterDramBuffersLocked(lock);
}

CacheStats ExpertCache::stats() const {
  std::lock_guard lock(mu_);
  CacheStats out;
  out.dram = tiers_[kDram]->stats;
  if (file_reads_in_flight_ > 0) {
    // The busy interval still open counts up to now.
    out.dram.read_busy_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(
                                 std::chrono::steady_clock::now() - reads_busy_since_).count();
  }
  if (tiers_.size() > 1) out.device = tiers_[kDevice]->stats;
  out.passes = pass_;
  return out;
}

absl::Status ExpertCache::CheckInvariants() const {
  std::lock_guard lock(mu_);
  for (const auto& tier : tiers_) {
    auto fail = [&](absl::string_view what) {
      return absl::InternalError(absl::StrCat(tier->name, " tier invariant broken: ", what));
    };
    if (tier->free.size() + tier->resident.size() != tier->slots.size()) return fail("free + resident != slots");
    for (const Slot* slot : tier->free) {
      if (slot->state != Slot::State::kFree || slot->pins != 0) return fail("a free slot is in use");
    }
    for (const auto& [key, slot] : tier->resident) {
      if (slot->key != key) return fail("a slot holds another key than its map entry");
      if (slot->state == Slot::State::kFree) return fail("a resident slot is free");
      if ((slot->state == Slot::State::kLoading) != (slot->load != nullptr)) return fail("load/state mismatch");
      if (slot->pins < 0) return fail("negative pins");
      if (slot->state == Slot::State::kLoading && slot->pins != 0) return fail("a loading slot is pinned");
    }
    if (tier->stats.slots != static_cast<int>(tier->slots.size())) return fail("slot count stat is stale");
  }
  return absl::OkStatus();
}

}  // namespace expertd::cache
