#ifndef EXPERTD_ENGINE_PRECISION_PLAN_H_
#define EXPERTD_ENGINE_PRECISION_PLAN_H_

// Mixed precision per expert (Fate's popularity-aware quantisation, issue
// 17): given how often each routed expert was used (a routing trace's
// counts) and a byte budget for all experts' bundles, packs the experts the
// router uses most at a higher precision and the rarely used ones lower.
// `expertd pack --precision-plan TRACE --target-bytes N` plans with this and
// packs each expert at its planned dtype (PackExperts with a plan).
//
// The greedy, level by level: every expert starts at the lowest candidate;
// then, hottest first, experts are raised to the next candidate while the
// budget allows; once all of them are there, the next level the same way.
// Every expert leaves the lowest precision before any reaches the highest,
// because the error a step removes shrinks fast with the bits: a 4-bit
// block's rounding step is ~18x an 8-bit one's (amax/7 against amax/127),
// and at 32-weight blocks q4_0 -> q8_0 costs 3072 bytes per 6144 weights
// where q8_0 -> bf16 costs 5760, so a step up from 4 bits buys ~30x the
// error reduction per byte of one from 8 bits, more than the spread of
// access counts between a layer's experts on a load-balanced model
// (bench/README.md: the busiest expert takes 8-10% of a layer's choices).
// So a plan holds at most two adjacent candidates at once. Within a level
// the set raised is a prefix of the hotness order, so a hotter expert never
// gets a lower precision than a colder one. Ties in access count go to the
// lower (layer, expert), so a plan is a function of its inputs.
//
// What the plan saves is bytes on disk read per miss (the cache reads a
// bundle's own bytes rounded up to the file's alignment) and in the file's
// bundles; the cache's DRAM slots stay the size of the widest bundle (one
// slot size per file: io/FORMAT.md "Why one slot size for all"), so a mixed
// file holds no more experts in the same DRAM budget than its widest dtype.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "base/dtype.h"
#include "model/model_config.h"

namespace expertd::engine {

// One routed expert and how many times the router chose it (one count per
// token and layer it served).
struct ExpertAccessCount {
  int layer = 0;
  int expert = 0;
  uint64_t accesses = 0;
};

// A dtype an expert may be packed in, and the bytes of one expert's bundle
// (gate, up and down all in it) in that dtype.
struct PrecisionCandidate {
  DType dtype = DType::kBF16;
  uint64_t bundle_bytes = 0;
};

struct PrecisionPlan {
  // The candidates, highest precision (most bytes) first, as planned with.
  std::vector<PrecisionCandidate> candidates;
  // Every expert of the input, hottest first (ties: lower layer, then lower
  // expert), with the index into candidates it was given; non-decreasing
  // along this order (hotter never lower precision).
  struct Entry {
    ExpertAccessCount expert;
    int candidate = 0;
  };
  std::vector<Entry> entries;
  uint64_t target_bytes = 0;
  uint64_t total_bytes = 0;  // the planned bundles' bytes: at most target_bytes

  // Per candidate (same order): how many experts got it, their bytes, and
  // the accesses of the trace they serve.
  struct Tier {
    DType dtype = DType::kBF16;
    int experts = 0;
    uint64_t bytes = 0;
    uint64_t accesses = 0;
  };
  std::vector<Tier> Tiers() const;
  uint64_t total_accesses() const;
  // The dtype planned for (layer, expert); NotFound when the plan has no
  // such expert.
  absl::StatusOr<DType> DtypeOf(int layer, int expert) const;
  // "bf16: 10 experts (960 KiB, 61.2% of accesses); q8_0: ...": for the
  // pack summary.
  std::string Summary() const;
};

// Plans `experts` (each (layer, expert) at most once) under `target_bytes`
// for all their bundles. `candidates`: highest precision first, with
// strictly decreasing bundle_bytes. InvalidArgument when the budget cannot
// hold every expert at the lowest candidate, naming the minimum bytes; when
// it holds every expert at the highest, every expert gets the highest.
absl::StatusOr<PrecisionPlan> PlanPrecision(absl::Span<const ExpertAccessCount> experts,
                                            absl::Span<const PrecisionCandidate> candidates, uint64_t target_bytes);

// The candidates for a model's experts: each dtype's bundle bytes at the
// model's expert shape (io::ExpertBundleLayout). InvalidArgument naming the
// dtype when its blocks do not divide the rows (hidden_size and the expert
// intermediate size), when one repeats, or when the order is not strictly
// decreasing in bytes (a "higher" precision that is no larger).
absl::StatusOr<std::vector<PrecisionCandidate>> PrecisionCandidatesFor(const model::ModelConfig& config,
                                                                       absl::Span<const DType> dtypes);

// Parses "bf16,q8_0,q4_k" (highest precision first); errors name the dtype
// and the choices. Empty text: DefaultPrecisionDtypes(config).
absl::StatusOr<std::vector<DType>> ParsePrecisionDtypes(absl::string_view text, const model::ModelConfig& config);

// bf16 > q8_0 > q6_k > q4_k when the expert rows are whole 256-element
// K-quant blocks: 512, 272, 210 and 144 bytes per 256 weights, the types
// Q8_0, Q6_K and Q4_K_M GGUF files are made of (q5_k and q4_0 left out:
// q4_0 is q4_k's size with a coarser scale, q5_k sits close to q6_k).
// Rows that are only whole 32-element blocks (the bundled olmoe-kjv is 128
// wide): bf16 > q8_0 > q4_0.
std::vector<DType> DefaultPrecisionDtypes(const model::ModelConfig& config);

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_PRECISION_PLAN_H_
