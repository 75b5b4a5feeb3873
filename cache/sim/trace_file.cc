#include "cache/sim/trace_file.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace expertd::cache {
namespace {

constexpr absl::string_view kMagic = "expertd-trace";
constexpr absl::string_view kVersion = "v1";
constexpr absl::string_view kVersion2 = "v2";

absl::Status Prefixed(const absl::Status& status, absl::string_view prefix) {
  return absl::Status(status.code(), absl::StrCat(prefix, status.message()));
}

// The rules every record obeys, whichever side (writer or reader) checks them.
// `previous` is the record before it, or null.
absl::Status CheckRecord(const TraceRecord& record, const TraceRecord* previous, int num_layers, int num_experts,
                         size_t k) {
  if (record.layer < 0 || record.layer >= num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", record.layer, " is outside 0..", num_layers - 1));
  }
  if (record.experts.size() != k) {
    return absl::InvalidArgumentError(
        absl::StrCat("has ", record.experts.size(), " experts, every record must have k=", k));
  }
  for (size_t i = 0; i < record.experts.size(); ++i) {
    const int32_t expert = record.experts[i];
    if (expert < 0 || expert >= num_experts) {
      return absl::InvalidArgumentError(absl::StrCat("expert ", expert, " is outside 0..", num_experts - 1));
    }
    for (size_t j = 0; j < i; ++j) {
      if (record.experts[j] == expert) {
        return absl::InvalidArgumentError(absl::StrCat("expert ", expert, " appears twice"));
      }
    }
  }
  if (!record.scores.empty() && record.scores.size() != record.experts.size()) {
    return absl::InvalidArgumentError(absl::StrCat("has ", record.scores.size(), " scores for ",
                                                   record.experts.size(), " experts"));
  }
  for (float score : record.scores) {
    if (!std::isfinite(score)) return absl::InvalidArgumentError(absl::StrCat("score ", score, " is not finite"));
  }
  if (previous != nullptr) {
    if (record.token < previous->token) {
      return absl::InvalidArgumentError(
          absl::StrCat("token ", record.token, " comes after token ", previous->token, "; tokens must ascend"));
    }
    if (record.token == previous->token && record.layer <= previous->layer) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", record.layer, " of token ", record.token,
                                                     " comes after layer ", previous->layer,
                                                     "; layers must ascend within a token"));
    }
    if (record.scores.empty() != previous->scores.empty()) {
      return absl::InvalidArgumentError(
          "mixes records with and without scores; either every record has scores or none has");
    }
  }
  return absl::OkStatus();
}

// Groups records into passes, one per token.
LoadedTrace Assemble(int num_layers, int num_experts, std::vector<TraceRecord> records) {
  LoadedTrace loaded;
  loaded.num_layers = num_layers;
  loaded.num_experts = num_experts;
  loaded.k = records.empty() ? 0 : static_cast<int>(records.front().experts.size());
  loaded.has_scores = !records.empty() && !records.front().scores.empty();
  loaded.trace.num_layers = num_layers;
  loaded.trace.num_experts = num_experts;
  for (size_t r = 0; r < records.size(); ++r) {
    const TraceRecord& record = records[r];
    if (r == 0 || record.token != records[r - 1].token) {
      loaded.trace.passes.emplace_back();
      if (loaded.has_scores) loaded.access_scores.emplace_back();
    }
    for (int32_t expert : record.experts) loaded.trace.passes.back().push_back(ExpertKey{record.layer, expert});
    if (loaded.has_scores) {
      loaded.access_scores.back().insert(loaded.access_scores.back().end(), record.scores.begin(),
                                         record.scores.end());
    }
  }
  for (size_t r = 0; r < records.size(); ++r) {
    if (r == 0 || records[r].token != records[r - 1].token) {
      loaded.steps.emplace_back();
      loaded.steps.back().rows = 1;
    }
    loaded.steps.back().records.push_back(records[r]);
  }
  loaded.records = std::move(records);
  return loaded;
}

