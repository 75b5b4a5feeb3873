#ifndef EXPERTD_TESTS_REFERENCE_REFERENCE_MODEL_H_
#define EXPERTD_TESTS_REFERENCE_REFERENCE_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace expertd::reference {

// The slow, obviously-correct forward pass the engine is checked against.
// Written for clarity from the HF modelling code of each family: plain loops,
// double accumulation, every weight converted to double up front, no KV
// cache (every call recomputes the whole sequence), and no code shared with
// kernels/ or the engine's forward pass. Only the file loaders are shared.
//
// Returns logits [tokens.size()][vocab], row t predicting token t + 1.
// k = 0 uses the model's native top-k.
// Roster of Experts noise for the last token only (the clean cache: every
// earlier position is the deterministic sample 0). The draws come from
// engine/roster.h's GumbelNoise, so the two sides see the same noise; the
// selection itself is this file's own code.
struct ReferenceNoise {
  uint64_t seed = 0;
  int sample = 0;
  std::vector<double> layer_temperatures;  // per model layer
};

absl::StatusOr<std::vector<std::vector<double>>> ReferenceLogits(const std::string& model_dir,
                                                                 const std::vector<int32_t>& tokens, int k = 0,
                                                                 const ReferenceNoise* noise = nullptr);

}  // namespace expertd::reference

#endif  // EXPERTD_TESTS_REFERENCE_REFERENCE_MODEL_H_
