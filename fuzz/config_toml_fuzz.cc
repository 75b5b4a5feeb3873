// The daemon's TOML config (daemon/config.h, ParseDaemonConfig): toml++'s
// parser, then the schema that maps sections and keys onto DaemonConfig.
//
// Asserts beyond "no crash": every error names the source ("fuzz.toml...");
// an accepted config has model.path set and every number inside the range
// configs/expertd.toml documents for it, every choice one of its values; and
// parsing the same text twice gives the same config.

#include <cstdint>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "daemon/config.h"
#include "fuzz/fuzz_util.h"

namespace {

bool InRange(int64_t v, int64_t min, int64_t max) { return v >= min && v <= max; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<expertd::daemon::DaemonConfig> config = expertd::daemon::ParseDaemonConfig(text, "fuzz.toml");
  if (!config.ok()) {
    FUZZ_CHECK(absl::StartsWith(config.status().message(), "fuzz.toml"));
    return 0;
  }
  const expertd::daemon::DaemonConfig& c = *config;
  FUZZ_CHECK(!c.model.path.empty());

  constexpr uint64_t kKiB = uint64_t{1} << 10, kGiB = uint64_t{1} << 30, kTiB = uint64_t{1} << 40;
  FUZZ_CHECK(c.server.socket_mode <= 0777);
  FUZZ_CHECK(c.server.max_body_bytes >= kKiB && c.server.max_body_bytes <= kGiB);
  FUZZ_CHECK(InRange(c.server.max_connections, 1, 4096));
  FUZZ_CHECK(InRange(c.server.max_queued_requests, 1, 65536));
  FUZZ_CHECK(InRange(c.server.read_timeout_ms, 1, 3600 * 1000));
  FUZZ_CHECK(c.cache.dram_budget_bytes <= 64 * kTiB && c.cache.device_budget_bytes <= 64 * kTiB);
  FUZZ_CHECK(
      (std::set<std::string>{"lru", "lru-hint", "lfu", "least-stale", "layer-distance"}.count(c.cache.policy) == 1));
  FUZZ_CHECK(InRange(c.cache.shallow_layers, 0, 4096));
  FUZZ_CHECK(InRange(c.io.queue_depth, 1, 4096));
  FUZZ_CHECK(InRange(c.io.speculative_depth, 1, 4096));
  FUZZ_CHECK((std::set<std::string>{"auto", "none", "cross-layer", "previous-token"}.count(c.prefetch.kind) == 1));
  FUZZ_CHECK(c.prefetch.min_score >= 0 && c.prefetch.min_score <= 1);
  FUZZ_CHECK(InRange(c.prefetch.lookahead, 1, 64));
  FUZZ_CHECK(InRange(c.prefetch.max_in_flight, 1, 1024));
  FUZZ_CHECK(InRange(c.inference.default_experts_per_token, 0, 4096));
  FUZZ_CHECK(InRange(c.inference.max_batch, 1, 1024));
  FUZZ_CHECK(InRange(c.inference.max_roster, 1, 256));
  FUZZ_CHECK(InRange(c.inference.max_tokens, 1, 1 << 20));
  FUZZ_CHECK(InRange(c.inference.threads, 0, 1024));
  FUZZ_CHECK((std::set<std::string>{"auto", "on", "off"}.count(c.device.gpu) == 1));
  FUZZ_CHECK(InRange(c.device.cuda_device, 0, 64));

  const absl::StatusOr<expertd::daemon::DaemonConfig> again = expertd::daemon::ParseDaemonConfig(text, "fuzz.toml");
  FUZZ_CHECK(again.ok() && *again == c);
  return 0;
}