// Shortest text that reads back as the same float.
absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot create trace file ", path, ": ", std::strerror(errno)));
  file.write(text.data(), static_cast<std::streamsize>(text.size()));
  file.close();
  if (!file) return absl::DataLossError(absl::StrCat("cannot write trace file ", path, ": ", std::strerror(errno)));
  return absl::OkStatus();
}

void AppendFloat(std::string& out, float value) {
  char buffer[32];
  const std::to_chars_result result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  out.append(buffer, result.ptr);
}

// The header's fields: layers, experts and k (both versions), and v2's
// optional I/O figures.
struct HeaderFields {
  int layers = 0;
  int experts = 0;
  int k = 0;
  TraceIoFigures io;
};

// Parses "name=<value>" for the header.
absl::Status ParseHeaderField(absl::string_view field, bool v2, absl::flat_hash_set<std::string>& seen,
                              HeaderFields& header) {
  std::pair<absl::string_view, absl::string_view> parts = absl::StrSplit(field, absl::MaxSplits('=', 1));
  int* target = nullptr;
  if (parts.first == "layers") target = &header.layers;
  if (parts.first == "experts") target = &header.experts;
  if (parts.first == "k") target = &header.k;
  double* real = nullptr;
  if (v2 && parts.first == "read_bytes_per_s") real = &header.io.read_bytes_per_second;
  if (v2 && parts.first == "load_us") real = &header.io.load_us;
  const bool bytes = v2 && parts.first == "expert_bytes";
  if ((target == nullptr && real == nullptr && !bytes) || !absl::StrContains(field, '=')) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unexpected header field \"", field, "\"; expected layers=N experts=N k=N",
        v2 ? " [expert_bytes=N] [read_bytes_per_s=X] [load_us=X]" : ""));
  }
  if (!seen.insert(std::string(parts.first)).second) {
    return absl::InvalidArgumentError(absl::StrCat("header field \"", parts.first, "\" given twice"));
  }
  if (target != nullptr && (!absl::SimpleAtoi(parts.second, target) || *target <= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("header field ", parts.first, "=\"", parts.second, "\" is not a positive integer"));
  }
  if (real != nullptr && (!absl::SimpleAtod(parts.second, real) || !std::isfinite(*real) || *real < 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("header field ", parts.first, "=\"", parts.second, "\" is not a number >= 0"));
  }
  if (bytes && !absl::SimpleAtoi(parts.second, &header.io.expert_bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("header field expert_bytes=\"", parts.second, "\" is not an integer >= 0"));
  }
  return absl::OkStatus();
}

absl::StatusOr<TraceRecord> ParseRecordLine(absl::string_view line) {
  std::vector<absl::string_view> fields = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
  if (fields.size() < 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected \"<token> <layer> <expert>[:<score>] ...\", got \"", line, "\""));
  }
  TraceRecord record;
  if (!absl::SimpleAtoi(fields[0], &record.token)) {
    return absl::InvalidArgumentError(absl::StrCat("token \"", fields[0], "\" is not an integer"));
  }
  if (!absl::SimpleAtoi(fields[1], &record.layer)) {
    return absl::InvalidArgumentError(absl::StrCat("layer \"", fields[1], "\" is not an integer"));
  }
  for (size_t i = 2; i < fields.size(); ++i) {
    std::pair<absl::string_view, absl::string_view> parts = absl::StrSplit(fields[i], absl::MaxSplits(':', 1));
    int32_t expert = 0;
    if (!absl::SimpleAtoi(parts.first, &expert)) {
      return absl::InvalidArgumentError(absl::StrCat("expert \"", parts.first, "\" is not an integer"));
    }
    record.experts.push_back(expert);
    const bool has_score = absl::StrContains(fields[i], ':');
    if (has_score) {
      float score = 0;
      if (!absl::SimpleAtof(parts.second, &score)) {
        return absl::InvalidArgumentError(absl::StrCat("score \"", parts.second, "\" of expert ", expert,
                                                       " is not a number"));
      }
      record.scores.push_back(score);
    }
  }
  if (!record.scores.empty() && record.scores.size() != record.experts.size()) {
    return absl::InvalidArgumentError("either every expert of a record has a score or none has");
  }
  return record;
}

