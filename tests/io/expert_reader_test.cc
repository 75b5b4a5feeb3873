// Every reader (io_uring, pread, and the fault-injecting wrapper around each,
// with O_DIRECT on and off) runs through the same tests.

#include <fcntl.h>
#include <sys/uio.h>

#include <cerrno>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "io/aligned_buffer.h"
#include "io/expert_reader.h"
#include "io/posix_file.h"
#include "tests/io/io_test_util.h"
#include "tests/testing/fault_injecting_reader.h"

namespace expertd::io {
namespace {

using ::expertd::io::testing::Completions;
using ::expertd::io::testing::PatternByte;
using ::expertd::io::testing::ReadSync;
using ::expertd::io::testing::ScratchDir;
using ::expertd::io::testing::WritePatternFile;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kFileBytes = 8 * kMiB;

enum class Kind { kUring, kPread };
enum class Wrap { kNone, kPassThrough, kDelay };

struct ReaderParam {
  Kind kind;
  bool direct_io;
  Wrap wrap;
};

std::string ParamName(const ::testing::TestParamInfo<ReaderParam>& info) {
  const ReaderParam& p = info.param;
  std::string name = p.kind == Kind::kUring ? "Uring" : "Pread";
  name += p.direct_io ? "Direct" : "Buffered";
  if (p.wrap == Wrap::kPassThrough) name += "FaultFree";
  if (p.wrap == Wrap::kDelay) name += "Delayed";
  return name;
}

// A reason to skip when io_uring cannot be set up here; empty when it can.
std::string UringUnavailableReason(const std::string& path) {
  ReaderOptions options;
  options.path = path;
  options.direct_io = false;
  auto reader = OpenUringReader(options);
  if (!reader.ok() && absl::IsUnavailable(reader.status())) return std::string(reader.status().message());
  return "";
}

absl::StatusOr<std::unique_ptr<ExpertReader>> OpenInner(Kind kind, const ReaderOptions& options) {
  return kind == Kind::kUring ? OpenUringReader(options) : OpenPreadReader(options);
}

class ReaderTest : public ::testing::TestWithParam<ReaderParam> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir("reader");
    path_ = dir_->File("pattern.bin");
    WritePatternFile(path_, kFileBytes);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  void SetUp() override {
    if (GetParam().kind == Kind::kUring) {
      std::string reason = UringUnavailableReason(path_);
      if (!reason.empty()) GTEST_SKIP() << "io_uring cannot be set up here: " << reason;
    }
  }

  ReaderOptions Options() const {
    ReaderOptions options;
    options.path = path_;
    options.direct_io = GetParam().direct_io;
    options.queue_depth = 8;
    options.chunk_bytes = 64 * 1024;
    options.pread_threads = 4;
    return options;
  }

  std::unique_ptr<ExpertReader> Open(const ReaderOptions& options) {
    auto inner = OpenInner(GetParam().kind, options);
    EXPECT_TRUE(inner.ok()) << inner.status();
    if (!inner.ok()) return nullptr;
    if (GetParam().wrap == Wrap::kNone) return std::move(*inner);
    expertd::testing::FaultOptions faults;
    if (GetParam().wrap == Wrap::kDelay) faults.delay = std::chrono::microseconds(500);
    return expertd::testing::MakeFaultInjectingReader(std::move(*inner), faults);
  }
  std::unique_ptr<ExpertReader> Open() { return Open(Options()); }
  // One chunk at the device at a time, speculative or not: the order
  // requests reach it is the order they complete in.
  std::unique_ptr<ExpertReader> OpenOneReadAtATime() {
    ReaderOptions options = Options();
    options.queue_depth = 1;
    options.pread_threads = 1;
    options.speculative_depth = 1;
    return Open(options);
  }
  // Reads the file's i-th MiB into the buffer's i-th MiB.
  static void SubmitMiB(ExpertReader& reader, int i, AlignedBuffer& buffer, ExpertReader::Done done,
                        ReadClass read_class) {
    reader.Submit(i * kMiB, kMiB, buffer.data() + i * kMiB, std::move(done), read_class);
  }

  static void ExpectPattern(const std::byte* data, uint64_t offset, uint64_t length) {
    for (uint64_t i = 0; i < length; ++i) {
      if (data[i] != PatternByte(offset + i)) {
        ADD_FAILURE() << "byte " << offset + i << " (read at offset " << offset << ", length " << length
                      << ") differs from the file";
        return;
      }
    }
  }

