#include "cache/expert_cache.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/byte_size.h"
#include "io/bundle_verifier.h"
#include "spdlog/spdlog.h"

namespace expertd::cache {
namespace {

// The pieces a verified read is split into: small enough that hashing one
// (~0.1 ms) hides behind the next one's read (~0.4 ms at this project's
// VMs' 1.3 GB/s), and the expert reader's own chunk size, so the device
// sees the same requests as an unsplit read.
constexpr uint64_t kVerifiedPieceBytes = 512 * 1024;

// The tag of a fill's reads (io::ReadClass): its slot, which has one fill
// at a time.
uint64_t ReadTag(const Slot& slot) { return reinterpret_cast<uintptr_t>(&slot); }

class HostMemoryCopier : public DeviceCopier {
 public:
  absl::Status Copy(std::byte* device_dst, const std::byte* host_src, size_t bytes) override {
    std::memcpy(device_dst, host_src, bytes);
    return absl::OkStatus();
  }
};

}  // namespace

std::unique_ptr<DeviceCopier> MakeHostMemoryCopier() { return std::make_unique<HostMemoryCopier>(); }

absl::StatusOr<Readiness> DeviceCopier::CopyAsync(std::byte* device_dst, const std::byte* host_src, size_t bytes) {
  if (absl::Status s = Copy(device_dst, host_src, bytes); !s.ok()) return s;
  return Readiness();
}

absl::StatusOr<DeviceCopier::SlotMemory> DeviceCopier::AllocateSlots(int count, size_t slot_bytes) {
  auto buffer = io::AlignedBuffer::Allocate(static_cast<size_t>(count) * slot_bytes);
  if (!buffer.ok()) return buffer.status();
  auto owner = std::make_shared<io::AlignedBuffer>(std::move(*buffer));
  SlotMemory memory;
  memory.base = owner->data();
  memory.owner = std::move(owner);
  return memory;
}

ExpertCache::Pin::Pin(Pin&& other) noexcept { *this = std::move(other); }

ExpertCache::Pin& ExpertCache::Pin::operator=(Pin&& other) noexcept {
  if (this != &other) {
    if (cache_ != nullptr) cache_->Unpin(*tier_, slot_);
    cache_ = std::exchange(other.cache_, nullptr);
    tier_ = std::exchange(other.tier_, nullptr);
    slot_ = std::exchange(other.slot_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    key_ = other.key_;
    readiness_ = std::move(other.readiness_);
  }
  return *this;
}

Slot* ExpertCache::Pin::Disown() {
  cache_ = nullptr;
  tier_ = nullptr;
  data_ = nullptr;
  return std::exchange(slot_, nullptr);
}

ExpertCache::Pin::~Pin() {
  if (cache_ != nullptr) cache_->Unpin(*tier_, slot_);
}

ExpertCache::ExpertCache(const io::ExpertFile& file, io::ExpertReader& reader,
                         std::unique_ptr<EvictionPolicy> dram_policy, bool wrong_guesses_first)
    : file_(file), reader_(reader), dram_("dram", std::move(dram_policy), wrong_guesses_first) {}

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
  options.policy_options.num_layers = static_cast<int>(file.layout().num_layers);
  options.policy_options.num_experts = static_cast<int>(file.layout().num_experts);
  auto dram_policy = MakeEvictionPolicy(options.policy, options.policy_options);
  if (!dram_policy.ok()) return dram_policy.status();
  auto cache = std::unique_ptr<ExpertCache>(
      new ExpertCache(file, reader, std::move(*dram_policy), options.wrong_guesses_first));
  cache->slot_bytes_ = file.layout().slot_bytes();
  cache->min_slots_ = std::max(1, options.min_slots);
  cache->verify_checksums_ = options.verify_checksums;
  cache->prefetch_to_device_ = options.prefetch_to_device;
  cache->copier_ = options.device_copier ? std::move(options.device_copier) : MakeHostMemoryCopier();
  // Dense layers have no experts in the file: count what is there.
  int experts = 0;
  for (int layer = 0; layer < options.policy_options.num_layers; ++layer) {
    for (int e = 0; e < options.policy_options.num_experts; ++e) experts += file.Find(layer, e).ok() ? 1 : 0;
  }
  cache->max_slots_ = std::max(experts, cache->min_slots_);

  auto check_budget = [&](const std::string& name, uint64_t budget_bytes) -> absl::StatusOr<int> {
    const int slots = cache->SlotsFor(name, budget_bytes);
    if (slots < cache->min_slots_) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, " budget of ", budget_bytes, " bytes holds ", slots, " experts of ", cache->slot_bytes_,
          " bytes, fewer than the ", cache->min_slots_, " one layer needs (its top-k); raise it to at least ",
          static_cast<uint64_t>(cache->min_slots_) * cache->slot_bytes_, " bytes"));
    }
    return slots;
  };
  std::unique_lock lock(cache->mu_);
  absl::StatusOr<int> dram_slots = check_budget("dram", options.dram_budget_bytes);
  if (!dram_slots.ok()) return dram_slots.status();
  if (absl::Status s = cache->ResizeTierLocked(lock, cache->dram_, *dram_slots); !s.ok()) return s;
  if (options.device_budget_bytes > 0) {
    absl::StatusOr<int> device_slots = check_budget("device", options.device_budget_bytes);
    if (!device_slots.ok()) return device_slots.status();
    auto device_policy = MakeEvictionPolicy(options.policy, options.policy_options);
    if (!device_policy.ok()) return device_policy.status();
    cache->device_ = std::make_unique<SlotTier>("device", std::move(*device_policy), options.wrong_guesses_first);
    if (absl::Status s = cache->ResizeTierLocked(lock, *cache->device_, *device_slots); !s.ok()) return s;
    // The DRAM slots were made before the device tier existed.
    for (const auto& slot : cache->dram_.slots()) {
      auto prepared = cache->copier_->PrepareHostSlot(slot->data, cache->slot_bytes_);
      if (!prepared.ok()) return prepared.status();
      slot->host_prepared = std::move(*prepared);
    }
  }
  if (absl::Status s = cache->RegisterDramBuffersLocked(lock); !s.ok()) return s;
  cache->promoting_ = cache->device_ != nullptr && cache->prefetch_to_device_;
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
  if (promoter_.joinable()) promoter_.join();  // finishes the fill it is in
  permanent_pins_.clear();
  std::unique_lock lock(mu_);
  // Copies in flight write into our device slots and read our DRAM slots.
  while (!pending_copies_.empty()) WaitForACopyLocked(lock);
  // Reads in flight write into our slots and call back into us.
  changed_.wait(lock, [&] { return file_reads_in_flight_ == 0; });
}

