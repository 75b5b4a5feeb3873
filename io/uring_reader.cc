// The io_uring reader (DESIGN.md §4): one ring and one file descriptor owned
// by the reader, a reaper thread that completes requests, bounded queue depth.
//
// Every read in flight is a Chunk: a slice of at most chunk_bytes of one
// Request. Chunks live in a fixed pool of queue_depth entries, so the number
// of SQEs in flight never exceeds the ring and nothing is allocated per chunk;
// an SQE's user_data points to its Chunk, which points to its Request.
// Requests that find no free chunk wait in queue_ and are issued as
// completions free chunks: demand requests first, speculative ones within
// their quota (io/read_request.h, ReadQueue).

#include <liburing.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <list>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "io/expert_reader.h"
#include "io/posix_file.h"
#include "io/read_request.h"
#include "spdlog/spdlog.h"

namespace expertd::io {
namespace {

// The largest queue depth accepted: far beyond what an NVMe device rewards,
// and it keeps the ring (2x entries of CQ) small.
constexpr int kMaxQueueDepth = 4096;
// An SQE's length is 32 bits; 1 GiB chunks are already far past the point
// where splitting stops helping.
constexpr uint64_t kMaxChunkBytes = uint64_t{1} << 30;
// The kernel's limits on registered buffers (io_uring/rsrc.c:
// IORING_MAX_REG_BUFFERS, and each buffer at most 1 GiB). liburing does not
// export them; past them io_uring_register_buffers fails with a bare EINVAL.
constexpr size_t kMaxRegisteredBuffers = size_t{1} << 14;
constexpr uint64_t kMaxRegisteredBufferBytes = uint64_t{1} << 30;

class UringReader final : public ExpertReader {
 public:
  static absl::StatusOr<std::unique_ptr<ExpertReader>> Open(const ReaderOptions& options);
  ~UringReader() override;

  absl::string_view name() const override { return name_; }
  int queue_depth() const override { return queue_depth_; }
  using ExpertReader::Submit;
  void Submit(uint64_t offset, uint64_t length, std::byte* dest, Done done, ReadClass read_class) override;
  void Promote(uint64_t tag) override;
  int CancelSpeculative(uint64_t tag) override;
  absl::Status RegisterBuffers(absl::Span<const iovec> buffers) override;

 private:
  using Request = ReadRequest;
  struct Chunk {
    Request* request = nullptr;
    bool nop = false;         // carries a request that needs no read to the reaper
    bool speculative = false;  // counts against the queue's speculative quota
    uint64_t offset = 0;      // in the file
    uint64_t length = 0;
    std::byte* dest = nullptr;
    uint64_t done_bytes = 0;  // of length, after short reads
  };
  struct Completion {
    Done done;
    absl::Status status;
  };
  struct Registered {
    uintptr_t begin = 0;
    uintptr_t end = 0;
    int index = 0;
  };

  explicit UringReader(int speculative_depth) : queue_(speculative_depth) {}
  void ReapLoop();
  void HandleCqeLocked(const io_uring_cqe& cqe, std::vector<Completion>& completions);
  void FillLocked();
  void PrepChunkLocked(Chunk& chunk);
  void SubmitLocked();
  void ReleaseChunkLocked(Chunk& chunk, std::vector<Completion>& completions);
  void CompleteLocked(Request& request, std::vector<Completion>& completions);
  void CancelPendingLocked(std::vector<Completion>& completions);

  std::string path_;
  std::string name_;
  uint64_t chunk_bytes_ = 0;
  int queue_depth_ = 0;
  bool direct_io_ = false;
  UniqueFd fd_;
  int sqe_fd_ = -1;             // fd_, or 0 when registered as fixed file 0
  unsigned sqe_fd_flags_ = 0;   // IOSQE_FIXED_FILE when registered
  io_uring ring_{};
  bool ring_ready_ = false;
  std::thread reaper_;

