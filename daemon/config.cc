#include "daemon/config.h"

#include <filesystem>
#include <functional>
#include <string_view>
#include <utility>
#include <vector>

#include <toml++/toml.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/byte_size.h"
#include "base/read_file.h"
#include "base/status_macros.h"

namespace expertd::daemon {
namespace {

constexpr const char* kPolicies[] = {"lru", "lru-hint", "lfu", "least-stale", "layer-distance"};
constexpr const char* kPrefetchKinds[] = {"auto", "none", "cross-layer", "previous-token"};
constexpr const char* kNextTokenSources[] = {"previous-token", "last-layer-gate"};
constexpr const char* kGpuModes[] = {"auto", "on", "off"};

absl::string_view ToAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// One key's context while it is parsed: "source:line: section.key".
struct KeyRef {
  absl::string_view source;
  std::string name;  // "cache.policy"
  const toml::node& value;

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ":", value.source().begin.line, ": ", name, ": ", what));
  }
};

absl::string_view TypeName(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    default: return "a date/time";
  }
}

absl::Status ReadString(const KeyRef& k, std::string& out) {
  const auto* s = k.value.as_string();
  if (s == nullptr) return k.Error(absl::StrCat("expected a string, got ", TypeName(k.value)));
  out = s->get();
  return absl::OkStatus();
}

absl::Status ReadBool(const KeyRef& k, bool& out) {
  const auto* b = k.value.as_boolean();
  if (b == nullptr) return k.Error(absl::StrCat("expected true or false, got ", TypeName(k.value)));
  out = b->get();
  return absl::OkStatus();
}

// An integer in [min, max]. The TOML value is 64-bit: it is checked at full
// width before it is narrowed, so 2^32 + 5 is refused rather than read as 5.
absl::Status ReadInt(const KeyRef& k, int min, int max, int& out) {
  const auto* i = k.value.as_integer();
  if (i == nullptr) return k.Error(absl::StrCat("expected an integer, got ", TypeName(k.value)));
  const int64_t v = i->get();
  const std::string allowed = absl::StrCat(" (allowed: ", min, " .. ", max, "), got ", v);
  if (v < min) return k.Error(absl::StrCat("must be at least ", min, allowed));
  if (v > max) return k.Error(absl::StrCat("must be at most ", max, allowed));
  out = static_cast<int>(v);
  return absl::OkStatus();
}

// A number in [min, max]: a float, or an integer read as one.
absl::Status ReadReal(const KeyRef& k, double min, double max, double& out) {
  double v = 0;
  if (const auto* f = k.value.as_floating_point()) {
    v = f->get();
  } else if (const auto* i = k.value.as_integer()) {
    v = static_cast<double>(i->get());
  } else {
    return k.Error(absl::StrCat("expected a number, got ", TypeName(k.value)));
  }
  const std::string allowed = absl::StrCat(" (allowed: ", min, " .. ", max, "), got ", v);
  if (!(v >= min)) return k.Error(absl::StrCat("must be at least ", min, allowed));  // NaN fails too
  if (v > max) return k.Error(absl::StrCat("must be at most ", max, allowed));
  out = v;
  return absl::OkStatus();
}

// Bytes in [min_bytes, max_bytes] as an integer (1048576) or a string with
// units ("6GiB", "1.5GB").
absl::Status ReadByteSize(const KeyRef& k, uint64_t min_bytes, uint64_t max_bytes, uint64_t& out) {
  uint64_t bytes = 0;
  if (const auto* i = k.value.as_integer()) {
    if (i->get() < 0) return k.Error(absl::StrCat("a size cannot be negative, got ", i->get()));
    bytes = static_cast<uint64_t>(i->get());
  } else {
    const auto* s = k.value.as_string();
    if (s == nullptr) {
      return k.Error(absl::StrCat("expected a size (bytes, or a string such as \"6GiB\"), got ",
                                  TypeName(k.value)));
    }
    const absl::string_view text = ToAbsl(s->get());
    if (!text.empty() && text.front() == '-') {
      return k.Error(absl::StrCat("a size cannot be negative, got \"", text, "\""));
    }
    absl::StatusOr<uint64_t> parsed = ParseByteSize(text);
    if (!parsed.ok()) {
      return k.Error(absl::StrCat("bad size \"", text, "\" (expected e.g. \"6GiB\", \"512MiB\", 1048576): ",
                                  parsed.status().message()));
    }
    bytes = *parsed;
  }
  const std::string allowed = absl::StrCat(" (allowed: ", FormatByteSize(min_bytes), " .. ",
                                           FormatByteSize(max_bytes), "), got ", bytes, " bytes");
  if (bytes < min_bytes) return k.Error(absl::StrCat("must be at least ", min_bytes, " bytes", allowed));
  if (bytes > max_bytes) return k.Error(absl::StrCat("must be at most ", max_bytes, " bytes", allowed));
  out = bytes;
  return absl::OkStatus();
}

