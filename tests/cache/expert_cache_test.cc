// The tiered expert cache over a real packed file and real readers: contents,
// pinning, shared loads, faults, budgets, the device tier, and a
// multi-threaded stress run that checks every invariant.

#include "cache/expert_cache.h"

#include <atomic>
#include <cstring>
#include <fstream>
#include <future>
#include <limits>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "io/expert_file.h"
#include "io/expert_reader.h"
#include "tests/testing/deferred_copier.h"
#include "tests/testing/fault_injecting_reader.h"
#include "tests/testing/test_models.h"

namespace expertd::cache {
namespace {

using ::expertd::testing::DeferredCopier;
using ::expertd::testing::ScopedTempDir;
using ::testing::HasSubstr;

constexpr int kLayers = 3;
constexpr int kExperts = 8;

io::ExpertFileLayout SmallLayout() {
  io::ExpertFileLayout layout;
  layout.model_fingerprint = 42;
  layout.dtypes = io::BundleDtypes::Uniform(DType::kF32);
  layout.num_layers = kLayers;
  layout.num_experts = kExperts;
  layout.hidden_size = 64;
  layout.intermediate_size = 32;  // 24 KiB per expert: six pages
  return layout;
}

// Every byte of a bundle says which expert it belongs to.
std::vector<std::byte> Bundle(const io::ExpertFileLayout& layout, int layer, int expert) {
  std::vector<std::byte> bytes(layout.expert_bytes());
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = std::byte((layer * 31 + expert * 7 + i) & 0xff);
  return bytes;
}

bool HoldsExpert(const io::ExpertFileLayout& layout, const std::byte* data, int layer, int expert) {
  const std::vector<std::byte> expected = Bundle(layout, layer, expert);
  return std::memcmp(data, expected.data(), expected.size()) == 0;
}

// Overwrites the file's byte at `offset`, which holds `original`, with a
// different one.
void FlipBundleByte(const std::string& path, uint64_t offset, std::byte original) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put('\x5a' ^ static_cast<char>(original));
}

class ExpertCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.Sub("model.experts");
    auto writer = io::ExpertFileWriter::Create(path_, layout_);
    ASSERT_TRUE(writer.ok()) << writer.status();
    for (int l = 0; l < kLayers; ++l) {
      for (int e = 0; e < kExperts; ++e) ASSERT_TRUE((*writer)->Add(l, e, Bundle(layout_, l, e)).ok());
    }
    ASSERT_TRUE((*writer)->Finish().ok());
    OpenFile();
  }
  void OpenFile() {
    auto file = io::ExpertFile::Open(path_, 42);
    ASSERT_TRUE(file.ok()) << file.status();
    file_ = std::move(*file);
  }
  void OpenReader(const testing::FaultOptions* faults = nullptr) {
    io::ReaderOptions options;
    options.path = path_;
    options.direct_io = true;
    auto reader = io::OpenExpertReader(options);
    ASSERT_TRUE(reader.ok()) << reader.status();
    reader_ = faults ? testing::MakeFaultInjectingReader(std::move(*reader), *faults) : std::move(*reader);
  }
  std::unique_ptr<ExpertCache> MakeCache(int dram_slots, int device_slots = 0, const std::string& policy = "least-stale",
                                         int min_slots = 2, bool prefetch_to_device = true) {
    if (reader_ == nullptr) OpenReader();
    ExpertCacheOptions options;
    options.prefetch_to_device = prefetch_to_device;
    options.dram_budget_bytes = dram_slots * layout_.slot_bytes();
    options.device_budget_bytes = device_slots * layout_.slot_bytes();
    options.policy = policy;
    options.min_slots = min_slots;
    auto cache = ExpertCache::Create(*file_, *reader_, std::move(options));
    EXPECT_TRUE(cache.ok()) << cache.status();
    return cache.ok() ? std::move(*cache) : nullptr;
  }

  ScopedTempDir dir_{"expert_cache"};
  io::ExpertFileLayout layout_ = SmallLayout();
  std::string path_;
  std::unique_ptr<io::ExpertFile> file_;
  std::unique_ptr<io::ExpertReader> reader_;
};

TEST_F(ExpertCacheTest, EveryAcquireHoldsTheRightExpert) {
  for (const char* policy : {"lru", "lfu", "least-stale", "layer-distance"}) {
    SCOPED_TRACE(policy);
    auto cache = MakeCache(5, 0, policy);
    ASSERT_NE(cache, nullptr);
    for (int pass = 0; pass < 3; ++pass) {
      cache->BeginPass();
      for (int l = 0; l < kLayers; ++l) {
        cache->BeginLayer(l);
        for (int e : {l, (l + 3) % kExperts, 5}) {
          auto pin = cache->Acquire({l, e});
          ASSERT_TRUE(pin.ok()) << pin.status();
          EXPECT_TRUE(HoldsExpert(layout_, pin->data(), l, e)) << l << "/" << e;
        }
      }
    }
    const CacheStats stats = cache->stats();
    EXPECT_EQ(stats.dram.hits + stats.dram.misses, 27u);
    EXPECT_GT(stats.dram.evictions, 0u);
    EXPECT_EQ(stats.dram.bytes_loaded, stats.dram.loads * layout_.expert_bytes());
    EXPECT_TRUE(cache->CheckInvariants().ok());
  }
}

TEST_F(ExpertCacheTest, TooSmallABudgetIsAClearError) {
  OpenReader();
  ExpertCacheOptions options;
  options.dram_budget_bytes = layout_.slot_bytes() * 3 + 100;
  options.min_slots = 4;
  auto cache = ExpertCache::Create(*file_, *reader_, std::move(options));
  ASSERT_FALSE(cache.ok());
  EXPECT_THAT(std::string(cache.status().message()), HasSubstr("holds 3 experts"));
  EXPECT_THAT(std::string(cache.status().message()), HasSubstr("raise it to at least"));
  ExpertCacheOptions bad_policy;
  bad_policy.dram_budget_bytes = layout_.slot_bytes() * 4;
  bad_policy.policy = "random";
  EXPECT_FALSE(ExpertCache::Create(*file_, *reader_, std::move(bad_policy)).ok());
}

// A budget beyond every expert resident buys nothing more: each tier is
// capped at one slot per expert of the file, at Create and at Resize (where
// SIGHUP's budgets arrive), so a huge budget neither allocates nor registers
// memory that could never be filled.
TEST_F(ExpertCacheTest, BudgetsAreCappedAtEveryExpertResident) {
  constexpr int kAll = kLayers * kExperts;
  const uint64_t slot = layout_.slot_bytes();
  OpenReader();
  ExpertCacheOptions options;
  options.dram_budget_bytes = 100 * slot;
  options.device_budget_bytes = 50 * slot;
  options.min_slots = 2;
  auto created = ExpertCache::Create(*file_, *reader_, std::move(options));
  ASSERT_TRUE(created.ok()) << created.status();
  ExpertCache& cache = **created;
  EXPECT_EQ(cache.stats().dram.slots, kAll);
  EXPECT_EQ(cache.stats().device.slots, kAll);
  for (int l = 0; l < kLayers; ++l) {
    for (int e = 0; e < kExperts; ++e) ASSERT_TRUE(cache.Acquire({l, e}).ok());
  }
  EXPECT_EQ(cache.stats().dram.evictions, 0u);

  ASSERT_TRUE(cache.Resize(uint64_t{1} << 40, std::numeric_limits<uint64_t>::max()).ok());
  EXPECT_EQ(cache.stats().dram.slots, kAll);
  EXPECT_EQ(cache.stats().device.slots, kAll);
  ASSERT_TRUE(cache.Resize(6 * slot, 3 * slot).ok());
  EXPECT_EQ(cache.stats().dram.slots, 6);
  EXPECT_EQ(cache.stats().device.slots, 3);
  ASSERT_TRUE(cache.Resize(std::numeric_limits<uint64_t>::max(), 4 * slot).ok());
  EXPECT_EQ(cache.stats().dram.slots, kAll);
  EXPECT_EQ(cache.stats().device.slots, 4);
  EXPECT_TRUE(cache.CheckInvariants().ok()) << cache.CheckInvariants();
}

