#ifndef EXPERTD_IO_EXPERT_READER_H_
#define EXPERTD_IO_EXPERT_READER_H_

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace expertd::io {

// Asynchronous reads of byte ranges of one file (the packed expert file).
class ExpertReader {
 public:
  // Called exactly once per Submit, on the reader's own thread (never inside
  // Submit), with OK only when every byte arrived.
  using Done = std::function<void(absl::Status)>;

  virtual ~ExpertReader() = default;
  virtual absl::string_view name() const = 0;
  // The most reads in flight at once (ReaderOptions::queue_depth): the
  // io_uring reader's ring and chunk pool hold this many; the pread pool runs
  // at most this many threads.
  virtual int queue_depth() const = 0;

  // Reads [offset, offset + length) into dest. With O_DIRECT, offset, length
  // and dest must be multiples of 4096 (the cache's slots are). Thread-safe.
  // Large reads are split into chunks read in parallel; short reads are
  // resubmitted for the rest; errors reach `done` as a Status naming the
  // file and offset.
  virtual void Submit(uint64_t offset, uint64_t length, std::byte* dest, Done done) = 0;

  // Registers the memory reads will land in (the cache's slot arena), so
  // io_uring can use fixed buffers; replaces any earlier registration. The
  // caller guarantees no read is in flight. Readers without such a notion
  // accept and ignore it.
  virtual absl::Status RegisterBuffers(absl::Span<const iovec> buffers) { return absl::OkStatus(); }
};

struct ReaderOptions {
  std::string path;
  bool direct_io = true;
  int queue_depth = 32;                  // reads in flight at once: io_uring entries / cap on pread threads
  uint64_t chunk_bytes = 512 * 1024;     // split size for parallel reads (multiple of 4096)
  int pread_threads = 4;                 // the pread pool runs min(pread_threads, queue_depth)
};

// io_uring on liburing: owns the ring and the file descriptor; a reaper
// thread completes requests.
absl::StatusOr<std::unique_ptr<ExpertReader>> OpenUringReader(const ReaderOptions& options);
// A pread(2) thread pool, for kernels or sandboxes without io_uring.
absl::StatusOr<std::unique_ptr<ExpertReader>> OpenPreadReader(const ReaderOptions& options);
// io_uring when it can be set up, else the pread pool (logged once, with why).
absl::StatusOr<std::unique_ptr<ExpertReader>> OpenExpertReader(const ReaderOptions& options);

}  // namespace expertd::io

#endif  // EXPERTD_IO_EXPERT_READER_H_
