#include "engine/roster.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/routing.h"

namespace expertd::engine {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

int MoeLayerCount(const model::ModelConfig& config) {
  return static_cast<int>(std::count(config.layer_is_moe.begin(), config.layer_is_moe.end(), true));
}

}  // namespace

absl::Status ValidateRosterOptions(const RosterOptions& options, const model::ModelConfig& config, int max_samples) {
  if (options.samples < 1) {
    return absl::InvalidArgumentError(absl::StrCat("roster.size must be at least 1, got ", options.samples));
  }
  if (max_samples > 0 && options.samples > max_samples) {
    return absl::InvalidArgumentError(
        absl::StrCat("roster.size must be at most ", max_samples, " (the configured maximum), got ", options.samples));
  }
  if (!(options.temperature >= 0.0f) || !std::isfinite(options.temperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("roster.temperature must be a finite number >= 0, got ", options.temperature));
  }
  if (options.skip_layers < 0) {
    return absl::InvalidArgumentError(absl::StrCat("roster.skip_layers must be >= 0, got ", options.skip_layers));
  }
  if (!options.layer_temperatures.empty()) {
    const int moe_layers = MoeLayerCount(config);
    if (static_cast<int>(options.layer_temperatures.size()) != moe_layers) {
      return absl::InvalidArgumentError(absl::StrCat("roster.layer_temperatures must have one value per MoE layer (",
                                                     moe_layers, "), got ", options.layer_temperatures.size()));
    }
    for (float tau : options.layer_temperatures) {
      if (!(tau >= 0.0f) || !std::isfinite(tau)) {
        return absl::InvalidArgumentError(
            absl::StrCat("roster.layer_temperatures must be finite numbers >= 0, got ", tau));
      }
    }
  }
  if (!(options.resident_bonus >= 0.0f) || !std::isfinite(options.resident_bonus)) {
    return absl::InvalidArgumentError(
        absl::StrCat("roster.resident_bonus must be a finite number >= 0, got ", options.resident_bonus));
  }
  return absl::OkStatus();
}

std::vector<float> RosterLayerTemperatures(const RosterOptions& options, const model::ModelConfig& config) {
  std::vector<float> tau(config.num_layers, 0.0f);
  const int moe_layers = MoeLayerCount(config);
  int moe_index = 0;
  for (int layer = 0; layer < config.num_layers; ++layer) {
    if (!config.layer_is_moe[layer]) continue;
    if (!options.layer_temperatures.empty()) {
      tau[layer] = options.layer_temperatures[moe_index];
    } else if (moe_index >= options.skip_layers && moe_index < moe_layers - options.skip_layers) {
      tau[layer] = options.temperature;
    }
    ++moe_index;
  }
  return tau;
}

float GumbelNoise(uint64_t seed, int64_t position, int layer, int sample, int expert) {
  uint64_t h = SplitMix64(seed);
  h = SplitMix64(h ^ static_cast<uint64_t>(position));
  h = SplitMix64(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(layer)) << 32 |
                      static_cast<uint32_t>(sample)));
  h = SplitMix64(h ^ static_cast<uint64_t>(static_cast<uint32_t>(expert)));
  // 53 random bits, shifted off zero so both logarithms are finite.
  const double u = (static_cast<double>(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
  return static_cast<float>(-std::log(-std::log(u)));
}

void RoutePerturbed(const float* logits, const float* perturbation, int num_experts, int k, bool normalize,
                    float* probs_scratch, int32_t* experts_out, float* weights_out) {
  RouterProbabilities(logits, num_experts, probs_scratch);
  SelectTopK(num_experts, k, [&](int e) { return logits[e] + perturbation[e]; }, experts_out);
  GateWeights(probs_scratch, experts_out, k, normalize, weights_out);
}

void AverageSampleDistributions(absl::Span<const float> logits, int samples, int vocab, std::vector<float>* out) {
  std::vector<double> average(vocab, 0.0);
  for (int s = 0; s < samples; ++s) {
    const float* row = logits.data() + static_cast<size_t>(s) * vocab;
    const float max_logit = *std::max_element(row, row + vocab);
    double sum = 0.0;
    for (int i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(row[i]) - max_logit);
    for (int i = 0; i < vocab; ++i) average[i] += std::exp(static_cast<double>(row[i]) - max_logit) / sum;
  }
  out->resize(vocab);
  for (int i = 0; i < vocab; ++i) {
    // A probability that underflowed to zero stays a very unlikely token
    // rather than -inf, which samplers and logprobs handle badly.
    (*out)[i] = static_cast<float>(std::log(std::max(average[i] / samples, 1e-300)));
  }
}

}  // namespace expertd::engine