TEST_F(ExpertCacheTest, PinnedExpertsAreNeverEvicted) {
  auto cache = MakeCache(3);
  auto a = cache->Acquire({0, 0});
  auto b = cache->Acquire({0, 1});
  ASSERT_TRUE(a.ok() && b.ok());
  for (int e = 2; e < kExperts; ++e) {
    auto other = cache->Acquire({1, e});  // churns through the one free slot
    ASSERT_TRUE(other.ok());
  }
  EXPECT_TRUE(HoldsExpert(layout_, a->data(), 0, 0));
  EXPECT_TRUE(HoldsExpert(layout_, b->data(), 0, 1));
  const uint64_t misses = cache->stats().dram.misses;
  ASSERT_TRUE(cache->Acquire({0, 0}).ok());
  EXPECT_EQ(cache->stats().dram.misses, misses) << "a pinned expert stayed resident";
}

TEST_F(ExpertCacheTest, ConcurrentMissesShareOneLoad) {
  testing::FaultOptions slow;
  slow.delay = std::chrono::milliseconds(50);
  OpenReader(&slow);
  auto cache = MakeCache(4);
  std::vector<std::thread> threads;
  std::atomic<int> correct{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      auto pin = cache->Acquire({2, 3});
      if (pin.ok() && HoldsExpert(layout_, pin->data(), 2, 3)) ++correct;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(correct.load(), 8);
  const TierStats stats = cache->stats().dram;
  EXPECT_EQ(stats.loads, 1u) << "one expert is never read twice at once";
  EXPECT_EQ(stats.misses, 8u);
  EXPECT_EQ(stats.shared_loads, 7u);
}

TEST_F(ExpertCacheTest, IoErrorsReachTheRequesterAndLeaveTheCacheConsistent) {
  const uint64_t bad_offset = file_->Find(1, 4)->offset;
  testing::FaultOptions faults;
  faults.fail_offset = [bad_offset](uint64_t offset) { return offset == bad_offset; };
  OpenReader(&faults);
  auto cache = MakeCache(3);
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto pin = cache->Acquire({1, 4});
    ASSERT_FALSE(pin.ok());
    EXPECT_THAT(std::string(pin.status().message()), HasSubstr("layer 1 expert 4"));
  }
  EXPECT_TRUE(cache->CheckInvariants().ok()) << cache->CheckInvariants();
  EXPECT_EQ(cache->stats().dram.load_errors, 2u);
  for (int e = 0; e < kExperts; ++e) {
    if (e == 4) continue;
    auto pin = cache->Acquire({1, e});
    ASSERT_TRUE(pin.ok()) << pin.status();
    EXPECT_TRUE(HoldsExpert(layout_, pin->data(), 1, e));
  }
}

TEST_F(ExpertCacheTest, ShortReadsAreErrors) {
  testing::FaultOptions faults;
  faults.short_read_probability = 1.0;
  OpenReader(&faults);
  auto cache = MakeCache(3);
  auto pin = cache->Acquire({0, 2});
  ASSERT_FALSE(pin.ok());
  EXPECT_THAT(std::string(pin.status().message()), HasSubstr("layer 0 expert 2"));
  EXPECT_TRUE(cache->CheckInvariants().ok());
}

TEST_F(ExpertCacheTest, CorruptedBundleIsCaughtByItsChecksum) {
  FlipBundleByte(path_, file_->Find(2, 6)->offset + 100, Bundle(layout_, 2, 6)[100]);
  auto cache = MakeCache(3);
  auto pin = cache->Acquire({2, 6});
  ASSERT_FALSE(pin.ok());
  EXPECT_EQ(pin.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(pin.status().message()), HasSubstr("layer 2 expert 6"));
  EXPECT_TRUE(cache->Acquire({2, 5}).ok());
}

// Waits until the cache holds `key` ready (a prefetch has landed).
void WaitUntilReady(const ExpertCache& cache, const ExpertKey& key) {
  for (int i = 0; i < 2000 && !cache.IsReady(key); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(cache.IsReady(key)) << key.ToString();
}

// A prefetch's bytes are checked against the file's checksum when first
// used, not as they land: a wrong guess, never used, is never hashed.
TEST_F(ExpertCacheTest, APrefetchIsCheckedAtFirstUseAndAWrongGuessNever) {
  auto cache = MakeCache(4);
  ASSERT_TRUE(cache->Prefetch({1, 2}));
  ASSERT_TRUE(cache->Prefetch({1, 3}));
  WaitUntilReady(*cache, {1, 2});
  WaitUntilReady(*cache, {1, 3});
  EXPECT_EQ(cache->stats().dram.bytes_checked, 0u);
  EXPECT_TRUE(cache->CheckInvariants().ok());
  auto pin = cache->TryAcquire({1, 2});
  ASSERT_TRUE(pin.has_value());
  EXPECT_TRUE(HoldsExpert(layout_, pin->data(), 1, 2));
  EXPECT_EQ(cache->stats().dram.bytes_checked, layout_.expert_bytes());
  ASSERT_TRUE(cache->Acquire({1, 2}).ok());
  EXPECT_EQ(cache->stats().dram.bytes_checked, layout_.expert_bytes()) << "checked once";
  // A demand load is checked as it lands.
  ASSERT_TRUE(cache->Acquire({0, 0}).ok());
  EXPECT_EQ(cache->stats().dram.bytes_checked, 2 * layout_.expert_bytes());
  EXPECT_EQ(cache->stats().dram.checksum_failures, 0u);
}

// A prefetch whose bytes differ from the file's checksum is caught at first
// use and read again, so a bad read heals; a bad file still fails the
// access, naming the expert.
TEST_F(ExpertCacheTest, ACorruptPrefetchIsCaughtAtFirstUseAndReadAgain) {
  FlipBundleByte(path_, file_->Find(2, 6)->offset + 100, Bundle(layout_, 2, 6)[100]);
  auto cache = MakeCache(4);
  ASSERT_TRUE(cache->Prefetch({2, 6}));
  WaitUntilReady(*cache, {2, 6});
  EXPECT_FALSE(cache->TryAcquire({2, 6}).has_value()) << "bad bytes are never handed out";
  EXPECT_FALSE(cache->IsReady({2, 6})) << "discarded";
  EXPECT_EQ(cache->stats().dram.checksum_failures, 1u);
  auto pin = cache->Acquire({2, 6});
  ASSERT_FALSE(pin.ok());
  EXPECT_EQ(pin.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(pin.status().message()), HasSubstr("layer 2 expert 6"));
  EXPECT_EQ(cache->stats().dram.checksum_failures, 2u) << "the read again failed its check too";
  // Caught by Acquire as well, after a prefetch lands.
  ASSERT_TRUE(cache->Prefetch({2, 6}));
  WaitUntilReady(*cache, {2, 6});
  EXPECT_EQ(cache->Acquire({2, 6}).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(cache->stats().dram.checksum_failures, 4u);
  EXPECT_TRUE(cache->CheckInvariants().ok());
  EXPECT_TRUE(cache->Acquire({2, 5}).ok());
}

TEST_F(ExpertCacheTest, ResizeGrowsAndShrinksLive) {
  auto cache = MakeCache(3);
  for (int e = 0; e < 3; ++e) ASSERT_TRUE(cache->Acquire({0, e}).ok());
  ASSERT_TRUE(cache->Resize(6 * layout_.slot_bytes(), 0).ok());
  EXPECT_EQ(cache->stats().dram.slots, 6);
  for (int e = 0; e < 6; ++e) ASSERT_TRUE(cache->Acquire({0, e}).ok());
  EXPECT_EQ(cache->stats().dram.evictions, 0u);

  // Shrinking below what is pinned waits until the pins are released.
  auto held = cache->Acquire({0, 0});
  auto held2 = cache->Acquire({0, 1});
  auto held3 = cache->Acquire({0, 2});
  ASSERT_TRUE(held.ok() && held2.ok() && held3.ok());
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    *held = ExpertCache::Pin();
  });
  ASSERT_TRUE(cache->Resize(2 * layout_.slot_bytes(), 0).ok());
  release.join();
  EXPECT_EQ(cache->stats().dram.slots, 2);
  EXPECT_TRUE(HoldsExpert(layout_, held2->data(), 0, 1));
  EXPECT_TRUE(HoldsExpert(layout_, held3->data(), 0, 2));
  EXPECT_TRUE(cache->CheckInvariants().ok());
  EXPECT_THAT(std::string(cache->Resize(layout_.slot_bytes(), 0).message()), HasSubstr("fewer than 2"));
  EXPECT_FALSE(cache->Resize(4 * layout_.slot_bytes(), 4 * layout_.slot_bytes()).ok());
}

