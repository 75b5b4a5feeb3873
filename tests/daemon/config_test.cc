#include "daemon/config.h"

#include <cstdio>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace expertd::daemon {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kModel[] = "[model]\npath = \"/m\"\n";

absl::StatusOr<DaemonConfig> Parse(const std::string& text) { return ParseDaemonConfig(text, "t.toml"); }

// The error for `text`, which must fail.
std::string ErrorOf(const std::string& text) {
  absl::StatusOr<DaemonConfig> c = Parse(text);
  EXPECT_FALSE(c.ok()) << "parsed: " << text;
  if (c.ok()) return "";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(c.status().message());
}

TEST(DaemonConfigTest, ShippedFileHoldsExactlyTheDefaults) {
  absl::StatusOr<DaemonConfig> c = LoadDaemonConfig(EXPERTD_DEFAULT_CONFIG);
  ASSERT_TRUE(c.ok()) << c.status();
  DaemonConfig want;
  want.model.path = "/var/lib/expertd/model";  // the one required key: a placeholder
  EXPECT_TRUE(*c == want);
  // Spot checks, so a default changed in both places at once is still seen.
  EXPECT_EQ(c->server.socket_mode, 0660u);
  EXPECT_EQ(c->server.max_body_bytes, 1u << 20);
  EXPECT_EQ(c->cache.policy, "least-stale");
  EXPECT_EQ(c->prefetch.kind, "auto");
  EXPECT_EQ(c->io.queue_depth, 32);
  EXPECT_EQ(c->io.speculative_depth, 4);
  EXPECT_TRUE(c->io.direct_io);
}

TEST(DaemonConfigTest, OnlyModelPathGivesDefaults) {
  absl::StatusOr<DaemonConfig> c = Parse(kModel);
  ASSERT_TRUE(c.ok()) << c.status();
  DaemonConfig want;
  want.model.path = "/m";
  EXPECT_TRUE(*c == want);
}

TEST(DaemonConfigTest, EveryKeySetRoundTrips) {
  absl::StatusOr<DaemonConfig> c = Parse(R"(
[server]
socket_path = "/tmp/x.sock"
socket_group = "llm"
socket_mode = "0600"
max_body = "4MiB"
max_connections = 10
max_connections_per_uid = 3
max_queued_requests = 20
read_timeout_ms = 500
[model]
path = "/models/olmoe"
map_weights = true
[cache]
dram_budget = "6GiB"
device_budget = 1048576
policy = "layer-distance"
shallow_layers = 3
wrong_guesses_first = false
[io]
expert_file = "/nvme/olmoe.experts"
queue_depth = 128
speculative_depth = 2
direct_io = false
[prefetch]
kind = "previous-token"
lookahead = 2
max_in_flight = 4
to_device = false
budget_per_layer = 3
min_score = 0.125
next_token_layers = 1
next_token_from = "last-layer-gate"
[inference]
default_experts_per_token = 4
max_batch = 16
max_roster = 8
max_tokens = 512
threads = 12
bf16_activations = true
prefill_chunk_tokens = 64
kv_budget = "1GiB"
[device]
gpu = "off"
cuda_device = 1
execution_placement = false
)");
  ASSERT_TRUE(c.ok()) << c.status();
  DaemonConfig w;
  w.server = {"/tmp/x.sock", "llm", 0600, 4u << 20, 10, 3, 20, 500};
  w.model.path = "/models/olmoe";
  w.model.map_weights = true;
  w.cache = {6ull << 30, 1048576, "layer-distance", 3, false};
  w.io = {"/nvme/olmoe.experts", 128, 2, false};
  w.prefetch = {"previous-token", 2, 4, false, 3, 0.125, 1, "last-layer-gate"};
  w.inference = {4, 16, 8, 512, 12, true, 64, 1ull << 30};
  w.device = {"off", 1, false};
  EXPECT_TRUE(*c == w);
  EXPECT_EQ(c->server.socket_group, "llm");
  EXPECT_EQ(c->cache.dram_budget_bytes, 6ull << 30);
  EXPECT_EQ(c->inference.threads, 12);
}

TEST(DaemonConfigTest, SizesAcceptIntegersAndUnits) {
  struct Case {
    std::string value;
    uint64_t bytes;
  };
  for (const Case& t : {Case{"\"6GiB\"", 6ull << 30}, Case{"1048576", 1048576},
                        Case{"\"1.5GB\"", 1500000000ull}, Case{"0", 0}, Case{"\"512MiB\"", 512ull << 20}}) {
    absl::StatusOr<DaemonConfig> c = Parse(std::string(kModel) + "[cache]\ndram_budget = " + t.value + "\n");
    ASSERT_TRUE(c.ok()) << t.value << ": " << c.status();
    EXPECT_EQ(c->cache.dram_budget_bytes, t.bytes) << t.value;
  }
}

