#ifndef EXPERTD_CACHE_POLICIES_POLICIES_H_
#define EXPERTD_CACHE_POLICIES_POLICIES_H_

// Constructors of the policies, one per file in this folder. Only the
// factory (cache/eviction_policy.cc) calls them; it has already checked that
// options.num_layers and options.num_experts are positive.

#include <memory>

#include "absl/status/statusor.h"
#include "cache/eviction_policy.h"

namespace expertd::cache::policies {

std::unique_ptr<EvictionPolicy> NewLruPolicy(const PolicyOptions& options);
std::unique_ptr<EvictionPolicy> NewLruHintPolicy(const PolicyOptions& options);
std::unique_ptr<EvictionPolicy> NewLfuPolicy(const PolicyOptions& options);
std::unique_ptr<EvictionPolicy> NewLeastStalePolicy(const PolicyOptions& options);
std::unique_ptr<EvictionPolicy> NewLayerDistancePolicy(const PolicyOptions& options);
// Fails when options.future is missing or does not match the model's shape.
absl::StatusOr<std::unique_ptr<EvictionPolicy>> NewBeladyPolicy(const PolicyOptions& options);

}  // namespace expertd::cache::policies

#endif  // EXPERTD_CACHE_POLICIES_POLICIES_H_