TEST_F(ExpertCacheTest, DeviceTierCopiesFromDram) {
  auto cache = MakeCache(6, 3);
  ASSERT_TRUE(cache->has_device_tier());
  for (int round = 0; round < 2; ++round) {
    for (int e = 0; e < 3; ++e) {
      auto pin = cache->Acquire({1, e});
      ASSERT_TRUE(pin.ok());
      EXPECT_TRUE(HoldsExpert(layout_, pin->data(), 1, e));
    }
  }
  CacheStats stats = cache->stats();
  EXPECT_EQ(stats.device.misses, 3u);
  EXPECT_EQ(stats.device.hits, 3u);
  EXPECT_EQ(stats.dram.misses, 3u) << "each device miss is one DRAM access";
  // Past the device budget, DRAM still holds what the device evicted.
  for (int e = 3; e < 6; ++e) ASSERT_TRUE(cache->Acquire({1, e}).ok());
  ASSERT_TRUE(cache->Acquire({1, 0}).ok());
  stats = cache->stats();
  EXPECT_EQ(stats.device.misses, 7u);
  EXPECT_EQ(stats.dram.hits, 1u);
  EXPECT_EQ(stats.dram.loads, 6u);
  EXPECT_TRUE(cache->CheckInvariants().ok());
}

// A prediction lands in the compute tier: with a device tier the copier
// thread takes a prefetched expert on from DRAM into it.
TEST_F(ExpertCacheTest, PrefetchReachesTheDeviceTier) {
  testing::FaultOptions slow;
  slow.delay = std::chrono::milliseconds(10);
  OpenReader(&slow);
  auto cache = MakeCache(6, 3);
  ASSERT_TRUE(cache->Prefetch({2, 4}));
  for (int i = 0; i < 1000 && !cache->IsReady({2, 4}); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(cache->IsReady({2, 4})) << "never reached the device tier";
  CacheStats stats = cache->stats();
  EXPECT_EQ(stats.device.prefetches, 1u);
  EXPECT_EQ(stats.device.loads, 1u);
  EXPECT_EQ(stats.device.misses, 0u) << "nothing asked for it yet";
  auto pin = cache->Acquire({2, 4});
  ASSERT_TRUE(pin.ok());
  EXPECT_TRUE(HoldsExpert(layout_, pin->data(), 2, 4));
  stats = cache->stats();
  EXPECT_EQ(stats.device.hidden, 1u) << "made ready by the prefetch";
  EXPECT_EQ(stats.device.hits, 0u);
  // Already on the device: a prefetch only refreshes it.
  EXPECT_FALSE(cache->Prefetch({2, 4}));
  EXPECT_EQ(cache->stats().device.loads, 1u);
  EXPECT_TRUE(cache->CheckInvariants().ok());
}

// Loads started for compute go on to the device too, and compute joins the
// copy in flight instead of making its own; destroying the cache with
// copies queued and in flight is clean.
TEST_F(ExpertCacheTest, StartedLoadsAreCopiedOnceAndTeardownWaitsForCopies) {
  testing::FaultOptions slow;
  slow.delay = std::chrono::milliseconds(5);
  OpenReader(&slow);
  {
    auto cache = MakeCache(8, 4);
    for (int e = 0; e < 4; ++e) cache->StartLoad({1, e}, /*prefetch=*/false);
    for (int e = 0; e < 4; ++e) {
      auto pin = cache->Acquire({1, e});
      ASSERT_TRUE(pin.ok()) << pin.status();
      EXPECT_TRUE(HoldsExpert(layout_, pin->data(), 1, e));
    }
    const CacheStats stats = cache->stats();
    EXPECT_EQ(stats.device.loads, 4u) << "one copy per expert, whoever made it";
    EXPECT_EQ(stats.dram.loads, 4u);
    EXPECT_EQ(stats.device.prefetches, 0u);
    EXPECT_EQ(stats.device.misses, 4u) << "asked for when not there";
    EXPECT_EQ(stats.device.hits + stats.device.hidden, 0u);
    EXPECT_EQ(stats.dram.misses, 4u);
    EXPECT_EQ(stats.dram.hits + stats.dram.hidden, 0u);
    EXPECT_TRUE(cache->CheckInvariants().ok());
  }
  auto cache = MakeCache(8, 4);
  for (int e = 0; e < 8; ++e) cache->Prefetch({2, e});
  cache.reset();  // with reads and copies in flight
}

// A key outside the file is an error at once (it used to spin: its read
// failed before anyone waited on it, and the miss was retried forever).
TEST_F(ExpertCacheTest, AnExpertOutsideTheFileIsAnError) {
  auto cache = MakeCache(4, 2);
  for (ExpertKey key : {ExpertKey{kLayers, 0}, ExpertKey{0, kExperts}, ExpertKey{-1, 0}}) {
    absl::StatusOr<ExpertCache::Pin> pin = cache->Acquire(key);
    ASSERT_FALSE(pin.ok());
    EXPECT_EQ(pin.status().code(), absl::StatusCode::kInvalidArgument) << pin.status();
    EXPECT_FALSE(cache->StartLoad(key, /*prefetch=*/false) && cache->IsReady(key));
  }
  EXPECT_TRUE(cache->Acquire({0, 0}).ok());
  EXPECT_TRUE(cache->CheckInvariants().ok());
}

// Execution placement's query: a device miss whose expert DRAM holds can
// be computed from the host copy instead of being copied.
TEST_F(ExpertCacheTest, HostCopyOfADeviceMissCanBePinnedWithoutACopy) {
  auto cache = MakeCache(6, 3, "least-stale", 2, /*prefetch_to_device=*/false);
  ASSERT_TRUE(cache->Prefetch({2, 4}));  // into DRAM only
  std::optional<ExpertCache::Pin> host;
  for (int i = 0; i < 500 && !host; ++i) {
    host = cache->TryAcquireHostCopy({2, 4});
    if (!host) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(host.has_value());
  EXPECT_TRUE(HoldsExpert(layout_, host->data(), 2, 4));
  EXPECT_FALSE(cache->IsReady({2, 4})) << "the device tier has not got it";
  const uint64_t dram_hits = cache->stats().dram.hits;
  EXPECT_TRUE(cache->HasHostCopy({2, 4}));
  EXPECT_FALSE(cache->HasHostCopy({2, 5}));
  EXPECT_EQ(cache->stats().dram.hits, dram_hits) << "a query is no access";
  EXPECT_EQ(cache->stats().device.loads, 0u);
  EXPECT_FALSE(cache->TryAcquireHostCopy({2, 5}).has_value()) << "not in DRAM";
  // Pinned in DRAM, it survives churn there while the device fills.
  for (int e : {0, 1, 2, 3, 5}) ASSERT_TRUE(cache->Acquire({1, e}).ok());
  EXPECT_TRUE(HoldsExpert(layout_, host->data(), 2, 4));
  host.reset();
  EXPECT_TRUE(cache->CheckInvariants().ok());
}

// How the cache uses a device backend's hooks (the CUDA tier implements
// them with cudaMalloc, cudaHostRegister and a copy stream).
struct CopierLog {
  int allocations = 0;
  int slots_allocated = 0;
  int prepared = 0;
  int released = 0;
  int copies = 0;
};

class RecordingCopier : public DeviceCopier {
 public:
  explicit RecordingCopier(std::shared_ptr<CopierLog> log) : log_(std::move(log)) {}
  absl::Status Copy(std::byte* device_dst, const std::byte* host_src, size_t bytes) override {
    ++log_->copies;
    std::memcpy(device_dst, host_src, bytes);
    return absl::OkStatus();
  }
  absl::StatusOr<SlotMemory> AllocateSlots(int count, size_t slot_bytes) override {
    ++log_->allocations;
    log_->slots_allocated += count;
    return DeviceCopier::AllocateSlots(count, slot_bytes);
  }
  absl::StatusOr<std::shared_ptr<void>> PrepareHostSlot(std::byte* data, size_t bytes) override {
    ++log_->prepared;
    return std::shared_ptr<void>(std::make_shared<Release>(log_));
  }

 private:
  struct Release {
    explicit Release(std::shared_ptr<CopierLog> l) : log(std::move(l)) {}
    ~Release() { ++log->released; }
    std::shared_ptr<CopierLog> log;
  };
  std::shared_ptr<CopierLog> log_;
};

TEST_F(ExpertCacheTest, DeviceSlotsComeFromOneAllocationPerGrowthAndDramSlotsArePrepared) {
  OpenReader();
  auto log = std::make_shared<CopierLog>();
  const uint64_t slot = layout_.slot_bytes();
  ExpertCacheOptions options;
  options.dram_budget_bytes = 6 * slot;
  options.device_budget_bytes = 3 * slot;
  options.min_slots = 2;
  options.device_copier = std::make_unique<RecordingCopier>(log);
  auto cache = ExpertCache::Create(*file_, *reader_, std::move(options));
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ(log->allocations, 1);
  EXPECT_EQ(log->slots_allocated, 3);
  EXPECT_EQ(log->prepared, 6) << "every DRAM slot, for DMA";

  auto check_all = [&](int layer) {
    for (int e = 0; e < kExperts; ++e) {
      auto pin = (*cache)->Acquire({layer, e});
      ASSERT_TRUE(pin.ok()) << pin.status();
      EXPECT_TRUE(HoldsExpert(layout_, pin->data(), layer, e)) << layer << "/" << e;
    }
  };
  check_all(1);
  EXPECT_EQ(log->copies, kExperts);

  ASSERT_TRUE((*cache)->Resize(8 * slot, 5 * slot).ok());
  EXPECT_EQ(log->allocations, 2) << "one allocation for the two added slots";
  EXPECT_EQ(log->slots_allocated, 5);
  EXPECT_EQ(log->prepared, 8);
  check_all(2);
  ASSERT_TRUE((*cache)->Resize(6 * slot, 2 * slot).ok());
  EXPECT_EQ(log->released, 2) << "removed DRAM slots drop their preparation";
  check_all(0);
  EXPECT_TRUE((*cache)->CheckInvariants().ok());
  cache->reset();
  EXPECT_EQ(log->released, log->prepared);
}

TEST_F(ExpertCacheTest, WithoutADeviceTierTheBackendIsNotUsed) {
  OpenReader();
  auto log = std::make_shared<CopierLog>();
  ExpertCacheOptions options;
  options.dram_budget_bytes = 4 * layout_.slot_bytes();
  options.min_slots = 2;
  options.device_copier = std::make_unique<RecordingCopier>(log);
  auto cache = ExpertCache::Create(*file_, *reader_, std::move(options));
  ASSERT_TRUE(cache.ok()) << cache.status();
  ASSERT_TRUE((*cache)->Acquire({0, 1}).ok());
  EXPECT_EQ(log->allocations + log->prepared + log->copies, 0);
}

TEST_F(ExpertCacheTest, PrefetchLoadsOnceAndNeverWaits) {
  auto cache = MakeCache(4);
  EXPECT_TRUE(cache->Prefetch({0, 1}));
  EXPECT_FALSE(cache->Prefetch({0, 1})) << "already loading";
  auto pin = cache->Acquire({0, 1});
  ASSERT_TRUE(pin.ok());
  EXPECT_TRUE(HoldsExpert(layout_, pin->data(), 0, 1));
  EXPECT_FALSE(cache->Prefetch({0, 1})) << "already resident";
  EXPECT_EQ(cache->stats().dram.loads, 1u);
  EXPECT_EQ(cache->stats().dram.prefetches, 1u);
  // With every slot pinned, a prefetch is dropped rather than waiting.
  std::vector<ExpertCache::Pin> pins;
  for (int e = 2; e < 5; ++e) pins.push_back(std::move(*cache->Acquire({0, e})));
  EXPECT_FALSE(cache->Prefetch({2, 7}));
}

TEST_F(ExpertCacheTest, TryAcquireNeverWaitsAndPrefetchHitsAreCounted) {
  testing::FaultOptions slow;
  slow.delay = std::chrono::milliseconds(20);
  OpenReader(&slow);
  auto cache = MakeCache(4);
  EXPECT_FALSE(cache->TryAcquire({1, 1}).has_value()) << "not resident";
  EXPECT_EQ(cache->stats().dram.misses, 0u) << "a failed TryAcquire is no access";
  ASSERT_TRUE(cache->Prefetch({1, 1}));
  EXPECT_FALSE(cache->TryAcquire({1, 1}).has_value()) << "still loading";
  EXPECT_EQ(cache->reads_in_flight(), 1);
  std::optional<ExpertCache::Pin> pin;
  for (int i = 0; i < 500 && !pin; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    pin = cache->TryAcquire({1, 1});
  }
  ASSERT_TRUE(pin.has_value());
  EXPECT_TRUE(HoldsExpert(layout_, pin->data(), 1, 1));
  TierStats stats = cache->stats().dram;
  EXPECT_EQ(stats.hidden, 1u);
  EXPECT_EQ(stats.hits, 0u) << "a prefetched expert's first use is hidden, not a hit";
  EXPECT_DOUBLE_EQ(stats.hidden_miss_share(), 1.0);
  EXPECT_GT(stats.mean_load_seconds(), 0.015);
  // A demand access that joins a prefetch still in flight is a late prefetch.
  ASSERT_TRUE(cache->Prefetch({1, 2}));
  ASSERT_TRUE(cache->Acquire({1, 2}).ok());
  stats = cache->stats().dram;
  EXPECT_EQ(stats.late_prefetches, 1u);
  EXPECT_EQ(stats.misses, 1u);
}

// Holds every speculative read until the test lets it go, as a disk busy
// with other reads would, so that what the cache does with a queued
// prefetch (promote it, cancel it) is seen deterministically. Demand reads
// pass straight to the real reader.
class GatedReader : public io::ExpertReader {
 public:
  explicit GatedReader(std::unique_ptr<io::ExpertReader> inner) : inner_(std::move(inner)) {}
  absl::string_view name() const override { return inner_->name(); }
  int queue_depth() const override { return inner_->queue_depth(); }
  absl::Status RegisterBuffers(absl::Span<const iovec> buffers) override { return inner_->RegisterBuffers(buffers); }

  using io::ExpertReader::Submit;
  void Submit(uint64_t offset, uint64_t length, std::byte* dest, Done done, io::ReadClass read_class) override {
    if (!read_class.speculative) {
      inner_->Submit(offset, length, dest, std::move(done), read_class);
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    held_.push_back({offset, length, dest, std::move(done), read_class.tag});
  }
  void Promote(uint64_t tag) override {
    for (Held& read : Take(tag)) inner_->Submit(read.offset, read.length, read.dest, std::move(read.done));
  }
  int CancelSpeculative(uint64_t tag) override {
    std::vector<Held> taken = Take(tag);
    // Completed on the real reader's thread, never inside this call (the
    // cache holds its lock here): a read of nothing carries the status.
    for (Held& read : taken) {
      inner_->Submit(0, 0, read.dest, [done = std::move(read.done)](absl::Status) mutable {
        done(absl::CancelledError("cancelled by the test's reader"));
      });
    }
    return static_cast<int>(taken.size());
  }
  // Lets every held read go to the disk.
  void ReleaseAll() {
    for (Held& read : Take(0)) inner_->Submit(read.offset, read.length, read.dest, std::move(read.done));
  }
  int held() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int>(held_.size());
  }

 private:
  struct Held {
    uint64_t offset;
    uint64_t length;
    std::byte* dest;
    Done done;
    uint64_t tag;
  };
  // The held reads with `tag` (0: all), off the list.
  std::vector<Held> Take(uint64_t tag) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Held> taken;
    std::vector<Held> kept;
    for (Held& read : held_) (tag == 0 || read.tag == tag ? taken : kept).push_back(std::move(read));
    held_ = std::move(kept);
    return taken;
  }

  std::unique_ptr<io::ExpertReader> inner_;
  std::mutex mu_;
  std::vector<Held> held_;
};

class ExpertCacheGatedTest : public ExpertCacheTest {
 protected:
  void SetUp() override {
    ExpertCacheTest::SetUp();
    OpenReader();
    auto gated = std::make_unique<GatedReader>(std::move(reader_));
    gated_ = gated.get();
    reader_ = std::move(gated);
  }
  GatedReader* gated_ = nullptr;
};

// A prefetch still queued when its layer asks for the expert becomes a
// demand read: it no longer waits behind other prefetches.
TEST_F(ExpertCacheGatedTest, AskingForAQueuedPrefetchPromotesItsReads) {
  auto cache = MakeCache(6);
  cache->BeginPass();
  cache->BeginLayer(0);
  ASSERT_TRUE(cache->Prefetch({1, 2}));
  ASSERT_TRUE(cache->Prefetch({1, 3}));
  EXPECT_EQ(gated_->held(), 2);
  cache->BeginLayer(1);
  EXPECT_FALSE(cache->StartLoad({1, 2}, /*prefetch=*/false)) << "loading already";
  EXPECT_EQ(gated_->held(), 1) << "its read went to the disk; the other prefetch still waits";
  auto pin = cache->Acquire({1, 2});
  ASSERT_TRUE(pin.ok()) << pin.status();
  EXPECT_TRUE(HoldsExpert(layout_, pin->data(), 1, 2));
  EXPECT_EQ(cache->stats().dram.late_prefetches, 1u);
  // Acquire alone (no StartLoad first) promotes too.
  auto other = std::async(std::launch::async, [&] { return cache->Acquire({1, 3}); });
  for (int i = 0; i < 1000 && gated_->held() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(gated_->held(), 0);
  ASSERT_TRUE(other.get().ok());
  EXPECT_TRUE(cache->CheckInvariants().ok());
}

// A prefetch whose layer has routed without it is a wrong guess: its reads
// still queued are cancelled, its slot goes back to the free list, and it
// counts as cancelled, not as a load error. An expert the layer did ask for
// is left alone.
TEST_F(ExpertCacheGatedTest, AWrongGuessStillQueuedIsCancelledWhenItsLayerRoutes) {
  auto cache = MakeCache(6);
  cache->BeginPass();
  cache->BeginLayer(0);
  ASSERT_TRUE(cache->Prefetch({1, 4}));  // the wrong guess
  ASSERT_TRUE(cache->Prefetch({1, 5}));  // the right one
  ASSERT_TRUE(cache->Prefetch({2, 6}));  // for a later layer
  cache->LayerRouted(0);
  EXPECT_EQ(gated_->held(), 3) << "none of them was for layer 0";
  cache->BeginLayer(1);
  cache->StartLoad({1, 5}, /*prefetch=*/false);
  cache->LayerRouted(1);
  for (int i = 0; i < 1000 && cache->stats().dram.prefetches_cancelled == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  TierStats stats = cache->stats().dram;
  EXPECT_EQ(stats.prefetches_cancelled, 1u);
  EXPECT_EQ(stats.load_errors, 0u);
  EXPECT_EQ(gated_->held(), 1) << "layer 2's guess waits for its own layer";
  EXPECT_FALSE(cache->IsReady({1, 4}));
  auto pin = cache->Acquire({1, 5});
  ASSERT_TRUE(pin.ok()) << pin.status();
  EXPECT_TRUE(HoldsExpert(layout_, pin->data(), 1, 5));
  // The cancelled expert loads afresh when asked for later.
  auto again = cache->Acquire({1, 4});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(HoldsExpert(layout_, again->data(), 1, 4));
  gated_->ReleaseAll();
  EXPECT_TRUE(cache->CheckInvariants().ok());
}

// Someone joins a prefetch whose reads are being cancelled: they get the
// expert from a load of their own, not the cancellation as an error.
TEST_F(ExpertCacheGatedTest, JoiningACancelledPrefetchLoadsTheExpertAfresh) {
  auto cache = MakeCache(6);
  cache->BeginPass();
  cache->BeginLayer(0);
  ASSERT_TRUE(cache->Prefetch({1, 7}));
  cache->BeginLayer(1);
  cache->LayerRouted(1);  // cancelled; its completion may not have come yet
  auto pin = cache->Acquire({1, 7});
  ASSERT_TRUE(pin.ok()) << pin.status();
  EXPECT_TRUE(HoldsExpert(layout_, pin->data(), 1, 7));
  const TierStats stats = cache->stats().dram;
  EXPECT_EQ(stats.prefetches_cancelled, 1u);
  EXPECT_EQ(stats.load_errors, 0u);
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_TRUE(cache->CheckInvariants().ok());
}

// The engine asks for a missing expert with StartLoad and waits for it with
// Acquire after running what was ready. That access is one miss, however
// long the wait: it used to be counted at Acquire, as a hit whenever the load
// had finished by then, so a cache that never had an expert ready when asked
// reported half its accesses as hits.
TEST_F(ExpertCacheTest, AStartedLoadIsAMissEvenWhenItHasLandedByAcquire) {
  for (int device_slots : {0, 3}) {
    SCOPED_TRACE(device_slots);
    auto cache = MakeCache(6, device_slots);
    cache->BeginPass();
    cache->BeginLayer(1);
    ASSERT_TRUE(cache->StartLoad({1, 3}, /*prefetch=*/false));
    for (int i = 0; i < 1000 && !cache->IsReady({1, 3}); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_TRUE(cache->IsReady({1, 3}));
    ASSERT_TRUE(cache->Acquire({1, 3}).ok());
    CacheStats stats = cache->stats();
    const TierStats& compute = device_slots > 0 ? stats.device : stats.dram;
    EXPECT_EQ(compute.misses, 1u);
    EXPECT_EQ(compute.hits, 0u);
    EXPECT_EQ(compute.accesses(), 1u) << "StartLoad and Acquire are one access";
    EXPECT_EQ(stats.dram.misses, 1u) << "the device miss went to DRAM, which missed too";
    EXPECT_EQ(stats.dram.accesses(), 1u);
    // The next pass asks again: now it is there.
    cache->BeginPass();
    cache->BeginLayer(1);
    ASSERT_TRUE(cache->TryAcquire({1, 3}).has_value());
    stats = cache->stats();
    const TierStats& again = device_slots > 0 ? stats.device : stats.dram;
    EXPECT_EQ(again.hits, 1u);
    EXPECT_EQ(again.accesses(), 2u);
    EXPECT_DOUBLE_EQ(again.hit_rate() + again.hidden_rate() + again.miss_rate(), 1.0);
    EXPECT_TRUE(cache->CheckInvariants().ok());
  }
}

// Each access is exactly one of hit, hidden, miss, whichever way it comes.
TEST_F(ExpertCacheTest, EveryAccessIsCountedOnceAsHitHiddenOrMiss) {
  testing::FaultOptions slow;
  slow.delay = std::chrono::milliseconds(5);
  OpenReader(&slow);
  auto cache = MakeCache(8);
  auto wait_ready = [&](ExpertKey key) {
    for (int i = 0; i < 1000 && !cache->IsReady(key); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_TRUE(cache->IsReady(key));
  };
  cache->BeginPass();
  cache->BeginLayer(0);
  ASSERT_TRUE(cache->Acquire({0, 0}).ok());  // miss: loaded on demand
  ASSERT_TRUE(cache->Acquire({0, 0}).ok());  // hit
  ASSERT_TRUE(cache->Prefetch({0, 1}));
  wait_ready({0, 1});
  ASSERT_TRUE(cache->TryAcquire({0, 1}).has_value());  // hidden
  ASSERT_TRUE(cache->TryAcquire({0, 1}).has_value());  // then a hit
  ASSERT_TRUE(cache->Prefetch({0, 2}));
  ASSERT_TRUE(cache->Acquire({0, 2}).ok());  // miss: a late prefetch
  ASSERT_TRUE(cache->StartLoad({0, 3}, /*prefetch=*/false));
  ASSERT_TRUE(cache->Acquire({0, 3}).ok());  // miss, counted at StartLoad
  ASSERT_TRUE(cache->Prefetch({0, 4}));
  wait_ready({0, 4});
  cache->StartLoad({0, 4}, /*prefetch=*/false);  // ready: Acquire counts it
  ASSERT_TRUE(cache->Acquire({0, 4}).ok());       // hidden
  const TierStats stats = cache->stats().dram;
  EXPECT_EQ(stats.hits, 2u);
  EXPECT_EQ(stats.hidden, 2u);
  EXPECT_EQ(stats.misses, 3u);
  EXPECT_EQ(stats.late_prefetches, 1u);
  EXPECT_EQ(stats.accesses(), 7u);
  EXPECT_GT(stats.wait_ns, 0u) << "the misses' stall";
}

// Reads overlap: eight 20 ms loads in flight together keep the file busy
// for about 20 ms, not 160. The prefetch budget divides by this busy time
// (throughput with loads overlapping), not by one load's latency.
TEST_F(ExpertCacheTest, ReadBusyTimeCountsOverlappingLoadsOnce) {
  testing::FaultOptions slow;
  slow.delay = std::chrono::milliseconds(20);
  OpenReader(&slow);
  auto cache = MakeCache(8);
  for (int e = 0; e < 8; ++e) ASSERT_TRUE(cache->Prefetch({1, e}));
  for (int e = 0; e < 8; ++e) ASSERT_TRUE(cache->Acquire({1, e}).ok());
  const TierStats stats = cache->stats().dram;
  EXPECT_EQ(stats.completed_loads, 8u);
  EXPECT_GE(stats.load_ns, 8u * 20'000'000u) << "each load took its 20 ms";
  EXPECT_GE(stats.read_busy_ns, 20'000'000u);
  EXPECT_LT(stats.read_busy_ns, stats.load_ns / 3) << "overlapping loads count once";
  EXPECT_GT(stats.read_bytes_per_second(), 8 * layout_.expert_bytes() / stats.mean_load_seconds() / 3);
}

TEST_F(ExpertCacheTest, PermanentPinsSurviveAnyChurn) {
  auto cache = MakeCache(6);
  const std::vector<ExpertKey> shallow = {{0, 0}, {0, 1}, {0, 2}};
  ASSERT_TRUE(cache->PinPermanently(shallow).ok());
  for (int round = 0; round < 3; ++round) {
    for (int e = 0; e < kExperts; ++e) ASSERT_TRUE(cache->Acquire({2, e}).ok());
  }
  const uint64_t misses = cache->stats().dram.misses;
  for (const ExpertKey& key : shallow) {
    auto pin = cache->Acquire(key);
    ASSERT_TRUE(pin.ok());
    EXPECT_TRUE(HoldsExpert(layout_, pin->data(), key.layer, key.expert));
  }
  EXPECT_EQ(cache->stats().dram.misses, misses);
  const std::vector<ExpertKey> too_many = {{1, 0}, {1, 1}};
  absl::Status status = cache->PinPermanently(too_many);
  EXPECT_THAT(std::string(status.message()), HasSubstr("leaves 1 of the compute tier's 6 slots"));
  EXPECT_TRUE(cache->CheckInvariants().ok());
}

// Six threads of random demand, tries and prefetches while budgets change,
// without and with a device tier (whose copier thread then joins in).
class ExpertCacheStress : public ExpertCacheTest, public ::testing::WithParamInterface<int> {};

TEST_P(ExpertCacheStress, ConcurrencyStress) {
  const int device_slots = GetParam();
  testing::FaultOptions jitter;
  jitter.delay = std::chrono::microseconds(200);
  jitter.eio_probability = 0.02;
  OpenReader(&jitter);
  auto cache = MakeCache(6, device_slots, "least-stale", 3);
  std::atomic<int> wrong{0}, errors{0}, done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 400; ++i) {
        const ExpertKey key{static_cast<int>(rng() % kLayers), static_cast<int>(rng() % kExperts)};
        switch (rng() % 4) {
          case 0:
            cache->Prefetch(key);
            break;
          case 1: {
            cache->BeginLayer(key.layer);
            auto pin = cache->TryAcquire(key);
            if (pin && !HoldsExpert(layout_, pin->data(), key.layer, key.expert)) ++wrong;
            break;
          }
          default: {
            auto pin = cache->Acquire(key);
            if (!pin.ok()) {
              ++errors;
            } else if (!HoldsExpert(layout_, pin->data(), key.layer, key.expert)) {
              ++wrong;
            }
          }
        }
      }
      ++done;
    });
  }
  // Budget changes while the workers run.
  for (int slots : {10, 4, 8, 3, 6}) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    const int device = device_slots > 0 ? std::max(3, slots - 2) : 0;
    ASSERT_TRUE(cache->Resize(slots * layout_.slot_bytes(), device * layout_.slot_bytes()).ok());
    cache->BeginPass();
    ASSERT_TRUE(cache->CheckInvariants().ok()) << cache->CheckInvariants();
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(done.load(), 6);
  if (device_slots == 0) {
    EXPECT_GT(errors.load(), 0) << "injected EIO should surface sometimes";
  } else {
    // The copier thread meets many of the failed reads first; they are
    // counted, and the demand accesses that hit one get it.
    EXPECT_GT(cache->stats().dram.load_errors, 0u) << "injected EIO should happen sometimes";
  }
  EXPECT_TRUE(cache->CheckInvariants().ok()) << cache->CheckInvariants();
  EXPECT_EQ(cache->stats().dram.slots, 6);
  if (device_slots > 0) {
    EXPECT_EQ(cache->stats().device.slots, 4);
    EXPECT_GT(cache->stats().device.prefetches, 0u) << "the copier thread took part";
  }
}

INSTANTIATE_TEST_SUITE_P(Tiers, ExpertCacheStress, ::testing::Values(0, 4),
                         [](const auto& info) { return info.param == 0 ? "DramOnly" : "WithDeviceTier"; });

// Device copies that land later (tests/testing/deferred_copier.h), as on a
// CUDA copy stream: the cache hands out the slot at once, with the copy's
// readiness.
class DeferredCopyTest : public ExpertCacheTest {
 protected:
  std::unique_ptr<ExpertCache> MakeDeferredCache(int dram_slots, int device_slots, std::chrono::microseconds delay,
                                                 int min_slots = 2) {
    if (reader_ == nullptr) OpenReader();
    auto copier = std::make_unique<DeferredCopier>(delay);
    copier_ = copier.get();
    ExpertCacheOptions options;
    options.dram_budget_bytes = dram_slots * layout_.slot_bytes();
    options.device_budget_bytes = device_slots * layout_.slot_bytes();
    options.min_slots = min_slots;
    options.device_copier = std::move(copier);
    auto cache = ExpertCache::Create(*file_, *reader_, std::move(options));
    EXPECT_TRUE(cache.ok()) << cache.status();
    return cache.ok() ? std::move(*cache) : nullptr;
  }

  DeferredCopier* copier_ = nullptr;  // owned by the cache
};

TEST_F(DeferredCopyTest, ACopyInFlightIsHandedOutNotReadyAndWaitGivesItsBytes) {
  auto cache = MakeDeferredCache(6, 3, std::chrono::microseconds(0));
  copier_->Hold();
  auto pin = cache->Acquire({1, 2});
  ASSERT_TRUE(pin.ok()) << pin.status();
  EXPECT_FALSE(pin->readiness().IsReady()) << "Acquire did not wait for the copy";
  EXPECT_FALSE(HoldsExpert(layout_, pin->data(), 1, 2)) << "the bytes are not there yet";
  EXPECT_EQ(copier_->started(), 1);
  EXPECT_TRUE(cache->IsReady({1, 2})) << "Acquire returns at once: ready for a stream to wait on";
  // A second pin of the slot carries the same pending copy; no second copy.
  auto again = cache->TryAcquire({1, 2});
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->data(), pin->data());
  EXPECT_FALSE(again->readiness().IsReady());
  // The DRAM copy the copy reads stays held and pinned meanwhile.
  EXPECT_TRUE(cache->HasHostCopy({1, 2}));
  EXPECT_TRUE(cache->CheckInvariants().ok()) << cache->CheckInvariants();

  copier_->Release();
  ASSERT_TRUE(pin->readiness().Wait().ok());
  EXPECT_TRUE(pin->readiness().IsReady());
  EXPECT_TRUE(HoldsExpert(layout_, pin->data(), 1, 2));
  EXPECT_TRUE(again->readiness().IsReady());
  pin = absl::CancelledError();
  again.reset();
  // Seen complete at the next layer: later pins are ready from the start.
  cache->BeginLayer(1);
  auto later = cache->Acquire({1, 2});
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_TRUE(later->readiness().IsReady());
  EXPECT_EQ(copier_->started(), 1);
  const CacheStats stats = cache->stats();
  EXPECT_EQ(stats.device.loads, 1u);
  EXPECT_EQ(stats.device.misses, 1u);
  EXPECT_EQ(stats.device.hits, 2u);
  EXPECT_EQ(stats.dram.misses, 1u);
  EXPECT_TRUE(cache->CheckInvariants().ok()) << cache->CheckInvariants();
}