bool ExpertCache::has_device_tier() const {
  std::lock_guard lock(mu_);
  return device_ != nullptr;
}

absl::Status ExpertCache::RegisterDramBuffersLocked(std::unique_lock<std::mutex>& lock) {
  changed_.wait(lock, [&] { return file_reads_in_flight_ == 0; });
  std::vector<iovec> buffers;
  for (const auto& slot : dram_.slots()) buffers.push_back({slot->data, slot_bytes_});
  absl::Status status = reader_.RegisterBuffers(buffers);
  if (!status.ok()) {
    // The reader names the limit; the budget is what the user can change.
    return absl::Status(status.code(),
                        absl::StrCat("the dram budget of ", buffers.size(), " slots of ", slot_bytes_,
                                     " bytes cannot be registered for reads: ", status.message()));
  }
  return status;
}

absl::Status ExpertCache::ResizeTierLocked(std::unique_lock<std::mutex>& lock, SlotTier& tier, int target) {
  if (!is_dram(tier) && tier.slot_count() < target) {
    // Every slot a growth adds comes from one allocation.
    const int count = target - tier.slot_count();
    auto memory = copier_->AllocateSlots(count, slot_bytes_);
    if (!memory.ok()) {
      return absl::Status(memory.status().code(), absl::StrCat("allocating ", count, " device slots of ", slot_bytes_,
                                                               " bytes: ", memory.status().message()));
    }
    for (int i = 0; i < count; ++i) {
      auto slot = std::make_unique<Slot>();
      slot->data = memory->base + static_cast<size_t>(i) * slot_bytes_;
      slot->arena = memory->owner;
      tier.AddSlot(std::move(slot));
    }
  }
  while (tier.slot_count() < target) {
    auto memory = io::AlignedBuffer::Allocate(slot_bytes_);
    if (!memory.ok()) return memory.status();
    auto slot = std::make_unique<Slot>();
    slot->memory = std::move(*memory);
    slot->data = slot->memory.data();
    if (device_ != nullptr) {
      auto prepared = copier_->PrepareHostSlot(slot->data, slot_bytes_);
      if (!prepared.ok()) return prepared.status();
      slot->host_prepared = std::move(*prepared);
    }
    tier.AddSlot(std::move(slot));
  }
  while (tier.slot_count() > target) {
    // Frees one slot, waiting if every slot is busy.
    tier.DestroySlot(ReserveSlotLocked(lock, tier));
  }
  return absl::OkStatus();
}

