#ifndef EXPERTD_ENGINE_STOP_FILTER_H_
#define EXPERTD_ENGINE_STOP_FILTER_H_

#include <string>
#include <string_view>
#include <vector>

namespace expertd::engine {

// Applies a request's stop strings to generated text as it streams: text is
// released as soon as it can no longer be the start of a stop string, and
// generation ends before the first stop string (which is never released).
class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops);

  // Adds newly decoded text; returns the text that can be released now.
  std::string Add(std::string_view text);
  // At the end of generation: what was held back (nothing after a stop).
  std::string Flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;  // held back: could still be the start of a stop string
  bool stopped_ = false;
};

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_STOP_FILTER_H_
