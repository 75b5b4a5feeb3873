#include "bench/bench_models.h"

#include <cstdio>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tools/mkmodel/make_model.h"

namespace expertd::bench {
namespace {

struct Shape {
  const char* name;
  const char* dir;  // under the temp directory
  tools::MakeModelOptions options;
};

tools::MakeModelOptions Olmoe(int layers, int vocab, bool norm_topk_prob) {
  tools::MakeModelOptions o;
  o.arch = "olmoe";
  o.layers = layers;
  o.hidden = 2048;
  o.experts = 64;
  o.top_k = 8;
  o.ffn = 1024;
  o.heads = 16;
  o.kv_heads = 16;
  o.vocab = vocab;
  o.dtype = "bf16";
  o.norm_topk_prob = norm_topk_prob;
  return o;
}

tools::MakeModelOptions Qwen3Moe() {
  tools::MakeModelOptions o;
  o.arch = "qwen3_moe";
  o.layers = 8;
  o.hidden = 2048;
  o.experts = 128;
  o.top_k = 8;
  o.ffn = 768;
  o.heads = 32;
  o.kv_heads = 4;
  o.head_dim = 128;
  o.vocab = 151936;
  o.max_position = 40960;
  o.dtype = "bf16";
  return o;
}

tools::MakeModelOptions Mixtral() {
  tools::MakeModelOptions o;
  o.arch = "mixtral";
  o.layers = 2;
  o.hidden = 4096;
  o.experts = 8;
  o.top_k = 2;
  o.ffn = 14336;
  o.heads = 32;
  o.kv_heads = 8;
  o.vocab = 32000;
  o.max_position = 32768;
  o.dtype = "bf16";
  return o;
}

// gpt-oss-20b's shape at 8 of its 24 layers: 32 experts of width 2880,
// top-4, MXFP4 experts as the released checkpoint ships them, sliding
// windows of 128 on alternate layers, vocabulary 201088 (6.1 GB).
tools::MakeModelOptions GptOss20b() {
  tools::MakeModelOptions o;
  o.arch = "gpt_oss";
  o.layers = 8;
  o.hidden = 2880;
  o.experts = 32;
  o.top_k = 4;
  o.ffn = 2880;
  o.heads = 64;
  o.kv_heads = 8;
  o.head_dim = 64;
  o.vocab = 201088;
  o.max_position = 131072;
  o.dtype = "bf16";
  o.sliding_window = 128;
  o.swiglu_limit = 7.0f;
  o.yarn_factor = 32.0f;
  o.yarn_original_max_position = 4096;
  o.mxfp4_experts = true;
  return o;
}

// A narrow OLMoE-like model for the roster bench: eight layers so that a
// roster has several perturbable ones, small enough to run many
// configurations in a minute.
tools::MakeModelOptions RosterOlmoe() {
  tools::MakeModelOptions o;
  o.arch = "olmoe";
  o.layers = 8;
  o.hidden = 512;
  o.experts = 32;
  o.top_k = 4;
  o.ffn = 512;
  o.heads = 8;
  o.kv_heads = 8;
  o.vocab = 2048;
  o.dtype = "bf16";
  o.norm_topk_prob = false;
  return o;
}

const Shape* Shapes(size_t* count) {
  // OLMoE does not normalise its top-k weights (norm_topk_prob false); the
  // small model keeps the setting it was first made with, so its cached
  // copies stay valid.
  static const Shape kShapes[] = {
      {"olmoe-1b-7b", "expertd-bench-olmoe-1b-7b", Olmoe(16, 50304, false)},
      {"small", "expertd-bench-olmoe", Olmoe(4, 4096, true)},
      {"qwen3-30b-a3b-8l", "expertd-bench-qwen3-30b-a3b-8l", Qwen3Moe()},
      {"mixtral-8x7b-2l", "expertd-bench-mixtral-8x7b-2l", Mixtral()},
      {"gpt-oss-20b-8l", "expertd-bench-gpt-oss-20b-8l", GptOss20b()},
      {"roster-8l", "expertd-roster-bench-model", RosterOlmoe()},
  };
  *count = sizeof(kShapes) / sizeof(kShapes[0]);
  return kShapes;
}

}  // namespace

std::string BenchModelShapesHelp() {
  size_t count = 0;
  const Shape* shapes = Shapes(&count);
  std::vector<std::string> names;
  for (size_t i = 0; i < count; ++i) names.push_back(shapes[i].name);
  return absl::StrCat("bench model shape without --model: ", absl::StrJoin(names, " | "));
}

absl::StatusOr<std::string> BenchModel(const std::string& shape) {
  size_t count = 0;
  const Shape* shapes = Shapes(&count);
  for (size_t i = 0; i < count; ++i) {
    if (shape != shapes[i].name) continue;
    const std::string dir = (std::filesystem::temp_directory_path() / shapes[i].dir).string();
    if (!std::filesystem::exists(dir + "/model.safetensors")) {
      std::printf("generating the %s bench model in %s ...\n", shapes[i].name, dir.c_str());
      std::fflush(stdout);
      if (absl::Status s = tools::MakeModel(shapes[i].options, dir); !s.ok()) return s;
    }
    return dir;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown bench model shape '", shape, "'; ", BenchModelShapesHelp()));
}

}  // namespace expertd::bench
