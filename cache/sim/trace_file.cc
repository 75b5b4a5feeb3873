#include "cache/sim/trace_file.h"

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
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace expertd::cache {
namespace {

constexpr absl::string_view kMagic = "expertd-trace";
constexpr absl::string_view kVersion = "v1";

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
  loaded.records = std::move(records);
  return loaded;
}

// Shortest text that reads back as the same float.
void AppendFloat(std::string& out, float value) {
  char buffer[32];
  const std::to_chars_result result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  out.append(buffer, result.ptr);
}

// Parses "name=<positive int>" for the header.
absl::Status ParseHeaderField(absl::string_view field, absl::flat_hash_set<std::string>& seen, int& layers,
                              int& experts, int& k) {
  std::pair<absl::string_view, absl::string_view> parts = absl::StrSplit(field, absl::MaxSplits('=', 1));
  int* target = nullptr;
  if (parts.first == "layers") target = &layers;
  if (parts.first == "experts") target = &experts;
  if (parts.first == "k") target = &k;
  if (target == nullptr || !absl::StrContains(field, '=')) {
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected header field \"", field, "\"; expected layers=N experts=N k=N"));
  }
  if (!seen.insert(std::string(parts.first)).second) {
    return absl::InvalidArgumentError(absl::StrCat("header field \"", parts.first, "\" given twice"));
  }
  if (!absl::SimpleAtoi(parts.second, target) || *target <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("header field ", parts.first, "=\"", parts.second, "\" is not a positive integer"));
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
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot create trace file ", path, ": ", std::strerror(errno)));
  file.write(text->data(), static_cast<std::streamsize>(text->size()));
  file.close();
  if (!file) return absl::DataLossError(absl::StrCat("cannot write trace file ", path, ": ", std::strerror(errno)));
  return absl::OkStatus();
}

absl::StatusOr<LoadedTrace> ParseTrace(absl::string_view text, absl::string_view source) {
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  auto error_at = [&](size_t line_index, const absl::Status& status) {
    return Prefixed(status, absl::StrCat(source, ":", line_index + 1, ": "));
  };

  absl::string_view header = absl::StripAsciiWhitespace(lines.empty() ? absl::string_view() : lines[0]);
  std::vector<absl::string_view> header_fields = absl::StrSplit(header, absl::ByAnyChar(" \t"), absl::SkipEmpty());
  if (header_fields.size() < 2 || header_fields[0] != kMagic) {
    return error_at(0, absl::InvalidArgumentError(absl::StrCat(
                           "not an expertd trace: the first line must be \"", kMagic, " ", kVersion,
                           " layers=L experts=E k=K\"")));
  }
  if (header_fields[1] != kVersion) {
    return error_at(0, absl::InvalidArgumentError(absl::StrCat("trace version \"", header_fields[1],
                                                               "\" is not supported; this reader knows ",
                                                               kVersion)));
  }
  int num_layers = 0, num_experts = 0, k = 0;
  absl::flat_hash_set<std::string> seen;
  for (size_t i = 2; i < header_fields.size(); ++i) {
    absl::Status status = ParseHeaderField(header_fields[i], seen, num_layers, num_experts, k);
    if (!status.ok()) return error_at(0, status);
  }
  if (seen.size() != 3) {
    return error_at(0, absl::InvalidArgumentError("header must give layers=N experts=N k=N"));
  }
  if (k > num_experts) {
    return error_at(0, absl::InvalidArgumentError(
                           absl::StrCat("k=", k, " is more than the ", num_experts, " experts of a layer")));
  }

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

}  // namespace expertd::cache
