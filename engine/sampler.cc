#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace expertd::engine {

absl::Status ValidateSamplingOptions(const SamplingOptions& options, int vocab_size) {
  for (const auto& [name, penalty] : {std::pair{"presence_penalty", options.presence_penalty},
                                      std::pair{"frequency_penalty", options.frequency_penalty}}) {
    if (!(penalty >= -2.0f && penalty <= 2.0f)) {
      return absl::InvalidArgumentError(absl::StrCat(name, " must be in [-2, 2], got ", penalty));
    }
  }
  for (const auto& [token, bias] : options.logit_bias) {
    if (token < 0 || (vocab_size > 0 && token >= vocab_size)) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_bias names token ", token, ", which is not in this model's vocabulary [0, ", vocab_size, ")"));
    }
    if (!(bias >= -100.0f && bias <= 100.0f)) {
      return absl::InvalidArgumentError(absl::StrCat("logit_bias for token ", token, " must be in [-100, 100], got ", bias));
    }
  }
  if (!(options.temperature >= 0.0f) || !std::isfinite(options.temperature)) {
    return absl::InvalidArgumentError(absl::StrCat("temperature must be >= 0, got ", options.temperature));
  }
  if (options.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", options.top_k));
  if (!(options.top_p > 0.0f && options.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", options.top_p));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {}

absl::Span<const float> Sampler::Adjusted(absl::Span<const float> logits) {
  const bool penalties = options_.presence_penalty != 0.0f || options_.frequency_penalty != 0.0f;
  if (!penalties && options_.logit_bias.empty()) return logits;
  adjusted_.assign(logits.begin(), logits.end());
  for (const auto& [token, bias] : options_.logit_bias) {
    if (token >= 0 && token < static_cast<int32_t>(adjusted_.size())) adjusted_[token] += bias;
  }
  for (const auto& [token, count] : chosen_counts_) {
    if (token < static_cast<int32_t>(adjusted_.size())) {
      adjusted_[token] -= options_.presence_penalty + options_.frequency_penalty * static_cast<float>(count);
    }
  }
  return adjusted_;
}

int32_t Sampler::Sample(absl::Span<const float> raw_logits) {
  const int32_t chosen = Choose(Adjusted(raw_logits));
  if (options_.presence_penalty != 0.0f || options_.frequency_penalty != 0.0f) {
    auto it = std::find_if(chosen_counts_.begin(), chosen_counts_.end(), [&](const auto& c) { return c.first == chosen; });
    if (it == chosen_counts_.end()) {
      chosen_counts_.emplace_back(chosen, 1);
    } else {
      ++it->second;
    }
  }
  return chosen;
}

int32_t Sampler::Choose(absl::Span<const float> logits) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  if (options_.temperature == 0.0f) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  order_.resize(vocab);
  std::iota(order_.begin(), order_.end(), 0);
  // Ties break toward the lower id so the order, and so the draw, is stable.
  auto more_likely = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  int32_t candidates = vocab;
  if (options_.top_k > 0 && options_.top_k < vocab) {
    candidates = options_.top_k;
    std::partial_sort(order_.begin(), order_.begin() + candidates, order_.end(), more_likely);
  } else if (options_.top_p < 1.0f) {
    std::sort(order_.begin(), order_.end(), more_likely);
  }  // else: no cut, so any order samples the same distribution
  probs_.resize(candidates);
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (int32_t i = 0; i < candidates; ++i) {
    probs_[i] = std::exp((logits[order_[i]] - max_logit) / options_.temperature);
    sum += probs_[i];
  }
  if (options_.top_p < 1.0f) {
    double cumulative = 0.0;
    int32_t keep = 0;
    while (keep < candidates) {
      cumulative += probs_[keep] / sum;
      ++keep;
      if (cumulative >= options_.top_p) break;
    }
    candidates = keep;
    sum = 0.0;
    for (int32_t i = 0; i < candidates; ++i) sum += probs_[i];
  }
  // The draw uses generate_canonical-free arithmetic so it is the same on every
  // standard library: 53 random bits scaled to [0, sum).
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * sum;
  double cumulative = 0.0;
  for (int32_t i = 0; i < candidates; ++i) {
    cumulative += probs_[i];
    if (u < cumulative) return order_[i];
  }
  return order_[candidates - 1];
}

double LogProbability(absl::Span<const float> logits, int32_t id) {
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float logit : logits) sum += std::exp(static_cast<double>(logit) - max_logit);
  return static_cast<double>(logits[id]) - max_logit - std::log(sum);
}

}  // namespace expertd::engine
