#include "engine/forward.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "engine/cpu_feed_forward.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/dtype.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/ops.h"

namespace expertd::engine {
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

// Rows of routed experts queued for one Sync at least (more when the pass
// has more rows): 64 covers a decode step of 8 sequences at top-8. Larger
// passes (prefill) run their experts in several groups of at most the
// pass's rows, where each expert's batch already keeps the threads busy.
constexpr size_t kMinQueueRows = 64;

// Weight rows a chunk of a parallel expert job streams at least: a chunk
// costs a few microseconds to hand out, about 64 KiB of reads.
constexpr int64_t kMinChunkBytes = 64 * 1024;

// DeepSeek-V2's RoPE on one head's rotated part of `dim` values: elements
// pair as (2i, 2i+1) (HF's apply_rotary_emb: complex multiplication), not
// i with i + dim/2 as kernels::ApplyRope; cos and sin are scaled by YaRN's
// attention factor. cos_sin: RopeCosSin's [dim/2 cosines | dim/2 sines].
void InterleavedRope(float* x, int dim, const float* cos_sin, float factor) {
  const int half = dim / 2;
  for (int i = 0; i < half; ++i) {
    const float c = cos_sin[i] * factor;
    const float s = cos_sin[half + i] * factor;
    const float a = x[2 * i];
    const float b = x[2 * i + 1];
    x[2 * i] = a * c - b * s;
    x[2 * i + 1] = a * s + b * c;
  }
}

void Clip(float limit, size_t count, float* values) {
  for (size_t i = 0; i < count; ++i) values[i] = std::clamp(values[i], -limit, limit);
}

}  // namespace

ForwardPass::ForwardPass(const model::Model& model, kernels::ThreadPool* pool, ExpertSource* experts)
    : model_(model),
      config_(model.config()),
      pool_(pool),
      resident_experts_(model.weights()),
      runner_(model.config(), experts != nullptr ? *experts : resident_experts_),
      inv_freq_(RopeInverseFrequencies(model.config())),
      rope_attention_factor_(RopeAttentionFactor(model.config())) {
  if (config_.mla) {
    latent_query_scale_ = MlaSoftmaxScale(config_) * std::sqrt(static_cast<float>(config_.mla->latent_size()));
  }
}

void ForwardPass::EnsureScratch(int n, int slots) {
  if (n <= scratch_tokens_ && slots <= scratch_slots_) return;
  n = std::max(n, scratch_tokens_);
  slots = std::max(slots, scratch_slots_);
  const size_t h = config_.hidden_size;
  ffn_width_ = std::max({config_.expert_intermediate_size, config_.shared_expert_intermediate_size,
                         config_.dense_intermediate_size});
  residual_.resize(n * h);
  shared_gate_.resize(n);
  normed_.resize(n * h);
  q_.resize(static_cast<size_t>(n) * config_.q_size());
  k_.resize(static_cast<size_t>(n) * config_.kv_size());
  v_.resize(static_cast<size_t>(n) * config_.kv_size());
  int attention_width = config_.q_size();
  if (config_.mla) {
    const model::MlaConfig& mla = *config_.mla;
    attention_width = std::max(attention_width, config_.num_heads * mla.v_head_dim);
    q_lora_.resize(static_cast<size_t>(n) * mla.q_lora_rank);
    latent_.resize(static_cast<size_t>(n) * mla.latent_size());
    latent_q_.resize(static_cast<size_t>(n) * config_.num_heads * mla.latent_size());
    latent_out_.resize(static_cast<size_t>(n) * config_.num_heads * mla.latent_size());
    head_latent_.resize(static_cast<size_t>(n) * mla.kv_lora_rank);
    head_value_.resize(static_cast<size_t>(n) * mla.v_head_dim);
    kv_b_row_.resize(static_cast<size_t>(config_.num_heads) * mla.kv_lora_rank);
  }
  attention_.resize(static_cast<size_t>(n) * attention_width);
  block_out_.resize(n * h);
  rope_.resize(static_cast<size_t>(n) * config_.head_dim);
  router_logits_.resize(static_cast<size_t>(n) * config_.num_experts);
  // The expert queue holds at least a decode step's slots for a batch of
  // sequences, and the dense and shared blocks' n rows.
  const size_t queue_rows = std::max<size_t>(n, kMinQueueRows);
  gathered_.resize(queue_rows * h);
  ffn_gate_.resize(queue_rows * ffn_width_);
  ffn_up_.resize(queue_rows * ffn_width_);
  ffn_out_.resize(queue_rows * h);
  scratch_queue_rows_ = static_cast<int>(queue_rows);
  expert_out_.resize(static_cast<size_t>(slots) * h);
  scratch_tokens_ = n;
  scratch_slots_ = slots;
}