// Experts of a v2 record or prediction: 1..num_experts distinct ones
// inside the model, scores finite and one per expert if any.
absl::Status CheckExperts(absl::Span<const int32_t> experts, absl::Span<const float> scores, int num_experts) {
  if (experts.empty()) return absl::InvalidArgumentError("has no experts");
  if (static_cast<int>(experts.size()) > num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("has ", experts.size(), " experts, the model ", num_experts));
  }
  for (size_t i = 0; i < experts.size(); ++i) {
    if (experts[i] < 0 || experts[i] >= num_experts) {
      return absl::InvalidArgumentError(absl::StrCat("expert ", experts[i], " is outside 0..", num_experts - 1));
    }
    for (size_t j = 0; j < i; ++j) {
      if (experts[j] == experts[i]) {
        return absl::InvalidArgumentError(absl::StrCat("expert ", experts[i], " appears twice"));
      }
    }
  }
  if (!scores.empty() && scores.size() != experts.size()) {
    return absl::InvalidArgumentError(absl::StrCat("has ", scores.size(), " scores for ", experts.size(), " experts"));
  }
  for (float score : scores) {
    if (!std::isfinite(score)) return absl::InvalidArgumentError(absl::StrCat("score ", score, " is not finite"));
  }
  return absl::OkStatus();
}

absl::Status CheckLayer(int32_t layer, int num_layers, absl::string_view what) {
  if (layer < 0 || layer >= num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", layer, " is outside 0..", num_layers - 1));
  }
  return absl::OkStatus();
}

absl::Status CheckPrediction(const TracePrediction& p, int num_layers, int num_experts) {
  if (absl::Status s = CheckLayer(p.at_layer, num_layers, "prediction made at layer"); !s.ok()) return s;
  if (absl::Status s = CheckLayer(p.for_layer, num_layers, "prediction for layer"); !s.ok()) return s;
  if (!p.next_step && p.for_layer <= p.at_layer) {
    return absl::InvalidArgumentError(absl::StrCat("prediction for layer ", p.for_layer, " made at layer ",
                                                   p.at_layer, ": a step's own layers must lie ahead"));
  }
  if (p.budget < 1) return absl::InvalidArgumentError(absl::StrCat("prediction budget ", p.budget, " is below 1"));
  return Prefixed(CheckExperts(p.experts, p.scores, num_experts), "prediction ");
}