  static ScratchDir* dir_;
  static std::string path_;
};

ScratchDir* ReaderTest::dir_ = nullptr;
std::string ReaderTest::path_;

TEST_P(ReaderTest, RandomAlignedReadsReturnTheFileBytes) {
  auto reader = Open();
  ASSERT_NE(reader, nullptr);
  auto buffer = AlignedBuffer::Allocate(1 << 20);
  ASSERT_TRUE(buffer.ok());
  std::mt19937_64 rng(7);
  for (int i = 0; i < 40; ++i) {
    const uint64_t length = (1 + rng() % 256) * kPage;
    const uint64_t offset = rng() % ((kFileBytes - length) / kPage + 1) * kPage;
    ASSERT_TRUE(ReadSync(*reader, offset, length, buffer->data()).ok());
    ExpectPattern(buffer->data(), offset, length);
  }
}

TEST_P(ReaderTest, ManyConcurrentRequestsFromSeveralThreads) {
  ReaderOptions options = Options();
  options.queue_depth = 4;  // far fewer than the requests: most wait in the reader's queue
  options.pread_threads = 2;
  auto reader = Open(options);
  ASSERT_NE(reader, nullptr);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 32;
  constexpr uint64_t kLength = 3 * kPage;
  auto buffer = AlignedBuffer::Allocate(kThreads * kPerThread * kLength);
  ASSERT_TRUE(buffer.ok());
  Completions completions(kThreads * kPerThread);
  std::vector<uint64_t> offsets(kThreads * kPerThread);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(100 + t);
      for (int i = 0; i < kPerThread; ++i) {
        const int n = t * kPerThread + i;
        offsets[n] = rng() % (kFileBytes / kPage - 3) * kPage;
        reader->Submit(offsets[n], kLength, buffer->data() + n * kLength, completions.Callback(n));
      }
    });
  }
  for (auto& t : threads) t.join();
  completions.Wait();
  for (int n = 0; n < kThreads * kPerThread; ++n) {
    ASSERT_TRUE(completions.status(n).ok()) << completions.status(n);
    ExpectPattern(buffer->data() + n * kLength, offsets[n], kLength);
  }
}

TEST_P(ReaderTest, ReadsLargerThanAChunkAreSplitAndReassembled) {
  ReaderOptions options = Options();
  options.chunk_bytes = 64 * 1024;
  auto reader = Open(options);
  ASSERT_NE(reader, nullptr);
  const uint64_t length = 3 * (1 << 20) + 5 * kPage;  // 48 chunks and a partial one
  auto buffer = AlignedBuffer::Allocate(length);
  ASSERT_TRUE(buffer.ok());
  ASSERT_TRUE(ReadSync(*reader, 17 * kPage, length, buffer->data()).ok());
  ExpectPattern(buffer->data(), 17 * kPage, length);
}

TEST_P(ReaderTest, ReadPastEndOfFileIsDataLossNamingTheOffset) {
  auto reader = Open();
  ASSERT_NE(reader, nullptr);
  auto buffer = AlignedBuffer::Allocate(1 << 20);
  ASSERT_TRUE(buffer.ok());
  // Straddles the end: the first page arrives, then the file ends.
  const uint64_t offset = kFileBytes - kPage;
  absl::Status status = ReadSync(*reader, offset, 4 * kPage, buffer->data());
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
  EXPECT_NE(status.message().find("unexpected end of file"), absl::string_view::npos) << status;
  EXPECT_NE(status.message().find(absl::StrCat("offset ", offset)), absl::string_view::npos) << status;
  EXPECT_NE(status.message().find("pattern.bin"), absl::string_view::npos) << status;
  // Wholly past the end, and spanning several chunks.
  status = ReadSync(*reader, kFileBytes + kPage, 1 << 20, buffer->data());
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
  EXPECT_NE(status.message().find(absl::StrCat("offset ", kFileBytes + kPage)), absl::string_view::npos) << status;
  // The reader is still fine.
  ASSERT_TRUE(ReadSync(*reader, 0, 2 * kPage, buffer->data()).ok());
  ExpectPattern(buffer->data(), 0, 2 * kPage);
}

