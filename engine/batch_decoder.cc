#include "engine/batch_decoder.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace expertd::engine {

double SequenceCosts::extra_compute() const {
  const int64_t rows = prompt_rows + decode_rows;
  const int64_t single = prompt_rows + decode_tokens;
  return single > 0 ? static_cast<double>(rows) / single : 1.0;
}

double SequenceCosts::distinct_experts_per_token() const {
  return decode_tokens > 0 ? static_cast<double>(distinct_experts) / decode_tokens : 0.0;
}

DecodingSequence::DecodingSequence(const model::Model& model, int max_tokens, int experts_per_token,
                                   const RosterOptions& roster, KvMemory* kv_memory)
    : kv_(model.config(), max_tokens, kv_memory),
      experts_per_token_(experts_per_token),
      roster_(roster),
      layer_temperatures_(RosterLayerTemperatures(roster, model.config())),
      noises_(std::max(1, roster.samples)),
      sample_traces_(std::max(1, roster.samples)) {
  const model::ModelConfig& config = model.config();
  const int moe_layers = static_cast<int>(std::count(config.layer_is_moe.begin(), config.layer_is_moe.end(), true));
  experts_per_token_all_layers_ =
      (experts_per_token == 0 ? config.experts_per_token : experts_per_token) * moe_layers;
  for (int s = 0; s < static_cast<int>(noises_.size()); ++s) {
    noises_[s] = RowNoise{.layer_temperatures = layer_temperatures_.data(),
                          .seed = roster.seed,
                          .sample = s,
                          .resident_bonus = roster.resident_bonus};
  }
}

void BatchDecoder::AddRows(DecodingSequence& sequence, int32_t token) {
  const bool record = sequence.noises_.size() > 1 || sequence.trace_ != nullptr;
  for (int s = 0; s < static_cast<int>(sequence.noises_.size()); ++s) {
    // Sample 0 is the deterministic model and the only one that appends to
    // the KV cache; the others see the shared history (the clean cache).
    sequence.sample_traces_[s].records.clear();
    rows_.push_back(StepRow{.token = token,
                            .kv = &sequence.kv_,
                            .appends_kv = s == 0,
                            .experts_per_token = sequence.experts_per_token_,
                            .noise = s == 0 ? nullptr : &sequence.noises_[s],
                            .trace = record ? &sequence.sample_traces_[s] : nullptr});
  }
}

void BatchDecoder::Collect(DecodingSequence& sequence, int first_row, bool decode_step,
                           std::vector<float>* next_logits) {
  const int vocab = model_.config().vocab_size;
  const int samples = static_cast<int>(sequence.noises_.size());
  const auto begin = logits_.begin() + static_cast<size_t>(first_row) * vocab;
  if (samples == 1) {
    next_logits->assign(begin, begin + vocab);
  } else {
    AverageSampleDistributions(absl::MakeConstSpan(&*begin, static_cast<size_t>(samples) * vocab), samples, vocab,
                               next_logits);
  }
  if (sequence.trace_ != nullptr) {
    for (RoutingRecord& record : sequence.sample_traces_[0].records) sequence.trace_->records.push_back(record);
  }
  if (!decode_step) return;
  // Distinct experts per layer across the samples: what the step had to
  // bring into the compute tier for this token.
  if (samples == 1) {
    sequence.costs_.distinct_experts += sequence.experts_per_token_all_layers_;
  } else {
    used_.clear();
    for (const RoutingTrace& trace : sequence.sample_traces_) {
      for (const RoutingRecord& record : trace.records) {
        for (int32_t e : record.experts) used_.emplace_back(record.layer, e);
      }
    }
    std::sort(used_.begin(), used_.end());
    sequence.costs_.distinct_experts += std::unique(used_.begin(), used_.end()) - used_.begin();
  }
  sequence.costs_.decode_rows += sequence.samples();
  sequence.costs_.decode_tokens += 1;
}

