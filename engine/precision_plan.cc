#include "engine/precision_plan.h"

#include <algorithm>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/byte_size.h"
#include "engine/expert_packer.h"
#include "io/expert_bundle.h"

namespace expertd::engine {
namespace {

std::string Name(DType dtype) { return std::string(DTypeName(dtype)); }

// What ParsePackDtype converts to, "keep" aside (f16 is only ever kept):
// "f32, bf16, q8_0, ...".
std::string Choices() {
  std::string out;
  for (DType dtype : kAllDTypes) {
    if (dtype != DType::kF16) absl::StrAppend(&out, out.empty() ? "" : ", ", Name(dtype));
  }
  return out;
}

// Hottest first; equal counts by (layer, expert), so the plan depends on
// nothing but its inputs.
bool Hotter(const ExpertAccessCount& a, const ExpertAccessCount& b) {
  if (a.accesses != b.accesses) return a.accesses > b.accesses;
  return std::pair(a.layer, a.expert) < std::pair(b.layer, b.expert);
}

}  // namespace

absl::StatusOr<PrecisionPlan> PlanPrecision(absl::Span<const ExpertAccessCount> experts,
                                            absl::Span<const PrecisionCandidate> candidates, uint64_t target_bytes) {
  if (candidates.empty()) return absl::InvalidArgumentError("a precision plan needs at least one candidate dtype");
  for (size_t c = 1; c < candidates.size(); ++c) {
    if (candidates[c].bundle_bytes >= candidates[c - 1].bundle_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "precision candidates must be ordered highest precision (most bytes) first: ", Name(candidates[c].dtype),
          " (", candidates[c].bundle_bytes, " bytes per expert) follows ", Name(candidates[c - 1].dtype), " (",
          candidates[c - 1].bundle_bytes, " bytes)"));
    }
  }
  if (candidates.back().bundle_bytes == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("precision candidate ", Name(candidates.back().dtype), " has a bundle of 0 bytes"));
  }
  if (experts.empty()) return absl::InvalidArgumentError("a precision plan needs at least one expert");

  PrecisionPlan plan;
  plan.candidates.assign(candidates.begin(), candidates.end());
  plan.target_bytes = target_bytes;
  std::set<std::pair<int, int>> seen;
  for (const ExpertAccessCount& e : experts) {
    if (!seen.insert({e.layer, e.expert}).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert ", e.expert, " of layer ", e.layer, " is listed twice in the precision plan's input"));
    }
    plan.entries.push_back({.expert = e, .candidate = static_cast<int>(candidates.size()) - 1});
  }
  std::sort(plan.entries.begin(), plan.entries.end(),
            [](const PrecisionPlan::Entry& a, const PrecisionPlan::Entry& b) { return Hotter(a.expert, b.expert); });

  // Everyone at the lowest candidate first: the least the budget must hold.
  // (Sizes of real models are far below 2^64 bytes; the division guards the
  // product anyway.)
  const uint64_t n = plan.entries.size();
  const PrecisionCandidate& lowest = candidates.back();
  if (lowest.bundle_bytes > std::numeric_limits<uint64_t>::max() / n || target_bytes < n * lowest.bundle_bytes) {
    const bool overflows = lowest.bundle_bytes > std::numeric_limits<uint64_t>::max() / n;
    return absl::InvalidArgumentError(absl::StrCat(
        "a budget of ", target_bytes, " bytes (", FormatByteSize(target_bytes), ") cannot hold ", n, " experts at ",
        Name(lowest.dtype), ", the lowest precision offered (", lowest.bundle_bytes,
        " bytes each): the budget must be at least ",
        overflows ? std::string("more than 2^64") : absl::StrCat(n * lowest.bundle_bytes), " bytes",
        overflows ? "" : absl::StrCat(" (", FormatByteSize(n * lowest.bundle_bytes), ")"),
        ", or offer a smaller dtype"));
  }
  plan.total_bytes = n * lowest.bundle_bytes;

  // Level by level, hottest first; the first upgrade that does not fit ends
  // the plan (every later one at this level costs the same, and a higher
  // level must not start before this one is complete, or a colder expert
  // could end above a hotter one).
  for (int level = static_cast<int>(candidates.size()) - 2; level >= 0; --level) {
    const uint64_t step = candidates[level].bundle_bytes - candidates[level + 1].bundle_bytes;
    for (PrecisionPlan::Entry& entry : plan.entries) {
      if (target_bytes - plan.total_bytes < step) return plan;
      entry.candidate = level;
      plan.total_bytes += step;
    }
  }
  return plan;
}