TEST(DaemonConfigTest, ModeIsOctal) {
  absl::StatusOr<DaemonConfig> c = Parse(std::string(kModel) + "[server]\nsocket_mode = \"0660\"\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->server.socket_mode, 0660u);
  c = Parse(std::string(kModel) + "[server]\nsocket_mode = \"770\"\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->server.socket_mode, 0770u);
}

TEST(DaemonConfigTest, SyntaxErrorHasLineAndColumn) {
  const std::string e = ErrorOf("[model]\npath = \"/m\"\n\n[cache\n");
  EXPECT_THAT(e, AllOf(HasSubstr("t.toml:4:"), HasSubstr("syntax error")));
}

TEST(DaemonConfigTest, UnknownKeyInKnownSectionNamesKeyAndLine) {
  const std::string e = ErrorOf(std::string(kModel) + "[cache]\npolicy = \"lru\"\ndram_budgte = \"1GiB\"\n");
  EXPECT_THAT(e, AllOf(HasSubstr("t.toml:5:"), HasSubstr("unknown key cache.dram_budgte"),
                       HasSubstr("dram_budget")));
}

TEST(DaemonConfigTest, UnknownSectionNamesItAndLine) {
  EXPECT_THAT(ErrorOf(std::string(kModel) + "\n[caches]\npolicy = \"lru\"\n"),
              AllOf(HasSubstr("t.toml:4:"), HasSubstr("unknown section [caches]")));
  EXPECT_THAT(ErrorOf("verbose = true\n" + std::string(kModel)),
              AllOf(HasSubstr("t.toml:1:"), HasSubstr("unknown top-level key verbose")));
  EXPECT_THAT(ErrorOf("cache = 3\n" + std::string(kModel)),
              AllOf(HasSubstr("t.toml:1:"), HasSubstr("cache: expected a section")));
}

TEST(DaemonConfigTest, MissingModelPath) {
  EXPECT_THAT(ErrorOf("[cache]\npolicy = \"lru\"\n"), HasSubstr("model.path is required"));
  EXPECT_THAT(ErrorOf("[model]\npath = \"\"\n"), HasSubstr("model.path is required"));
  EXPECT_THAT(ErrorOf("\n[model]\npath = 7\n"),
              AllOf(HasSubstr("t.toml:3: model.path: "), HasSubstr("expected a string")));
}

struct BadValue {
  std::string section;
  std::string line;  // "key = value"
  std::string key;   // "section.key" expected in the error
  std::string why;   // expected in the error
};

void PrintTo(const BadValue& b, std::ostream* os) { *os << "[" << b.section << "] " << b.line; }

class BadValueTest : public ::testing::TestWithParam<BadValue> {};

TEST_P(BadValueTest, NamesKeyAndLine) {
  const BadValue& b = GetParam();
  // The bad key sits on line 5: model (2 lines), a blank, the section header.
  const std::string e = ErrorOf(std::string(kModel) + "\n[" + b.section + "]\n" + b.line + "\n");
  EXPECT_THAT(e, AllOf(HasSubstr("t.toml:5: " + b.key + ": "), HasSubstr(b.why)));
}

INSTANTIATE_TEST_SUITE_P(
    Errors, BadValueTest,
    ::testing::Values(
        BadValue{"cache", "dram_budget = -1", "cache.dram_budget", "negative"},
        BadValue{"cache", "dram_budget = \"-1GiB\"", "cache.dram_budget", "negative"},
        BadValue{"cache", "device_budget = \"lots\"", "cache.device_budget", "bad size \"lots\""},
        BadValue{"cache", "device_budget = 1.5", "cache.device_budget", "got a float"},
        BadValue{"server", "max_body = -4", "server.max_body", "negative"},
        BadValue{"cache", "policy = \"fifo\"", "cache.policy", "lru, lru-hint, lfu, least-stale, layer-distance"},
        BadValue{"cache", "policy = 3", "cache.policy", "expected a string"},
        BadValue{"prefetch", "kind = \"oracle\"", "prefetch.kind", "auto, none, cross-layer, previous-token"},
        BadValue{"prefetch", "lookahead = 0", "prefetch.lookahead", "at least 1"},
        BadValue{"prefetch", "max_in_flight = 0", "prefetch.max_in_flight", "at least 1"},
        BadValue{"prefetch", "budget_per_layer = -1", "prefetch.budget_per_layer", "at least 0"},
        BadValue{"prefetch", "min_score = -0.5", "prefetch.min_score", "at least 0"},
        BadValue{"prefetch", "min_score = 1.5", "prefetch.min_score", "allowed: 0 .. 1"},
        BadValue{"prefetch", "min_score = nan", "prefetch.min_score", "at least 0"},
        BadValue{"prefetch", "min_score = \"high\"", "prefetch.min_score", "expected a number, got a string"},
        BadValue{"cache", "wrong_guesses_first = 1", "cache.wrong_guesses_first", "expected true or false"},
        BadValue{"prefetch", "next_token_from = \"oracle\"", "prefetch.next_token_from",
                 "previous-token, last-layer-gate"},
        BadValue{"io", "queue_depth = 0", "io.queue_depth", "at least 1"},
        BadValue{"io", "speculative_depth = 0", "io.speculative_depth", "at least 1"},
        BadValue{"io", "queue_depth = \"32\"", "io.queue_depth", "expected an integer, got a string"},
        BadValue{"io", "direct_io = \"yes\"", "io.direct_io", "expected true or false"},
        BadValue{"inference", "default_experts_per_token = -1", "inference.default_experts_per_token",
                 "at least 0"},
        BadValue{"inference", "max_batch = 0", "inference.max_batch", "at least 1"},
        BadValue{"inference", "max_roster = 0", "inference.max_roster", "at least 1"},
        BadValue{"inference", "max_tokens = 99999999999", "inference.max_tokens", "at most"},
        BadValue{"server", "socket_mode = \"0968\"", "server.socket_mode", "octal mode string"},
        BadValue{"server", "socket_mode = \"rw-rw----\"", "server.socket_mode", "octal mode string"},
        BadValue{"server", "socket_mode = \"4755\"", "server.socket_mode", "octal mode string"},
        BadValue{"server", "socket_mode = 432", "server.socket_mode", "got an integer"},
        BadValue{"server", "max_connections = 0", "server.max_connections", "at least 1"},
        BadValue{"device", "gpu = \"yes\"", "device.gpu", "auto, on, off"},
        BadValue{"device", "cuda_device = -1", "device.cuda_device", "at least 0"},
        // Upper bounds: each would otherwise size an allocation or a pool.
        BadValue{"prefetch", "lookahead = 2147483647", "prefetch.lookahead", "allowed: 1 .. 64"},
        BadValue{"prefetch", "lookahead = 65", "prefetch.lookahead", "allowed: 1 .. 64"},
        BadValue{"prefetch", "max_in_flight = 1025", "prefetch.max_in_flight", "allowed: 1 .. 1024"},
        BadValue{"prefetch", "budget_per_layer = 4097", "prefetch.budget_per_layer", "allowed: 0 .. 4096"},
        BadValue{"server", "max_connections = 4097", "server.max_connections", "allowed: 1 .. 4096"},
        BadValue{"server", "max_queued_requests = 65537", "server.max_queued_requests", "allowed: 1 .. 65536"},
        BadValue{"server", "read_timeout_ms = 3600001", "server.read_timeout_ms", "allowed: 1 .. 3600000"},
        BadValue{"server", "read_timeout_ms = 0", "server.read_timeout_ms", "allowed: 1 .. 3600000"},
        BadValue{"server", "max_body = \"2GiB\"", "server.max_body", "allowed: 1.0 KiB .. 1.0 GiB"},
        BadValue{"server", "max_body = 1023", "server.max_body", "allowed: 1.0 KiB .. 1.0 GiB"},
        BadValue{"io", "queue_depth = 4097", "io.queue_depth", "allowed: 1 .. 4096"},
        BadValue{"inference", "max_batch = 1025", "inference.max_batch", "allowed: 1 .. 1024"},
        BadValue{"inference", "max_roster = 257", "inference.max_roster", "allowed: 1 .. 256"},
        BadValue{"inference", "max_tokens = 1048577", "inference.max_tokens", "allowed: 1 .. 1048576"},
        BadValue{"inference", "threads = 1025", "inference.threads", "allowed: 0 .. 1024"},
        BadValue{"inference", "default_experts_per_token = 4097", "inference.default_experts_per_token",
                 "allowed: 0 .. 4096"},
        BadValue{"cache", "shallow_layers = 4097", "cache.shallow_layers", "allowed: 0 .. 4096"},
        BadValue{"cache", "shallow_layers = -9223372036854775808", "cache.shallow_layers", "allowed: 0 .. 4096"},
        BadValue{"cache", "dram_budget = \"65TiB\"", "cache.dram_budget", "allowed: 0 B .. 64.0 TiB"},
        BadValue{"cache", "device_budget = 9223372036854775807", "cache.device_budget", "allowed: 0 B .. 64.0 TiB"},
        BadValue{"device", "cuda_device = 65", "device.cuda_device", "allowed: 0 .. 64"}));

// Each bound itself is accepted, so the documented range is the real one.
TEST(DaemonConfigTest, RangeLimitsAreInclusive) {
  absl::StatusOr<DaemonConfig> c = Parse(std::string(kModel) + R"(
[server]
max_body = "1GiB"
max_connections = 4096
max_queued_requests = 65536
read_timeout_ms = 3600000
[cache]
dram_budget = "64TiB"
device_budget = "64TiB"
shallow_layers = 4096
[io]
queue_depth = 4096
[prefetch]
lookahead = 64
max_in_flight = 1024
min_score = 1
[inference]
default_experts_per_token = 4096
max_batch = 1024
max_roster = 256
max_tokens = 1048576
threads = 1024
[device]
cuda_device = 64
)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->server.max_body_bytes, 1ull << 30);
  EXPECT_EQ(c->cache.dram_budget_bytes, 64ull << 40);
  EXPECT_EQ(c->prefetch.lookahead, 64);
  EXPECT_EQ(c->prefetch.min_score, 1.0);  // an integer is taken as a number
  EXPECT_EQ(c->inference.max_tokens, 1 << 20);
  c = Parse(std::string(kModel) + "[server]\nmax_body = \"1KiB\"\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->server.max_body_bytes, 1024u);
}

TEST(DaemonConfigTest, LoadNamesMissingFile) {
  absl::StatusOr<DaemonConfig> c = LoadDaemonConfig("/nonexistent/expertd.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(c.status().message(), HasSubstr("/nonexistent/expertd.toml"));
}

// A config that never ends, or is far too large, is refused after reading at
// most the cap: /dev/zero would otherwise be read until memory runs out.
TEST(DaemonConfigTest, LoadRefusesEndlessAndHugeFiles) {
  absl::StatusOr<DaemonConfig> c = LoadDaemonConfig("/dev/zero");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), AllOf(HasSubstr("/dev/zero"), HasSubstr("not a regular file")));

  const std::string dir = ::testing::TempDir();
  EXPECT_THAT(LoadDaemonConfig(dir).status().message(), AllOf(HasSubstr(dir), HasSubstr("not a regular file")));

  const std::string big = dir + "/expertd_config_test_big.toml";
  {
    std::ofstream out(big, std::ios::binary);
    out << kModel << "# " << std::string(kMaxConfigBytes, 'x') << "\n";
  }
  c = LoadDaemonConfig(big);
  std::remove(big.c_str());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), AllOf(HasSubstr(big), HasSubstr("1.0 MiB")));
}

