#ifndef EXPERTD_ENGINE_EXPERT_PACKER_H_
#define EXPERTD_ENGINE_EXPERT_PACKER_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "base/dtype.h"
#include "model/model.h"
#include "engine/precision_plan.h"

namespace expertd::engine {

// `expertd pack --dtype`: "keep" (nullopt: each matrix's own dtype),
// "bf16", "f32", or a GGML block format ("q8_0", "q4_0", "q4_k", "q5_k",
// "q6_k", "mxfp4": each row quantised by kernels::QuantizeRow; the experts'
// rows must be whole blocks, 32 or 256 elements).
absl::StatusOr<std::optional<DType>> ParsePackDtype(absl::string_view name);
// "keep, f32, bf16, q8_0, ...": what ParsePackDtype takes, for messages.
std::string PackDtypeChoices();

// Writes every routed expert of `model` into a packed expert file at `path`
// (io/FORMAT.md), converting every matrix to `dtype` when one is given
// (nullopt keeps each matrix's own dtype: a Q4_K_M GGUF's experts stay q4_k
// gate and up with q6_k or q4_k down, as llama.cpp chose per layer; slots
// are sized by the largest bundle). progress(done, total)
// is called after each expert. Writes to a temporary name and renames at the
// end, so an interrupted pack leaves no file that looks complete.
absl::Status PackExperts(const model::Model& model, const std::string& path, std::optional<DType> dtype,
                         const std::function<void(int done, int total)>& progress = nullptr);

// The same, each expert in the dtype `plan` gives it (every matrix of the
// bundle in it; engine/precision_plan.h); the slot is the plan's widest.
// NotFound naming the expert when the plan lacks one of the model's routed
// experts.
absl::Status PackExperts(const model::Model& model, const std::string& path, const PrecisionPlan& plan,
                         const std::function<void(int done, int total)>& progress = nullptr);

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_EXPERT_PACKER_H_
