#include <algorithm>
#include <string>

#include "absl/status/status.h"
#include "io/expert_reader.h"
#include "spdlog/spdlog.h"

namespace expertd::io {

absl::StatusOr<std::unique_ptr<ExpertReader>> OpenExpertReader(const ReaderOptions& options) {
  auto uring = OpenUringReader(options);
  // Only a ring that cannot be set up (Unavailable) earns the fallback; a
  // missing file or bad option would fail the pread pool the same way.
  if (uring.ok() || !absl::IsUnavailable(uring.status())) return uring;
  spdlog::warn("{}: io_uring is unavailable ({}); reading with a pool of {} pread threads instead, which is slower",
               options.path, std::string(uring.status().message()),
               std::min(options.pread_threads, options.queue_depth));
  return OpenPreadReader(options);
}

}  // namespace expertd::io