TEST_P(ReaderTest, EmptyReadSucceeds) {
  auto reader = Open();
  ASSERT_NE(reader, nullptr);
  auto buffer = AlignedBuffer::Allocate(kPage);
  ASSERT_TRUE(buffer.ok());
  EXPECT_TRUE(ReadSync(*reader, kPage, 0, buffer->data()).ok());
}

TEST_P(ReaderTest, MisalignedDirectReadIsRejected) {
  auto reader = Open();
  ASSERT_NE(reader, nullptr);
  if (reader->name().find("buffered") != absl::string_view::npos) GTEST_SKIP() << "buffered I/O takes any alignment";
  auto buffer = AlignedBuffer::Allocate(4 * kPage);
  ASSERT_TRUE(buffer.ok());
  absl::Status status = ReadSync(*reader, 100, kPage, buffer->data());
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_NE(status.message().find("offset 100"), absl::string_view::npos) << status;
  status = ReadSync(*reader, 0, kPage, buffer->data() + 512);
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
}

TEST_P(ReaderTest, UnalignedBufferedReadsWork) {
  if (GetParam().direct_io) GTEST_SKIP() << "O_DIRECT needs alignment";
  auto reader = Open();
  ASSERT_NE(reader, nullptr);
  std::vector<std::byte> data(10000);
  ASSERT_TRUE(ReadSync(*reader, 12345, data.size(), data.data()).ok());
  ExpectPattern(data.data(), 12345, data.size());
}

TEST_P(ReaderTest, CallbacksRunOnTheReadersThreadNeverInsideSubmit) {
  auto reader = Open();
  ASSERT_NE(reader, nullptr);
  auto buffer = AlignedBuffer::Allocate(kPage);
  ASSERT_TRUE(buffer.ok());
  const auto submitter = std::this_thread::get_id();
  for (uint64_t length : {uint64_t{0}, kPage}) {
    std::atomic<bool> same_thread{true};
    Completions completions(1);
    auto done = completions.Callback(0);
    reader->Submit(0, length, buffer->data(), [&, done](absl::Status s) {
      same_thread = std::this_thread::get_id() == submitter;
      done(std::move(s));
    });
    completions.Wait();
    EXPECT_FALSE(same_thread) << "length " << length;
  }
}

TEST_P(ReaderTest, RegisteredBuffersAreReadIntoCorrectly) {
  auto reader = Open();
  ASSERT_NE(reader, nullptr);
  auto arena = AlignedBuffer::Allocate(2 << 20);
  auto outside = AlignedBuffer::Allocate(256 * 1024);
  ASSERT_TRUE(arena.ok() && outside.ok());
  // Two registered halves of the arena, as the cache's slot arena would be.
  iovec halves[2] = {{arena->data(), arena->size() / 2}, {arena->data() + arena->size() / 2, arena->size() / 2}};
  ASSERT_TRUE(reader->RegisterBuffers(halves).ok());
  Completions completions(3);
  reader->Submit(kPage, 1 << 20, arena->data(), completions.Callback(0));                  // fixed, 1st
  reader->Submit(64 * kPage, 512 * 1024, arena->data() + (1 << 20), completions.Callback(1));  // fixed, 2nd
  reader->Submit(5 * kPage, 256 * 1024, outside->data(), completions.Callback(2));        // plain read
  completions.Wait();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(completions.status(i).ok()) << completions.status(i);
  ExpectPattern(arena->data(), kPage, 1 << 20);
  ExpectPattern(arena->data() + (1 << 20), 64 * kPage, 512 * 1024);
  ExpectPattern(outside->data(), 5 * kPage, 256 * 1024);
  ASSERT_TRUE(reader->RegisterBuffers({}).ok());
  ASSERT_TRUE(ReadSync(*reader, 0, kPage, arena->data()).ok());
  ExpectPattern(arena->data(), 0, kPage);
}

