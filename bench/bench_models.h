#ifndef EXPERTD_BENCH_BENCH_MODELS_H_
#define EXPERTD_BENCH_BENCH_MODELS_H_

// The random-weight models the benchmarks run when given no --model: real
// families' shapes, made once by mkmodel in the temp directory and reused.
//   olmoe-1b-7b      OLMoE-1B-7B's shape: 16 layers, hidden 2048, 64 experts
//                    top-8, ffn 1024, 16 heads, vocab 50304 (13.8 GB bf16)
//   small            the same layers, 4 of them, vocab 4096 (3.4 GB): quick
//   qwen3-30b-a3b-8l Qwen3-30B-A3B's layers, 8 of its 48: hidden 2048, 128
//                    experts top-8, ffn 768, 32 heads / 4 KV heads of 128,
//                    vocab 151936 (11 GB)
//   mixtral-8x7b-2l  Mixtral-8x7B's layers, 2 of its 32: hidden 4096, 8
//                    experts top-2, ffn 14336, 32 heads / 8 KV, vocab 32000
//                    (6.2 GB)
//   roster-8l        narrow OLMoE-like: 8 layers, hidden 512, 32 experts
//                    top-4, ffn 512, vocab 2048 (roster_bench's default)

#include <string>

#include "absl/status/statusor.h"

namespace expertd::bench {

// The directory of the bench model of `shape`, generating it first when it
// is not there yet (with a line on stdout: it takes a while).
absl::StatusOr<std::string> BenchModel(const std::string& shape);

// "olmoe-1b-7b | small | ...", for a flag's help.
std::string BenchModelShapesHelp();

}  // namespace expertd::bench

#endif  // EXPERTD_BENCH_BENCH_MODELS_H_
