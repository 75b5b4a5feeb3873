#ifndef EXPERTD_DAEMON_CONFIG_H_
#define EXPERTD_DAEMON_CONFIG_H_

// The daemon's configuration file (`expertd serve --config FILE`), TOML.
// Every key but model.path has a default; configs/expertd.toml documents each
// one and a test checks that file parses to exactly these defaults. An unknown
// section or key, a wrong type or a bad value is an error naming the key and
// its line. Every number has a range (documented in configs/expertd.toml, the
// maxima in config.cc): values that size pools, queues or allocations are
// bounded so that a typo cannot exhaust memory.

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/engine_options.h"

namespace expertd::daemon {

struct ServerConfig {
  // "" = DefaultSocketPath(): /run/expertd/expertd.sock for the service,
  // $XDG_RUNTIME_DIR/expertd.sock when run as an ordinary user.
  std::string socket_path;
  std::string socket_group;           // "" = the daemon's primary group
  uint32_t socket_mode = 0660;        // permission bits of the socket file
  uint64_t max_body_bytes = 1 << 20;  // larger request bodies get 413
  int max_connections = 64;           // further connections are refused
  // One peer uid may hold at most this many of max_connections, so one
  // client's idle connections cannot lock out everyone else.
  int max_connections_per_uid = 32;
  int max_queued_requests = 64;       // beyond this, 503 (back-pressure)
  int read_timeout_ms = 30000;        // a client this slow is disconnected

  bool operator==(const ServerConfig&) const = default;
};

struct ModelConfigSection {
  std::string path;  // model directory or .gguf file; required
  // A GGUF file's weights mapped instead of copied (model::WeightLoadOptions::map_weights).
  bool map_weights = false;

  bool operator==(const ModelConfigSection&) const = default;
};

// The part SIGHUP re-reads (LoadCacheBudgets): tiers are resized live.
struct CacheConfig {
  uint64_t dram_budget_bytes = 0;    // 0 = no offloading: every expert resident
  uint64_t device_budget_bytes = 0;  // 0 = no device (GPU) tier
  std::string policy = "least-stale";  // lru | lfu | least-stale | layer-distance
  int shallow_layers = 0;  // first N MoE layers pinned resident (Fate)
  bool wrong_guesses_first = true;  // a prefetch whose layer ran without it is evicted first

  bool operator==(const CacheConfig&) const = default;
};

struct IoConfig {
  std::string expert_file;  // "" = MODEL/model.experts (packed on first use)
  int queue_depth = 32;     // expert reads in flight: io_uring entries / cap on pread threads
  int speculative_depth = 4;  // of those, prefetch chunks at the disk at once (io::ReadClass)
  bool direct_io = true;    // O_DIRECT: expert reads bypass the page cache

  bool operator==(const IoConfig&) const = default;
};

struct PrefetchConfig {
  std::string kind = "auto";  // auto | none | cross-layer | previous-token (auto: runtime::ResolvePrefetchKind)
  int lookahead = 1;                 // layers predicted ahead, >= 1
  int max_in_flight = 16;            // speculative loads outstanding, >= 1
  bool to_device = true;             // with a device tier, prefetches go on into it
  int budget_per_layer = 0;          // prefetch reads per predicted layer and pass; 0 = measured
  double min_score = 0;              // decode predictions scoring below this are not prefetched
  int next_token_layers = 0;         // next token's first MoE layers prefetched from this token's routing
  std::string next_token_from = "previous-token";  // or last-layer-gate: what predicts them

  bool operator==(const PrefetchConfig&) const = default;
};

struct InferenceConfig {
  int default_experts_per_token = 0;  // dial-k when a request names none; 0 = the model's
  int max_batch = 8;                  // decode steps batched across requests
  int max_roster = 32;                // largest Roster of Experts (samples per token) a request may ask for
  int max_tokens = 2048;              // cap on max_tokens a request may ask for
  int threads = 0;                    // compute threads; 0 = every core
  // bf16 weights multiply activations rounded to bf16 on CPUs with AVX-512
  // BF16 (model::WeightLoadOptions::bf16_activations): faster prefill,
  // llama.cpp's rounding. Off: f32 activations, every product exact.
  bool bf16_activations = false;
  // Chunked prefill: a new prompt runs at most this many tokens between two
  // decode steps of the running requests, so a long prompt delays their
  // next token by one chunk, not by its whole prefill.
  int prefill_chunk_tokens = 256;
  // Admission by memory: requests run while their KV caches (reserved for
  // prompt + max_tokens positions) fit this budget; others wait in the
  // queue. 0 = no limit beyond max_batch.
  uint64_t kv_budget_bytes = uint64_t{2} << 30;

