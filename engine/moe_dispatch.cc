#include "engine/moe_dispatch.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/roster.h"

namespace expertd::engine {
namespace {

absl::Status ValidateToken(const model::ModelConfig& config, int32_t token) {
  if (token < 0 || token >= config.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("token id ", token, " is outside the vocabulary [0, ", config.vocab_size, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> ResolveK(const model::ModelConfig& config, int experts_per_token) {
  const int k = experts_per_token == 0 ? config.experts_per_token : experts_per_token;
  if (k < 1 || k > config.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("experts_per_token must be in 1 .. ", config.num_experts,
                                                   " (the model's experts), got ", k));
  }
  return k;
}

absl::Status CheckMemory(const KvCache& kv, const KvMemory* pass_memory) {
  const bool usable = pass_memory == nullptr ? kv.memory().on_host() : &kv.memory() == pass_memory;
  if (!usable) {
    return absl::InvalidArgumentError(
        pass_memory == nullptr ? "the KV cache is in device memory, and this forward pass runs on the CPU"
                               : "the KV cache is not in this forward pass's memory (make it with its kv_memory())");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status PlanPromptRows(const model::ModelConfig& config, absl::Span<const int32_t> tokens, KvCache& kv,
                            const ForwardOptions& options, RoutingTrace* trace, const KvMemory* pass_memory,
                            std::vector<RowPlan>* plan) {
  const int n = static_cast<int>(tokens.size());
  if (n == 0) return absl::InvalidArgumentError("no tokens to process (empty prompt?)");
  for (int32_t token : tokens) {
    if (absl::Status status = ValidateToken(config, token); !status.ok()) return status;
  }
  absl::StatusOr<int> k = ResolveK(config, options.experts_per_token);
  if (!k.ok()) return k.status();
  if (absl::Status status = CheckMemory(kv, pass_memory); !status.ok()) return status;
  if (absl::Status status = kv.Reserve(n); !status.ok()) return status;
  plan->resize(n);
  for (int t = 0; t < n; ++t) {
    (*plan)[t] = RowPlan{.position = kv.length() + t, .kv = &kv, .appends_kv = true, .k = *k,
                         .first_slot = t * *k, .noise = nullptr, .trace = trace};
  }
  return absl::OkStatus();
}

absl::Status PlanStepRows(const model::ModelConfig& config, absl::Span<const StepRow> rows, const KvMemory* pass_memory,
                          std::vector<RowPlan>* plan, std::vector<int32_t>* tokens) {
  const int n = static_cast<int>(rows.size());
  if (n == 0) return absl::InvalidArgumentError("a decode step needs at least one row");
  plan->resize(n);
  tokens->resize(n);
  int slots = 0;
  for (int t = 0; t < n; ++t) {
    const StepRow& row = rows[t];
    if (row.kv == nullptr) return absl::InvalidArgumentError(absl::StrCat("step row ", t, " has no KV cache"));
    if (absl::Status status = ValidateToken(config, row.token); !status.ok()) return status;
    absl::StatusOr<int> k = ResolveK(config, row.experts_per_token);
    if (!k.ok()) return k.status();
    if (absl::Status status = CheckMemory(*row.kv, pass_memory); !status.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("step row ", t, ": ", status.message()));
    }
    if (row.appends_kv) {
      for (int other = 0; other < t; ++other) {
        if (rows[other].appends_kv && rows[other].kv == row.kv) {
          return absl::InvalidArgumentError(
              absl::StrCat("step rows ", other, " and ", t, " both append to the same KV cache"));
        }
      }
    }
    if (row.kv->length() >= row.kv->max_tokens()) {
      return absl::OutOfRangeError(absl::StrCat("step row ", t, ": the sequence is at its context limit of ",
                                                row.kv->max_tokens(), " tokens"));
    }
    (*plan)[t] = RowPlan{.position = row.kv->length(), .kv = row.kv, .appends_kv = row.appends_kv, .k = *k,
                         .first_slot = slots, .noise = row.noise, .trace = row.trace};
    (*tokens)[t] = row.token;
    slots += *k;
  }
  // Only now, when every row is valid, may a cache grow.
  for (const StepRow& row : rows) {
    if (absl::Status status = row.kv->Reserve(1); !status.ok()) return status;
  }
  return absl::OkStatus();
}

namespace {

// YaRN's mscale (arXiv:2309.00071 §3.4, as DeepSeek and HF write it).
double YarnMscale(double factor, double mscale) {
  return factor <= 1.0 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

}  // namespace

std::vector<float> RopeInverseFrequencies(const model::ModelConfig& config) {
  const int half = config.head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) {
    inv_freq[i] = 1.0f / std::pow(config.rope_theta, static_cast<float>(2 * i) / config.head_dim);
  }
  if (!config.yarn) return inv_freq;
  const model::YarnRope& yarn = *config.yarn;
  const double dim = config.head_dim;
  const double base = config.rope_theta;
  // The dimension that turns `rotations` times over the original context.
  auto correction_dim = [&](double rotations) {
    return dim * std::log(yarn.original_max_position_embeddings / (rotations * 2.0 * M_PI)) / (2.0 * std::log(base));
  };
  // Rounded out to whole dimensions unless rope_scaling says truncate:
  // false (gpt-oss), as HF's find_correction_range.
  double low = correction_dim(yarn.beta_fast), high = correction_dim(yarn.beta_slow);
  if (yarn.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, dim - 1.0);
  if (low == high) high += 0.001;  // as HF: no division by zero
  for (int i = 0; i < half; ++i) {
    const float ramp = static_cast<float>(std::clamp((i - low) / (high - low), 0.0, 1.0));
    const float interpolated = inv_freq[i] / yarn.factor;
    inv_freq[i] = interpolated * ramp + inv_freq[i] * (1.0f - ramp);
  }
  return inv_freq;
}

float RopeAttentionFactor(const model::ModelConfig& config) {
  if (!config.yarn) return 1.0f;
  const model::YarnRope& yarn = *config.yarn;
  if (yarn.attention_factor) return *yarn.attention_factor;
  if (yarn.mscale != 0.0f && yarn.mscale_all_dim != 0.0f) {
    return static_cast<float>(YarnMscale(yarn.factor, yarn.mscale) / YarnMscale(yarn.factor, yarn.mscale_all_dim));
  }
  return static_cast<float>(YarnMscale(yarn.factor, 1.0));
}

float MlaSoftmaxScale(const model::ModelConfig& config) {
  double scale = config.mla ? 1.0 / std::sqrt(static_cast<double>(config.mla->qk_head_dim()))
                            : 1.0 / std::sqrt(static_cast<double>(config.head_dim));
  if (config.yarn && config.yarn->mscale_all_dim != 0.0f) {
    const double mscale = YarnMscale(config.yarn->factor, config.yarn->mscale_all_dim);
    scale *= mscale * mscale;
  }
  return static_cast<float>(scale);
}

void RopeCosSin(absl::Span<const float> inv_freq, int position, float* cos_sin) {
  const int half = static_cast<int>(inv_freq.size());
  for (int i = 0; i < half; ++i) {
    const float angle = static_cast<float>(position) * inv_freq[i];
    cos_sin[i] = std::cos(angle);
    cos_sin[half + i] = std::sin(angle);
  }
}

MoeDispatch::MoeDispatch(const model::ModelConfig& config)
    : config_(config),
      router_probs_(config.num_experts),
      layer_scores_(config.num_experts),
      perturbation_(config.num_experts),
      expert_begin_(config.num_experts + 1) {}

void MoeDispatch::BeginPass(absl::Span<const RowPlan> rows) {
  rows_ = rows;
  num_slots_ = rows.empty() ? 0 : rows.back().first_slot + rows.back().k;
  if (static_cast<int>(chosen_experts_.size()) < num_slots_) {
    chosen_experts_.resize(num_slots_);
    chosen_weights_.resize(num_slots_);
    slot_row_.resize(num_slots_);
    slots_by_expert_.resize(num_slots_);
  }
  observed_.resize(std::max(observed_.size(), rows.size() * static_cast<size_t>(config_.num_experts)));
  for (int t = 0; t < static_cast<int>(rows.size()); ++t) {
    for (int s = rows[t].first_slot; s < rows[t].first_slot + rows[t].k; ++s) slot_row_[s] = t;
  }
}

void MoeDispatch::Route(int layer, const float* router_logits, ExpertSource& experts) {
  std::fill(layer_scores_.begin(), layer_scores_.end(), 0.0f);
  for (int t = 0; t < num_rows(); ++t) {
    RouteRow(layer, t, router_logits + static_cast<size_t>(t) * config_.num_experts, experts);
    for (int e = 0; e < config_.num_experts; ++e) layer_scores_[e] = std::max(layer_scores_[e], router_probs_[e]);
  }
  GroupByExpert();
}

void MoeDispatch::RouteRow(int layer, int t, const float* logits, ExpertSource& experts) {
  const RowPlan& row = rows_[t];
  const int num_experts = config_.num_experts;
  int32_t* chosen = chosen_experts_.data() + row.first_slot;
  float* weights = chosen_weights_.data() + row.first_slot;
  const float tau = row.noise != nullptr ? row.noise->layer_temperatures[layer] : 0.0f;
  if (tau > 0.0f) {
    for (int e = 0; e < num_experts; ++e) {
      perturbation_[e] = tau * GumbelNoise(row.noise->seed, row.position, layer, row.noise->sample, e);
      if (row.noise->resident_bonus > 0.0f && experts.IsReady(layer, e)) {
        perturbation_[e] += row.noise->resident_bonus;
      }
    }
    RoutePerturbed(logits, perturbation_.data(), num_experts, row.k, config_.norm_topk_prob, router_probs_.data(),
                   chosen, weights);
  } else if (config_.topk_method == model::TopkMethod::kGroupLimitedGreedy) {
    // Roster samples above choose among every expert; the deterministic
    // route keeps DeepSeek's group limit.
    float* probs = router_probs_.data();
    RouterProbabilities(logits, num_experts, probs);
    LimitToGroups(probs, num_experts, config_.n_group, config_.topk_group);
    SelectTopK(num_experts, row.k, [probs](int e) { return probs[e]; }, chosen);
    GateWeights(probs, chosen, row.k, config_.norm_topk_prob, weights);
  } else {
    // tau = 0 takes the deterministic path itself, so it is bit-identical.
    RouteToken(logits, num_experts, row.k, config_.norm_topk_prob, router_probs_.data(), chosen, weights);
  }
  if (config_.routed_scaling_factor != 1.0f) {
    for (int j = 0; j < row.k; ++j) weights[j] *= config_.routed_scaling_factor;
  }
  if (row.trace != nullptr) {
    RoutingRecord record;
    record.position = row.position;
    record.layer = layer;
    record.experts.assign(chosen, chosen + row.k);
    record.weights.assign(weights, weights + row.k);
    row.trace->records.push_back(std::move(record));
  }
}

void MoeDispatch::GroupByExpert() {
  // A counting sort: expert_begin_[e] is where expert e's slots start.
  const int num_experts = config_.num_experts;
  std::fill(expert_begin_.begin(), expert_begin_.end(), 0);
  for (int s = 0; s < num_slots_; ++s) ++expert_begin_[chosen_experts_[s] + 1];
  for (int e = 0; e < num_experts; ++e) expert_begin_[e + 1] += expert_begin_[e];
  // expert_begin_[e] advances while filling; restore it after.
  for (int s = 0; s < num_slots_; ++s) slots_by_expert_[expert_begin_[chosen_experts_[s]]++] = s;
  for (int e = num_experts; e > 0; --e) expert_begin_[e] = expert_begin_[e - 1];
  expert_begin_[0] = 0;
}

void MoeDispatch::NotifyObservers(absl::Span<LayerObserver* const> observers, int layer, const float* gate_inputs,
                                  int hidden) {
  const int n = num_rows();
  int max_k = 0;
  for (int t = 0; t < n; ++t) max_k = std::max(max_k, rows_[t].k);
  for (int t = 0; t < n; ++t) {
    const int32_t* chosen = chosen_experts_.data() + rows_[t].first_slot;
    for (int j = 0; j < max_k; ++j) {
      observed_[static_cast<size_t>(t) * max_k + j] = chosen[std::min(j, rows_[t].k - 1)];
    }
  }
  for (LayerObserver* observer : observers) {
    observer->OnRouted(layer, absl::MakeConstSpan(gate_inputs, static_cast<size_t>(n) * hidden),
                       absl::MakeConstSpan(observed_.data(), static_cast<size_t>(n) * max_k), n, max_k);
  }
}

}  // namespace expertd::engine
