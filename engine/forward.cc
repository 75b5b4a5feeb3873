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

// Rows of routed experts queued for one Sync at least (more when the pass
// has more rows): 64 covers a decode step of 8 sequences at top-8. Larger
// passes (prefill) run their experts in several groups of at most the
// pass's rows, where each expert's batch already keeps the threads busy.
constexpr size_t kMinQueueRows = 64;

// Weight rows a chunk of a parallel expert job streams at least: a chunk
// costs a few microseconds to hand out, about 64 KiB of reads.
constexpr int64_t kMinChunkBytes = 64 * 1024;

void Clip(float limit, size_t count, float* values) {
  for (size_t i = 0; i < count; ++i) values[i] = std::clamp(values[i], -limit, limit);
}

}  // namespace

ForwardPass::ForwardPass(const Model& model, kernels::ThreadPool* pool, ExpertSource* experts)
    : model_(model),
      config_(model.config()),
      pool_(pool),
      resident_experts_(model.weights()),
      runner_(model.config(), experts != nullptr ? *experts : resident_experts_),
      inv_freq_(RopeInverseFrequencies(model.config())) {}

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
  attention_.resize(static_cast<size_t>(n) * config_.q_size());
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
  const ModelWeights& weights = model_.weights();
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

  const ModelWeights& weights = model_.weights();
  const int h = config_.hidden_size;
  for (int t = 0; t < n; ++t) {
    kernels::ConvertToF32(weights.embedding.dtype,
                          static_cast<const std::byte*>(weights.embedding.data) +
                              static_cast<size_t>(tokens[t]) * DTypeBytes(weights.embedding.dtype, h),
                          h, Row(residual_, t, h));
    RopeCosSin(inv_freq_, rows_[t].position, Row(rope_, t, config_.head_dim));
  }

  return runner_.RunLayers(*this);
}

absl::Status ForwardPass::Attention(int layer_index) {
  const int n = static_cast<int>(rows_.size());
  SelfAttention(layer_index, n);
  const int h = config_.hidden_size;
  const LayerWeights& layer = model_.weights().layers[layer_index];
  for (int t = 0; t < n; ++t) {
    kernels::RmsNorm(Row(residual_, t, h), layer.post_attention_norm.data(), h, config_.rms_norm_eps,
                     Row(normed_, t, h));
  }
  return absl::OkStatus();
}

void ForwardPass::SelfAttention(int layer_index, int n) {
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
  kernels::MatMul(model_.weights().layers[layer_index].router, normed_.data(), n, router_logits_.data(), pool_);
  return RouterOutput{.logits = router_logits_.data(), .gate_inputs = normed_.data()};
}

absl::Status ForwardPass::RunExpert(const MoeDispatch& dispatch, int expert, const FeedForwardWeights& weights,
                                    ExpertOrigin /*origin*/) {
  const int h = config_.hidden_size;
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
      FeedForward(weights, gathered_.data(), rows, ffn_out_.data());
      for (int i = 0; i < rows; ++i) std::copy_n(Row(ffn_out_, i, h), h, Row(expert_out_, slots[first + i], h));
    }
    return absl::OkStatus();
  }
  for (int i = 0; i < m; ++i) {
    std::copy_n(Row(normed_, dispatch.RowOfSlot(slots[i]), h), h, Row(gathered_, queued_rows_ + i, h));
  }
  queued_.push_back(QueuedExpert{.weights = weights,
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
  const FeedForwardWeights& first = queued_.front().weights;

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
                            for (int64_t i = 0; i < m; ++i) {
                              kernels::SiluMul(q.gate + i * ffn + lo, q.up + i * ffn + lo, hi - lo,
                                               q.gate + i * ffn + lo);
                            }
                          });
           });
  // Down rows of every expert, into each slot's own output row.
  parallel(static_cast<int64_t>(queued_.size()) * h, first.down.size_bytes() / std::max<int64_t>(1, first.down.rows),
           [&](int64_t begin, int64_t end) {
             over_experts(begin, end, [&](const QueuedExpert&) { return h; },
                          [&](const QueuedExpert& q, int64_t lo, int64_t hi) {
                            kernels::MatMulRowRange(q.weights.down, q.gate, rows_of(q), q.out, lo, hi);
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
  const LayerWeights& layer = model_.weights().layers[layer_index];
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