  // Guards everything below and the ring's submission queue (liburing's SQ
  // is single-producer). The completion queue belongs to the reaper alone.
  // A std::mutex rather than absl::Mutex: Debian's Abseil is not built with
  // TSan annotations, so TSan cannot see absl::Mutex's ordering and reports
  // false races.
  std::mutex mu_;
  std::list<Request> requests_;      // owner of every request not yet completed
  ReadQueue queue_;                  // with bytes not yet handed to chunks
  std::vector<Chunk> chunks_;        // the pool, queue_depth entries
  std::vector<Chunk*> free_chunks_;
  int ops_in_flight_ = 0;            // SQEs submitted and not reaped (chunks + shutdown NOP)
  bool stopping_ = false;
  std::vector<Registered> registered_;  // sorted by begin
};

absl::StatusOr<std::unique_ptr<ExpertReader>> UringReader::Open(const ReaderOptions& options) {
  if (options.queue_depth < 1 || options.queue_depth > kMaxQueueDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("io_uring reader for ", options.path, ": queue_depth ", options.queue_depth,
                     " is not in [1, ", kMaxQueueDepth, "]"));
  }
  if (options.chunk_bytes == 0 || options.chunk_bytes % kDirectIoAlignment != 0 ||
      options.chunk_bytes > kMaxChunkBytes) {
    return absl::InvalidArgumentError(absl::StrCat("io_uring reader for ", options.path, ": chunk_bytes ",
                                                   options.chunk_bytes, " is not a multiple of ",
                                                   kDirectIoAlignment, " in [", kDirectIoAlignment, ", ",
                                                   kMaxChunkBytes, "]"));
  }
  absl::StatusOr<int> quota = SpeculativeQuota(options, "io_uring reader");
  if (!quota.ok()) return quota.status();
  auto reader = std::unique_ptr<UringReader>(new UringReader(*quota));
  reader->path_ = options.path;
  reader->chunk_bytes_ = options.chunk_bytes;
  reader->queue_depth_ = options.queue_depth;

  // The ring first: failing here is the one error that OpenExpertReader
  // answers with the pread fallback, so it has its own code (Unavailable).
  // One entry more than the chunk pool holds room for the shutdown NOP.
  int rc = io_uring_queue_init(static_cast<unsigned>(options.queue_depth) + 1, &reader->ring_, 0);
  if (rc < 0) {
    return absl::UnavailableError(absl::StrCat("io_uring_queue_init(", options.queue_depth + 1,
                                               ") failed: ", std::strerror(-rc),
                                               " (kernel without io_uring, or disabled by seccomp or "
                                               "/proc/sys/kernel/io_uring_disabled)"));
  }
  reader->ring_ready_ = true;

  auto file = OpenForRead(options.path, options.direct_io);
  if (!file.ok()) return file.status();
  reader->direct_io_ = file->direct_io;
  reader->fd_ = std::move(file->fd);
  reader->name_ = absl::StrCat("uring(", reader->direct_io_ ? "direct" : "buffered", ")");
  // A fixed file saves the kernel an fget/fput per read; plain fd if the
  // kernel refuses.
  int fd = reader->fd_.get();
  if (io_uring_register_files(&reader->ring_, &fd, 1) == 0) {
    reader->sqe_fd_ = 0;
    reader->sqe_fd_flags_ = IOSQE_FIXED_FILE;
  } else {
    reader->sqe_fd_ = fd;
  }

  reader->chunks_.resize(static_cast<size_t>(options.queue_depth));
  for (Chunk& chunk : reader->chunks_) reader->free_chunks_.push_back(&chunk);
  reader->reaper_ = std::thread([r = reader.get()] { r->ReapLoop(); });
  return reader;
}

UringReader::~UringReader() {
  if (reaper_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      // Wakes the reaper even when nothing is in flight; user_data 0 marks
      // it. The ring has one entry beyond the chunk pool for it.
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      if (sqe != nullptr) {
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data(sqe, nullptr);
        ++ops_in_flight_;
      } else {
        spdlog::error("{}: io_uring submission queue full at shutdown", path_);
      }
      SubmitLocked();
    }
    reaper_.join();
  }
  if (ring_ready_) io_uring_queue_exit(&ring_);
}

void UringReader::Submit(uint64_t offset, uint64_t length, std::byte* dest, Done done, ReadClass read_class) {
  std::lock_guard<std::mutex> lock(mu_);
  Request& r = AddReadRequest(requests_, path_, direct_io_, offset, length, dest, std::move(done), read_class);
  queue_.Push(r);
  FillLocked();
  SubmitLocked();
}

void UringReader::Promote(uint64_t tag) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_.Promote(tag);
  FillLocked();
  SubmitLocked();
}

int UringReader::CancelSpeculative(uint64_t tag) {
  std::lock_guard<std::mutex> lock(mu_);
  const int cancelled = queue_.Cancel(tag, SpeculativeReadCancelled(path_));
  // The cancelled requests with no chunk out complete through a NOP.
  FillLocked();
  SubmitLocked();
  return cancelled;
}