absl::Status ForwardPass::Run(absl::Span<const int32_t> tokens, KvCache& kv, const ForwardOptions& options,
                              std::vector<float>* logits, RoutingTrace* trace) {
  if (absl::Status status = PlanPromptRows(config_, tokens, kv, options, trace, /*pass_memory=*/nullptr, &rows_);
      !status.ok()) {
    return status;
  }
  const int n = static_cast<int>(tokens.size());
  contiguous_ = true;
  if (absl::Status status = RunLayers(tokens); !status.ok()) return status;
  kv.Commit(n);
  Logits(options.all_logits ? 0 : n - 1, n, logits);
  return absl::OkStatus();
}

absl::Status ForwardPass::Step(absl::Span<const StepRow> rows, std::vector<float>* logits) {
  if (absl::Status status = PlanStepRows(config_, rows, /*pass_memory=*/nullptr, &rows_, &step_tokens_);
      !status.ok()) {
    return status;
  }
  contiguous_ = false;
  if (absl::Status status = RunLayers(step_tokens_); !status.ok()) return status;
  for (const StepRow& row : rows) {
    if (row.appends_kv) row.kv->Commit(1);
  }
  Logits(0, static_cast<int>(rows.size()), logits);
  return absl::OkStatus();
}

void ForwardPass::Logits(int first_row, int n, std::vector<float>* logits) {
  const model::ModelWeights& weights = model_.weights();
  const int h = config_.hidden_size;
  const int rows = n - first_row;
  for (int t = first_row; t < n; ++t) {
    kernels::RmsNorm(Row(residual_, t, h), weights.final_norm.data(), h, config_.rms_norm_eps,
                     Row(normed_, t - first_row, h));
  }
  logits->resize(static_cast<size_t>(rows) * config_.vocab_size);
  kernels::MatMul(weights.lm_head, normed_.data(), rows, logits->data(), pool_);
}

absl::Status ForwardPass::RunLayers(absl::Span<const int32_t> tokens) {
  const int n = static_cast<int>(tokens.size());
  runner_.BeginPass(rows_);
  EnsureScratch(n, runner_.dispatch().num_slots());

  const model::ModelWeights& weights = model_.weights();
  const int h = config_.hidden_size;
  for (int t = 0; t < n; ++t) {
    kernels::ConvertToF32(weights.embedding.dtype,
                          static_cast<const std::byte*>(weights.embedding.data) +
                              static_cast<size_t>(tokens[t]) * DTypeBytes(weights.embedding.dtype, h),
                          h, Row(residual_, t, h));
    float* cos_sin = Row(rope_, t, config_.head_dim);
    RopeCosSin(inv_freq_, rows_[t].position, cos_sin);
    if (!config_.mla && rope_attention_factor_ != 1.0f) {
      // YaRN on rotate-half RoPE (gpt-oss): HF scales cos and sin. (The
      // latent attention's interleaved RoPE applies the factor itself.)
      for (int i = 0; i < config_.head_dim; ++i) cos_sin[i] *= rope_attention_factor_;
    }
  }

  return runner_.RunLayers(*this);
}

absl::Status ForwardPass::Attention(int layer_index) {
  const int n = static_cast<int>(rows_.size());
  SelfAttention(layer_index, n);
  const int h = config_.hidden_size;
  const model::LayerWeights& layer = model_.weights().layers[layer_index];
  for (int t = 0; t < n; ++t) {
    kernels::RmsNorm(Row(residual_, t, h), layer.post_attention_norm.data(), h, config_.rms_norm_eps,
                     Row(normed_, t, h));
  }
  return absl::OkStatus();
}

