#include "engine/forward.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/roster.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/dtype.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/ops.h"

namespace expertd {
namespace {

float* Row(std::vector<float>& buffer, int row, int width) {
  return buffer.data() + static_cast<size_t>(row) * width;
}

void AddBias(const std::vector<float>& bias, int n, float* rows) {
  if (bias.empty()) return;
  const int width = static_cast<int>(bias.size());
  for (int t = 0; t < n; ++t) {
    for (int i = 0; i < width; ++i) rows[static_cast<size_t>(t) * width + i] += bias[i];
  }
}

void Clip(float limit, size_t count, float* values) {
  for (size_t i = 0; i < count; ++i) values[i] = std::clamp(values[i], -limit, limit);
}

}  // namespace

ForwardPass::ForwardPass(const Model& model, kernels::ThreadPool* pool, ExpertSource* experts)
    : model_(model),
      config_(model.config()),
      pool_(pool),
      resident_experts_(model.weights()),
      experts_(experts != nullptr ? experts : &resident_experts_) {
  const int half = config_.head_dim / 2;
  inv_freq_.resize(half);
  // Computed in f32 as HF does, so positions far into a sequence get the
  // same angles as the reference implementations.
  for (int i = 0; i < half; ++i) {
    inv_freq_[i] = 1.0f / std::pow(config_.rope_theta, static_cast<float>(2 * i) / config_.head_dim);
  }
}

void ForwardPass::EnsureScratch(int n, int slots) {
  if (n <= scratch_tokens_ && slots <= scratch_slots_) return;
  n = std::max(n, scratch_tokens_);
  slots = std::max(slots, scratch_slots_);
  const size_t h = config_.hidden_size;
  const size_t max_ffn = std::max({config_.expert_intermediate_size, config_.shared_expert_intermediate_size,
                                   config_.dense_intermediate_size});
  residual_.resize(n * h);
  shared_gate_.resize(n);
  normed_.resize(n * h);
  q_.resize(static_cast<size_t>(n) * config_.q_size());
  k_.resize(static_cast<size_t>(n) * config_.kv_size());
  v_.resize(static_cast<size_t>(n) * config_.kv_size());
  attention_.resize(static_cast<size_t>(n) * config_.q_size());
  block_out_.resize(n * h);
  rope_.resize(static_cast<size_t>(n) * config_.head_dim);
  router_logits_.resize(static_cast<size_t>(n) * config_.num_experts);
  router_probs_.resize(config_.num_experts);
  perturbation_.resize(config_.num_experts);
  pending_experts_.reserve(config_.num_experts);
  ready_experts_.reserve(config_.num_experts);
  chosen_experts_.resize(slots);
  chosen_weights_.resize(slots);
  slot_row_.resize(slots);
  observed_.resize(static_cast<size_t>(n) * config_.num_experts);
  expert_begin_.resize(config_.num_experts + 1);
  slots_by_expert_.resize(slots);
  gathered_.resize(n * h);
  ffn_gate_.resize(n * max_ffn);
  ffn_up_.resize(n * max_ffn);
  ffn_out_.resize(n * h);
  expert_out_.resize(static_cast<size_t>(slots) * h);
  scratch_tokens_ = n;
  scratch_slots_ = slots;
}

absl::Status ForwardPass::ValidateToken(int32_t token) const {
  if (token < 0 || token >= config_.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("token id ", token, " is outside the vocabulary [0, ", config_.vocab_size, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> ForwardPass::ResolveK(int experts_per_token) const {
  const int k = experts_per_token == 0 ? config_.experts_per_token : experts_per_token;
  if (k < 1 || k > config_.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("experts_per_token must be in 1 .. ", config_.num_experts,
                                                   " (the model's experts), got ", k));
  }
  return k;
}

absl::Status ForwardPass::Run(absl::Span<const int32_t> tokens, KvCache& kv, const ForwardOptions& options,
                              std::vector<float>* logits, RoutingTrace* trace) {
  const int n = static_cast<int>(tokens.size());
  if (n == 0) return absl::InvalidArgumentError("no tokens to process (empty prompt?)");
  for (int32_t token : tokens) {
    if (absl::Status status = ValidateToken(token); !status.ok()) return status;
  }
  absl::StatusOr<int> k = ResolveK(options.experts_per_token);
  if (!k.ok()) return k.status();
  if (absl::Status status = kv.Reserve(n); !status.ok()) return status;

  rows_.resize(n);
  for (int t = 0; t < n; ++t) {
    rows_[t] = RowPlan{.position = kv.length() + t, .kv = &kv, .appends_kv = true, .k = *k,
                       .first_slot = t * *k, .noise = nullptr, .trace = trace};
  }
  contiguous_ = true;
  if (absl::Status status = RunLayers(tokens); !status.ok()) return status;
  kv.Commit(n);

  const ModelWeights& weights = model_.weights();
  const int h = config_.hidden_size;
  const int first_row = options.all_logits ? 0 : n - 1;
  const int rows = n - first_row;
  for (int t = first_row; t < n; ++t) {
    kernels::RmsNorm(Row(residual_, t, h), weights.final_norm.data(), h, config_.rms_norm_eps,
                     Row(normed_, t - first_row, h));
  }
  logits->resize(static_cast<size_t>(rows) * config_.vocab_size);
  kernels::MatMul(weights.lm_head, normed_.data(), rows, logits->data(), pool_);
  return absl::OkStatus();
}

absl::Status ForwardPass::Step(absl::Span<const StepRow> rows, std::vector<float>* logits) {
  const int n = static_cast<int>(rows.size());
  if (n == 0) return absl::InvalidArgumentError("a decode step needs at least one row");
  rows_.resize(n);
  step_tokens_.resize(n);
  int slots = 0;
  for (int t = 0; t < n; ++t) {
    const StepRow& row = rows[t];
    if (row.kv == nullptr) return absl::InvalidArgumentError(absl::StrCat("step row ", t, " has no KV cache"));
    if (absl::Status status = ValidateToken(row.token); !status.ok()) return status;
    absl::StatusOr<int> k = ResolveK(row.experts_per_token);
    if (!k.ok()) return k.status();
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
    rows_[t] = RowPlan{.position = row.kv->length(), .kv = row.kv, .appends_kv = row.appends_kv, .k = *k,
                       .first_slot = slots, .noise = row.noise, .trace = row.trace};
    step_tokens_[t] = row.token;
    slots += *k;
  }
  // Only now, when every row is valid, may a cache grow.
  for (const StepRow& row : rows) {
    if (absl::Status status = row.kv->Reserve(1); !status.ok()) return status;
  }
  contiguous_ = false;
  if (absl::Status status = RunLayers(step_tokens_); !status.ok()) return status;
  for (const StepRow& row : rows) {
    if (row.appends_kv) row.kv->Commit(1);
  }

  const ModelWeights& weights = model_.weights();
  const int h = config_.hidden_size;
  for (int t = 0; t < n; ++t) {
    kernels::RmsNorm(Row(residual_, t, h), weights.final_norm.data(), h, config_.rms_norm_eps, Row(normed_, t, h));
  }
  logits->resize(static_cast<size_t>(n) * config_.vocab_size);
  kernels::MatMul(weights.lm_head, normed_.data(), n, logits->data(), pool_);
  return absl::OkStatus();
}

absl::Status ForwardPass::RunLayers(absl::Span<const int32_t> tokens) {
  const int n = static_cast<int>(tokens.size());
  const RowPlan& last = rows_.back();
  EnsureScratch(n, last.first_slot + last.k);
  for (int t = 0; t < n; ++t) {
    for (int s = rows_[t].first_slot; s < rows_[t].first_slot + rows_[t].k; ++s) slot_row_[s] = t;
  }

  const ModelWeights& weights = model_.weights();
  const int h = config_.hidden_size;
  for (int t = 0; t < n; ++t) {
    kernels::ConvertToF32(weights.embedding.dtype,
                          static_cast<const std::byte*>(weights.embedding.data) +
                              static_cast<size_t>(tokens[t]) * h * kernels::DTypeSize(weights.embedding.dtype),
                          h, Row(residual_, t, h));
    // RoPE angles for this token's position, as f32 products like HF.
    float* cos_sin = Row(rope_, t, config_.head_dim);
    const int half = config_.head_dim / 2;
    for (int i = 0; i < half; ++i) {
      const float angle = static_cast<float>(rows_[t].position) * inv_freq_[i];
      cos_sin[i] = std::cos(angle);
      cos_sin[half + i] = std::sin(angle);
    }
  }

  experts_->BeginPass();
  if (observer_ != nullptr) observer_->BeginPass();
  for (int layer = 0; layer < config_.num_layers; ++layer) {
    const auto layer_start = std::chrono::steady_clock::now();
    Attention(layer, n);
    if (absl::Status status = MoeBlock(layer, n); !status.ok()) return status;
    if (observer_ != nullptr && config_.layer_is_moe[layer]) {
      observer_->OnLayerDone(layer, std::chrono::duration<double>(std::chrono::steady_clock::now() - layer_start).count());
    }
  }
  return absl::OkStatus();
}

void ForwardPass::Attention(int layer_index, int n) {
  const LayerWeights& layer = model_.weights().layers[layer_index];
  const int h = config_.hidden_size;
  const int q_size = config_.q_size();
  const int kv_size = config_.kv_size();
  const int head_dim = config_.head_dim;
  const float eps = config_.rms_norm_eps;

  for (int t = 0; t < n; ++t) {
    kernels::RmsNorm(Row(residual_, t, h), layer.input_norm.data(), h, eps, Row(normed_, t, h));
  }
  kernels::MatMul(layer.q, normed_.data(), n, q_.data(), pool_);
  kernels::MatMul(layer.k, normed_.data(), n, k_.data(), pool_);
  kernels::MatMul(layer.v, normed_.data(), n, v_.data(), pool_);
  AddBias(layer.q_bias, n, q_.data());
  AddBias(layer.k_bias, n, k_.data());
  AddBias(layer.v_bias, n, v_.data());

  for (int t = 0; t < n; ++t) {
    float* q = Row(q_, t, q_size);
    float* k = Row(k_, t, kv_size);
    if (config_.qk_norm == QkNorm::kWholeProjection) {
      kernels::RmsNorm(q, layer.q_norm.data(), q_size, eps, q);
      kernels::RmsNorm(k, layer.k_norm.data(), kv_size, eps, k);
    } else if (config_.qk_norm == QkNorm::kPerHead) {
      for (int head = 0; head < config_.num_heads; ++head) {
        kernels::RmsNorm(q + head * head_dim, layer.q_norm.data(), head_dim, eps, q + head * head_dim);
      }
      for (int head = 0; head < config_.num_kv_heads; ++head) {
        kernels::RmsNorm(k + head * head_dim, layer.k_norm.data(), head_dim, eps, k + head * head_dim);
      }
    }
  }
  if (config_.clip_qkv) {
    // OLMoE clamps after the QK-norm.
    Clip(*config_.clip_qkv, static_cast<size_t>(n) * q_size, q_.data());
    Clip(*config_.clip_qkv, static_cast<size_t>(n) * kv_size, k_.data());
    Clip(*config_.clip_qkv, static_cast<size_t>(n) * kv_size, v_.data());
  }

  for (int t = 0; t < n; ++t) {
    const float* cos_sin = Row(rope_, t, head_dim);
    kernels::ApplyRope(Row(q_, t, q_size), config_.num_heads, head_dim, cos_sin);
    kernels::ApplyRope(Row(k_, t, kv_size), config_.num_kv_heads, head_dim, cos_sin);
    const RowPlan& row = rows_[t];
    if (!row.appends_kv) continue;
    const size_t at = static_cast<size_t>(row.position) * kv_size;
    std::copy_n(Row(k_, t, kv_size), kv_size, row.kv->Keys(layer_index) + at);
    std::copy_n(Row(v_, t, kv_size), kv_size, row.kv->Values(layer_index) + at);
  }
  const kernels::AttentionShape shape{config_.num_heads, config_.num_kv_heads, head_dim};
  if (contiguous_) {
    // One sequence's consecutive positions: one causal block.
    KvCache& kv = *rows_[0].kv;
    kernels::CausalAttention(shape, q_.data(), n, rows_[0].position, kv.Keys(layer_index), kv.Values(layer_index),
                             attention_.data(), pool_);
  } else {
    for (int t = 0; t < n; ++t) {
      const RowPlan& row = rows_[t];
      const KvCache& kv = *row.kv;
      if (row.appends_kv) {
        kernels::CausalAttention(shape, Row(q_, t, q_size), 1, row.position, kv.Keys(layer_index),
                                 kv.Values(layer_index), Row(attention_, t, q_size), pool_);
      } else {
        kernels::AttentionWithOwnKey(shape, Row(q_, t, q_size), row.position, kv.Keys(layer_index),
                                     kv.Values(layer_index), Row(k_, t, kv_size), Row(v_, t, kv_size),
                                     Row(attention_, t, q_size), pool_);
      }
    }
  }
  kernels::MatMul(layer.o, attention_.data(), n, block_out_.data(), pool_);
  for (size_t i = 0; i < static_cast<size_t>(n) * h; ++i) residual_[i] += block_out_[i];
}

void ForwardPass::FeedForward(const FeedForwardWeights& ff, const float* x, int m, float* out) {
  const int ffn = static_cast<int>(ff.gate.rows);
  kernels::MatMul(ff.gate, x, m, ffn_gate_.data(), pool_);
  kernels::MatMul(ff.up, x, m, ffn_up_.data(), pool_);
  kernels::SiluMul(ffn_gate_.data(), ffn_up_.data(), static_cast<int64_t>(m) * ffn, ffn_gate_.data());
  kernels::MatMul(ff.down, ffn_gate_.data(), m, out, pool_);
}

void ForwardPass::RunExpert(int expert, const FeedForwardWeights& weights) {
  const int h = config_.hidden_size;
  const int begin = expert_begin_[expert];
  const int m = expert_begin_[expert + 1] - begin;
  for (int i = 0; i < m; ++i) {
    const int token = slot_row_[slots_by_expert_[begin + i]];
    std::copy_n(Row(normed_, token, h), h, Row(gathered_, i, h));
  }
  FeedForward(weights, gathered_.data(), m, ffn_out_.data());
  // Each (token, rank) slot gets its own output row; they are summed later
  // in rank order, so the order experts run in never changes the result.
  for (int i = 0; i < m; ++i) {
    std::copy_n(Row(ffn_out_, i, h), h, Row(expert_out_, slots_by_expert_[begin + i], h));
  }
}

void ForwardPass::RouteRow(int layer_index, int t) {
  const RowPlan& row = rows_[t];
  const int num_experts = config_.num_experts;
  const float* logits = Row(router_logits_, t, num_experts);
  int32_t* experts = chosen_experts_.data() + row.first_slot;
  float* weights = chosen_weights_.data() + row.first_slot;
  const float tau = row.noise != nullptr ? row.noise->layer_temperatures[layer_index] : 0.0f;
  if (tau > 0.0f) {
    for (int e = 0; e < num_experts; ++e) {
      perturbation_[e] = tau * GumbelNoise(row.noise->seed, row.position, layer_index, row.noise->sample, e);
      if (row.noise->resident_bonus > 0.0f && experts_->IsReady(layer_index, e)) {
        perturbation_[e] += row.noise->resident_bonus;
      }
    }
    RoutePerturbed(logits, perturbation_.data(), num_experts, row.k, config_.norm_topk_prob, router_probs_.data(),
                   experts, weights);
  } else {
    // tau = 0 takes the deterministic path itself, so it is bit-identical.
    RouteToken(logits, num_experts, row.k, config_.norm_topk_prob, router_probs_.data(), experts, weights);
  }
  experts_->OnRouterScores(layer_index, router_probs_);
  if (row.trace != nullptr) {
    RoutingRecord record;
    record.position = row.position;
    record.layer = layer_index;
    record.experts.assign(experts, experts + row.k);
    record.weights.assign(weights, weights + row.k);
    row.trace->records.push_back(std::move(record));
  }
}

absl::Status ForwardPass::MoeBlock(int layer_index, int n) {
  const LayerWeights& layer = model_.weights().layers[layer_index];
  const int h = config_.hidden_size;
  const int num_experts = config_.num_experts;
  for (int t = 0; t < n; ++t) {
    kernels::RmsNorm(Row(residual_, t, h), layer.post_attention_norm.data(), h, config_.rms_norm_eps,
                     Row(normed_, t, h));
  }
  if (!layer.is_moe) {
    FeedForward(layer.dense_mlp, normed_.data(), n, block_out_.data());
    for (size_t i = 0; i < static_cast<size_t>(n) * h; ++i) residual_[i] += block_out_[i];
    return absl::OkStatus();
  }
  experts_->BeginLayer(layer_index);
  if (observer_ != nullptr) observer_->BeginLayer(layer_index);

  kernels::MatMul(layer.router, normed_.data(), n, router_logits_.data(), pool_);
  for (int t = 0; t < n; ++t) RouteRow(layer_index, t);

  // Group the routed (token, rank) slots by expert, so each expert's weights
  // are read once for all the tokens that chose it.
  std::fill(expert_begin_.begin(), expert_begin_.end(), 0);
  const int slots = rows_.back().first_slot + rows_.back().k;
  for (int s = 0; s < slots; ++s) ++expert_begin_[chosen_experts_[s] + 1];
  for (int e = 0; e < num_experts; ++e) expert_begin_[e + 1] += expert_begin_[e];
  {
    std::vector<int32_t>& fill = slots_by_expert_;
    // expert_begin_[e] advances while filling; restore it after.
    for (int s = 0; s < slots; ++s) fill[expert_begin_[chosen_experts_[s]]++] = s;
    for (int e = num_experts; e > 0; --e) expert_begin_[e] = expert_begin_[e - 1];
    expert_begin_[0] = 0;
  }

  // Pin the experts that are ready, then ask for the missing ones all at
  // once (read in parallel), and only then let the prefetcher have the
  // remaining slots: the current layer's loads come before speculation, and
  // prefetching can never evict what this layer is about to use.
  ready_experts_.clear();
  pending_experts_.clear();
  for (int e = 0; e < num_experts; ++e) {
    if (expert_begin_[e + 1] == expert_begin_[e]) continue;
    std::optional<ExpertHandle> ready = experts_->TryAcquire(layer_index, e);
    if (ready) {
      ready_experts_.emplace_back(e, std::move(*ready));
    } else {
      pending_experts_.push_back(e);
    }
  }
  for (int e : pending_experts_) experts_->StartLoad(layer_index, e);
  if (observer_ != nullptr) {
    // Observers take [n][k]; rows with a smaller k (dial-k differs between
    // requests of a batch) are padded with their own first expert, which
    // changes no set of experts.
    int max_k = 0;
    for (int t = 0; t < n; ++t) max_k = std::max(max_k, rows_[t].k);
    for (int t = 0; t < n; ++t) {
      const int32_t* chosen = chosen_experts_.data() + rows_[t].first_slot;
      for (int j = 0; j < max_k; ++j) observed_[static_cast<size_t>(t) * max_k + j] = chosen[std::min(j, rows_[t].k - 1)];
    }
    observer_->OnRouted(layer_index, absl::MakeConstSpan(normed_.data(), static_cast<size_t>(n) * h),
                        absl::MakeConstSpan(observed_.data(), static_cast<size_t>(n) * max_k), n, max_k);
  }
  // Ready experts compute first, so a slow load holds up only itself.
  for (auto& [e, handle] : ready_experts_) RunExpert(e, handle.weights);
  ready_experts_.clear();
  for (int e : pending_experts_) {
    absl::StatusOr<ExpertHandle> expert = experts_->Acquire(layer_index, e);
    if (!expert.ok()) return expert.status();
    RunExpert(e, expert->weights);
  }

  // Sum each token's experts in rank order: the result does not depend on
  // the order in which experts were computed (or became available).
  std::fill_n(block_out_.begin(), static_cast<size_t>(n) * h, 0.0f);
  for (int t = 0; t < n; ++t) {
    float* out = Row(block_out_, t, h);
    for (int s = rows_[t].first_slot; s < rows_[t].first_slot + rows_[t].k; ++s) {
      kernels::Axpy(chosen_weights_[s], Row(expert_out_, s, h), h, out);
    }
  }

  if (layer.shared_expert) {
    // Qwen2-MoE: out += sigmoid(gate . x) * shared_expert(x).
    FeedForward(*layer.shared_expert, normed_.data(), n, ffn_out_.data());
    kernels::MatMul(layer.shared_expert_gate, normed_.data(), n, shared_gate_.data(), pool_);
    for (int t = 0; t < n; ++t) {
      const float gate = 1.0f / (1.0f + std::exp(-shared_gate_[t]));
      kernels::Axpy(gate, Row(ffn_out_, t, h), h, Row(block_out_, t, h));
    }
  }
  for (size_t i = 0; i < static_cast<size_t>(n) * h; ++i) residual_[i] += block_out_[i];
  return absl::OkStatus();
}

}  // namespace expertd