// File permission bits as an octal string ("0660"); a TOML integer would be
// read as decimal by anyone skimming the file, so only strings are accepted.
absl::Status ReadMode(const KeyRef& k, uint32_t& out) {
  const auto* s = k.value.as_string();
  const std::string_view text = s != nullptr ? std::string_view(s->get()) : std::string_view();
  bool ok = s != nullptr && text.size() >= 3 && text.size() <= 4;
  uint32_t mode = 0;
  for (char c : text) {
    if (c < '0' || c > '7') ok = false;
    mode = mode * 8 + static_cast<uint32_t>(c - '0');
  }
  if (mode > 0777) ok = false;  // no setuid/setgid/sticky bits on a socket
  if (!ok) {
    return k.Error(s != nullptr
                       ? absl::StrCat("expected an octal mode string such as \"0660\", got \"",
                                      ToAbsl(text), "\"")
                       : absl::StrCat("expected an octal mode string such as \"0660\", got ",
                                      TypeName(k.value)));
  }
  out = mode;
  return absl::OkStatus();
}

template <size_t N>
absl::Status ReadChoice(const KeyRef& k, const char* const (&choices)[N], std::string& out) {
  std::string v;
  RETURN_IF_ERROR(ReadString(k, v));
  for (const char* c : choices) {
    if (v == c) {
      out = std::move(v);
      return absl::OkStatus();
    }
  }
  return k.Error(absl::StrCat("unknown value \"", v, "\"; expected one of: ",
                              absl::StrJoin(choices, ", ")));
}

using Setter = std::function<absl::Status(const KeyRef&)>;
struct Field {
  const char* key;
  Setter set;
};
struct Section {
  const char* name;
  std::vector<Field> fields;
};

// The ranges of the numbers. Minima are what the daemon needs to work at
// all; maxima are far beyond any useful setting and keep a typo (or 2^31 - 1)
// from sizing a pool, a queue or an allocation that exhausts memory. The
// engine narrows some further once the model is known (prefetch.lookahead
// to its layers, the cache budgets to what every expert resident takes).
// configs/expertd.toml documents each range.
constexpr uint64_t kKiB = uint64_t{1} << 10;
constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kTiB = uint64_t{1} << 40;
constexpr uint64_t kMaxBodyMin = kKiB;      // a request smaller than this cannot hold a prompt
constexpr uint64_t kMaxBodyMax = kGiB;
constexpr uint64_t kMaxBudgetBytes = 64 * kTiB;  // beyond any one host's DRAM or device memory
constexpr int kMaxConnections = 4096;
constexpr int kMaxQueuedRequests = 65536;
constexpr int kMaxReadTimeoutMs = 3600 * 1000;  // an hour
constexpr int kMaxLayers = 4096;                // shallow_layers; models have tens to a hundred
constexpr int kMaxQueueDepth = 4096;            // the io_uring reader's own limit
constexpr int kMaxLookahead = 64;
constexpr int kMaxInFlight = 1024;
constexpr int kMaxExpertsPerToken = 4096;
constexpr int kMaxBatch = 1024;
constexpr int kMaxRoster = 256;
constexpr int kMaxTokens = 1 << 20;
constexpr int kMaxThreads = 1024;
constexpr int kMaxCudaDevice = 64;
constexpr int kMaxPrefillChunkTokens = 1 << 20;  // past any context: the whole prompt in one chunk