Slot* ExpertCache::ReserveSlotLocked(std::unique_lock<std::mutex>& lock, SlotTier& tier) {
  while (true) {
    if (Slot* slot = tier.TakeSlot(pass_)) return slot;
    // A pending copy holds a DRAM source and its device slot; nothing
    // signals changed_ when it completes, so look, and wait for one if that
    // frees nothing.
    if (ReleaseFinishedCopiesLocked()) continue;
    if (!pending_copies_.empty()) {
      WaitForACopyLocked(lock);
      continue;
    }
    changed_.wait(lock);
  }
}

bool ExpertCache::ReleaseFinishedCopiesLocked() {
  bool released = false;
  for (size_t i = 0; i < pending_copies_.size();) {
    Slot* slot = pending_copies_[i];
    if (!slot->ready.IsReady()) {
      ++i;
      continue;
    }
    dram_.Unpin(std::exchange(slot->copy_source, nullptr));
    // Later pins are ready from the start, unless the copy failed: then
    // they keep the fence, whose Wait gives every reader the error. (Done,
    // so Wait does not block.)
    if (slot->ready.Wait().ok()) slot->ready = Readiness();
    pending_copies_.erase(pending_copies_.begin() + static_cast<std::ptrdiff_t>(i));
    released = true;
  }
  if (released) changed_.notify_all();
  return released;
}

void ExpertCache::WaitForACopyLocked(std::unique_lock<std::mutex>& lock) {
  // Our own reference to the fence: the slot may drop its copy meanwhile.
  const Readiness oldest = pending_copies_.front()->ready;
  lock.unlock();
  // An error is the readers' to see (they Wait too); here only completion
  // matters.
  (void)oldest.Wait();
  lock.lock();
  ReleaseFinishedCopiesLocked();
}