void ForwardPass::SelfAttention(int layer_index, int n) {
  if (config_.mla) {
    LatentAttention(layer_index, n);
    return;
  }
  const model::LayerWeights& layer = model_.weights().layers[layer_index];
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
    if (config_.qk_norm == model::QkNorm::kWholeProjection) {
      kernels::RmsNorm(q, layer.q_norm.data(), q_size, eps, q);
      kernels::RmsNorm(k, layer.k_norm.data(), kv_size, eps, k);
    } else if (config_.qk_norm == model::QkNorm::kPerHead) {
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
  const kernels::AttentionShape shape{config_.num_heads, config_.num_kv_heads, head_dim,
                                     config_.AttentionWindow(layer_index),
                                     layer.sinks.empty() ? nullptr : layer.sinks.data()};
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
  AddBias(layer.o_bias, n, block_out_.data());
  for (size_t i = 0; i < static_cast<size_t>(n) * h; ++i) residual_[i] += block_out_[i];
}

void ForwardPass::LatentAttention(int layer_index, int n) {
  const model::LayerWeights& layer = model_.weights().layers[layer_index];
  const model::MlaConfig& mla = *config_.mla;
  const int h = config_.hidden_size;
  const int heads = config_.num_heads;
  const int nope = mla.qk_nope_head_dim;
  const int qk = mla.qk_head_dim();
  const int rank = mla.kv_lora_rank;
  const int latent = mla.latent_size();
  const int v_dim = mla.v_head_dim;
  const float eps = config_.rms_norm_eps;

  for (int t = 0; t < n; ++t) {
    kernels::RmsNorm(Row(residual_, t, h), layer.input_norm.data(), h, eps, Row(normed_, t, h));
  }
  if (mla.q_lora_rank > 0) {
    kernels::MatMul(layer.q_a, normed_.data(), n, q_lora_.data(), pool_);
    for (int t = 0; t < n; ++t) {
      float* row = Row(q_lora_, t, mla.q_lora_rank);
      kernels::RmsNorm(row, layer.q_a_norm.data(), mla.q_lora_rank, model::MlaConfig::kLatentNormEps, row);
    }
    kernels::MatMul(layer.q_b, q_lora_.data(), n, q_.data(), pool_);
  } else {
    kernels::MatMul(layer.q, normed_.data(), n, q_.data(), pool_);
  }
  kernels::MatMul(layer.kv_a, normed_.data(), n, latent_.data(), pool_);
  for (int t = 0; t < n; ++t) {
    const float* cos_sin = Row(rope_, t, config_.head_dim);
    float* row = Row(latent_, t, latent);
    kernels::RmsNorm(row, layer.kv_a_norm.data(), rank, model::MlaConfig::kLatentNormEps, row);
    InterleavedRope(row + rank, config_.head_dim, cos_sin, rope_attention_factor_);
    float* q = Row(q_, t, config_.q_size());
    for (int head = 0; head < heads; ++head) {
      InterleavedRope(q + head * qk + nope, config_.head_dim, cos_sin, rope_attention_factor_);
    }
  }

  // The absorbed query: latent_q[t][head] = W_UK[head]^T q_nope[t][head]
  // (W_UK[head]: kv_b's rows head * (nope + v) .. + nope), then the RoPE
  // query; all scaled (latent_query_scale_). Each kv_b row is converted once
  // per pass, for every row of it. Heads run in parallel, each into its own
  // outputs with its own row buffer, in a fixed order: the thread count
  // never changes the result.
  std::fill_n(latent_q_.begin(), static_cast<size_t>(n) * heads * latent, 0.0f);
  const size_t kv_b_row_bytes = DTypeBytes(layer.kv_b.dtype, rank);
  const auto* kv_b = static_cast<const std::byte*>(layer.kv_b.data);
  auto absorb = [&](int64_t first_head, int64_t end_head) {
    for (int64_t head = first_head; head < end_head; ++head) {
      float* kv_b_row = kv_b_row_.data() + head * rank;
      for (int i = 0; i < nope; ++i) {
        kernels::ConvertToF32(layer.kv_b.dtype,
                              kv_b + static_cast<size_t>(head * (nope + v_dim) + i) * kv_b_row_bytes, rank, kv_b_row);
        for (int t = 0; t < n; ++t) {
          kernels::Axpy(q_[static_cast<size_t>(t) * config_.q_size() + head * qk + i], kv_b_row, rank,
                        latent_q_.data() + (static_cast<size_t>(t) * heads + head) * latent);
        }
      }
    }
  };
  if (pool_ == nullptr) {
    absorb(0, heads);
  } else {
    pool_->ParallelFor(heads, 1, absorb);
  }
  for (int t = 0; t < n; ++t) {
    for (int head = 0; head < heads; ++head) {
      float* q = latent_q_.data() + (static_cast<size_t>(t) * heads + head) * latent;
      std::copy_n(q_.data() + static_cast<size_t>(t) * config_.q_size() + head * qk + nope, mla.qk_rope_head_dim,
                  q + rank);
      for (int i = 0; i < latent; ++i) q[i] *= latent_query_scale_;
    }
  }

  for (int t = 0; t < n; ++t) {
    const RowPlan& row = rows_[t];
    if (!row.appends_kv) continue;
    std::copy_n(Row(latent_, t, latent), latent, row.kv->Keys(layer_index) + static_cast<size_t>(row.position) * latent);
  }
  // Every head attends to the one shared latent row per position: one "KV
  // head" of latent_size, whose values are the same rows (only their first
  // kv_lora_rank outputs are used).
  const kernels::AttentionShape shape{heads, 1, latent};
  const size_t q_width = static_cast<size_t>(heads) * latent;
  if (contiguous_) {
    const float* keys = rows_[0].kv->Keys(layer_index);
    kernels::CausalAttention(shape, latent_q_.data(), n, rows_[0].position, keys, keys, latent_out_.data(), pool_);
  } else {
    for (int t = 0; t < n; ++t) {
      const RowPlan& row = rows_[t];
      const float* keys = row.kv->Keys(layer_index);
      const float* q = latent_q_.data() + t * q_width;
      float* out = latent_out_.data() + t * q_width;
      if (row.appends_kv) {
        kernels::CausalAttention(shape, q, 1, row.position, keys, keys, out, pool_);
      } else {
        const float* own = Row(latent_, t, latent);
        kernels::AttentionWithOwnKey(shape, q, row.position, keys, keys, own, own, out, pool_);
      }
    }
  }

  // Each head's value: W_UV[head] (kv_b's rows head * (nope + v) + nope ..
  // + v) times its attended latent.
  const int attention_width = heads * v_dim;
  for (int head = 0; head < heads; ++head) {
    for (int t = 0; t < n; ++t) {
      std::copy_n(latent_out_.data() + t * q_width + static_cast<size_t>(head) * latent, rank,
                  Row(head_latent_, t, rank));
    }
    const kernels::WeightMatrix w_uv{layer.kv_b.dtype,
                                     kv_b + static_cast<size_t>(head * (nope + v_dim) + nope) * kv_b_row_bytes,
                                     v_dim, rank};
    kernels::MatMul(w_uv, head_latent_.data(), n, head_value_.data(), pool_);
    for (int t = 0; t < n; ++t) {
      std::copy_n(Row(head_value_, t, v_dim), v_dim, Row(attention_, t, attention_width) + head * v_dim);
    }
  }
  kernels::MatMul(layer.o, attention_.data(), n, block_out_.data(), pool_);
  for (size_t i = 0; i < static_cast<size_t>(n) * h; ++i) residual_[i] += block_out_[i];
}

void ForwardPass::FeedForward(const model::FeedForwardWeights& ff, const float* x, int m, float* out) {
  CpuFeedForward(ff, x, m, ffn_gate_.data(), ffn_up_.data(), out, pool_);
}

absl::Status ForwardPass::DenseFeedForward(int layer_index) {
  const int n = static_cast<int>(rows_.size());
  FeedForward(model_.weights().layers[layer_index].dense_mlp, normed_.data(), n, block_out_.data());
  for (size_t i = 0; i < static_cast<size_t>(n) * config_.hidden_size; ++i) residual_[i] += block_out_[i];
  return absl::OkStatus();
}

absl::StatusOr<RouterOutput> ForwardPass::Router(int layer_index) {
  const int n = static_cast<int>(rows_.size());
  const model::LayerWeights& layer = model_.weights().layers[layer_index];
  kernels::MatMul(layer.router, normed_.data(), n, router_logits_.data(), pool_);
  AddBias(layer.router_bias, n, router_logits_.data());
  return RouterOutput{.logits = router_logits_.data(), .gate_inputs = normed_.data()};
}

absl::Status ForwardPass::Dispatched(int layer, const MoeDispatch& /*dispatch*/) {
  moe_layer_ = layer;
  return absl::OkStatus();
}

absl::Status ForwardPass::RunExpert(const MoeDispatch& dispatch, int expert, const model::FeedForwardWeights& weights,
                                    ExpertOrigin /*origin*/) {
  const int h = config_.hidden_size;
  const model::ExpertExtras extras = model_.weights().layers[moe_layer_].ExtrasOf(expert, config_);
  absl::Span<const int32_t> slots = dispatch.SlotsOf(expert);
  const int m = static_cast<int>(slots.size());
  if (m == 0) return absl::OkStatus();
  if (queued_rows_ + m > QueueCapacity()) RETURN_IF_ERROR(Sync());
  if (m > QueueCapacity()) {
    // More rows than the queue holds (a long prompt's popular expert): in
    // groups, each one job per matrix.
    for (int first = 0; first < m; first += QueueCapacity()) {
      const int rows = std::min(QueueCapacity(), m - first);
      for (int i = 0; i < rows; ++i) {
        std::copy_n(Row(normed_, dispatch.RowOfSlot(slots[first + i]), h), h, Row(gathered_, i, h));
      }
      CpuFeedForward(weights, gathered_.data(), rows, ffn_gate_.data(), ffn_up_.data(), ffn_out_.data(), pool_,
                     extras);
      for (int i = 0; i < rows; ++i) std::copy_n(Row(ffn_out_, i, h), h, Row(expert_out_, slots[first + i], h));
    }
    return absl::OkStatus();
  }
  for (int i = 0; i < m; ++i) {
    std::copy_n(Row(normed_, dispatch.RowOfSlot(slots[i]), h), h, Row(gathered_, queued_rows_ + i, h));
  }
  queued_.push_back(QueuedExpert{.weights = weights,
                                 .extras = extras,
                                 .slots = slots,
                                 .first_row = queued_rows_,
                                 .gate = ffn_gate_.data() + queued_rows_ * ffn_width_,
                                 .up = ffn_up_.data() + queued_rows_ * ffn_width_,
                                 .out = Row(ffn_out_, queued_rows_, h)});
  queued_rows_ += m;
  return absl::OkStatus();
}

absl::Status ForwardPass::Sync() {
  if (queued_.empty()) return absl::OkStatus();
  const int64_t h = config_.hidden_size;
  auto rows_of = [](const QueuedExpert& q) { return static_cast<int64_t>(q.slots.size()); };

  // Runs fn(expert, begin, end) over the pieces of [begin, end) of the
  // queued experts' concatenated row spaces (rows(q) rows each).
  auto over_experts = [&](int64_t begin, int64_t end, auto rows, auto fn) {
    int64_t base = 0;
    for (const QueuedExpert& q : queued_) {
      const int64_t count = rows(q);
      const int64_t lo = std::max(begin, base), hi = std::min(end, base + count);
      if (lo < hi) fn(q, lo - base, hi - base);
      base += count;
      if (base >= end) break;
    }
  };
  auto parallel = [&](int64_t total, int64_t row_bytes, const std::function<void(int64_t, int64_t)>& fn) {
    const int64_t min_chunk = std::max<int64_t>(4, (kMinChunkBytes / std::max<int64_t>(1, row_bytes) + 3) / 4 * 4);
    if (pool_ == nullptr) {
      fn(0, total);
    } else {
      pool_->ParallelFor(total, min_chunk, fn);
    }
  };
  const model::FeedForwardWeights& first = queued_.front().weights;

  // Gate and up rows of every expert, then SiLU(gate) * up on the rows done.
  int64_t ffn_rows = 0;
  for (const QueuedExpert& q : queued_) ffn_rows += q.weights.gate.rows;
  parallel(ffn_rows, first.gate.size_bytes() / std::max<int64_t>(1, first.gate.rows) * 2,
           [&](int64_t begin, int64_t end) {
             over_experts(begin, end, [](const QueuedExpert& q) { return q.weights.gate.rows; },
                          [&](const QueuedExpert& q, int64_t lo, int64_t hi) {
                            const float* x = Row(gathered_, q.first_row, static_cast<int>(h));
                            const int64_t m = rows_of(q), ffn = q.weights.gate.rows;
                            kernels::MatMulRowRange(q.weights.gate, x, m, q.gate, lo, hi);
                            kernels::MatMulRowRange(q.weights.up, x, m, q.up, lo, hi);
                            ExpertActivation(q.extras, q.gate, q.up, m, ffn, lo, hi);
                          });
           });
  // Down rows of every expert, into each slot's own output row.
  parallel(static_cast<int64_t>(queued_.size()) * h, first.down.size_bytes() / std::max<int64_t>(1, first.down.rows),
           [&](int64_t begin, int64_t end) {
             over_experts(begin, end, [&](const QueuedExpert&) { return h; },
                          [&](const QueuedExpert& q, int64_t lo, int64_t hi) {
                            kernels::MatMulRowRange(q.weights.down, q.gate, rows_of(q), q.out, lo, hi);
                            AddDownBias(q.extras, q.out, rows_of(q), h, lo, hi);
                          });
           });
  // Each (token, rank) slot gets its own output row; they are summed later
  // in rank order, so the order experts run in never changes the result.
  for (const QueuedExpert& q : queued_) {
    for (int64_t i = 0; i < rows_of(q); ++i) {
      std::copy_n(q.out + i * h, h, Row(expert_out_, q.slots[i], static_cast<int>(h)));
    }
  }
  queued_.clear();
  queued_rows_ = 0;
  return absl::OkStatus();
}

absl::Status ForwardPass::Combine(int layer_index, const MoeDispatch& dispatch) {
  RETURN_IF_ERROR(Sync());  // the runner has synced; an expert queued since would be lost
  const model::LayerWeights& layer = model_.weights().layers[layer_index];
  const int n = static_cast<int>(rows_.size());
  const int h = config_.hidden_size;
  // Sum each token's experts in rank order: the result does not depend on
  // the order in which experts were computed (or became available).
  std::fill_n(block_out_.begin(), static_cast<size_t>(n) * h, 0.0f);
  for (int t = 0; t < n; ++t) {
    float* out = Row(block_out_, t, h);
    for (int s = rows_[t].first_slot; s < rows_[t].first_slot + rows_[t].k; ++s) {
      kernels::Axpy(dispatch.chosen_weights()[s], Row(expert_out_, s, h), h, out);
    }
  }

  if (layer.shared_expert) {
    // Qwen2-MoE: out += sigmoid(gate . x) * shared_expert(x); DeepSeek:
    // out += shared_experts(x).
    FeedForward(*layer.shared_expert, normed_.data(), n, ffn_out_.data());
    if (config_.shared_expert_gated) {
      kernels::MatMul(layer.shared_expert_gate, normed_.data(), n, shared_gate_.data(), pool_);
    }
    for (int t = 0; t < n; ++t) {
      const float gate = config_.shared_expert_gated ? 1.0f / (1.0f + std::exp(-shared_gate_[t])) : 1.0f;
      kernels::Axpy(gate, Row(ffn_out_, t, h), h, Row(block_out_, t, h));
    }
  }
  for (size_t i = 0; i < static_cast<size_t>(n) * h; ++i) residual_[i] += block_out_[i];
  return absl::OkStatus();
}

}  // namespace expertd::engine