std::vector<PrecisionPlan::Tier> PrecisionPlan::Tiers() const {
  std::vector<Tier> tiers;
  for (const PrecisionCandidate& c : candidates) tiers.push_back({.dtype = c.dtype});
  for (const Entry& entry : entries) {
    Tier& tier = tiers[entry.candidate];
    ++tier.experts;
    tier.bytes += candidates[entry.candidate].bundle_bytes;
    tier.accesses += entry.expert.accesses;
  }
  return tiers;
}

uint64_t PrecisionPlan::total_accesses() const {
  uint64_t total = 0;
  for (const Entry& entry : entries) total += entry.expert.accesses;
  return total;
}

absl::StatusOr<DType> PrecisionPlan::DtypeOf(int layer, int expert) const {
  for (const Entry& entry : entries) {
    if (entry.expert.layer == layer && entry.expert.expert == expert) return candidates[entry.candidate].dtype;
  }
  return absl::NotFoundError(absl::StrCat("the precision plan has no dtype for expert ", expert, " of layer ", layer));
}

std::string PrecisionPlan::Summary() const {
  const uint64_t accesses = total_accesses();
  std::string out;
  for (const Tier& tier : Tiers()) {
    absl::StrAppend(&out, out.empty() ? "" : "; ", Name(tier.dtype), ": ", tier.experts, " experts (",
                    FormatByteSize(tier.bytes), ", ",
                    absl::StrFormat("%.1f", accesses == 0 ? 0.0 : 100.0 * tier.accesses / accesses),
                    "% of accesses)");
  }
  absl::StrAppend(&out, "; ", FormatByteSize(total_bytes), " of bundles in a budget of ", FormatByteSize(target_bytes));
  return out;
}

absl::StatusOr<std::vector<PrecisionCandidate>> PrecisionCandidatesFor(const model::ModelConfig& config,
                                                                       absl::Span<const DType> dtypes) {
  std::vector<PrecisionCandidate> out;
  for (DType dtype : dtypes) {
    const int64_t block = DTypeBlockElements(dtype);
    if (config.hidden_size % block != 0 || config.expert_intermediate_size % block != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "experts cannot be packed as ", Name(dtype), ": its blocks are ", block,
          " weights, and the expert rows are ", config.hidden_size, " (hidden_size) and ",
          config.expert_intermediate_size, " (expert intermediate size) wide; choose dtypes whose blocks divide both"));
    }
    for (const PrecisionCandidate& earlier : out) {
      if (earlier.dtype == dtype) {
        return absl::InvalidArgumentError(absl::StrCat(Name(dtype), " is listed twice among the precision dtypes"));
      }
    }
    const uint64_t bytes = io::ExpertBundleLayout(dtype, config.hidden_size, config.expert_intermediate_size).bytes;
    if (!out.empty() && bytes >= out.back().bundle_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "precision dtypes go highest precision first, each smaller than the one before: ", Name(dtype), " (",
          FormatByteSize(bytes), " per expert) is not smaller than ", Name(out.back().dtype), " (",
          FormatByteSize(out.back().bundle_bytes), ")"));
    }
    out.push_back({.dtype = dtype, .bundle_bytes = bytes});
  }
  if (out.empty()) return absl::InvalidArgumentError("no precision dtypes given");
  return out;
}

std::vector<DType> DefaultPrecisionDtypes(const model::ModelConfig& config) {
  const bool k_quant_rows = config.hidden_size % 256 == 0 && config.expert_intermediate_size % 256 == 0;
  if (k_quant_rows) return {DType::kBF16, DType::kQ8_0, DType::kQ6_K, DType::kQ4_K};
  return {DType::kBF16, DType::kQ8_0, DType::kQ4_0};
}

absl::StatusOr<std::vector<DType>> ParsePrecisionDtypes(absl::string_view text, const model::ModelConfig& config) {
  if (absl::StripAsciiWhitespace(text).empty()) return DefaultPrecisionDtypes(config);
  std::vector<DType> out;
  for (absl::string_view piece : absl::StrSplit(text, ',')) {
    piece = absl::StripAsciiWhitespace(piece);
    auto dtype = ParsePackDtype(piece);
    if (!dtype.ok() || !dtype->has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("--precision-dtypes: '", piece,
                                                     "' is not a dtype to pack experts in (choose from ",
                                                     Choices(), ")"));
    }
    out.push_back(**dtype);
  }
  return out;
}

}  // namespace expertd::engine