// Two DRAM slots under four device copies that land 20 ms after they start:
// the third and fourth fills need a DRAM slot that a pending copy reads, and
// must wait for that copy instead of overwriting its source.
TEST_F(DeferredCopyTest, ADramSlotIsNeverRefilledWhileACopyReadsIt) {
  auto cache = MakeDeferredCache(2, 4, std::chrono::milliseconds(20));
  std::vector<ExpertCache::Pin> pins;
  for (int e = 0; e < 4; ++e) {
    auto pin = cache->Acquire({2, e});
    ASSERT_TRUE(pin.ok()) << pin.status();
    EXPECT_TRUE(cache->CheckInvariants().ok()) << cache->CheckInvariants();
    pins.push_back(std::move(*pin));
  }
  for (int e = 0; e < 4; ++e) {
    ASSERT_TRUE(pins[e].readiness().Wait().ok());
    EXPECT_TRUE(HoldsExpert(layout_, pins[e].data(), 2, e)) << "expert " << e;
  }
  EXPECT_EQ(copier_->sources_overwritten(), 0) << "a DRAM slot was refilled under a pending copy";
  EXPECT_EQ(copier_->landed(), 4);
  EXPECT_EQ(cache->stats().dram.evictions, 2u);
  EXPECT_TRUE(cache->CheckInvariants().ok()) << cache->CheckInvariants();
}