void ExpertCache::StartFileReadLocked(Slot* slot, const ExpertKey& key, bool speculative) {
  auto extent = file_.Find(key.layer, key.expert);
  if (!extent.ok()) {
    FinishFillLocked(dram_, slot, extent.status());
    return;
  }
  if (file_reads_in_flight_++ == 0) reads_busy_since_ = std::chrono::steady_clock::now();
  const ExpertKey k = key;
  const io::ExpertExtent where = *extent;
  // Only the bundle's own bytes, rounded up to the file's alignment (a
  // multiple of 4096, so O_DIRECT takes it; at most slot_bytes_): in a file
  // of mixed precision a q4 bundle is a fraction of the widest slot, and
  // reading the whole slot would cost every miss the widest expert's bytes.
  // The slot's tail past the read keeps bytes of an earlier expert; nothing
  // reads it (views follow the bundle's layout, the checksum covers its
  // length, a device copy carries it along unread).
  const uint64_t alignment = file_.layout().alignment;
  const uint64_t read_bytes = (where.length + alignment - 1) / alignment * alignment;
  const io::ReadClass read_class{.speculative = speculative, .tag = ReadTag(*slot)};
  // A prefetch is read whole and its bytes checked at their first use
  // (CheckedLocked): most prefetches are wrong guesses, never used, and
  // hashing them as they landed took the CPU from compute (bench/README.md,
  // "Demand reads first").
  slot->unchecked = verify_checksums_ && speculative;
  if (!verify_checksums_ || speculative) {
    reader_.Submit(
        where.offset, read_bytes, slot->data,
        [this, slot, k, where, read_bytes](absl::Status status) {
          FinishFileRead(slot, k, where, read_bytes, std::move(status), /*checksum_failed=*/false);
        },
        read_class);
    return;
  }
  // Verified: read in pieces, each hashed once those before it are in, so
  // the checksum is ready about one piece's hash after the last byte
  // (io/bundle_verifier.h). Find succeeded above, so Start can only fail
  // on a read shorter than the bundle, which alignment rules out.
  absl::StatusOr<std::unique_ptr<io::BundleVerifier>> made =
      io::BundleVerifier::Start(file_, k.layer, k.expert, slot->data, read_bytes, kVerifiedPieceBytes);
  if (!made.ok()) {
    FinishFileReadLocked(slot, k, where, read_bytes, made.status(), /*checksum_failed=*/false);
    return;
  }
  const std::shared_ptr<io::BundleVerifier> verifier = std::move(*made);
  for (int piece = 0; piece < verifier->pieces(); ++piece) {
    const uint64_t begin = verifier->piece_offset(piece);
    reader_.Submit(where.offset + begin, verifier->piece_length(piece), slot->data + begin,
                   [this, slot, k, where, read_bytes, verifier, piece](absl::Status status) {
                     if (verifier->Arrived(piece, status)) {
                       FinishFileRead(slot, k, where, read_bytes, verifier->result(), verifier->checksum_failed());
                     }
                   },
                   read_class);
  }
}

bool ExpertCache::CheckedLocked(SlotTier& tier, Slot* slot) {
  if (!slot->unchecked) return true;
  // Under the lock: a few hundred microseconds for a 4 MiB expert, once per
  // prefetch used; an unchecked slot has no pins (every pin comes after
  // this), so discarding it cannot pull bytes from under anyone.
  // Find succeeded when the read started.
  const uint64_t length = file_.Find(slot->key.layer, slot->key.expert)->length;
  const absl::Status verified =
      file_.Verify(slot->key.layer, slot->key.expert, absl::MakeConstSpan(slot->data, length));
  tier.stats().bytes_checked += length;
  if (verified.ok()) {
    slot->unchecked = false;
    return true;
  }
  spdlog::warn("prefetched {} failed its check at first use, reading it again: {}", slot->key.ToString(),
               std::string(verified.message()));
  ++tier.stats().checksum_failures;
  tier.Discard(slot);
  changed_.notify_all();
  return false;
}

void ExpertCache::PromoteFillLocked(const Slot& slot) {
  if (slot.state == Slot::State::kLoading) reader_.Promote(ReadTag(slot));
}

void ExpertCache::LayerRouted(int layer) {
  std::lock_guard lock(mu_);
  if (device_ != nullptr) return;
  for (Slot* slot : dram_.UnclaimedLoadingGuesses(pass_, layer)) {
    // A slot may be listed twice (SlotTier prunes its guesses lazily).
    if (slot->fill_cancelled) continue;
    // Pieces already at the disk cannot be recalled; when all are, the
    // fill completes as an ordinary (wrong) prefetch.
    if (reader_.CancelSpeculative(ReadTag(*slot)) > 0) slot->fill_cancelled = true;
  }
}