absl::Status UringReader::RegisterBuffers(absl::Span<const iovec> buffers) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!registered_.empty()) {
    io_uring_unregister_buffers(&ring_);
    registered_.clear();
  }
  if (buffers.empty()) return absl::OkStatus();
  uint64_t total = 0;
  uint64_t largest = 0;
  for (const iovec& b : buffers) {
    total += b.iov_len;
    largest = std::max<uint64_t>(largest, b.iov_len);
  }
  const std::string what = absl::StrCat("io_uring reader for ", path_, ": cannot register ", buffers.size(),
                                        " buffers of ", total, " bytes in all");
  // Checked here so that the error says which limit; the kernel would only
  // say EINVAL.
  if (buffers.size() > kMaxRegisteredBuffers) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what, ": io_uring registers at most ", kMaxRegisteredBuffers,
        " buffers (the kernel's IORING_MAX_REG_BUFFERS), one per cache slot here; lower the cache budget to at most ",
        kMaxRegisteredBuffers, " slots (", kMaxRegisteredBuffers * largest, " bytes)"));
  }
  if (largest > kMaxRegisteredBufferBytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": one is ", largest, " bytes, and io_uring registers ",
                                                   "buffers of at most ", kMaxRegisteredBufferBytes, " bytes (1 GiB)"));
  }
  int rc = io_uring_register_buffers(&ring_, buffers.data(), static_cast<unsigned>(buffers.size()));
  if (rc == -ENOMEM) {
    // Registered buffers are pinned, and pinned memory is charged against
    // RLIMIT_MEMLOCK (unless the process has CAP_IPC_LOCK).
    rlimit limit{};
    const bool known = getrlimit(RLIMIT_MEMLOCK, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY;
    return absl::ResourceExhaustedError(absl::StrCat(
        what, ": ", std::strerror(-rc), "; registered buffers are locked memory, and the locked-memory limit ",
        "(RLIMIT_MEMLOCK", known ? absl::StrCat(", now ", limit.rlim_cur, " bytes") : std::string(),
") is probably too small: raise it (ulimit -l unlimited, or LimitMEMLOCK=infinity in the systemd unit, as "
        "configs/expertd.service has) or lower the cache budget"));
  }
  if (rc < 0) return absl::ErrnoToStatus(-rc, what);
  for (size_t i = 0; i < buffers.size(); ++i) {
    uintptr_t begin = reinterpret_cast<uintptr_t>(buffers[i].iov_base);
    registered_.push_back({begin, begin + buffers[i].iov_len, static_cast<int>(i)});
  }
  std::sort(registered_.begin(), registered_.end(),
            [](const Registered& a, const Registered& b) { return a.begin < b.begin; });
  return absl::OkStatus();
}

void UringReader::ReapLoop() {
  SetCurrentThreadName("expertd-uring");
  std::vector<Completion> completions;
  completions.reserve(static_cast<size_t>(queue_depth_) * 2);
  for (;;) {
    bool exit = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) {
        CancelPendingLocked(completions);
        exit = ops_in_flight_ == 0 && completions.empty();
      }
    }
    if (exit) return;
    if (!completions.empty()) {
      // Callbacks run unlocked: they may Submit again.
      for (Completion& c : completions) c.done(std::move(c.status));
      completions.clear();
      continue;  // a callback may have submitted during shutdown
    }

    io_uring_cqe* cqe = nullptr;
    int rc = io_uring_wait_cqe(&ring_, &cqe);
    if (rc < 0) {
      if (rc != -EINTR) spdlog::error("{}: io_uring_wait_cqe failed: {}", path_, std::strerror(-rc));
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      unsigned head;
      unsigned seen = 0;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        HandleCqeLocked(*cqe, completions);
        ++seen;
      }
      io_uring_cq_advance(&ring_, seen);
      FillLocked();
      SubmitLocked();
    }
    for (Completion& c : completions) c.done(std::move(c.status));
    completions.clear();
  }
}

void UringReader::HandleCqeLocked(const io_uring_cqe& cqe, std::vector<Completion>& completions) {
  auto* chunk = static_cast<Chunk*>(io_uring_cqe_get_data(&cqe));
  if (chunk == nullptr) {  // the shutdown NOP
    --ops_in_flight_;
    return;
  }
  Request& r = *chunk->request;
  if (chunk->nop) {
    ReleaseChunkLocked(*chunk, completions);
    return;
  }
  const int res = cqe.res;
  // Transient: the same remainder again. ECANCELED too: the kernel cancels
  // a thread's pending io-wq work when that thread exits, and Submit may be
  // called from short-lived threads; the reaper's resubmission outlives them.
  if (res == -EAGAIN || res == -EINTR || res == -ECANCELED) {
    PrepChunkLocked(*chunk);
    return;
  }
  const uint64_t at = chunk->offset + chunk->done_bytes;
  const uint64_t missing = chunk->length - chunk->done_bytes;
  if (res < 0) {
    FailReadRequest(r, queue_, ReadErrorStatus(path_, at, missing, -res));
  } else if (res == 0) {
    FailReadRequest(r, queue_, UnexpectedEofStatus(path_, r.offset, r.length, at, missing));
  } else {
    chunk->done_bytes += static_cast<uint64_t>(res);
    if (chunk->done_bytes < chunk->length) {
      const uint64_t next = chunk->offset + chunk->done_bytes;
      if (direct_io_ && next % kDirectIoAlignment != 0) {
        // O_DIRECT stops short only at the end of the file; an unaligned
        // remainder could not be read anyway.
        FailReadRequest(r, queue_, UnexpectedEofStatus(path_, r.offset, r.length, next, chunk->length - chunk->done_bytes));
      } else {
        PrepChunkLocked(*chunk);  // a short read: ask for the rest
        return;
      }
    }
  }
  ReleaseChunkLocked(*chunk, completions);
}