// A device backend whose first copies fail: when it is started (an error
// from CopyAsync), or as it completes (a fence done with an error).
class FailingCopier : public DeviceCopier {
 public:
  enum class When { kAtStart, kOnCompletion };
  FailingCopier(When when, int failures) : when_(when), failures_left_(failures) {}
  absl::Status Copy(std::byte* device_dst, const std::byte* host_src, size_t bytes) override {
    std::memcpy(device_dst, host_src, bytes);
    return absl::OkStatus();
  }
  absl::StatusOr<Readiness> CopyAsync(std::byte* device_dst, const std::byte* host_src, size_t bytes) override {
    if (failures_left_ == 0) return DeviceCopier::CopyAsync(device_dst, host_src, bytes);
    --failures_left_;
    if (when_ == When::kAtStart) return absl::UnavailableError("copy engine unavailable");
    return Readiness(std::make_shared<FailedFence>());
  }

 private:
  struct FailedFence : Readiness::Fence {
    bool IsReady() const override { return true; }
    absl::Status Wait() const override { return absl::DataLossError("copy failed on the device"); }
  };
  const When when_;
  int failures_left_;
};

TEST_F(ExpertCacheTest, AFailedDeviceCopyIsTheAccessorsErrorAndLeavesTheCacheConsistent) {
  for (FailingCopier::When when : {FailingCopier::When::kAtStart, FailingCopier::When::kOnCompletion}) {
    SCOPED_TRACE(when == FailingCopier::When::kAtStart ? "at start" : "on completion");
    if (reader_ == nullptr) OpenReader();
    ExpertCacheOptions options;
    options.dram_budget_bytes = 4 * layout_.slot_bytes();
    options.device_budget_bytes = 2 * layout_.slot_bytes();
    options.min_slots = 2;
    options.prefetch_to_device = false;
    options.device_copier = std::make_unique<FailingCopier>(when, 1);
    auto created = ExpertCache::Create(*file_, *reader_, std::move(options));
    ASSERT_TRUE(created.ok()) << created.status();
    ExpertCache& cache = **created;
    auto failed = cache.Acquire({0, 3});
    ASSERT_FALSE(failed.ok()) << "returned, not retried forever";
    EXPECT_THAT(std::string(failed.status().message()), HasSubstr("copy"));
    EXPECT_FALSE(cache.IsReady({0, 3}));
    EXPECT_TRUE(cache.HasHostCopy({0, 3})) << "the DRAM copy stays";
    EXPECT_EQ(cache.stats().device.load_errors, 1u);
    EXPECT_TRUE(cache.CheckInvariants().ok()) << cache.CheckInvariants();
    auto pin = cache.Acquire({0, 3});
    ASSERT_TRUE(pin.ok()) << pin.status();
    ASSERT_TRUE(pin->readiness().Wait().ok());
    EXPECT_TRUE(HoldsExpert(layout_, pin->data(), 0, 3));
    // The cache goes on serving through both tiers' churn.
    for (int e = 4; e < 8; ++e) ASSERT_TRUE(cache.Acquire({1, e}).ok());
    EXPECT_TRUE(cache.CheckInvariants().ok()) << cache.CheckInvariants();
  }
}

