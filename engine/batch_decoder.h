#ifndef EXPERTD_ENGINE_BATCH_DECODER_H_
#define EXPERTD_ENGINE_BATCH_DECODER_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "model/model.h"
#include "engine/roster.h"
#include "engine/routing.h"

namespace expertd::engine {

// What a decoding sequence has cost, for per-request statistics.
struct SequenceCosts {
  int64_t prompt_rows = 0;  // prompt positions run (once each, whatever the roster)
  int64_t decode_rows = 0;  // rows of decode steps: tokens x roster samples
  int64_t decode_tokens = 0;
  // Over decode steps: the experts a step needed per token, counted once
  // however many samples chose them (summed over layers).
  int64_t distinct_experts = 0;

  // Rows computed relative to the same run with a roster of 1.
  double extra_compute() const;
  double distinct_experts_per_token() const;
};

// The state of one sequence being decoded: its KV cache (one, however many
// roster samples it has), its routing knobs and its costs.
class DecodingSequence {
 public:
  // experts_per_token 0 = native. Options must already be valid
  // (ValidateRosterOptions). The KV cache lives in kv_memory (null: host);
  // use the memory of the forward pass that will run the sequence.
  DecodingSequence(const model::Model& model, int max_tokens, int experts_per_token, const RosterOptions& roster,
                   KvMemory* kv_memory = nullptr);
  DecodingSequence(const DecodingSequence&) = delete;
  DecodingSequence& operator=(const DecodingSequence&) = delete;

  const KvCache& kv() const { return kv_; }
  int length() const { return kv_.length(); }
  int samples() const { return roster_.samples; }
  const SequenceCosts& costs() const { return costs_; }
  // Routing of sample 0 (the deterministic one) for every position run;
  // null disables recording.
  void set_trace(RoutingTrace* trace) { trace_ = trace; }

 private:
  friend class BatchDecoder;
  KvCache kv_;
  int experts_per_token_;
  RosterOptions roster_;
  std::vector<float> layer_temperatures_;
  std::vector<RowNoise> noises_;            // [samples]; noises_[0] unused (deterministic)
  // Per sample, one step's routing: recorded only when there is a roster to
  // count distinct experts over, or a trace to feed.
  std::vector<RoutingTrace> sample_traces_;
  int experts_per_token_all_layers_ = 0;  // one sample's experts per token, summed over MoE layers
  RoutingTrace* trace_ = nullptr;
  SequenceCosts costs_;
};

// Runs sequences through one forward pass (CPU or GPU): a prompt at a time (prefill), and
// one decode step for many sequences at once (continuous batching), each
// with its roster of samples in the same batch. Produces each sequence's
// next-token logits: the model's own for a roster of 1, otherwise the log
// of the samples' averaged distribution (Roster of Experts aggregation).
class BatchDecoder {
 public:
  BatchDecoder(const model::Model& model, Forward& forward) : model_(model), forward_(forward) {}

  // Runs `prompt` into an empty sequence and writes the distribution of the
  // token after it ([vocab]). With a roster, every prompt position but the
  // last runs once, deterministically, and the last runs as a roster step.
  // prompt_logits, when given, receives the deterministic logits of every
  // prompt position ([prompt][vocab]: row t predicts token t + 1), for
  // logprobs of an echoed prompt.
  absl::Status Prefill(DecodingSequence& sequence, absl::Span<const int32_t> prompt, std::vector<float>* next_logits,
                       std::vector<float>* prompt_logits = nullptr);

  // Chunked prefill: runs the next at most `max_tokens` positions of
  // `prompt` into `sequence`, which holds the positions before them (start
  // with a fresh sequence and call again until it returns true), so a
  // scheduler can put other sequences' decode steps between the chunks.
  // Returns whether the prompt is done; then next_logits holds what Prefill
  // would write. prompt_logits (the same pointer on every call) collects
  // every position's logits as Prefill's does. Each position's logits equal
  // those of one unchunked Prefill, bit for bit: the matmul and attention
  // kernels give a row the same result whatever the rows around it.
  absl::StatusOr<bool> PrefillChunk(DecodingSequence& sequence, absl::Span<const int32_t> prompt, int max_tokens,
                                    std::vector<float>* next_logits, std::vector<float>* prompt_logits = nullptr);

  // Feeds tokens[i] to sequences[i], all in one batched forward step, and
  // writes each one's next-token logits to (*next_logits)[i]. On error no
  // sequence has advanced.
  absl::Status Step(absl::Span<DecodingSequence* const> sequences, absl::Span<const int32_t> tokens,
                    std::vector<std::vector<float>>* next_logits);

  // Where the sequences' KV caches must live.
  KvMemory& kv_memory() { return forward_.kv_memory(); }

  // Rows of the last Step (all samples of all sequences).
  int last_step_rows() const { return static_cast<int>(rows_.size()); }

 private:
  void AddRows(DecodingSequence& sequence, int32_t token);
  // The logits of `sequence`'s rows starting at `first_row` of the step's
  // output, aggregated; and, for a decode step, its trace and costs.
  void Collect(DecodingSequence& sequence, int first_row, bool decode_step, std::vector<float>* next_logits);

  const model::Model& model_;
  Forward& forward_;
  std::vector<StepRow> rows_;
  std::vector<std::pair<int32_t, int32_t>> used_;  // (layer, expert) scratch for Collect
  std::vector<float> logits_;
};

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_BATCH_DECODER_H_