// The rules of a v2 step, for writer and reader alike. `scored`: whether
// the trace's records carry scores (taken from the first record).
absl::Status CheckStep(const TraceStep& step, int num_layers, int num_experts, bool scored) {
  if (step.rows < 1) return absl::InvalidArgumentError(absl::StrCat("has rows=", step.rows, ", needs >= 1"));
  if (step.records.empty()) return absl::InvalidArgumentError("has no routing records");
  for (size_t r = 0; r < step.records.size(); ++r) {
    const TraceRecord& record = step.records[r];
    if (absl::Status s = CheckLayer(record.layer, num_layers, "layer"); !s.ok()) return s;
    if (record.token < 0 || record.token >= step.rows) {
      return absl::InvalidArgumentError(absl::StrCat("row ", record.token, " is outside 0..", step.rows - 1));
    }
    if (r > 0 && record.layer < step.records[r - 1].layer) {
      return absl::InvalidArgumentError(absl::StrCat("goes back from layer ", step.records[r - 1].layer,
                                                     " to layer ", record.layer, "; layers must ascend"));
    }
    if (absl::Status s = CheckExperts(record.experts, record.scores, num_experts); !s.ok()) {
      return Prefixed(s, absl::StrCat("row ", record.token, " layer ", record.layer, " "));
    }
    if (record.scores.empty() == scored) {
      return absl::InvalidArgumentError(
          "mixes records with and without scores; either every record has scores or none has");
    }
  }
  for (const TracePrediction& p : step.predictions) {
    if (absl::Status s = CheckPrediction(p, num_layers, num_experts); !s.ok()) return s;
  }
  for (const TraceLayerScores& l : step.router_scores) {
    if (absl::Status s = CheckLayer(l.layer, num_layers, "router scores of layer"); !s.ok()) return s;
    if (l.scores.size() != static_cast<size_t>(num_experts)) {
      return absl::InvalidArgumentError(absl::StrCat("router scores of layer ", l.layer, " have ", l.scores.size(),
                                                     " values; the trace's layers have ", num_experts, " experts"));
    }
    for (float score : l.scores) {
      if (!(score >= 0) || !std::isfinite(score)) {
        return absl::InvalidArgumentError(absl::StrCat("router score ", score, " of layer ", l.layer,
                                                       " is not a number >= 0"));
      }
    }
  }
  for (const TraceLayerCompute& c : step.compute) {
    if (absl::Status s = CheckLayer(c.layer, num_layers, "compute of layer"); !s.ok()) return s;
    if (!(c.compute_us >= 0) || !std::isfinite(c.compute_us)) {
      return absl::InvalidArgumentError(absl::StrCat("compute time ", c.compute_us, " us of layer ", c.layer,
                                                     " is not a number >= 0"));
    }
  }
  return absl::OkStatus();
}

// v2: one pass per step, per layer the distinct experts of its rows in
// expert order (ExpertPlan's order), scores the highest any row gave.
LoadedTrace AssembleSteps(int num_layers, int num_experts, int k, const TraceIoFigures& io,
                          std::vector<TraceStep> steps) {
  LoadedTrace loaded;
  loaded.version = 2;
  loaded.num_layers = num_layers;
  loaded.num_experts = num_experts;
  loaded.k = k;
  loaded.io = io;
  loaded.has_scores = !steps.empty() && !steps.front().records.front().scores.empty();
  loaded.trace.num_layers = num_layers;
  loaded.trace.num_experts = num_experts;
  std::vector<float> best(static_cast<size_t>(num_experts), 0.0f);
  std::vector<bool> chosen(static_cast<size_t>(num_experts), false);
  for (const TraceStep& step : steps) {
    std::vector<ExpertKey>& pass = loaded.trace.passes.emplace_back();
    std::vector<float>* scores = loaded.has_scores ? &loaded.access_scores.emplace_back() : nullptr;
    for (size_t r = 0; r < step.records.size();) {
      const int32_t layer = step.records[r].layer;
      std::fill(chosen.begin(), chosen.end(), false);
      std::fill(best.begin(), best.end(), 0.0f);
      for (; r < step.records.size() && step.records[r].layer == layer; ++r) {
        const TraceRecord& record = step.records[r];
        for (size_t i = 0; i < record.experts.size(); ++i) {
          chosen[record.experts[i]] = true;
          if (!record.scores.empty()) best[record.experts[i]] = std::max(best[record.experts[i]], record.scores[i]);
        }
      }
      for (int32_t e = 0; e < num_experts; ++e) {
        if (!chosen[e]) continue;
        pass.push_back(ExpertKey{layer, e});
        if (scores != nullptr) scores->push_back(best[e]);
      }
    }
  }
  loaded.steps = std::move(steps);
  return loaded;
}