// io_uring registers at most 16384 buffers; past that the kernel answers a
// bare EINVAL. The error must say which limit, and leave a working reader.
TEST_P(ReaderTest, TooManyBuffersToRegisterNameTheLimit) {
  auto reader = Open();
  ASSERT_NE(reader, nullptr);
  auto buffer = AlignedBuffer::Allocate(kPage);
  ASSERT_TRUE(buffer.ok());
  const std::vector<iovec> buffers(16385, iovec{buffer->data(), kPage});
  const absl::Status status = reader->RegisterBuffers(buffers);
  if (GetParam().kind == Kind::kPread) {
    EXPECT_TRUE(status.ok()) << "pread has no registered buffers: " << status;
  } else {
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.message().find("at most 16384"), absl::string_view::npos) << status;
    EXPECT_NE(status.message().find("IORING_MAX_REG_BUFFERS"), absl::string_view::npos) << status;
    EXPECT_NE(status.message().find("lower the cache budget"), absl::string_view::npos) << status;
  }
  ASSERT_TRUE(ReadSync(*reader, 0, kPage, buffer->data()).ok());
  ExpectPattern(buffer->data(), 0, kPage);
}

TEST_P(ReaderTest, DestructionWithRequestsInFlightCompletesEachOnce) {
  ReaderOptions options = Options();
  options.queue_depth = 2;
  options.pread_threads = 1;
  auto buffer = AlignedBuffer::Allocate(64 * 256 * 1024);
  ASSERT_TRUE(buffer.ok());
  constexpr int kRequests = 64;
  std::atomic<int> calls{0};
  std::atomic<int> ok{0};
  std::atomic<int> cancelled{0};
  {
    auto reader = Open(options);
    ASSERT_NE(reader, nullptr);
    for (int i = 0; i < kRequests; ++i) {
      reader->Submit(static_cast<uint64_t>(i) * 256 * 1024 % (kFileBytes - 256 * 1024), 256 * 1024,
                     buffer->data() + i * 256 * 1024, [&](absl::Status s) {
                       ++calls;
                       if (s.ok()) ++ok;
                       if (absl::IsCancelled(s)) ++cancelled;
                     });
    }
  }
  EXPECT_EQ(calls.load(), kRequests);
  EXPECT_EQ(ok.load() + cancelled.load(), kRequests);
}

// The order reads complete in, by id.
class CompletionOrder {
 public:
  ExpertReader::Done Callback(int id, Completions& completions) {
    return [this, id, done = completions.Callback(id)](absl::Status status) mutable {
      {
        std::lock_guard<std::mutex> lock(mu_);
        order_.push_back(id);
      }
      done(std::move(status));
    };
  }
  // Where `id` came in the order (0 = first); -1 if it never completed.
  int Rank(int id) {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < order_.size(); ++i) {
      if (order_[i] == id) return static_cast<int>(i);
    }
    return -1;
  }

 private:
  std::mutex mu_;
  std::vector<int> order_;
};

// One read at the device at a time and 1 MiB prefetches of 16 chunks each:
// a demand read submitted after 7 of them goes next, where a FIFO queue
// made it wait for all 7.
TEST_P(ReaderTest, DemandReadsOvertakeQueuedSpeculativeReads) {
  auto reader = OpenOneReadAtATime();
  ASSERT_NE(reader, nullptr);
  constexpr int kPrefetches = 7;  // and the demand read: the file's 8 MiB
  auto buffer = AlignedBuffer::Allocate(kFileBytes);
  ASSERT_TRUE(buffer.ok());
  Completions completions(kPrefetches + 1);
  CompletionOrder order;
  for (int i = 0; i < kPrefetches; ++i) {
    SubmitMiB(*reader, i, *buffer, order.Callback(i, completions), ReadClass{.speculative = true, .tag = 1});
  }
  SubmitMiB(*reader, kPrefetches, *buffer, order.Callback(kPrefetches, completions), ReadClass{});
  completions.Wait();
  for (int i = 0; i <= kPrefetches; ++i) {
    ASSERT_TRUE(completions.status(i).ok()) << completions.status(i);
    ExpectPattern(buffer->data() + i * kMiB, i * kMiB, kMiB);
  }
  // The prefetch at the device when it came may finish first (or two, when
  // the first was wholly out by then), not all seven.
  EXPECT_LE(order.Rank(kPrefetches), 2);
}

