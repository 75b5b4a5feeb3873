// The pread(2) thread pool: the fallback for kernels or sandboxes without
// io_uring (DESIGN.md §4), with the uring reader's semantics. Requests are
// split into chunk_bytes chunks that the pool's threads read in parallel,
// demand requests first and speculative ones within their quota
// (io/read_request.h, ReadQueue); a request completes, on the thread that
// read its last chunk, when every chunk is back.

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <list>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "io/expert_reader.h"
#include "io/posix_file.h"
#include "io/read_request.h"

namespace expertd::io {
namespace {

constexpr int kMaxThreads = 1024;

class PreadReader final : public ExpertReader {
 public:
  static absl::StatusOr<std::unique_ptr<ExpertReader>> Open(const ReaderOptions& options);
  ~PreadReader() override;

  absl::string_view name() const override { return name_; }
  int queue_depth() const override { return queue_depth_; }
  using ExpertReader::Submit;
  void Submit(uint64_t offset, uint64_t length, std::byte* dest, Done done, ReadClass read_class) override;
  void Promote(uint64_t tag) override;
  int CancelSpeculative(uint64_t tag) override;

 private:
  using Request = ReadRequest;

  explicit PreadReader(int speculative_depth) : queue_(speculative_depth) {}
  void Work();
  absl::Status ReadFully(const Request& r, uint64_t offset, uint64_t length, std::byte* dest) const;
  // Completes `r` with `lock` released around the callback, which may Submit.
  void CompleteReleasingLock(Request& r, std::unique_lock<std::mutex>& lock);

  std::string path_;
  std::string name_;
  uint64_t chunk_bytes_ = 0;
  int queue_depth_ = 0;  // reads in flight at most, and so the threads (each reads one chunk at a time)
  bool direct_io_ = false;
  UniqueFd fd_;  // pread(2) takes an offset, so the threads share it without a lock
  std::vector<std::thread> workers_;

  // Guards the members below. std::mutex rather than absl::Mutex: Debian's
  // Abseil lacks TSan annotations, which makes TSan report false races.
  std::mutex mu_;
  std::condition_variable work_cv_;  // queue_ may have a chunk to go, or stopping_
  std::list<Request> requests_;      // owner of every request not yet completed
  ReadQueue queue_;                  // with bytes not yet handed to a thread
  bool stopping_ = false;
};

absl::StatusOr<std::unique_ptr<ExpertReader>> PreadReader::Open(const ReaderOptions& options) {
  if (options.pread_threads < 1 || options.pread_threads > kMaxThreads) {
    return absl::InvalidArgumentError(absl::StrCat("pread reader for ", options.path, ": pread_threads ",
                                                   options.pread_threads, " is not in [1, ", kMaxThreads, "]"));
  }
  if (options.queue_depth < 1) {
    return absl::InvalidArgumentError(absl::StrCat("pread reader for ", options.path, ": queue_depth ",
                                                   options.queue_depth, " is not at least 1"));
  }
  if (options.chunk_bytes == 0 || options.chunk_bytes % kDirectIoAlignment != 0) {
    return absl::InvalidArgumentError(absl::StrCat("pread reader for ", options.path, ": chunk_bytes ",
                                                   options.chunk_bytes, " is not a positive multiple of ",
                                                   kDirectIoAlignment));
  }
  absl::StatusOr<int> quota = SpeculativeQuota(options, "pread reader");
  if (!quota.ok()) return quota.status();
  auto reader = std::unique_ptr<PreadReader>(new PreadReader(*quota));
  reader->path_ = options.path;
  reader->chunk_bytes_ = options.chunk_bytes;
  // Each thread has one read in flight, so the queue depth caps the threads.
  reader->queue_depth_ = std::min(options.pread_threads, options.queue_depth);
  auto file = OpenForRead(options.path, options.direct_io);
  if (!file.ok()) return file.status();
  reader->direct_io_ = file->direct_io;
  reader->fd_ = std::move(file->fd);
  reader->name_ = absl::StrCat("pread(", reader->direct_io_ ? "direct" : "buffered", ")");
  for (int i = 0; i < reader->queue_depth_; ++i) {
    reader->workers_.emplace_back([r = reader.get()] { r->Work(); });
  }
  return reader;
}

PreadReader::~PreadReader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void PreadReader::Submit(uint64_t offset, uint64_t length, std::byte* dest, Done done, ReadClass read_class) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Request& r = AddReadRequest(requests_, path_, direct_io_, offset, length, dest, std::move(done), read_class);
    queue_.Push(r);
  }
  work_cv_.notify_one();
}