// Destroying the cache with copies in flight waits for them: they write
// into its device slots and read its DRAM slots (ASan would see the rest).
TEST_F(DeferredCopyTest, TeardownWaitsForCopiesInFlight) {
  auto cache = MakeDeferredCache(8, 4, std::chrono::milliseconds(50));
  for (int e = 0; e < 4; ++e) ASSERT_TRUE(cache->Acquire({0, e}).ok());
  for (int e = 4; e < 8; ++e) cache->Prefetch({0, e});
  DeferredCopier* copier = copier_;
  EXPECT_LT(copier->landed(), copier->started()) << "copies still in flight";
  cache.reset();
}

// Threads of demand, tries and prefetches while budgets change, with copies
// that land later: every pin, once waited for, holds its expert, and no copy
// ever saw its source change.
TEST_F(DeferredCopyTest, ConcurrencyStress) {
  testing::FaultOptions jitter;
  jitter.delay = std::chrono::microseconds(100);
  OpenReader(&jitter);
  auto cache = MakeDeferredCache(6, 4, std::chrono::microseconds(100), 3);
  std::atomic<int> wrong{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(100 + t);
      for (int i = 0; i < 250; ++i) {
        const ExpertKey key{static_cast<int>(rng() % kLayers), static_cast<int>(rng() % kExperts)};
        switch (rng() % 4) {
          case 0:
            cache->Prefetch(key);
            break;
          case 1: {
            cache->BeginLayer(key.layer);
            auto pin = cache->TryAcquire(key);
            if (pin && (!pin->readiness().Wait().ok() || !HoldsExpert(layout_, pin->data(), key.layer, key.expert))) {
              ++wrong;
            }
            break;
          }
          default: {
            auto pin = cache->Acquire(key);
            if (!pin.ok()) {
              ++errors;
            } else if (!pin->readiness().Wait().ok() || !HoldsExpert(layout_, pin->data(), key.layer, key.expert)) {
              ++wrong;
            }
          }
        }
      }
    });
  }
  for (int slots : {9, 4, 7, 3, 6}) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_TRUE(cache->Resize(slots * layout_.slot_bytes(), std::max(3, slots - 2) * layout_.slot_bytes()).ok());
    cache->BeginPass();
    ASSERT_TRUE(cache->CheckInvariants().ok()) << cache->CheckInvariants();
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(copier_->sources_overwritten(), 0);
  EXPECT_GT(copier_->started(), 0);
  EXPECT_TRUE(cache->CheckInvariants().ok()) << cache->CheckInvariants();
}

