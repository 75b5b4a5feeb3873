#include "cache/eviction_policy.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cache/policies/policies.h"

namespace expertd::cache {

std::vector<std::string> EvictionPolicyNames() { return {"lru", "lru-hint", "lfu", "least-stale", "layer-distance", "belady"}; }

absl::StatusOr<std::unique_ptr<EvictionPolicy>> MakeEvictionPolicy(absl::string_view name,
                                                                   const PolicyOptions& options) {
  // Policies keep per-expert state in arrays sized by the model.
  if (options.num_layers <= 0 || options.num_experts <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("eviction policy \"", name, "\" needs the model's MoE layer and ",
                                                   "expert counts, got ", options.num_layers, " layers and ",
                                                   options.num_experts, " experts"));
  }
  if (name == "lru") return policies::NewLruPolicy(options);
  if (name == "lru-hint") return policies::NewLruHintPolicy(options);
  if (name == "lfu") return policies::NewLfuPolicy(options);
  if (name == "least-stale") return policies::NewLeastStalePolicy(options);
  if (name == "layer-distance") return policies::NewLayerDistancePolicy(options);
  if (name == "belady") return policies::NewBeladyPolicy(options);
  return absl::InvalidArgumentError(absl::StrCat("unknown eviction policy \"", name,
                                                 "\"; known: ", absl::StrJoin(EvictionPolicyNames(), ", ")));
}

}  // namespace expertd::cache