TEST_P(ReaderTest, PromotedReadsGoBeforeTheSpeculativeReadsQueuedAheadOfThem) {
  auto reader = OpenOneReadAtATime();
  ASSERT_NE(reader, nullptr);
  constexpr int kReads = 8;  // the file's 8 MiB
  auto buffer = AlignedBuffer::Allocate(kFileBytes);
  ASSERT_TRUE(buffer.ok());
  Completions completions(kReads);
  CompletionOrder order;
  for (int i = 0; i < kReads; ++i) {
    SubmitMiB(*reader, i, *buffer, order.Callback(i, completions),
              ReadClass{.speculative = true, .tag = static_cast<uint64_t>(100 + i)});
  }
  reader->Promote(100 + kReads - 1);
  completions.Wait();
  for (int i = 0; i < kReads; ++i) {
    ASSERT_TRUE(completions.status(i).ok()) << completions.status(i);
    ExpectPattern(buffer->data() + i * kMiB, i * kMiB, kMiB);
  }
  EXPECT_LE(order.Rank(kReads - 1), 2);
}

TEST_P(ReaderTest, CancelledSpeculativeReadsCompleteOnceAsCancelledAndTheRestAreRead) {
  auto reader = OpenOneReadAtATime();
  ASSERT_NE(reader, nullptr);
  constexpr int kReads = 7;  // and one more: the file's 8 MiB
  auto buffer = AlignedBuffer::Allocate(kFileBytes);
  ASSERT_TRUE(buffer.ok());
  Completions completions(kReads + 1);
  for (int i = 0; i < kReads; ++i) {
    SubmitMiB(*reader, i, *buffer, completions.Callback(i), ReadClass{.speculative = true, .tag = 7});
  }
  SubmitMiB(*reader, kReads, *buffer, completions.Callback(kReads), ReadClass{.speculative = true, .tag = 8});
  const int cancelled = reader->CancelSpeculative(7);
  // Only a read wholly at the device escapes: at most the first.
  EXPECT_GE(cancelled, kReads - 1);
  EXPECT_EQ(reader->CancelSpeculative(7), 0) << "nothing left to cancel";
  completions.Wait();
  EXPECT_EQ(completions.calls(), kReads + 1) << "each read completes exactly once";
  int seen_cancelled = 0;
  for (int i = 0; i < kReads; ++i) {
    if (absl::IsCancelled(completions.status(i))) {
      ++seen_cancelled;
      EXPECT_NE(completions.status(i).message().find("pattern.bin"), absl::string_view::npos)
          << completions.status(i);
    } else {
      EXPECT_TRUE(completions.status(i).ok()) << completions.status(i);
    }
  }
  EXPECT_EQ(seen_cancelled, cancelled);
  ASSERT_TRUE(completions.status(kReads).ok()) << completions.status(kReads);
  ExpectPattern(buffer->data() + kReads * kMiB, kReads * kMiB, kMiB);
  // The reader goes on as before.
  ASSERT_TRUE(ReadSync(*reader, 0, kPage, buffer->data()).ok());
  ExpectPattern(buffer->data(), 0, kPage);
}

TEST_P(ReaderTest, BadOptionsAreRejected) {
  ReaderOptions options = Options();
  options.chunk_bytes = 1000;
  EXPECT_TRUE(absl::IsInvalidArgument(OpenInner(GetParam().kind, options).status()));
  options = Options();
  options.speculative_depth = 0;
  absl::Status status = OpenInner(GetParam().kind, options).status();
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_NE(status.message().find("speculative_depth 0"), absl::string_view::npos) << status;
  options = Options();
  options.path = path_ + ".missing";
  status = OpenInner(GetParam().kind, options).status();
  EXPECT_TRUE(absl::IsNotFound(status)) << status;
  EXPECT_NE(status.message().find(".missing"), absl::string_view::npos) << status;
}

INSTANTIATE_TEST_SUITE_P(Readers, ReaderTest,
                         ::testing::Values(ReaderParam{Kind::kUring, true, Wrap::kNone},
                                           ReaderParam{Kind::kUring, false, Wrap::kNone},
                                           ReaderParam{Kind::kPread, true, Wrap::kNone},
                                           ReaderParam{Kind::kPread, false, Wrap::kNone},
                                           ReaderParam{Kind::kUring, true, Wrap::kPassThrough},
                                           ReaderParam{Kind::kPread, true, Wrap::kPassThrough},
                                           ReaderParam{Kind::kUring, true, Wrap::kDelay},
                                           ReaderParam{Kind::kPread, false, Wrap::kDelay}),
                         ParamName);

// ---------------------------------------------------------------------------
// Faults, injected around each real reader.