void PreadReader::Promote(uint64_t tag) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.Promote(tag);
  }
  work_cv_.notify_all();  // a request held back by the quota may go now
}

int PreadReader::CancelSpeculative(uint64_t tag) {
  int cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled = queue_.Cancel(tag, SpeculativeReadCancelled(path_));
  }
  work_cv_.notify_all();  // the cancelled requests are completed by a worker
  return cancelled;
}

void PreadReader::Work() {
  SetCurrentThreadName("expertd-pread");
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [this] { return stopping_ || queue_.Next() != nullptr; });
    if (stopping_) {
      Request* left = queue_.Any();
      if (left == nullptr) return;  // nothing left to cancel
      Request& r = *left;
      FailReadRequest(r, queue_, absl::CancelledError(absl::StrCat(path_, ": read of ", r.length, " bytes at offset ", r.offset,
                                                      " cancelled: the reader is shutting down")));
      if (r.chunks_in_flight == 0) CompleteReleasingLock(r, lock);
      continue;
    }
    Request& r = *queue_.Next();
    if (r.failed || r.length == 0) {
      queue_.Remove(r);
      CompleteReleasingLock(r, lock);
      continue;
    }
    const uint64_t offset = r.offset + r.issued_bytes;
    std::byte* dest = r.dest + r.issued_bytes;
    const uint64_t length = std::min(chunk_bytes_, r.length - r.issued_bytes);
    r.issued_bytes += length;
    ++r.chunks_in_flight;
    const bool speculative = r.read_class.speculative;
    queue_.Issued(r, speculative);
    if (queue_.Next() != nullptr) work_cv_.notify_one();  // more for another thread
    // `r` stays alive unlocked: a request with a chunk in flight is never
    // completed or erased.
    lock.unlock();
    absl::Status status = ReadFully(r, offset, length, dest);
    lock.lock();
    queue_.ChunkDone(speculative);
    if (speculative && queue_.Next() != nullptr) work_cv_.notify_one();  // one the quota held back
    if (!status.ok()) FailReadRequest(r, queue_, std::move(status));
    --r.chunks_in_flight;
    if (r.chunks_in_flight == 0 && !r.in_pending) CompleteReleasingLock(r, lock);
  }
}

absl::Status PreadReader::ReadFully(const Request& r, uint64_t offset, uint64_t length, std::byte* dest) const {
  uint64_t done_bytes = 0;
  while (done_bytes < length) {
    const uint64_t at = offset + done_bytes;
    if (done_bytes > 0 && direct_io_ && at % kDirectIoAlignment != 0) {
      // O_DIRECT stops short only at the end of the file.
      return UnexpectedEofStatus(path_, r.offset, r.length, at, length - done_bytes);
    }
    ssize_t n = ::pread(fd_.get(), dest + done_bytes, length - done_bytes, static_cast<off_t>(at));
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return ReadErrorStatus(path_, at, length - done_bytes, errno);
    }
    if (n == 0) return UnexpectedEofStatus(path_, r.offset, r.length, at, length - done_bytes);
    done_bytes += static_cast<uint64_t>(n);  // a short read: go on for the rest
  }
  return absl::OkStatus();
}

void PreadReader::CompleteReleasingLock(Request& r, std::unique_lock<std::mutex>& lock) {
  Done done = std::move(r.done);
  absl::Status status = r.failed ? std::move(r.status) : absl::OkStatus();
  requests_.erase(r.self);
  lock.unlock();
  done(std::move(status));
  lock.lock();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ExpertReader>> OpenPreadReader(const ReaderOptions& options) {
  return PreadReader::Open(options);
}

}  // namespace expertd::io
