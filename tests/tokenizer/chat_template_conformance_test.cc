// Publishers' chat templates rendered by our interpreter against Python's
// Jinja2: chat_templates/expected.json holds, for every fixture template,
// conversation, add_generation_prompt and set of kwargs, the text Jinja2 renders
// with Hugging Face's settings (or the raise_exception message, or that it
// failed). make_expected.py in that folder regenerates it.
//
// Each template's figure is printed as "N of M identical".

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "jinja/json_value.h"
#include "jinja/template.h"
#include "nlohmann/json.hpp"

namespace expertd::tokenizer {
namespace {

using Json = nlohmann::ordered_json;

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The test clock make_expected.py renders strftime_now at.
jinja::RenderOptions FixedClock(const Json& expected) {
  jinja::RenderOptions options;
  std::tm utc{};
  std::istringstream(expected.at("now_utc").get<std::string>()) >> std::get_time(&utc, "%Y-%m-%dT%H:%M:%S");
  options.now = std::chrono::system_clock::from_time_t(timegm(&utc));
  return options;
}

TEST(ChatTemplateConformance, PublishersTemplatesRenderAsJinja2Does) {
  // EXPERTD_CHAT_TEMPLATES_DIR points the test at another set made by
  // make_expected.py (to try templates before adding them as fixtures).
  const char* override_dir = std::getenv("EXPERTD_CHAT_TEMPLATES_DIR");
  const std::string dir = override_dir != nullptr ? override_dir : CHAT_TEMPLATES_DIR;
  const Json expected = Json::parse(ReadText(dir + "/expected.json"));
  const jinja::RenderOptions options = FixedClock(expected);
  std::map<std::string, jinja::Template> templates;
  struct Tally {
    int identical = 0;
    int total = 0;
  };
  std::map<std::string, Tally> tallies;
  for (const Json& c : expected.at("cases")) {
    const std::string file = c.at("template").get<std::string>();
    auto it = templates.find(file);
    if (it == templates.end()) {
      absl::StatusOr<jinja::Template> parsed = jinja::Template::Parse(ReadText(dir + "/" + file));
      ASSERT_TRUE(parsed.ok()) << file << ": " << parsed.status();
      it = templates.emplace(file, *std::move(parsed)).first;
    }
    // The variables transformers passes to render().
    jinja::Dict context;
    context.Set("messages", jinja::ValueFromJson(expected.at("conversations").at(c.at("conversation").get<std::string>())));
    context.Set("tools", jinja::Value::None());
    context.Set("documents", jinja::Value::None());
    context.Set("add_generation_prompt", jinja::Value(c.at("add_generation_prompt").get<bool>()));
    if (!c.at("bos_token").is_null()) context.Set("bos_token", jinja::Value(c.at("bos_token").get<std::string>()));
    if (!c.at("eos_token").is_null()) context.Set("eos_token", jinja::Value(c.at("eos_token").get<std::string>()));
    const std::string kwargs = c.at("kwargs").get<std::string>();
    for (const auto& [key, value] : expected.at("kwargs").at(kwargs).items()) context.Set(key, jinja::ValueFromJson(value));

    const std::string label = file + " / " + c.at("conversation").get<std::string>() +
                              " / add_generation_prompt=" + (c.at("add_generation_prompt").get<bool>() ? "true" : "false") +
                              " / kwargs=" + kwargs;
    const absl::StatusOr<std::string> out = it->second.Render(context, options);
    bool same = false;
    if (c.contains("expected")) {
      const std::string& text = expected.at("texts").at(c.at("expected").get<size_t>()).get_ref<const std::string&>();
      same = out.ok() && *out == text;
      EXPECT_TRUE(same) << label << "\n--- Jinja2:\n" << text << "\n--- ours:\n"
                        << (out.ok() ? *out : out.status().ToString());
    } else if (c.contains("raises")) {
      same = !out.ok() && jinja::IsRaisedByTemplate(out.status()) && out.status().message() == c.at("raises").get<std::string>();
      EXPECT_TRUE(same) << label << "\n--- Jinja2 raised: " << c.at("raises").get<std::string>() << "\n--- ours: "
                        << (out.ok() ? *out : out.status().ToString());
    } else {
      same = !out.ok() && !jinja::IsRaisedByTemplate(out.status());
      EXPECT_TRUE(same) << label << "\n--- Jinja2 failed: " << c.at("fails").get<std::string>() << "\n--- ours: "
                        << (out.ok() ? *out : out.status().ToString());
    }
    Tally& tally = tallies[file];
    ++tally.total;
    tally.identical += same ? 1 : 0;
  }
  for (const auto& [file, tally] : tallies) {
    std::cout << file << ": " << tally.identical << " of " << tally.total << " identical\n";
  }
}

}  // namespace
}  // namespace expertd::tokenizer
