#ifndef EXPERTD_IO_READ_REQUEST_H_
#define EXPERTD_IO_READ_REQUEST_H_

// Internal to io/: the bookkeeping of one Submit() that both readers share.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>

#include "absl/status/status.h"
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
  uint64_t issued_bytes = 0;  // handed to chunks or threads so far
  int chunks_in_flight = 0;
  bool in_pending = false;
  bool failed = false;
  absl::Status status;  // the first error
  std::list<ReadRequest>::iterator self;
};

// Appends a request to `requests` (its owner) and returns it, marked failed
// already when it breaks O_DIRECT's alignment rules.
ReadRequest& AddReadRequest(std::list<ReadRequest>& requests, absl::string_view path, bool direct_io,
                                   uint64_t offset, uint64_t length, std::byte* dest, ExpertReader::Done done);

// Records a request's first error and takes it off `pending` (the requests
// with bytes not yet handed out): a failed request gets no more chunks and
// completes when those in flight are back.
void FailReadRequest(ReadRequest& request, std::deque<ReadRequest*>& pending, absl::Status status);

}  // namespace expertd::io

#endif  // EXPERTD_IO_READ_REQUEST_H_
