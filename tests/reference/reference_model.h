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
absl::StatusOr<std::vector<std::vector<double>>> ReferenceLogits(const std::string& model_dir,
                                                                 const std::vector<int32_t>& tokens, int k = 0);

}  // namespace expertd::reference

#endif  // EXPERTD_TESTS_REFERENCE_REFERENCE_MODEL_H_
