#ifndef EXPERTD_BENCH_DECODE_BOUND_H_
#define EXPERTD_BENCH_DECODE_BOUND_H_

// The fastest offloaded decode any engine could reach at a run's misses
// without speculating, for decode_bench's "bound" column (issue 16).
//
// A layer routes only once the layer below it has run, so without
// speculation its misses are one batch of reads that starts after the
// layer's attention and router: the layer ends no sooner than those plus the
// batch (`batch_seconds(misses)`, measured on the same file as
// MeasureBatchSeconds measures it), nor sooner than its all-resident share of
// a token's compute. Summed over a run's decode layers this bounds its
// tokens/s from above. Where the bound is below the goal's 0.8 x min(all
// resident, I/O ceiling), the disk's read latency, not the engine, keeps the
// goal out of reach: the ceiling assumes reads as deep as the file allows,
// which layer-by-layer routing cannot issue.

#include <cstdint>
#include <functional>
#include <map>

namespace expertd::bench {

// layers_by_misses: a run's decode MoE layers by how many misses each had
// (misses -> layers); resident_tps: the all-resident decode speed;
// pre_routing_share: of an all-resident layer's time, the share before its
// routing is known. Tokens per second; 0 when no layer was counted.
double NoSpeculationBoundTokensPerSecond(const std::map<uint64_t, int64_t>& layers_by_misses, double resident_tps,
                                         int moe_layers, double pre_routing_share,
                                         const std::function<double(int)>& batch_seconds);

}  // namespace expertd::bench

#endif  // EXPERTD_BENCH_DECODE_BOUND_H_