// Fields from `first` on as experts with optional ":score".
absl::Status ParseExpertFields(absl::Span<const absl::string_view> fields, std::vector<int32_t>& experts,
                               std::vector<float>& scores) {
  for (absl::string_view field : fields) {
    std::pair<absl::string_view, absl::string_view> parts = absl::StrSplit(field, absl::MaxSplits(':', 1));
    int32_t expert = 0;
    if (!absl::SimpleAtoi(parts.first, &expert)) {
      return absl::InvalidArgumentError(absl::StrCat("expert \"", parts.first, "\" is not an integer"));
    }
    experts.push_back(expert);
    if (absl::StrContains(field, ':')) {
      float score = 0;
      if (!absl::SimpleAtof(parts.second, &score)) {
        return absl::InvalidArgumentError(
            absl::StrCat("score \"", parts.second, "\" of expert ", expert, " is not a number"));
      }
      scores.push_back(score);
    }
  }
  if (!scores.empty() && scores.size() != experts.size()) {
    return absl::InvalidArgumentError("either every expert has a score or none has");
  }
  return absl::OkStatus();
}

// One v2 line into `step` (not "step" itself).
absl::Status ParseStepLine(absl::string_view line, TraceStep& step) {
  std::vector<absl::string_view> fields = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
  const absl::Span<const absl::string_view> all(fields);
  if (fields[0] == "predict" || fields[0] == "predict-next") {
    TracePrediction p;
    p.next_step = fields[0] == "predict-next";
    if (fields.size() < 5 || !absl::SimpleAtoi(fields[1], &p.at_layer) ||
        !absl::SimpleAtoi(fields[2], &p.for_layer) || !absl::ConsumePrefix(&fields[3], "budget=") ||
        !absl::SimpleAtoi(fields[3], &p.budget)) {
      return absl::InvalidArgumentError(absl::StrCat("expected \"", all[0],
                                                     " <at layer> <for layer> budget=N <expert>[:<score>] ...\""));
    }
    if (absl::Status s = ParseExpertFields(all.subspan(4), p.experts, p.scores); !s.ok()) return s;
    step.predictions.push_back(std::move(p));
    return absl::OkStatus();
  }
  if (fields[0] == "scores") {
    TraceLayerScores l;
    if (fields.size() < 3 || !absl::SimpleAtoi(fields[1], &l.layer)) {
      return absl::InvalidArgumentError("expected \"scores <layer> <score of expert 0> <score of expert 1> ...\"");
    }
    for (absl::string_view field : all.subspan(2)) {
      float score = 0;
      if (!absl::SimpleAtof(field, &score)) {
        return absl::InvalidArgumentError(absl::StrCat("router score \"", field, "\" is not a number"));
      }
      l.scores.push_back(score);
    }
    step.router_scores.push_back(std::move(l));
    return absl::OkStatus();
  }
  if (fields[0] == "compute") {
    TraceLayerCompute c;
    if (fields.size() != 3 || !absl::SimpleAtoi(fields[1], &c.layer) || !absl::SimpleAtod(fields[2], &c.compute_us)) {
      return absl::InvalidArgumentError("expected \"compute <layer> <microseconds>\"");
    }
    step.compute.push_back(c);
    return absl::OkStatus();
  }
  if (fields.size() < 3) {
    return absl::InvalidArgumentError(absl::StrCat("expected \"<row> <layer> <expert>[:<score>] ...\", got \"", line,
                                                   "\""));
  }
  TraceRecord record;
  if (!absl::SimpleAtoi(fields[0], &record.token)) {
    return absl::InvalidArgumentError(absl::StrCat("row \"", fields[0], "\" is not an integer"));
  }
  if (!absl::SimpleAtoi(fields[1], &record.layer)) {
    return absl::InvalidArgumentError(absl::StrCat("layer \"", fields[1], "\" is not an integer"));
  }
  if (absl::Status s = ParseExpertFields(all.subspan(2), record.experts, record.scores); !s.ok()) return s;
  step.records.push_back(std::move(record));
  return absl::OkStatus();
}

