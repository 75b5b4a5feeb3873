#ifndef EXPERTD_IO_READ_REQUEST_H_
#define EXPERTD_IO_READ_REQUEST_H_

// Internal to io/: the bookkeeping of one Submit() that both readers share,
// and the queue that decides which request's chunk goes to the device next.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "io/expert_reader.h"

namespace expertd::io {

// A caller's read, split into chunks that are read separately; completed
// (done called) once every chunk has finished.
struct ReadRequest {
  uint64_t offset = 0;
  uint64_t length = 0;
  std::byte* dest = nullptr;
  ExpertReader::Done done;
  ReadClass read_class;
  uint64_t issued_bytes = 0;  // handed to chunks or threads so far
  int chunks_in_flight = 0;
  bool in_pending = false;
  bool failed = false;
  absl::Status status;  // the first error
  std::list<ReadRequest>::iterator self;
};

// Appends a request to `requests` (its owner) and returns it, marked failed
// already when it breaks O_DIRECT's alignment rules. Not yet queued.
ReadRequest& AddReadRequest(std::list<ReadRequest>& requests, absl::string_view path, bool direct_io,
                            uint64_t offset, uint64_t length, std::byte* dest, ExpertReader::Done done,
                            ReadClass read_class);

// The requests with bytes not yet handed to the device (ReadClass): demand
// requests oldest first, then speculative ones oldest first, these only
// while fewer than `speculative_depth` speculative chunks are at the
// device. Not thread-safe: the reader's lock guards it.
class ReadQueue {
 public:
  explicit ReadQueue(int speculative_depth) : speculative_depth_(speculative_depth) {}

  void Push(ReadRequest& request);
  // The request whose next chunk goes to the device now; null when none may
  // (empty, or only speculative requests and their quota is at the device).
  // A failed request comes first in its class: it needs no device time,
  // only its completion.
  ReadRequest* Next() const;
  // Any queued request, quota or not (shutdown cancels them all).
  ReadRequest* Any() const;
  bool empty() const { return demand_.empty() && speculative_.empty(); }

  // A chunk of `request` (Next's) went to the device with the bytes up to
  // its issued_bytes: off the queue once all are out. speculative: the
  // chunk counts against the quota until ChunkDone.
  void Issued(ReadRequest& request, bool speculative);
  void ChunkDone(bool speculative);
  int speculative_chunks_in_flight() const { return speculative_in_flight_; }

  // Takes `request` off the queue if it is on it.
  void Remove(ReadRequest& request);
  // ExpertReader::Promote: the tagged speculative requests join the demand
  // queue's back, in their order.
  void Promote(uint64_t tag);
  // ExpertReader::CancelSpeculative: each tagged speculative request fails
  // with `status`. One with no chunk out moves to the demand queue's front,
  // so that the reader completes it at once; one with chunks out leaves the
  // queue and completes when they are back. How many it cancelled.
  int Cancel(uint64_t tag, const absl::Status& status);

 private:
  const int speculative_depth_;
  std::deque<ReadRequest*> demand_;
  std::deque<ReadRequest*> speculative_;
  int speculative_in_flight_ = 0;
};

// ReaderOptions::speculative_depth as a reader runs it (at most its
// queue_depth); InvalidArgument naming `reader` (e.g. "pread reader") and
// the file when it is below 1.
absl::StatusOr<int> SpeculativeQuota(const ReaderOptions& options, absl::string_view reader);
// The status a cancelled speculative read of `path` completes with
// (ExpertReader::CancelSpeculative).
absl::Status SpeculativeReadCancelled(absl::string_view path);

// Records a request's first error and takes it off `queue`: a failed
// request gets no more chunks and completes when those in flight are back.
void FailReadRequest(ReadRequest& request, ReadQueue& queue, absl::Status status);

}  // namespace expertd::io

#endif  // EXPERTD_IO_READ_REQUEST_H_
