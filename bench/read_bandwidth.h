#ifndef EXPERTD_BENCH_READ_BANDWIDTH_H_
#define EXPERTD_BENCH_READ_BANDWIDTH_H_

#include <cstdint>

#include "kernels/cpu/thread_pool.h"

namespace expertd::bench {

// The machine's plain memory-read bandwidth in bytes per second: the best of
// `repeats` passes summing a buffer of `bytes` (far larger than the caches)
// split over the pool's threads. This is the ceiling for a decode step,
// which streams every weight it touches once.
double MeasureReadBandwidth(kernels::ThreadPool& pool, int64_t bytes = int64_t{1} << 30, int repeats = 5);

}  // namespace expertd::bench

#endif  // EXPERTD_BENCH_READ_BANDWIDTH_H_