absl::StatusOr<LoadedTrace> ParseSteps(absl::Span<const absl::string_view> lines, absl::string_view source,
                                       int num_layers, int num_experts, int k, const TraceIoFigures& io) {
  std::vector<TraceStep> steps;
  size_t step_line = 0;  // where the step being read began
  bool scored = false;
  // Checks the finished step, at its own line.
  auto finish = [&]() -> absl::Status {
    if (steps.empty()) return absl::OkStatus();
    if (steps.size() == 1 && !steps[0].records.empty()) scored = !steps[0].records[0].scores.empty();
    absl::Status s = CheckStep(steps.back(), num_layers, num_experts, scored);
    return s.ok() ? s : Prefixed(s, absl::StrCat(source, ":", step_line + 1, ": step ", steps.size() - 1, " "));
  };
  for (size_t n = 1; n < lines.size(); ++n) {
    absl::string_view line = absl::StripAsciiWhitespace(lines[n]);
    if (line.empty() || line.front() == '#') continue;
    auto error_at = [&](const absl::Status& status) {
      return Prefixed(status, absl::StrCat(source, ":", n + 1, ": "));
    };
    if (absl::StartsWith(line, "step")) {
      if (absl::Status s = finish(); !s.ok()) return s;
      std::vector<absl::string_view> fields = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
      TraceStep step;
      const bool has_gap = fields.size() == 3 && absl::ConsumePrefix(&fields[2], "gap_us=");
      if ((fields.size() != 2 && !has_gap) || fields[0] != "step" || !absl::ConsumePrefix(&fields[1], "rows=") ||
          !absl::SimpleAtoi(fields[1], &step.rows) ||
          (has_gap && (!absl::SimpleAtod(fields[2], &step.gap_us) || !(step.gap_us >= 0)))) {
        return error_at(absl::InvalidArgumentError("expected \"step rows=N [gap_us=X]\" (X a number >= 0)"));
      }
      steps.push_back(std::move(step));
      step_line = n;
      continue;
    }
    if (steps.empty()) return error_at(absl::InvalidArgumentError("a v2 trace's first item must be \"step rows=N\""));
    if (absl::Status s = ParseStepLine(line, steps.back()); !s.ok()) return error_at(s);
  }
  if (absl::Status s = finish(); !s.ok()) return s;
  if (steps.empty()) {
    return Prefixed(absl::InvalidArgumentError("trace has no steps"), absl::StrCat(source, ":", lines.size(), ": "));
  }
  return AssembleSteps(num_layers, num_experts, k, io, std::move(steps));
}

void AppendExperts(std::string& out, const std::vector<int32_t>& experts, const std::vector<float>& scores) {
  for (size_t i = 0; i < experts.size(); ++i) {
    absl::StrAppend(&out, " ", experts[i]);
    if (!scores.empty()) {
      out.push_back(':');
      AppendFloat(out, scores[i]);
    }
  }
}

}  // namespace

absl::StatusOr<std::string> FormatTrace(int num_layers, int num_experts, const std::vector<TraceRecord>& records) {
  if (num_layers <= 0 || num_experts <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("trace: needs positive layer and expert counts, got ",
                                                   num_layers, " layers and ", num_experts, " experts"));
  }
  if (records.empty()) return absl::InvalidArgumentError("trace: no records to write");
  const size_t k = records.front().experts.size();
  std::string out = absl::StrCat(kMagic, " ", kVersion, " layers=", num_layers, " experts=", num_experts,
                                 " k=", k, "\n");
  for (size_t r = 0; r < records.size(); ++r) {
    const TraceRecord& record = records[r];
    absl::Status status = CheckRecord(record, r == 0 ? nullptr : &records[r - 1], num_layers, num_experts, k);
    if (!status.ok()) return Prefixed(status, absl::StrCat("trace record ", r, " (token ", record.token, "): "));
    absl::StrAppend(&out, record.token, " ", record.layer);
    for (size_t i = 0; i < record.experts.size(); ++i) {
      absl::StrAppend(&out, " ", record.experts[i]);
      if (!record.scores.empty()) {
        out.push_back(':');
        AppendFloat(out, record.scores[i]);
      }
    }
    out.push_back('\n');
  }
  return out;
}