void ExpertCache::FinishFileRead(Slot* slot, const ExpertKey& key, const io::ExpertExtent& where,
                                 uint64_t read_bytes, absl::Status status, bool checksum_failed) {
  std::lock_guard lock(mu_);
  FinishFileReadLocked(slot, key, where, read_bytes, std::move(status), checksum_failed);
}

void ExpertCache::FinishFileReadLocked(Slot* slot, const ExpertKey& key, const io::ExpertExtent& where,
                                       uint64_t read_bytes, absl::Status status, bool checksum_failed) {
  if (!status.ok()) {
    status = absl::Status(status.code(), absl::StrCat("loading ", key.ToString(), ": ", status.message()));
  }
  TierStats& stats = dram_.stats();
  if (--file_reads_in_flight_ == 0) {
    stats.read_busy_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::steady_clock::now() - reads_busy_since_).count();
  }
  if (status.ok()) {
    stats.bytes_loaded += where.length;
    stats.bytes_read += read_bytes;
  }
  if (verify_checksums_ && !slot->unchecked && (status.ok() || checksum_failed)) stats.bytes_checked += where.length;
  if (slot->fill_cancelled) {
    dram_.DropFill(slot);
    changed_.notify_all();
    return;
  }
  if (checksum_failed) ++stats.checksum_failures;
  FinishFillLocked(dram_, slot, status);
}

void ExpertCache::FinishFillLocked(SlotTier& tier, Slot* slot, const absl::Status& status) {
  tier.FinishFill(slot, status);
  changed_.notify_all();
}

ExpertCache::Pin ExpertCache::PinLocked(SlotTier& tier, Slot* slot) {
  tier.Pin(slot);
  Pin pin;
  pin.cache_ = this;
  pin.tier_ = &tier;
  pin.slot_ = slot;
  pin.data_ = slot->data;
  pin.key_ = slot->key;
  pin.readiness_ = slot->ready;
  return pin;
}

absl::StatusOr<ExpertCache::Pin> ExpertCache::Acquire(const ExpertKey& key) {
  // An expert the file lacks fails its read at once, before any waiter
  // could see the load: refuse it here, or the miss loop would retry it
  // forever.
  if (absl::StatusOr<io::ExpertExtent> extent = file_.Find(key.layer, key.expert); !extent.ok()) {
    return extent.status();
  }
  // The device tier is made at Create and never removed: no lock to read it.
  return AcquireIn(compute_tier(), key, /*demand=*/true);
}

absl::StatusOr<ExpertCache::Pin> ExpertCache::AcquireIn(SlotTier& tier, const ExpertKey& key, bool demand) {
  const auto start = std::chrono::steady_clock::now();
  std::unique_lock lock(mu_);
  if (demand) tier.policy().OnAccess(key);
  // counted: this access is in the figures already (StartLoad counted it as
  // a miss, or we have); missed: this call found the expert not ready.
  bool counted = !demand || tier.TakeAsked(key);
  const bool asked = demand && counted;
  bool missed = false;
  while (true) {
    Slot* held = tier.Find(key);
    if (held != nullptr && held->state == Slot::State::kReady) {
      if (!CheckedLocked(tier, held)) continue;  // discarded: read it again
      // The policy hears of a use the same way whether or not StartLoad
      // counted it: accounting must not change what gets evicted.
      if (demand && !missed) tier.policy().OnHit(key);
      if (!counted) tier.CountReady(held);
      if (demand && (missed || asked)) {
        tier.stats().wait_ns +=
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
      }
      return PinLocked(tier, held);
    }
    if (!counted) {
      tier.CountMiss(key, pass_);
      counted = true;
    }
    missed = true;
    if (held != nullptr) {
      // Loading: join the load in flight, ahead of any prefetch.
      if (is_dram(tier)) PromoteFillLocked(*held);
      std::shared_ptr<SlotLoad> load = held->load;
      changed_.wait(lock, [&] { return load->done; });
      // A cancelled prefetch has left the tier: load it afresh.
      if (!load->status.ok() && !load->dropped) return load->status;
      continue;
    }

    Slot* slot = ReserveSlotLocked(lock, tier);
    if (tier.Holds(key)) {
      // Someone else started this load while we waited for a slot.
      tier.ReturnSlot(slot);
      continue;
    }
    tier.BeginFill(slot, key, /*prefetch=*/!demand);
    if (is_dram(tier)) {
      StartFileReadLocked(slot, key, /*speculative=*/false);
      continue;
    }
    // A failed fill is this access's error: retrying it at once would fail
    // the same way, forever when the failure lasts.
    if (absl::Status filled = FillDeviceSlotLocked(lock, slot, key, demand); !filled.ok()) return filled;
  }
}