class FaultTest : public ::testing::TestWithParam<Kind> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir("fault");
    path_ = dir_->File("pattern.bin");
    WritePatternFile(path_, 1 << 20);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (GetParam() == Kind::kUring) {
      std::string reason = UringUnavailableReason(path_);
      if (!reason.empty()) GTEST_SKIP() << "io_uring cannot be set up here: " << reason;
    }
    auto buffer = AlignedBuffer::Allocate(1 << 20);
    ASSERT_TRUE(buffer.ok());
    buffer_ = std::move(*buffer);
  }
  std::unique_ptr<ExpertReader> Open(const expertd::testing::FaultOptions& faults) {
    ReaderOptions options;
    options.path = path_;
    options.chunk_bytes = 16 * 1024;
    auto inner = OpenInner(GetParam(), options);
    EXPECT_TRUE(inner.ok()) << inner.status();
    if (!inner.ok()) return nullptr;
    return expertd::testing::MakeFaultInjectingReader(std::move(*inner), faults);
  }

  static ScratchDir* dir_;
  static std::string path_;
  AlignedBuffer buffer_;
};

ScratchDir* FaultTest::dir_ = nullptr;
std::string FaultTest::path_;

TEST_P(FaultTest, EioFailsThatRequestOnlyAndNamesTheOffset) {
  expertd::testing::FaultOptions faults;
  faults.fail_offset = [](uint64_t offset) { return offset == 3 * kPage; };
  auto reader = Open(faults);
  ASSERT_NE(reader, nullptr);
  Completions completions(3);
  reader->Submit(2 * kPage, kPage, buffer_.data(), completions.Callback(0));
  reader->Submit(3 * kPage, kPage, buffer_.data() + kPage, completions.Callback(1));
  reader->Submit(4 * kPage, kPage, buffer_.data() + 2 * kPage, completions.Callback(2));
  completions.Wait();
  EXPECT_TRUE(completions.status(0).ok());
  EXPECT_TRUE(completions.status(2).ok());
  const absl::Status& eio = completions.status(1);
  EXPECT_FALSE(eio.ok());
  EXPECT_NE(eio.message().find(absl::StrCat("offset ", 3 * kPage)), absl::string_view::npos) << eio;
  EXPECT_NE(eio.message().find(std::strerror(EIO)), absl::string_view::npos) << eio;
  // Later requests succeed and carry the right bytes.
  ASSERT_TRUE(ReadSync(*reader, 8 * kPage, 2 * kPage, buffer_.data()).ok());
  EXPECT_EQ(buffer_.data()[0], PatternByte(8 * kPage));
}

TEST_P(FaultTest, ProbabilisticFaultsAreDeterministicFromTheSeed) {
  expertd::testing::FaultOptions faults;
  faults.eio_probability = 0.5;
  faults.seed = 42;
  auto pattern = [&] {
    auto reader = Open(faults);
    std::string failed;
    for (int i = 0; i < 32; ++i) failed += ReadSync(*reader, 0, kPage, buffer_.data()).ok() ? '.' : 'x';
    return failed;
  };
  const std::string first = pattern();
  EXPECT_EQ(first, pattern());
  EXPECT_NE(first.find('x'), std::string::npos);
  EXPECT_NE(first.find('.'), std::string::npos);
}

TEST_P(FaultTest, PersistentShortReadIsDataLoss) {
  expertd::testing::FaultOptions faults;
  faults.short_read_probability = 1.0;
  auto reader = Open(faults);
  ASSERT_NE(reader, nullptr);
  absl::Status status = ReadSync(*reader, 4 * kPage, 64 * kPage, buffer_.data());
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
  EXPECT_NE(status.message().find(absl::StrCat("offset ", 4 * kPage)), absl::string_view::npos) << status;
  EXPECT_NE(status.message().find(absl::StrCat(32 * kPage, " bytes missing")), absl::string_view::npos) << status;
}

TEST_P(FaultTest, DelayedCompletionsStillCarryTheRightBytes) {
  expertd::testing::FaultOptions faults;
  faults.delay = std::chrono::milliseconds(20);
  auto reader = Open(faults);
  ASSERT_NE(reader, nullptr);
  constexpr int kRequests = 8;
  Completions completions(kRequests);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kRequests; ++i) {
    reader->Submit(static_cast<uint64_t>(i) * 16 * kPage, 16 * kPage, buffer_.data() + i * 16 * kPage,
                   completions.Callback(i));
  }
  completions.Wait();
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(20));
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(completions.status(i).ok()) << completions.status(i);
    for (uint64_t b = 0; b < 16 * kPage; b += 997) {
      ASSERT_EQ(buffer_.data()[i * 16 * kPage + b], PatternByte(i * 16 * kPage + b));
    }
  }
}