void UringReader::ReleaseChunkLocked(Chunk& chunk, std::vector<Completion>& completions) {
  Request& r = *chunk.request;
  queue_.ChunkDone(chunk.speculative);
  chunk = Chunk{};
  free_chunks_.push_back(&chunk);
  --ops_in_flight_;
  --r.chunks_in_flight;
  if (r.chunks_in_flight == 0 && !r.in_pending) CompleteLocked(r, completions);
}

void UringReader::CompleteLocked(Request& r, std::vector<Completion>& completions) {
  completions.push_back({std::move(r.done), r.failed ? std::move(r.status) : absl::OkStatus()});
  requests_.erase(r.self);
}

void UringReader::CancelPendingLocked(std::vector<Completion>& completions) {
  while (ReadRequest* next = queue_.Any()) {
    Request& r = *next;
    FailReadRequest(r, queue_, absl::CancelledError(absl::StrCat(path_, ": read of ", r.length, " bytes at offset ", r.offset,
                                                    " cancelled: the reader is shutting down")));
    if (r.chunks_in_flight == 0) CompleteLocked(r, completions);
  }
}

void UringReader::FillLocked() {
  while (!stopping_ && !free_chunks_.empty()) {
    Request* next = queue_.Next();
    if (next == nullptr) return;
    Request& r = *next;
    Chunk& chunk = *free_chunks_.back();
    free_chunks_.pop_back();
    chunk.request = &r;
    if (r.failed || r.length == 0) {
      // Nothing to read, but the callback must still run on the reaper (never
      // inside Submit): a NOP brings the request there.
      chunk.nop = true;
      r.issued_bytes = r.length;
    } else {
      chunk.offset = r.offset + r.issued_bytes;
      chunk.dest = r.dest + r.issued_bytes;
      chunk.length = std::min(chunk_bytes_, r.length - r.issued_bytes);
      r.issued_bytes += chunk.length;
      chunk.speculative = r.read_class.speculative;
    }
    ++r.chunks_in_flight;
    ++ops_in_flight_;
    queue_.Issued(r, chunk.speculative);
    PrepChunkLocked(chunk);
  }
}

void UringReader::PrepChunkLocked(Chunk& chunk) {
  // The ring has more entries than the chunk pool and every prepared SQE is
  // submitted before the lock is released, so an SQE is always available.
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (chunk.nop) {
    io_uring_prep_nop(sqe);
  } else {
    std::byte* dest = chunk.dest + chunk.done_bytes;
    const uint64_t length = chunk.length - chunk.done_bytes;
    const uint64_t offset = chunk.offset + chunk.done_bytes;
    const uintptr_t begin = reinterpret_cast<uintptr_t>(dest);
    auto it = std::upper_bound(registered_.begin(), registered_.end(), begin,
                               [](uintptr_t v, const Registered& b) { return v < b.begin; });
    if (it != registered_.begin() && begin + length <= std::prev(it)->end) {
      io_uring_prep_read_fixed(sqe, sqe_fd_, dest, static_cast<unsigned>(length), offset, std::prev(it)->index);
    } else {
      io_uring_prep_read(sqe, sqe_fd_, dest, static_cast<unsigned>(length), offset);
    }
    sqe->flags |= sqe_fd_flags_;
  }
  io_uring_sqe_set_data(sqe, &chunk);
}

void UringReader::SubmitLocked() {
  for (;;) {
    int rc = io_uring_submit(&ring_);
    if (rc >= 0) return;
    if (rc == -EINTR) continue;
    // EAGAIN/EBUSY: the kernel is short of resources; the SQEs stay queued
    // and the reaper submits them with the next completions.
    if (rc != -EAGAIN && rc != -EBUSY) spdlog::error("{}: io_uring_submit failed: {}", path_, std::strerror(-rc));
    return;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<ExpertReader>> OpenUringReader(const ReaderOptions& options) {
  return UringReader::Open(options);
}

}  // namespace expertd::io