void ExpertCache::CountAskedLocked(const ExpertKey& key) {
  // Already asked for in this layer (a second StartLoad): counted once.
  SlotTier& compute = compute_tier();
  if (compute.WasAsked(key)) return;
  for (SlotTier* tier : {device_.get(), &dram_}) {
    if (tier == nullptr) continue;
    if (Slot* ready = tier->FindReady(key)) {
      // Ready in the compute tier: Acquire will count the hit itself. Ready
      // in DRAM under a device miss: that DRAM access is counted here.
      if (tier == &compute) return;
      tier->CountReady(ready);
      tier->NoteAsked(key);
      return;
    }
    tier->CountMiss(key, pass_);
    tier->NoteAsked(key);
  }
}

absl::Status ExpertCache::FillDeviceSlotLocked(std::unique_lock<std::mutex>& lock, Slot* slot, const ExpertKey& key,
                                               bool demand) {
  // The device slot stays "loading" meanwhile, so others wait on it instead
  // of starting a second copy.
  lock.unlock();
  absl::StatusOr<Readiness> copy;
  Slot* source = nullptr;
  {
    absl::StatusOr<Pin> host = AcquireIn(dram_, key, demand);
    copy = host.ok() ? copier_->CopyAsync(slot->data, host->data(), slot_bytes_) : host.status();
    // A copy still in flight reads the DRAM slot: its pin moves into the
    // device slot, released once the copy is seen complete. One done
    // already fails the fill if it failed (its Wait does not block).
    if (copy.ok() && !copy->IsReady()) {
      source = host->Disown();
    } else if (copy.ok()) {
      if (absl::Status done = copy->Wait(); !done.ok()) copy = done;
    }
  }  // any other DRAM pin is released before we take the lock again
  lock.lock();
  if (copy.ok()) {
    device_->stats().bytes_loaded += slot_bytes_;
    if (source != nullptr) {
      slot->ready = *copy;
      slot->copy_source = source;
      pending_copies_.push_back(slot);
    }
  }
  FinishFillLocked(*device_, slot, copy.status());
  return copy.status();
}

bool ExpertCache::QueuePromotionLocked(const ExpertKey& key, bool prefetch) {
  if (device_->Holds(key)) {
    if (prefetch) device_->policy().OnPrefetchHit(key);
    return false;
  }
  // Bounded: more waiting copies than device slots could only evict each
  // other before they are used.
  if (promotions_.size() >= static_cast<size_t>(device_->slot_count())) return false;
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
    // Already there (compute asked first), or its DRAM load was dropped or
    // failed: nothing to copy.
    if (device_->Holds(next.key) || !dram_.Holds(next.key)) continue;
    // Like every early load, a copy never waits for a slot (but takes one a
    // finished copy frees).
    Slot* slot = device_->TakeSlot(pass_);
    if (slot == nullptr && ReleaseFinishedCopiesLocked()) slot = device_->TakeSlot(pass_);
    if (slot == nullptr) continue;
    device_->BeginFill(slot, next.key, next.prefetch);
    (void)FillDeviceSlotLocked(lock, slot, next.key, /*demand=*/false);  // counted in load_errors
  }
}

