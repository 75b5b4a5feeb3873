#include "engine/stop_filter.h"

#include <algorithm>
#include <utility>

namespace expertd::engine {

StopStringFilter::StopStringFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {
  std::erase_if(stops_, [](const std::string& stop) { return stop.empty(); });
}

std::string StopStringFilter::Add(std::string_view text) {
  if (stopped_) return {};
  pending_ += text;
  // The earliest stop string wins, wherever it starts.
  size_t stop_at = std::string::npos;
  for (const std::string& stop : stops_) stop_at = std::min(stop_at, pending_.find(stop));
  if (stop_at != std::string::npos) {
    stopped_ = true;
    std::string released = pending_.substr(0, stop_at);
    pending_.clear();
    return released;
  }
  // Keep back the longest suffix that could begin a stop string.
  size_t keep = 0;
  for (const std::string& stop : stops_) {
    for (size_t n = std::min(stop.size() - 1, pending_.size()); n > keep; --n) {
      if (pending_.compare(pending_.size() - n, n, stop, 0, n) == 0) {
        keep = n;
        break;
      }
    }
  }
  std::string released = pending_.substr(0, pending_.size() - keep);
  pending_.erase(0, pending_.size() - keep);
  return released;
}

std::string StopStringFilter::Flush() {
  if (stopped_) return {};
  return std::exchange(pending_, {});
}

}  // namespace expertd::engine