std::vector<Section> Schema(DaemonConfig& c) {
  auto str = [](std::string& f) { return [&f](const KeyRef& k) { return ReadString(k, f); }; };
  auto num = [](int& f, int min, int max) {
    return [&f, min, max](const KeyRef& k) { return ReadInt(k, min, max, f); };
  };
  auto size = [](uint64_t& f, uint64_t min, uint64_t max) {
    return [&f, min, max](const KeyRef& k) { return ReadByteSize(k, min, max, f); };
  };
  return {
      {"server",
       {{"socket_path", str(c.server.socket_path)},
        {"socket_group", str(c.server.socket_group)},
        {"socket_mode", [&c](const KeyRef& k) { return ReadMode(k, c.server.socket_mode); }},
        {"max_body", size(c.server.max_body_bytes, kMaxBodyMin, kMaxBodyMax)},
        {"max_connections", num(c.server.max_connections, 1, kMaxConnections)},
        {"max_connections_per_uid", num(c.server.max_connections_per_uid, 1, kMaxConnections)},
        {"max_queued_requests", num(c.server.max_queued_requests, 1, kMaxQueuedRequests)},
        {"read_timeout_ms", num(c.server.read_timeout_ms, 1, kMaxReadTimeoutMs)}}},
      {"model",
       {{"path", str(c.model.path)},
        {"map_weights", [&c](const KeyRef& k) { return ReadBool(k, c.model.map_weights); }}}},
      {"cache",
       {{"dram_budget", size(c.cache.dram_budget_bytes, 0, kMaxBudgetBytes)},
        {"device_budget", size(c.cache.device_budget_bytes, 0, kMaxBudgetBytes)},
        {"policy", [&c](const KeyRef& k) { return ReadChoice(k, kPolicies, c.cache.policy); }},
        {"shallow_layers", num(c.cache.shallow_layers, 0, kMaxLayers)},
        {"wrong_guesses_first", [&c](const KeyRef& k) { return ReadBool(k, c.cache.wrong_guesses_first); }}}},
      {"io",
       {{"expert_file", str(c.io.expert_file)},
        {"queue_depth", num(c.io.queue_depth, 1, kMaxQueueDepth)},
        {"speculative_depth", num(c.io.speculative_depth, 1, kMaxQueueDepth)},
        {"direct_io", [&c](const KeyRef& k) { return ReadBool(k, c.io.direct_io); }}}},
      {"prefetch",
       {{"kind", [&c](const KeyRef& k) { return ReadChoice(k, kPrefetchKinds, c.prefetch.kind); }},
        {"lookahead", num(c.prefetch.lookahead, 1, kMaxLookahead)},
        {"max_in_flight", num(c.prefetch.max_in_flight, 1, kMaxInFlight)},
        {"to_device", [&c](const KeyRef& k) { return ReadBool(k, c.prefetch.to_device); }},
        {"budget_per_layer", num(c.prefetch.budget_per_layer, 0, kMaxExpertsPerToken)},
        {"min_score", [&c](const KeyRef& k) { return ReadReal(k, 0, 1, c.prefetch.min_score); }},
        {"next_token_layers", num(c.prefetch.next_token_layers, 0, kMaxLayers)},
        {"next_token_from",
         [&c](const KeyRef& k) { return ReadChoice(k, kNextTokenSources, c.prefetch.next_token_from); }}}},
      {"inference",
       {{"default_experts_per_token", num(c.inference.default_experts_per_token, 0, kMaxExpertsPerToken)},
        {"max_batch", num(c.inference.max_batch, 1, kMaxBatch)},
        {"max_roster", num(c.inference.max_roster, 1, kMaxRoster)},
        {"max_tokens", num(c.inference.max_tokens, 1, kMaxTokens)},
        {"threads", num(c.inference.threads, 0, kMaxThreads)},
        {"bf16_activations", [&c](const KeyRef& k) { return ReadBool(k, c.inference.bf16_activations); }},
        {"prefill_chunk_tokens", num(c.inference.prefill_chunk_tokens, 1, kMaxPrefillChunkTokens)},
        {"kv_budget", size(c.inference.kv_budget_bytes, 0, kMaxBudgetBytes)}}},
      {"device",
       {{"gpu", [&c](const KeyRef& k) { return ReadChoice(k, kGpuModes, c.device.gpu); }},
        {"cuda_device", num(c.device.cuda_device, 0, kMaxCudaDevice)},
        {"execution_placement", [&c](const KeyRef& k) { return ReadBool(k, c.device.execution_placement); }}}},
  };
}

std::string KnownNames(const std::vector<Section>& schema) {
  std::vector<std::string> names;
  for (const Section& s : schema) names.emplace_back(s.name);
  return absl::StrJoin(names, ", ");
}

std::string KnownKeys(const Section& section) {
  std::vector<std::string> names;
  for (const Field& f : section.fields) names.emplace_back(f.key);
  return absl::StrJoin(names, ", ");
}