std::optional<ExpertCache::Pin> ExpertCache::TryAcquire(const ExpertKey& key) {
  std::lock_guard lock(mu_);
  return TryAcquireLocked(compute_tier(), key);
}

std::optional<ExpertCache::Pin> ExpertCache::TryAcquireHostCopy(const ExpertKey& key) {
  std::lock_guard lock(mu_);
  return TryAcquireLocked(dram_, key);
}

std::optional<ExpertCache::Pin> ExpertCache::TryAcquireLocked(SlotTier& tier, const ExpertKey& key) {
  Slot* slot = tier.FindReady(key);
  if (slot == nullptr || !CheckedLocked(tier, slot)) return std::nullopt;
  tier.policy().OnAccess(key);
  tier.policy().OnHit(key);
  if (!tier.TakeAsked(key)) tier.CountReady(slot);
  return PinLocked(tier, slot);
}

bool ExpertCache::IsReady(const ExpertKey& key) const {
  std::lock_guard lock(mu_);
  return compute_tier().FindReady(key) != nullptr;
}

bool ExpertCache::HasHostCopy(const ExpertKey& key) const {
  std::lock_guard lock(mu_);
  return dram_.FindReady(key) != nullptr;
}

int ExpertCache::reads_in_flight() const {
  std::lock_guard lock(mu_);
  return file_reads_in_flight_;
}

bool ExpertCache::StartLoad(const ExpertKey& key, bool prefetch) {
  if (!file_.Find(key.layer, key.expert).ok()) return false;
  std::lock_guard lock(mu_);
  if (!prefetch) CountAskedLocked(key);
  bool started = false;
  if (Slot* held = dram_.Find(key)) {
    // Least-Stale: a prefetch of a resident expert marks it current, so it
    // survives until the layer that wants it has run.
    if (prefetch) dram_.policy().OnPrefetchHit(key);
    if (!prefetch) PromoteFillLocked(*held);
  } else {
    Slot* slot = dram_.TakeSlot(pass_);
    if (slot == nullptr && ReleaseFinishedCopiesLocked()) slot = dram_.TakeSlot(pass_);
    if (slot == nullptr) return false;  // everything busy: an early load never waits
    dram_.BeginFill(slot, key, prefetch);
    StartFileReadLocked(slot, key, /*speculative=*/prefetch);
    started = true;
  }
  if (promoting_) started |= QueuePromotionLocked(key, prefetch);
  return started;
}

absl::Status ExpertCache::PinPermanently(absl::Span<const ExpertKey> keys) {
  int compute_slots;
  {
    std::lock_guard lock(mu_);
    compute_slots = compute_tier().slot_count();
  }
  const int left = compute_slots - static_cast<int>(permanent_pins_.size() + keys.size());
  if (left < min_slots_) {
    return absl::InvalidArgumentError(absl::StrCat("keeping ", keys.size(), " experts resident leaves ", left,
                                                   " of the compute tier's ", compute_slots, " slots, fewer than the ",
                                                   min_slots_, " one layer needs"));
  }
  for (const ExpertKey& key : keys) {
    auto pin = AcquireIn(compute_tier(), key, /*demand=*/false);
    if (!pin.ok()) return pin.status();
    permanent_pins_.push_back(std::move(*pin));
  }
  return absl::OkStatus();
}

void ExpertCache::Unpin(SlotTier& tier, Slot* slot) {
  std::lock_guard lock(mu_);
  tier.Unpin(slot);
  changed_.notify_all();
}

void ExpertCache::BeginPass() {
  std::lock_guard lock(mu_);
  ++pass_;
  dram_.BeginPass(pass_);
  if (device_) device_->BeginPass(pass_);
}

