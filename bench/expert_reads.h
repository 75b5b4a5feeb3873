#ifndef EXPERTD_BENCH_EXPERT_READS_H_
#define EXPERTD_BENCH_EXPERT_READS_H_

// How fast an expert reader delivers whole experts: the file's read
// bandwidth as the cache sees it (random experts, O_DIRECT, many in flight).
// io_bench compares it with fio; decode_bench divides it by the bytes an
// offloaded token must read to get the run's I/O ceiling.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "io/aligned_buffer.h"
#include "io/expert_file.h"
#include "io/expert_reader.h"

namespace expertd::bench {

// One read: an expert's place in the file, its length rounded up to 4 KiB
// for O_DIRECT.
struct ExpertRead {
  uint64_t offset = 0;
  uint64_t length = 0;
};

// Every expert of a packed file, each read as one slot (as the cache reads
// them).
std::vector<ExpertRead> SlotReads(const io::ExpertFile& file);

// Grows `buffers` to at least `count` page-aligned buffers of `bytes` each
// (one per read in flight).
absl::Status GrowReadBuffers(std::vector<io::AlignedBuffer>& buffers, size_t count, uint64_t bytes);

// Keeps `buffers.size()` experts in flight (each buffer at least the
// longest read), each completion submitting the next random expert into the
// buffer it freed, for `seconds`. Bytes per second; on a failed read,
// *error says which and the figure counts what was read before it.
double MeasureExpertReads(io::ExpertReader& reader, const std::vector<ExpertRead>& reads,
                          std::vector<io::AlignedBuffer>& buffers, double seconds, std::string* error);

// One MoE layer's misses as decode must read them: `batch` distinct random
// experts of one random layer (`reads` holds `experts_per_layer` consecutive
// entries per layer, as SlotReads makes them), submitted together and waited
// for together, batch after batch, for about `seconds` and at least
// `min_batches` times. Mean seconds per batch. Without speculation a layer
// cannot route before the layer below it has run, so its misses are such a
// batch: on a disk whose reads are latency-bound this is far from
// batch x bytes / the bandwidth MeasureExpertReads gives. buffers.size() >=
// batch, and batch <= experts_per_layer.
double MeasureBatchSeconds(io::ExpertReader& reader, const std::vector<ExpertRead>& reads, int experts_per_layer,
                           std::vector<io::AlignedBuffer>& buffers, int batch, double seconds, int min_batches,
                           std::string* error);

}  // namespace expertd::bench

#endif  // EXPERTD_BENCH_EXPERT_READS_H_