// Slots are sized by the packed bytes, so one DRAM budget holds ~3.5x as
// many q4_k experts as bf16 ones. hidden = ffn = 256: a bf16 expert is
// 393216 bytes (96 pages), a q4_k one 110592 (27 pages: 4.5 bits per
// weight), a Q4_K_M one (q4_k gate and up, q6_k down) 127488, 32 pages with
// its slot's padding. A budget of 4 bf16 slots holds 14 q4_k slots (3.5x;
// 96/27 = 3.56 when budgets are large) and 12 Q4_K_M ones (3.0x here, 3.08x
// at OLMoE's 2048 x 1024 where the bundle is whole pages).
TEST(ExpertCacheSlotsTest, ADramBudgetHoldsSlotsByPackedBytes) {
  ScopedTempDir dir("cache_slots_by_bytes");
  constexpr int kMany = 16;  // more than any budget below holds: no cap
  int files = 0;
  const auto slots_for = [&](const io::BundleDtypes& slot, const io::BundleDtypes& bundle, int experts,
                             uint64_t budget) -> int {
    io::ExpertFileLayout layout;
    layout.model_fingerprint = 7;
    layout.dtypes = slot;
    layout.num_layers = 1;
    layout.num_experts = kMany;
    layout.hidden_size = 256;
    layout.intermediate_size = 256;
    const std::string path = dir.Sub(absl::StrCat("file", files++, ".experts"));
    auto writer = io::ExpertFileWriter::Create(path, layout);
    EXPECT_TRUE(writer.ok()) << writer.status();
    if (!writer.ok()) return -1;
    const std::vector<std::byte> bytes(io::ExpertBundleLayout(bundle, 256, 256).bytes, std::byte{1});
    for (int e = 0; e < experts; ++e) EXPECT_TRUE((*writer)->Add(0, e, bundle, bytes).ok());
    EXPECT_TRUE((*writer)->Finish().ok());
    auto file = io::ExpertFile::Open(path, 7);
    EXPECT_TRUE(file.ok()) << file.status();
    io::ReaderOptions reader_options;
    reader_options.path = path;
    auto reader = io::OpenExpertReader(reader_options);
    EXPECT_TRUE(reader.ok()) << reader.status();
    if (!file.ok() || !reader.ok()) return -1;
    ExpertCacheOptions options;
    options.dram_budget_bytes = budget;
    auto cache = ExpertCache::Create(**file, **reader, std::move(options));
    EXPECT_TRUE(cache.ok()) << cache.status();
    return cache.ok() ? (*cache)->stats().dram.slots : -1;
  };
  const io::BundleDtypes bf16 = io::BundleDtypes::Uniform(DType::kBF16);
  const io::BundleDtypes q4_k = io::BundleDtypes::Uniform(DType::kQ4_K);
  const io::BundleDtypes q4_k_m{DType::kQ4_K, DType::kQ4_K, DType::kQ6_K};
  const uint64_t budget = 4 * 393216;
  EXPECT_EQ(slots_for(bf16, bf16, 4, budget), 4);
  EXPECT_EQ(slots_for(q4_k, q4_k, kMany, budget), 14);
  // The Q4_K_M slot fits its largest bundle; its q4_k-down experts (the
  // layers llama.cpp gives less) use the same slots.
  EXPECT_EQ(slots_for(q4_k_m, q4_k, kMany, budget), 12);
}