void ExpertCache::BeginLayer(int layer) {
  std::lock_guard lock(mu_);
  // Once per layer: the copies the last layer waited for on its stream are
  // done by now, and their DRAM sources can go.
  ReleaseFinishedCopiesLocked();
  dram_.BeginLayer(layer);
  if (device_) device_->BeginLayer(layer);
}

void ExpertCache::OnRouterScores(int layer, absl::Span<const float> probabilities) {
  std::lock_guard lock(mu_);
  dram_.policy().OnRouterScores(layer, probabilities);
  if (device_) device_->policy().OnRouterScores(layer, probabilities);
}

absl::Status ExpertCache::Resize(uint64_t dram_budget_bytes, uint64_t device_budget_bytes) {
  std::unique_lock lock(mu_);
  if ((device_budget_bytes > 0) != (device_ != nullptr)) {
    return absl::InvalidArgumentError(
        "the device tier can be resized but not added or removed at run time; restart to change it");
  }
  struct Target {
    SlotTier* tier = nullptr;
    uint64_t budget_bytes = 0;
    int slots = 0;
  };
  std::vector<Target> targets = {{&dram_, dram_budget_bytes, 0}};
  if (device_) targets.push_back({device_.get(), device_budget_bytes, 0});
  for (Target& target : targets) {
    target.slots = SlotsFor(target.tier->name(), target.budget_bytes);
    if (target.slots < min_slots_) {
      return absl::InvalidArgumentError(absl::StrCat(target.tier->name(), " budget of ", target.budget_bytes,
                                                     " bytes holds fewer than ", min_slots_, " experts of ",
                                                     slot_bytes_, " bytes"));
    }
  }
  for (const Target& target : targets) {
    if (absl::Status s = ResizeTierLocked(lock, *target.tier, target.slots); !s.ok()) return s;
  }
  return RegisterDramBuffersLocked(lock);
}

CacheStats ExpertCache::stats() const {
  CacheStats out;
  // The copier keeps its own figures under its own lock.
  if (copier_ != nullptr) out.device_copies = copier_->copy_stats();
  std::lock_guard lock(mu_);
  out.dram = dram_.stats();
  if (file_reads_in_flight_ > 0) {
    // The busy interval still open counts up to now.
    out.dram.read_busy_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(
                                 std::chrono::steady_clock::now() - reads_busy_since_).count();
  }
  if (device_) out.device = device_->stats();
  out.passes = pass_;
  return out;
}

absl::Status ExpertCache::CheckInvariants() const {
  std::lock_guard lock(mu_);
  if (absl::Status s = dram_.CheckInvariants(); !s.ok()) return s;
  if (device_ == nullptr) {
    return pending_copies_.empty() ? absl::OkStatus() : absl::InternalError("a pending copy without a device tier");
  }
  if (absl::Status s = device_->CheckInvariants(); !s.ok()) return s;
  // Every pending copy: a ready device slot whose DRAM source holds the same
  // expert, ready and pinned (so no fill can overwrite what it reads).
  size_t copying = 0;
  for (const auto& slot : device_->slots()) copying += slot->copy_source != nullptr ? 1 : 0;
  if (copying != pending_copies_.size()) return absl::InternalError("device slots copying != pending copies");
  for (const Slot* slot : pending_copies_) {
    const Slot* source = slot->copy_source;
    if (source == nullptr || slot->state != Slot::State::kReady || device_->Find(slot->key) != slot) {
      return absl::InternalError("a pending copy's device slot is not ready with its key");
    }
    if (dram_.FindReady(slot->key) != source || source->pins < 1) {
      return absl::InternalError(absl::StrCat("the DRAM source of ", slot->key.ToString(),
                                              "'s pending copy is not held ready and pinned"));
    }
  }
  return absl::OkStatus();
}

}  // namespace expertd::cache
