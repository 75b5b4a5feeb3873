#include "io/read_request.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "io/posix_file.h"

namespace expertd::io {

ReadRequest& AddReadRequest(std::list<ReadRequest>& requests, absl::string_view path, bool direct_io,
                            uint64_t offset, uint64_t length, std::byte* dest, ExpertReader::Done done,
                            ReadClass read_class) {
  ReadRequest& r = requests.emplace_back();
  r.self = std::prev(requests.end());
  r.offset = offset;
  r.length = length;
  r.dest = dest;
  r.done = std::move(done);
  r.read_class = read_class;
  absl::Status valid = CheckDirectAlignment(path, direct_io, offset, length, dest);
  if (!valid.ok()) {
    r.failed = true;
    r.status = std::move(valid);
  }
  return r;
}

void ReadQueue::Push(ReadRequest& request) {
  request.in_pending = true;
  // A request failed already (misaligned) needs only its completion.
  if (request.failed) {
    demand_.push_front(&request);
  } else {
    (request.read_class.speculative ? speculative_ : demand_).push_back(&request);
  }
}

ReadRequest* ReadQueue::Next() const {
  if (!demand_.empty()) return demand_.front();
  if (!speculative_.empty() && speculative_in_flight_ < speculative_depth_) return speculative_.front();
  return nullptr;
}

ReadRequest* ReadQueue::Any() const {
  if (!demand_.empty()) return demand_.front();
  return speculative_.empty() ? nullptr : speculative_.front();
}

void ReadQueue::Issued(ReadRequest& request, bool speculative) {
  if (speculative) ++speculative_in_flight_;
  if (request.issued_bytes == request.length) Remove(request);
}

void ReadQueue::ChunkDone(bool speculative) {
  if (speculative) --speculative_in_flight_;
}

void ReadQueue::Remove(ReadRequest& request) {
  if (!request.in_pending) return;
  for (std::deque<ReadRequest*>* queue : {&demand_, &speculative_}) {
    auto it = std::find(queue->begin(), queue->end(), &request);
    if (it != queue->end()) {
      queue->erase(it);
      break;
    }
  }
  request.in_pending = false;
}

void ReadQueue::Promote(uint64_t tag) {
  if (tag == 0) return;
  auto promoted = std::stable_partition(speculative_.begin(), speculative_.end(),
                                        [tag](const ReadRequest* r) { return r->read_class.tag != tag; });
  for (auto it = promoted; it != speculative_.end(); ++it) {
    (*it)->read_class.speculative = false;
    demand_.push_back(*it);
  }
  speculative_.erase(promoted, speculative_.end());
}

int ReadQueue::Cancel(uint64_t tag, const absl::Status& status) {
  if (tag == 0) return 0;
  auto cancelled = std::stable_partition(speculative_.begin(), speculative_.end(),
                                         [tag](const ReadRequest* r) { return r->read_class.tag != tag; });
  const int count = static_cast<int>(speculative_.end() - cancelled);
  for (auto it = cancelled; it != speculative_.end(); ++it) {
    ReadRequest& r = **it;
    r.failed = true;
    r.status = status;
    if (r.chunks_in_flight == 0) {
      demand_.push_front(&r);  // completed at once, by the reader's thread
    } else {
      r.in_pending = false;  // completes when its chunks are back
    }
  }
  speculative_.erase(cancelled, speculative_.end());
  return count;
}

absl::StatusOr<int> SpeculativeQuota(const ReaderOptions& options, absl::string_view reader) {
  if (options.speculative_depth < 1) {
    return absl::InvalidArgumentError(absl::StrCat(reader, " for ", options.path, ": speculative_depth ",
                                                   options.speculative_depth, " is not at least 1"));
  }
  return std::min(options.speculative_depth, options.queue_depth);
}

absl::Status SpeculativeReadCancelled(absl::string_view path) {
  return absl::CancelledError(absl::StrCat(path, ": speculative read cancelled: nobody waits for it"));
}

void FailReadRequest(ReadRequest& request, ReadQueue& queue, absl::Status status) {
  if (!request.failed) {
    request.failed = true;
    request.status = std::move(status);
  }
  queue.Remove(request);
}

}  // namespace expertd::io