TEST_P(FaultTest, DestructionWithDelayedCompletionsPendingCompletesEachOnce) {
  expertd::testing::FaultOptions faults;
  faults.delay = std::chrono::milliseconds(50);
  std::atomic<int> calls{0};
  {
    auto reader = Open(faults);
    ASSERT_NE(reader, nullptr);
    for (int i = 0; i < 16; ++i) {
      reader->Submit(0, kPage, buffer_.data() + i * kPage, [&](absl::Status) { ++calls; });
    }
  }
  EXPECT_EQ(calls.load(), 16);
}

INSTANTIATE_TEST_SUITE_P(Readers, FaultTest, ::testing::Values(Kind::kUring, Kind::kPread),
                         [](const ::testing::TestParamInfo<Kind>& info) {
                           return std::string(info.param == Kind::kUring ? "Uring" : "Pread");
                         });

// ---------------------------------------------------------------------------

TEST(OpenExpertReaderTest, PrefersIoUring) {
  ScratchDir dir("open");
  WritePatternFile(dir.File("f"), 64 * 1024);
  ReaderOptions options;
  options.path = dir.File("f");
  auto reader = OpenExpertReader(options);
  ASSERT_TRUE(reader.ok()) << reader.status();
  if (UringUnavailableReason(options.path).empty()) {
    EXPECT_NE((*reader)->name().find("uring"), absl::string_view::npos) << (*reader)->name();
  } else {
    EXPECT_NE((*reader)->name().find("pread"), absl::string_view::npos) << (*reader)->name();
  }
}

// A filesystem that refuses O_DIRECT (EINVAL at open) gets buffered I/O.
TEST(DirectIoFallbackTest, EinvalForODirectFallsBackToBuffered) {
  ScratchDir dir("fallback");
  WritePatternFile(dir.File("f"), 8192);
  auto refuse_direct = [](const char* path, int flags) {
    if (flags & O_DIRECT) {
      errno = EINVAL;
      return -1;
    }
    return ::open(path, flags);
  };
  auto file = OpenForRead(dir.File("f"), /*direct_io=*/true, refuse_direct);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_FALSE(file->direct_io);
  EXPECT_TRUE(file->fd.valid());
  EXPECT_EQ(::fcntl(file->fd.get(), F_GETFL) & O_DIRECT, 0);
  // Other errors are not papered over.
  auto deny = [](const char*, int) {
    errno = EACCES;
    return -1;
  };
  absl::Status status = OpenForRead(dir.File("f"), true, deny).status();
  EXPECT_TRUE(absl::IsPermissionDenied(status)) << status;
  EXPECT_NE(status.message().find(dir.File("f")), absl::string_view::npos) << status;
}

// tmpfs refused O_DIRECT before Linux 6.6; either way the readers read it.
TEST(DirectIoFallbackTest, TmpfsIsReadable) {
  const std::string shm = absl::StrCat("/dev/shm/expertd_io_test_", ::getpid());
  std::error_code ec;
  if (!std::filesystem::is_directory("/dev/shm", ec)) GTEST_SKIP() << "no /dev/shm";
  WritePatternFile(shm, 64 * 1024);
  for (Kind kind : {Kind::kUring, Kind::kPread}) {
    if (kind == Kind::kUring && !UringUnavailableReason(shm).empty()) continue;
    ReaderOptions options;
    options.path = shm;
    options.direct_io = true;
    auto reader = OpenInner(kind, options);
    ASSERT_TRUE(reader.ok()) << reader.status();
    auto buffer = AlignedBuffer::Allocate(64 * 1024);
    ASSERT_TRUE(buffer.ok());
    ASSERT_TRUE(ReadSync(**reader, 0, 64 * 1024, buffer->data()).ok());
    EXPECT_EQ(buffer->data()[12345], PatternByte(12345));
  }
  std::filesystem::remove(shm, ec);
}

}  // namespace
}  // namespace expertd::io
