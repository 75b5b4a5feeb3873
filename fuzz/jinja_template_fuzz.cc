// A chat template's source through jinja::Template::Parse, then Render over a
// fixed conversation (jinja/template.h). Templates come from model
// directories; the conversation stands in for what clients send.
//
// Asserts beyond "no crash": a render stays within its output limit; a
// second render of the same template gives the same answer (no state leaks
// between renders); an error is InvalidArgument with a message.

#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_util.h"
#include "jinja/template.h"

namespace {

using expertd::jinja::Dict;
using expertd::jinja::List;
using expertd::jinja::Value;

Value Message(const char* role, const char* content) {
  Dict message;
  message.Set("role", Value(role));
  message.Set("content", Value(content));
  return Value::MakeDict(std::move(message));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view source(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<expertd::jinja::Template> parsed = expertd::jinja::Template::Parse(source);
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(!parsed.status().message().empty());
    return 0;
  }
  Dict context;
  context.Set("messages", Value::MakeList(List{Message("system", "Be brief."), Message("user", "Hi \xE6\x97\xA5 {{ x }}"),
                                               Message("assistant", "<think>\nhm\n</think>\n\nHello"),
                                               Message("user", "Bye")}));
  context.Set("tools", Value::None());
  context.Set("add_generation_prompt", Value(true));
  context.Set("bos_token", Value("<s>"));
  context.Set("eos_token", Value("</s>"));
  context.Set("enable_thinking", Value(false));
  expertd::jinja::RenderOptions options;
  options.limits.max_loop_iterations = 20000;
  options.limits.max_output_bytes = 64 << 10;
  options.now = std::chrono::system_clock::from_time_t(0);
  const absl::StatusOr<std::string> first = parsed->Render(context, options);
  const absl::StatusOr<std::string> second = parsed->Render(context, options);
  FUZZ_CHECK(first.ok() == second.ok());
  if (first.ok()) {
    FUZZ_CHECK(first->size() <= options.limits.max_output_bytes);
    FUZZ_CHECK(*first == *second);
  } else {
    FUZZ_CHECK(first.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(first.status() == second.status());
  }
  return 0;
}