TEST(DaemonConfigTest, CacheBudgetsFromFile) {
  absl::StatusOr<CacheConfig> c = LoadCacheBudgets(EXPERTD_DEFAULT_CONFIG);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(*c == CacheConfig{});
}

TEST(DaemonConfigTest, DefaultSocketPath) {
  EXPECT_EQ(DefaultSocketPath(0, nullptr), "/run/expertd/expertd.sock");
  // root keeps the system path even inside a login session.
  EXPECT_EQ(DefaultSocketPath(0, "/run/user/0"), "/run/expertd/expertd.sock");
  EXPECT_EQ(DefaultSocketPath(1000, "/run/user/1000"), "/run/user/1000/expertd.sock");
  EXPECT_EQ(DefaultSocketPath(1000, "/run/user/1000/"), "/run/user/1000/expertd.sock");
  // The service user has no XDG_RUNTIME_DIR: systemd's RuntimeDirectory.
  EXPECT_EQ(DefaultSocketPath(998, nullptr), "/run/expertd/expertd.sock");
  EXPECT_EQ(DefaultSocketPath(998, ""), "/run/expertd/expertd.sock");

  ServerConfig s;
  EXPECT_EQ(ResolveSocketPath(s, 1000, "/run/user/1000"), "/run/user/1000/expertd.sock");
  s.socket_path = "/srv/e.sock";
  EXPECT_EQ(ResolveSocketPath(s, 1000, "/run/user/1000"), "/srv/e.sock");
}

}  // namespace
}  // namespace expertd::daemon
