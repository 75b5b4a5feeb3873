#ifndef EXPERTD_JINJA_TEMPLATE_H_
#define EXPERTD_JINJA_TEMPLATE_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "jinja/lexer.h"
#include "jinja/value.h"

namespace expertd::jinja {

struct Node;

// Bounds on one render, so a template (or the data it loops over) cannot
// hang or exhaust the daemon. A render that passes one fails with an error
// naming the limit.
struct RenderLimits {
  int max_call_depth = 64;  // macro calls nested, and blocks nested
  int64_t max_loop_iterations = int64_t{1} << 22;  // for-loop bodies run, all loops together
  size_t max_output_bytes = size_t{64} << 20;  // rendered text, and any one string built
};

struct RenderOptions {
  RenderLimits limits;
  // The time strftime_now() formats (local time, as Hugging Face's
  // datetime.now()); unset reads the system clock. Tests fix it.
  std::optional<std::chrono::system_clock::time_point> now;
};

// A Jinja2 template parsed once and rendered many times: the subset of
// Jinja2 that Hugging Face chat templates are written in, with Python's
// semantics for the values (jinja/value.h) and Hugging Face's environment
// (trim_blocks and lstrip_blocks on, loop controls, the globals
// raise_exception, strftime_now, namespace and range, its tojson). What is
// supported is listed in jinja/README.md.
//
// Rendering is a pure function of the template, the context and the options:
// no state survives a render, so one Template serves concurrent renders.
class Template {
 public:
  // InvalidArgument naming the line and column of the first syntax error.
  static absl::StatusOr<Template> Parse(std::string_view source, const LexOptions& options = {});

  // Renders with `context` as the template's variables. Errors are
  // InvalidArgument naming the template line and column; a
  // raise_exception(message) call is reported with the message alone (see
  // IsRaisedByTemplate).
  absl::StatusOr<std::string> Render(const Dict& context, const RenderOptions& options = {}) const;

 private:
  explicit Template(std::shared_ptr<const std::vector<Node>> body) : body_(std::move(body)) {}
  std::shared_ptr<const std::vector<Node>> body_;
};

// Whether a Render error is the template's own raise_exception(message); the
// status message is then exactly that message (a chat template's rule about
// the conversation, for the client to read).
bool IsRaisedByTemplate(const absl::Status& status);

}  // namespace expertd::jinja

#endif  // EXPERTD_JINJA_TEMPLATE_H_