  bool operator==(const InferenceConfig&) const = default;
};

// [device]: where the model runs.
struct DeviceConfig {
  std::string gpu = "auto";  // auto | on | off (GpuMode)
  int cuda_device = 0;
  bool execution_placement = true;  // VRAM misses in DRAM may run on the CPU

  bool operator==(const DeviceConfig&) const = default;
};

struct DaemonConfig {
  ServerConfig server;
  ModelConfigSection model;
  CacheConfig cache;
  IoConfig io;
  PrefetchConfig prefetch;
  InferenceConfig inference;
  DeviceConfig device;

  bool operator==(const DaemonConfig&) const = default;
};

// The largest config file read (1 MiB, a thousand times the shipped one):
// LoadDaemonConfig refuses bigger files, and anything but a regular file,
// rather than read `--config /dev/zero` until memory runs out.
inline constexpr uint64_t kMaxConfigBytes = uint64_t{1} << 20;

// Parses a whole config. source_name (usually the path) prefixes every error:
// "expertd.toml:12: cache.policy: ...".
absl::StatusOr<DaemonConfig> ParseDaemonConfig(absl::string_view toml_text,
                                               absl::string_view source_name);
absl::StatusOr<DaemonConfig> LoadDaemonConfig(const std::string& path);

// The engine's options from a parsed config: each key that configures a
// module lands in that module's own option struct, as the command line's
// flags do (typed values, nothing parsed again):
//   model.path -> model_dir; inference.threads -> threads;
//   inference.default_experts_per_token -> experts_per_token (the cache's
//     minimum slots; requests get it through the completion API);
//   [cache] dram_budget, device_budget, policy, wrong_guesses_first -> cache
//     (ExpertCacheOptions);
//     shallow_layers -> shallow_layers;
//   [io] expert_file -> reader.path; queue_depth, speculative_depth, direct_io
//     -> reader (ReaderOptions);
//   [prefetch] kind, lookahead -> prefetch.predictor; max_in_flight,
//     budget_per_layer, min_score -> prefetch.scheduler; to_device ->
//     cache.prefetch_to_device;
//   [device] -> device (DeviceOptions).
// The rest configures the daemon itself and is read from DaemonConfig:
// [server], and inference.max_batch, max_roster, max_tokens,
// prefill_chunk_tokens and kv_budget (the scheduler and request limits).
//
// DaemonConfig mirrors the file rather than holding EngineOptions: it is a
// plain value (copied, compared with the defaults, its [cache] re-read on
// SIGHUP), which the module structs are not (ExpertCacheOptions owns a
// device copier), and they hold settings the loader takes from the model
// rather than from the file.
runtime::EngineOptions EngineOptionsFromConfig(const DaemonConfig& config);

// For SIGHUP: the whole file is validated as at start-up, only the [cache]
// section is returned, so a reload applies budgets and nothing else.
absl::StatusOr<CacheConfig> LoadCacheBudgets(const std::string& path);

// Where the socket goes when server.socket_path is "": root (and the service
// user, which systemd gives no XDG_RUNTIME_DIR) gets /run/expertd/expertd.sock;
// any other user with XDG_RUNTIME_DIR set gets $XDG_RUNTIME_DIR/expertd.sock.
// xdg_runtime_dir is the variable's value, nullptr when unset.
std::string DefaultSocketPath(uid_t uid, const char* xdg_runtime_dir);
// server.socket_path if set, otherwise DefaultSocketPath(uid, xdg_runtime_dir).
std::string ResolveSocketPath(const ServerConfig& server, uid_t uid,
                              const char* xdg_runtime_dir);

}  // namespace expertd::daemon

#endif  // EXPERTD_DAEMON_CONFIG_H_