absl::Status BatchDecoder::Prefill(DecodingSequence& sequence, absl::Span<const int32_t> prompt,
                                   std::vector<float>* next_logits, std::vector<float>* prompt_logits) {
  if (sequence.length() != 0) return absl::FailedPreconditionError("prefill needs a fresh sequence");
  absl::StatusOr<bool> done =
      PrefillChunk(sequence, prompt, std::numeric_limits<int>::max(), next_logits, prompt_logits);
  if (!done.ok()) return done.status();
  // One chunk of everything: only a roster's last position is left, and
  // it is a step of its own.
  if (!*done) done = PrefillChunk(sequence, prompt, 1, next_logits, prompt_logits);
  if (!done.ok()) return done.status();
  return absl::OkStatus();
}

absl::StatusOr<bool> BatchDecoder::PrefillChunk(DecodingSequence& sequence, absl::Span<const int32_t> prompt,
                                                int max_tokens, std::vector<float>* next_logits,
                                                std::vector<float>* prompt_logits) {
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty: give at least one token");
  if (max_tokens < 1) return absl::InvalidArgumentError(absl::StrCat("a prefill chunk of ", max_tokens, " tokens"));
  const size_t done = static_cast<size_t>(sequence.length());
  if (done >= prompt.size()) {
    return absl::FailedPreconditionError(absl::StrCat("the sequence already holds ", done, " positions of a ",
                                                      prompt.size(), "-token prompt"));
  }
  if (done == 0 && prompt_logits != nullptr) prompt_logits->clear();
  const int vocab = model_.config().vocab_size;
  const bool roster = sequence.samples() > 1;
  // Without a roster every position runs in chunks of the prompt; with one,
  // the last position is a roster step of its own.
  const size_t head = roster ? prompt.size() - 1 : prompt.size();
  if (done < head) {
    const absl::Span<const int32_t> chunk = prompt.subspan(done, std::min<size_t>(head - done, max_tokens));
    ForwardOptions options;
    options.experts_per_token = sequence.experts_per_token_;
    options.all_logits = prompt_logits != nullptr;
    RETURN_IF_ERROR(forward_.Run(chunk, sequence.kv_, options, &logits_, sequence.trace_));
    sequence.costs_.prompt_rows += static_cast<int64_t>(chunk.size());
    if (prompt_logits != nullptr) prompt_logits->insert(prompt_logits->end(), logits_.begin(), logits_.end());
    if (done + chunk.size() < prompt.size()) return false;
    next_logits->assign(logits_.end() - vocab, logits_.end());
    return true;
  }
  rows_.clear();
  AddRows(sequence, prompt.back());
  RETURN_IF_ERROR(forward_.Step(rows_, &logits_));
  sequence.costs_.prompt_rows += 1;
  if (prompt_logits != nullptr) {
    // Sample 0 of the roster step is the deterministic last position.
    prompt_logits->insert(prompt_logits->end(), logits_.begin(), logits_.begin() + vocab);
  }
  Collect(sequence, 0, /*decode_step=*/false, next_logits);
  return true;
}

absl::Status BatchDecoder::Step(absl::Span<DecodingSequence* const> sequences, absl::Span<const int32_t> tokens,
                                std::vector<std::vector<float>>* next_logits) {
  if (sequences.size() != tokens.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("step: ", sequences.size(), " sequences but ", tokens.size(), " tokens"));
  }
  rows_.clear();
  for (size_t i = 0; i < sequences.size(); ++i) AddRows(*sequences[i], tokens[i]);
  if (absl::Status status = forward_.Step(rows_, &logits_); !status.ok()) return status;
  next_logits->resize(sequences.size());
  int row = 0;
  for (size_t i = 0; i < sequences.size(); ++i) {
    DecodingSequence& sequence = *sequences[i];
    Collect(sequence, row, /*decode_step=*/true, &(*next_logits)[i]);
    row += sequence.samples();
  }
  return absl::OkStatus();
}

}  // namespace expertd::engine
