#ifndef EXPERTD_IO_EXPERT_READER_H_
#define EXPERTD_IO_EXPERT_READER_H_

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace expertd::io {

// How a read competes for the device (ExpertReader::Submit).
//
// A demand read is one the forward pass waits for, or is about to; a
// speculative one is a prefetch, which may turn out unneeded. Readers hand
// every queued demand chunk to the device before any speculative one, and
// keep at most ReaderOptions::speculative_depth speculative chunks at the
// device at once: a chunk there cannot be recalled, so that many is all a
// demand read that arrives can wait behind. Measured on the OLMoE-1B-7B
// shape (bench/README.md, "Demand reads first"): with one FIFO queue a miss
// waited behind up to 32 prefetch chunks (16 MiB, ~10 ms of this VM's
// disk), and cross-layer prefetch made decode 16-32% slower than none.
struct ReadClass {
  bool speculative = false;
  // Groups reads for Promote and CancelSpeculative (the cache tags the
  // pieces of one expert's load alike); 0 tags nothing.
  uint64_t tag = 0;
};

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
  virtual void Submit(uint64_t offset, uint64_t length, std::byte* dest, Done done, ReadClass read_class) = 0;
  // A demand read, untagged.
  void Submit(uint64_t offset, uint64_t length, std::byte* dest, Done done) {
    Submit(offset, length, dest, std::move(done), ReadClass{});
  }

  // Someone now waits for the speculative reads tagged `tag`: those not yet
  // wholly at the device become demand reads (queued after the demand reads
  // already queued). Thread-safe; no tag or 0: nothing happens.
  virtual void Promote(uint64_t tag) = 0;
  // Nobody will wait for the speculative reads tagged `tag`: those not yet
  // wholly at the device end with Cancelled (`done` runs on the reader's
  // thread as always; chunks already at the device are waited for first).
  // Returns how many reads it cancelled: 0 when all were at the device
  // already, which then complete as usual. Thread-safe.
  virtual int CancelSpeculative(uint64_t tag) = 0;

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
  // Speculative chunks at the device at once (ReadClass), at least 1 (and
  // queue_depth where that is smaller). A demand read waits behind at most
  // this many: 4 chunks of 512 KiB are 2 MiB. Depths 1, 2, 4 and 8 decoded
  // alike within noise on the OLMoE-1B-7B shape (bench/README.md, "Demand
  // reads first").
  int speculative_depth = 4;
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
