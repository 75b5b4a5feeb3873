#include "cache/sim/synthetic_trace.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace expertd::cache {
namespace {

// Portable draws on top of mt19937_64, whose sequence the standard fixes.
class Random {
 public:
  explicit Random(uint64_t seed) : engine_(seed) {}

  // Uniform in [0, 1), 53 bits.
  double Uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
  // Uniform in [0, n).
  int Below(int n) { return std::min(static_cast<int>(Uniform() * n), n - 1); }

  std::vector<int32_t> Permutation(int n) {
    std::vector<int32_t> values(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) values[i] = i;
    for (int i = n - 1; i > 0; --i) std::swap(values[i], values[Below(i + 1)]);
    return values;
  }

 private:
  std::mt19937_64 engine_;
};

}  // namespace

absl::Status ValidateSyntheticTraceOptions(const SyntheticTraceOptions& options) {
  if (options.num_layers <= 0) return absl::InvalidArgumentError("synthetic trace: layers must be positive");
  if (options.num_experts <= 0) return absl::InvalidArgumentError("synthetic trace: experts must be positive");
  if (options.k <= 0 || options.k > options.num_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("synthetic trace: k=", options.k, " must be in 1..", options.num_experts, " (the experts)"));
  }
  if (options.tokens < 0) return absl::InvalidArgumentError("synthetic trace: tokens must not be negative");
  if (!(options.zipf_exponent >= 0) || !std::isfinite(options.zipf_exponent)) {
    return absl::InvalidArgumentError("synthetic trace: the Zipf exponent must be finite and >= 0");
  }
  for (auto [name, value] : {std::pair{"reuse probability", options.reuse_probability},
                             std::pair{"cross-layer probability", options.cross_layer_probability}}) {
    if (!(value >= 0 && value <= 1)) {
      return absl::InvalidArgumentError(absl::StrCat("synthetic trace: the ", name, " ", value, " is not in [0, 1]"));
    }
  }
  return absl::OkStatus();
}

AccessTrace MakeSyntheticTrace(const SyntheticTraceOptions& options) {
  AccessTrace trace;
  trace.num_layers = options.num_layers;
  trace.num_experts = options.num_experts;
  if (!ValidateSyntheticTraceOptions(options).ok()) return trace;
  const int num_layers = options.num_layers;
  const int num_experts = options.num_experts;
  const int k = options.k;
  Random random(options.seed);

  // Cumulative Zipf weights over popularity ranks, normalised to 1.
  std::vector<double> cumulative(static_cast<size_t>(num_experts));
  double total = 0;
  for (int r = 0; r < num_experts; ++r) {
    total += 1.0 / std::pow(r + 1.0, options.zipf_exponent);
    cumulative[r] = total;
  }
  for (double& c : cumulative) c /= total;

  // by_rank[l][r]: layer l's expert of popularity rank r. follow[l][e]: the
  // expert layer l picks when following expert e of layer l-1.
  std::vector<std::vector<int32_t>> by_rank(static_cast<size_t>(num_layers));
  std::vector<std::vector<int32_t>> follow(static_cast<size_t>(num_layers));
  for (int l = 0; l < num_layers; ++l) {
    by_rank[l] = random.Permutation(num_experts);
    follow[l] = random.Permutation(num_experts);
  }

  // previous[l][slot]: the previous token's choice; current[l][slot]: this one's.
  std::vector<std::vector<int32_t>> previous(static_cast<size_t>(num_layers), std::vector<int32_t>(k));
  std::vector<std::vector<int32_t>> current = previous;
  // chosen_at[e] == stamp: expert e already taken in this (token, layer).
  std::vector<uint64_t> chosen_at(static_cast<size_t>(num_experts), 0);
  uint64_t stamp = 0;

  auto draw_popular = [&](int layer) {
    const double u = random.Uniform();
    const int rank = static_cast<int>(std::upper_bound(cumulative.begin(), cumulative.end(), u) - cumulative.begin());
    return by_rank[layer][std::min(rank, num_experts - 1)];
  };

  trace.passes.resize(static_cast<size_t>(options.tokens));
  for (int t = 0; t < options.tokens; ++t) {
    std::vector<ExpertKey>& pass = trace.passes[t];
    pass.reserve(static_cast<size_t>(num_layers) * k);
    for (int l = 0; l < num_layers; ++l) {
      ++stamp;
      for (int slot = 0; slot < k; ++slot) {
        int32_t expert = -1;
        if (t > 0 && random.Uniform() < options.reuse_probability) {
          expert = previous[l][slot];
        } else if (l > 0 && random.Uniform() < options.cross_layer_probability) {
          expert = follow[l][current[l - 1][slot]];
        }
        // A popularity draw, retried while it collides with this step's
        // earlier choices; with k near the expert count the retries could
        // run long, so after a few the most popular free expert is taken.
        for (int attempt = 0; expert < 0 || chosen_at[expert] == stamp; ++attempt) {
          if (attempt < 32) {
            expert = draw_popular(l);
            continue;
          }
          for (int r = 0; r < num_experts; ++r) {
            if (chosen_at[by_rank[l][r]] != stamp) {
              expert = by_rank[l][r];
              break;
            }
          }
        }
        chosen_at[expert] = stamp;
        current[l][slot] = expert;
        pass.push_back(ExpertKey{l, expert});
      }
    }
    std::swap(previous, current);
  }
  return trace;
}

}  // namespace expertd::cache