absl::Status WriteTraceFile(const std::string& path, int num_layers, int num_experts,
                            const std::vector<TraceRecord>& records) {
  absl::StatusOr<std::string> text = FormatTrace(num_layers, num_experts, records);
  if (!text.ok()) return text.status();
  return WriteText(path, *text);
}

absl::StatusOr<std::string> FormatStepTrace(int num_layers, int num_experts, int k, const TraceIoFigures& io,
                                            const std::vector<TraceStep>& steps) {
  if (num_layers <= 0 || num_experts <= 0 || k <= 0 || k > num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("trace: needs positive layer and expert counts and k in 1..experts, "
                                                   "got ", num_layers, " layers, ", num_experts, " experts, k ", k));
  }
  if (steps.empty()) return absl::InvalidArgumentError("trace: no steps to write");
  const bool scored = !steps.front().records.empty() && !steps.front().records.front().scores.empty();
  std::string out = absl::StrCat(kMagic, " ", kVersion2, " layers=", num_layers, " experts=", num_experts, " k=", k);
  if (io.expert_bytes > 0) absl::StrAppend(&out, " expert_bytes=", io.expert_bytes);
  if (io.read_bytes_per_second > 0) {
    out += " read_bytes_per_s=";
    AppendFloat(out, static_cast<float>(io.read_bytes_per_second));
  }
  if (io.load_us > 0) {
    out += " load_us=";
    AppendFloat(out, static_cast<float>(io.load_us));
  }
  out.push_back('\n');
  for (size_t s = 0; s < steps.size(); ++s) {
    const TraceStep& step = steps[s];
    if (absl::Status status = CheckStep(step, num_layers, num_experts, scored); !status.ok()) {
      return Prefixed(status, absl::StrCat("trace step ", s, " "));
    }
    absl::StrAppend(&out, "step rows=", step.rows);
    if (step.gap_us >= 0) absl::StrAppend(&out, " gap_us=", absl::StrFormat("%.3f", step.gap_us));
    out.push_back('\n');
    // Layer by layer, as the engine ran them: the rows' routing, the
    // predictions made while the layer ran, its compute time.
    for (int32_t layer = 0; layer < num_layers; ++layer) {
      for (const TraceRecord& record : step.records) {
        if (record.layer != layer) continue;
        absl::StrAppend(&out, record.token, " ", record.layer);
        AppendExperts(out, record.experts, record.scores);
        out.push_back('\n');
      }
      for (const TraceLayerScores& l : step.router_scores) {
        if (l.layer != layer) continue;
        absl::StrAppend(&out, "scores ", l.layer);
        for (float score : l.scores) absl::StrAppend(&out, " ", absl::StrFormat("%.6g", score));
        out.push_back('\n');
      }
      for (const TracePrediction& p : step.predictions) {
        if (p.at_layer != layer) continue;
        absl::StrAppend(&out, p.next_step ? "predict-next " : "predict ", p.at_layer, " ", p.for_layer,
                        " budget=", p.budget);
        AppendExperts(out, p.experts, p.scores);
        out.push_back('\n');
      }
      for (const TraceLayerCompute& c : step.compute) {
        if (c.layer != layer) continue;
        absl::StrAppend(&out, "compute ", c.layer, " ", absl::StrFormat("%.3f", c.compute_us), "\n");
      }
    }
  }
  return out;
}