absl::Status ParseSection(absl::string_view source, const Section& section, const toml::table& table) {
  for (auto&& [key, value] : table) {
    const std::string name = absl::StrCat(section.name, ".", ToAbsl(key.str()));
    const Field* field = nullptr;
    for (const Field& f : section.fields) {
      if (key.str() == f.key) field = &f;
    }
    if (field == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(source, ":", key.source().begin.line,
                                                     ": unknown key ", name, " (known in [",
                                                     section.name, "]: ", KnownKeys(section), ")"));
    }
    RETURN_IF_ERROR(field->set(KeyRef{source, name, value}));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DaemonConfig> ParseDaemonConfig(absl::string_view toml_text, absl::string_view source_name) {
  toml::table root;
  try {
    root = toml::parse(std::string_view(toml_text.data(), toml_text.size()),
                       std::string_view(source_name.data(), source_name.size()));
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(source_name, ":", e.source().begin.line, ":",
                                                   e.source().begin.column,
                                                   ": TOML syntax error: ", ToAbsl(e.description())));
  }

  DaemonConfig config;
  const std::vector<Section> schema = Schema(config);
  for (auto&& [key, value] : root) {
    const Section* section = nullptr;
    for (const Section& s : schema) {
      if (key.str() == s.name) section = &s;
    }
    if (section == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          source_name, ":", key.source().begin.line, ": unknown ",
          value.is_table() ? "section [" : "top-level key ", ToAbsl(key.str()),
          value.is_table() ? "]" : "", " (known sections: ", KnownNames(schema), ")"));
    }
    const toml::table* table = value.as_table();
    if (table == nullptr) {
      return KeyRef{source_name, std::string(key.str()), value}.Error(
          absl::StrCat("expected a section [", section->name, "], got ", TypeName(value)));
    }
    RETURN_IF_ERROR(ParseSection(source_name, *section, *table));
  }

  if (config.model.path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source_name, ": model.path is required: add [model] with path = \"/path/to/model-dir\""));
  }
  return config;
}

absl::StatusOr<DaemonConfig> LoadDaemonConfig(const std::string& path) {
  // A missing file is left to ReadFileCapped, which says so (NotFound).
  std::error_code ec;
  const std::filesystem::file_status status = std::filesystem::status(path, ec);
  if (!ec && !std::filesystem::is_regular_file(status)) {
    return absl::InvalidArgumentError(
        absl::StrCat("config ", path, " is not a regular file (a directory, device or pipe); give a TOML file"));
  }
  ASSIGN_OR_RETURN(const std::string text, ReadFileCapped(path, kMaxConfigBytes, "config"));
  return ParseDaemonConfig(text, path);
}

absl::StatusOr<CacheConfig> LoadCacheBudgets(const std::string& path) {
  ASSIGN_OR_RETURN(DaemonConfig config, LoadDaemonConfig(path));
  return config.cache;
}

runtime::EngineOptions EngineOptionsFromConfig(const DaemonConfig& config) {
  runtime::EngineOptions options;
  options.model_dir = config.model.path;
  options.map_weights = config.model.map_weights;
  options.threads = config.inference.threads;
  options.bf16_activations = config.inference.bf16_activations;
  options.experts_per_token = config.inference.default_experts_per_token;

  options.cache.dram_budget_bytes = config.cache.dram_budget_bytes;
  options.cache.device_budget_bytes = config.cache.device_budget_bytes;
  options.cache.policy = config.cache.policy;
  options.cache.prefetch_to_device = config.prefetch.to_device;
  options.cache.wrong_guesses_first = config.cache.wrong_guesses_first;
  options.shallow_layers = config.cache.shallow_layers;

  options.reader.path = config.io.expert_file;
  options.reader.queue_depth = config.io.queue_depth;
  options.reader.speculative_depth = config.io.speculative_depth;
  options.reader.direct_io = config.io.direct_io;

  options.prefetch.predictor.kind = config.prefetch.kind;
  options.prefetch.predictor.lookahead = config.prefetch.lookahead;
  options.prefetch.scheduler.max_in_flight = config.prefetch.max_in_flight;
  options.prefetch.scheduler.fixed_budget_per_layer = config.prefetch.budget_per_layer;
  options.prefetch.scheduler.min_score = static_cast<float>(config.prefetch.min_score);
  options.prefetch.next_token_layers = config.prefetch.next_token_layers;
  options.prefetch.next_token_from = config.prefetch.next_token_from;

  // ParseDaemonConfig accepted only these three spellings (kGpuModes).
  options.device.gpu = config.device.gpu == "on"    ? runtime::GpuMode::kOn
                       : config.device.gpu == "off" ? runtime::GpuMode::kOff
                                                    : runtime::GpuMode::kAuto;
  options.device.cuda_device = config.device.cuda_device;
  options.device.execution_placement = config.device.execution_placement;
  return options;
}

std::string DefaultSocketPath(uid_t uid, const char* xdg_runtime_dir) {
  if (uid != 0 && xdg_runtime_dir != nullptr && xdg_runtime_dir[0] != '\0') {
    std::string dir = xdg_runtime_dir;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    return dir + "/expertd.sock";
  }
  return "/run/expertd/expertd.sock";
}

std::string ResolveSocketPath(const ServerConfig& server, uid_t uid, const char* xdg_runtime_dir) {
  if (!server.socket_path.empty()) return server.socket_path;
  return DefaultSocketPath(uid, xdg_runtime_dir);
}

}  // namespace expertd::daemon
