#ifndef EXPERTD_ENGINE_EXPERT_PACKER_H_
#define EXPERTD_ENGINE_EXPERT_PACKER_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "engine/model.h"

namespace expertd {

enum class PackDtype { kKeep, kBF16, kF32 };
absl::StatusOr<PackDtype> ParsePackDtype(absl::string_view name);

// Writes every routed expert of `model` into a packed expert file at `path`
// (io/FORMAT.md), converting to `dtype` when asked. progress(done, total)
// is called after each expert. Writes to a temporary name and renames at the
// end, so an interrupted pack leaves no file that looks complete.
absl::Status PackExperts(const Model& model, const std::string& path, PackDtype dtype,
                         const std::function<void(int done, int total)>& progress = nullptr);

}  // namespace expertd

#endif  // EXPERTD_ENGINE_EXPERT_PACKER_H_
