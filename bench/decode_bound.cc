#include "bench/decode_bound.h"

#include <algorithm>

namespace expertd::bench {

double NoSpeculationBoundTokensPerSecond(const std::map<uint64_t, int64_t>& layers_by_misses, double resident_tps,
                                         int moe_layers, double pre_routing_share,
                                         const std::function<double(int)>& batch_seconds) {
  if (resident_tps <= 0 || moe_layers <= 0) return 0.0;
  const double layer_seconds = 1.0 / resident_tps / moe_layers;
  double seconds = 0;
  int64_t layers = 0;
  for (const auto& [misses, count] : layers_by_misses) {
    const double reads =
        misses == 0 ? 0.0 : pre_routing_share * layer_seconds + batch_seconds(static_cast<int>(misses));
    seconds += static_cast<double>(count) * std::max(layer_seconds, reads);
    layers += count;
  }
  return seconds > 0 ? static_cast<double>(layers) / moe_layers / seconds : 0.0;
}

}  // namespace expertd::bench