// Counts what the cache asks the file for.
class CountingReader : public io::ExpertReader {
 public:
  explicit CountingReader(std::unique_ptr<io::ExpertReader> inner) : inner_(std::move(inner)) {}
  absl::string_view name() const override { return inner_->name(); }
  int queue_depth() const override { return inner_->queue_depth(); }
  using io::ExpertReader::Submit;
  void Submit(uint64_t offset, uint64_t length, std::byte* dest, Done done, io::ReadClass read_class) override {
    bytes_ += length;
    ++reads_;
    inner_->Submit(offset, length, dest, std::move(done), read_class);
  }
  void Promote(uint64_t tag) override { inner_->Promote(tag); }
  int CancelSpeculative(uint64_t tag) override { return inner_->CancelSpeculative(tag); }
  absl::Status RegisterBuffers(absl::Span<const iovec> buffers) override { return inner_->RegisterBuffers(buffers); }
  uint64_t bytes() const { return bytes_; }
  uint64_t reads() const { return reads_; }

 private:
  std::unique_ptr<io::ExpertReader> inner_;
  std::atomic<uint64_t> bytes_{0};  // Submit may be called from several threads
  std::atomic<uint64_t> reads_{0};
};

// A file of mixed precision per expert (bf16, q8_0 and q4_0 bundles in
// bf16-sized slots): a miss reads its own bundle rounded up to the file's
// alignment, not the whole slot, and the slot then holds that bundle even
// where a larger one lay before. 64 x 32 experts: bf16 12288 bytes (3
// pages, the slot), q8_0 6528 (2 pages), q4_0 3456 (1 page).
TEST(ExpertCacheMixedPrecisionTest, AMissReadsItsBundleRoundedToTheAlignmentNotTheSlot) {
  ScopedTempDir dir("cache_mixed_precision");
  const std::string path = dir.Sub("mixed.experts");
  io::ExpertFileLayout layout;
  layout.model_fingerprint = 9;
  layout.dtypes = io::BundleDtypes::Uniform(DType::kBF16);
  layout.num_layers = 2;
  layout.num_experts = 6;
  layout.hidden_size = 64;
  layout.intermediate_size = 32;
  const DType kDtypes[] = {DType::kBF16, DType::kQ8_0, DType::kQ4_0};
  const auto dtype_of = [&](int layer, int expert) { return kDtypes[(layer + expert) % 3]; };
  const auto bundle = [&](int layer, int expert) {
    std::vector<std::byte> bytes(io::ExpertBundleLayout(dtype_of(layer, expert), 64, 32).bytes);
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = std::byte((layer * 31 + expert * 7 + i) & 0xff);
    return bytes;
  };
  {
    auto writer = io::ExpertFileWriter::Create(path, layout);
    ASSERT_TRUE(writer.ok()) << writer.status();
    for (int l = 0; l < 2; ++l) {
      for (int e = 0; e < 6; ++e) {
        ASSERT_TRUE((*writer)->Add(l, e, io::BundleDtypes::Uniform(dtype_of(l, e)), bundle(l, e)).ok());
      }
    }
    ASSERT_TRUE((*writer)->Finish().ok());
  }
  auto file = io::ExpertFile::Open(path, 9);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->layout().slot_bytes(), 12288u);
  io::ReaderOptions reader_options;
  reader_options.path = path;
  auto inner = io::OpenExpertReader(reader_options);
  ASSERT_TRUE(inner.ok()) << inner.status();
  CountingReader reader(std::move(*inner));
  ExpertCacheOptions options;
  options.dram_budget_bytes = 2 * 12288;  // two slots: every access below misses
  options.policy = "lru";
  auto cache = ExpertCache::Create(**file, reader, std::move(options));
  ASSERT_TRUE(cache.ok()) << cache.status();

  const uint64_t aligned[] = {12288, 8192, 4096};  // bf16, q8_0, q4_0
  uint64_t expected_read = 0, expected_loaded = 0;
  for (int round = 0; round < 2; ++round) {
    (*cache)->BeginPass();
    for (int l = 0; l < 2; ++l) {
      (*cache)->BeginLayer(l);
      for (int e = 0; e < 6; ++e) {
        auto pin = (*cache)->Acquire({l, e});
        ASSERT_TRUE(pin.ok()) << pin.status();
        const std::vector<std::byte> expected = bundle(l, e);
        EXPECT_EQ(std::memcmp(pin->data(), expected.data(), expected.size()), 0) << l << "/" << e;
        expected_read += aligned[(l + e) % 3];
        expected_loaded += expected.size();
      }
    }
  }
  const TierStats stats = (*cache)->stats().dram;
  EXPECT_EQ(stats.misses, 24u);
  EXPECT_EQ(reader.reads(), 24u);
  // 8 of each dtype: 8 x (12288 + 8192 + 4096), against 24 x 12288 for
  // whole slots.
  EXPECT_EQ(expected_read, 196608u);
  EXPECT_EQ(reader.bytes(), expected_read);
  EXPECT_EQ(stats.bytes_read, expected_read);
  EXPECT_EQ(stats.bytes_loaded, expected_loaded);
  EXPECT_EQ(stats.checksum_failures, 0u);
  EXPECT_TRUE((*cache)->CheckInvariants().ok());
}

// An expert larger than a read piece (512 KiB) is read and checked in
// pieces (io/bundle_verifier.h): its bytes land whole, and a corrupt byte
// in its last piece still fails it.
TEST(ExpertCachePiecesTest, LargeExpertsAreReadAndVerifiedInPieces) {
  ScopedTempDir dir("expert_cache_pieces");
  io::ExpertFileLayout layout = SmallLayout();
  layout.num_layers = 1;
  layout.num_experts = 2;
  layout.hidden_size = 512;
  layout.intermediate_size = 192;  // 3 x 512 x 192 f32: 1.125 MiB, three pieces
  const std::string path = dir.Sub("model.experts");
  {
    auto writer = io::ExpertFileWriter::Create(path, layout);
    ASSERT_TRUE(writer.ok()) << writer.status();
    for (int e = 0; e < 2; ++e) ASSERT_TRUE((*writer)->Add(0, e, Bundle(layout, 0, e)).ok());
    ASSERT_TRUE((*writer)->Finish().ok());
  }
  auto extent = [&] { return *(*io::ExpertFile::Open(path, 42))->Find(0, 1); }();
  const uint64_t flipped = extent.length - 10;  // in the last piece
  FlipBundleByte(path, extent.offset + flipped, Bundle(layout, 0, 1)[flipped]);
  auto file = io::ExpertFile::Open(path, 42);
  ASSERT_TRUE(file.ok()) << file.status();
  io::ReaderOptions reader_options;
  reader_options.path = path;
  auto inner = io::OpenExpertReader(reader_options);
  ASSERT_TRUE(inner.ok()) << inner.status();
  CountingReader reader(std::move(*inner));
  ExpertCacheOptions options;
  options.dram_budget_bytes = 2 * layout.slot_bytes();
  auto cache = ExpertCache::Create(**file, reader, std::move(options));
  ASSERT_TRUE(cache.ok()) << cache.status();
  auto good = (*cache)->Acquire({0, 0});
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_TRUE(HoldsExpert(layout, good->data(), 0, 0));
  EXPECT_EQ(reader.reads(), 3u) << "one read per piece";
  auto bad = (*cache)->Acquire({0, 1});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss) << bad.status();
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("layer 0 expert 1"));
  EXPECT_EQ((*cache)->stats().dram.checksum_failures, 1u);
}

}  // namespace
}  // namespace expertd::cache