absl::Status WriteStepTraceFile(const std::string& path, int num_layers, int num_experts, int k,
                                const TraceIoFigures& io, const std::vector<TraceStep>& steps) {
  absl::StatusOr<std::string> text = FormatStepTrace(num_layers, num_experts, k, io, steps);
  if (!text.ok()) return text.status();
  return WriteText(path, *text);
}

absl::StatusOr<LoadedTrace> ParseTrace(absl::string_view text, absl::string_view source) {
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  auto error_at = [&](size_t line_index, const absl::Status& status) {
    return Prefixed(status, absl::StrCat(source, ":", line_index + 1, ": "));
  };

  absl::string_view header_line = absl::StripAsciiWhitespace(lines.empty() ? absl::string_view() : lines[0]);
  std::vector<absl::string_view> header_fields = absl::StrSplit(header_line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
  if (header_fields.size() < 2 || header_fields[0] != kMagic) {
    return error_at(0, absl::InvalidArgumentError(absl::StrCat(
                           "not an expertd trace: the first line must be \"", kMagic, " ", kVersion,
                           " layers=L experts=E k=K\"")));
  }
  if (header_fields[1] != kVersion && header_fields[1] != kVersion2) {
    return error_at(0, absl::InvalidArgumentError(absl::StrCat("trace version \"", header_fields[1],
                                                               "\" is not supported; this reader knows ",
                                                               kVersion, " and ", kVersion2)));
  }
  const bool v2 = header_fields[1] == kVersion2;
  HeaderFields header;
  absl::flat_hash_set<std::string> seen;
  for (size_t i = 2; i < header_fields.size(); ++i) {
    absl::Status status = ParseHeaderField(header_fields[i], v2, seen, header);
    if (!status.ok()) return error_at(0, status);
  }
  if (!seen.contains("layers") || !seen.contains("experts") || !seen.contains("k")) {
    return error_at(0, absl::InvalidArgumentError("header must give layers=N experts=N k=N"));
  }
  const int num_layers = header.layers, num_experts = header.experts, k = header.k;
  if (k > num_experts) {
    return error_at(0, absl::InvalidArgumentError(
                           absl::StrCat("k=", k, " is more than the ", num_experts, " experts of a layer")));
  }
  if (v2) return ParseSteps(lines, source, num_layers, num_experts, k, header.io);

  std::vector<TraceRecord> records;
  for (size_t n = 1; n < lines.size(); ++n) {
    absl::string_view line = absl::StripAsciiWhitespace(lines[n]);
    if (line.empty() || line.front() == '#') continue;
    absl::StatusOr<TraceRecord> record = ParseRecordLine(line);
    if (!record.ok()) return error_at(n, record.status());
    absl::Status status = CheckRecord(*record, records.empty() ? nullptr : &records.back(), num_layers,
                                      num_experts, static_cast<size_t>(k));
    if (!status.ok()) return error_at(n, status);
    records.push_back(*std::move(record));
  }
  if (records.empty()) return error_at(lines.size() - 1, absl::InvalidArgumentError("trace has no records"));
  return Assemble(num_layers, num_experts, std::move(records));
}

absl::StatusOr<LoadedTrace> ReadTraceFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot open trace file ", path, ": ", std::strerror(errno)));
  std::ostringstream text;
  text << file.rdbuf();
  if (file.bad()) return absl::DataLossError(absl::StrCat("cannot read trace file ", path));
  return ParseTrace(text.str(), path);
}

std::vector<uint64_t> CountExpertChoices(const LoadedTrace& trace) {
  std::vector<uint64_t> counts(static_cast<size_t>(trace.num_layers) * trace.num_experts, 0);
  // Both versions have their records in steps (v1: one step per token);
  // ParseTrace checked every layer and expert against the header.
  for (const TraceStep& step : trace.steps) {
    for (const TraceRecord& record : step.records) {
      for (int32_t expert : record.experts) ++counts[static_cast<size_t>(record.layer) * trace.num_experts + expert];
    }
  }
  return counts;
}

}  // namespace expertd::cache
