// Writes the binary seeds of fuzz/corpus/ with the project's own writers, so
// each is a valid file of its format: safetensors (WriteSafetensors), packed
// expert files (ExpertFileWriter) and tokenizers (mkmodel's, one per
// tokenizer family). Same bytes every run.
//
//   make_fuzz_seeds fuzz/corpus

#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "formats/safetensors.h"
#include "io/expert_file.h"
#include "tools/mkmodel/make_model.h"

namespace {

namespace fs = std::filesystem;
using expertd::formats::SafetensorsDtype;

std::vector<std::byte> Bytes(size_t n) {
  std::vector<std::byte> bytes(n);
  for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<std::byte>(i * 37 + 11);
  return bytes;
}

absl::Status Safetensors(const fs::path& dir) {
  fs::create_directories(dir);
  absl::Status s = expertd::formats::WriteSafetensors(
      (dir / "three_dtypes.safetensors").string(),
      {{"model.embed.weight", SafetensorsDtype::kF32, {2, 3}, Bytes(24)},
       {"model.norm.weight", SafetensorsDtype::kBF16, {4}, Bytes(8)},
       {"step", SafetensorsDtype::kI64, {}, Bytes(8)}},
      {{"format", "pt"}});
  if (!s.ok()) return s;
  s = expertd::formats::WriteSafetensors((dir / "metadata_only.safetensors").string(), {}, {{"format", "pt"}});
  if (!s.ok()) return s;
  return expertd::formats::WriteSafetensors((dir / "empty_and_bool.safetensors").string(),
                                   {{"empty", SafetensorsDtype::kF16, {0, 5}, {}},
                                    {"mask", SafetensorsDtype::kBool, {3}, Bytes(3)},
                                    {"zz", SafetensorsDtype::kU8, {1, 1, 2}, Bytes(2)}});
}

// A packed file with `bundles` as (layer, expert), added in that order, in
// the layout's (slot's) dtypes unless `dtypes_of` gives an expert its own.
absl::Status ExpertFile(
    const fs::path& path, expertd::io::ExpertFileLayout layout, const std::vector<std::pair<int, int>>& bundles,
    const std::function<expertd::io::BundleDtypes(int layer, int expert)>& dtypes_of = nullptr) {
  fs::create_directories(path.parent_path());
  auto writer = expertd::io::ExpertFileWriter::Create(path.string(), layout);
  if (!writer.ok()) return writer.status();
  for (const auto& [layer, expert] : bundles) {
    const expertd::io::BundleDtypes dtypes = dtypes_of ? dtypes_of(layer, expert) : layout.dtypes;
    const uint64_t bytes = expertd::io::ExpertBundleLayout(dtypes, layout.hidden_size, layout.intermediate_size).bytes;
    if (absl::Status s = (*writer)->Add(layer, expert, dtypes, Bytes(bytes)); !s.ok()) return s;
  }
  return (*writer)->Finish();
}

absl::Status ExpertFiles(const fs::path& dir) {
  expertd::io::ExpertFileLayout one;
  one.model_fingerprint = 0x0123456789abcdef;
  one.dtypes = expertd::io::BundleDtypes::Uniform(expertd::DType::kF32);
  one.num_layers = 1;
  one.num_experts = 1;
  one.hidden_size = 1;
  one.intermediate_size = 1;
  if (absl::Status s = ExpertFile(dir / "one_expert.experts", one, {{0, 0}}); !s.ok()) return s;
  // A dense first layer (no entries), an absent expert, bundles out of order.
  expertd::io::ExpertFileLayout sparse = one;
  sparse.dtypes = expertd::io::BundleDtypes::Uniform(expertd::DType::kBF16);
  sparse.num_layers = 2;
  sparse.num_experts = 3;
  sparse.hidden_size = 2;
  sparse.intermediate_size = 3;
  if (absl::Status s = ExpertFile(dir / "dense_layer_and_gaps.experts", sparse, {{1, 2}, {1, 0}}); !s.ok()) return s;
  // Version 2's own dtypes per bundle, Q4_K_M-like: a q8_0/q8_0/q4_0 slot,
  // layer 0's experts in it, layer 1's q4_0 throughout (a smaller bundle
  // than the slot). 32 wide: one block per row.
  expertd::io::ExpertFileLayout mixed = one;
  mixed.dtypes = {expertd::DType::kQ8_0, expertd::DType::kQ8_0, expertd::DType::kQ4_0};
  mixed.num_layers = 2;
  mixed.num_experts = 2;
  mixed.hidden_size = 32;
  mixed.intermediate_size = 32;
  return ExpertFile(dir / "mixed_dtypes.experts", mixed, {{0, 0}, {1, 1}, {0, 1}, {1, 0}}, [&](int layer, int) {
    return layer == 0 ? mixed.dtypes : expertd::io::BundleDtypes::Uniform(expertd::DType::kQ4_0);
  });
}

// tokenizer.json, a NUL, tokenizer_config.json: the input format of
// tokenizer_json_fuzz.
absl::Status Tokenizers(const fs::path& dir, const fs::path& scratch) {
  fs::create_directories(dir);
  for (const char* arch : {"olmoe", "qwen3_moe", "mixtral"}) {
    expertd::tools::MakeModelOptions options;
    options.arch = arch;
    options.layers = 1;
    options.vocab = 300;
    const fs::path model_dir = scratch / arch;
    if (absl::Status s = expertd::tools::MakeModel(options, model_dir.string()); !s.ok()) return s;
    auto read = [](const fs::path& path) {
      std::ifstream in(path, std::ios::binary);
      return std::string(std::istreambuf_iterator<char>(in), {});
    };
    std::ofstream out(dir / absl::StrCat("mkmodel_", arch, ".json"), std::ios::binary);
    out << read(model_dir / "tokenizer.json") << '\0' << read(model_dir / "tokenizer_config.json");
    if (!out) return absl::DataLossError(absl::StrCat("cannot write the ", arch, " tokenizer seed"));
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_fuzz_seeds CORPUS_DIR (fuzz/corpus)\n");
    return 2;
  }
  const fs::path corpus = argv[1];
  const fs::path scratch = fs::temp_directory_path() / "expertd-fuzz-seeds";
  absl::Status s = Safetensors(corpus / "safetensors_header_fuzz");
  if (s.ok()) s = ExpertFiles(corpus / "expert_file_fuzz");
  if (s.ok()) s = Tokenizers(corpus / "tokenizer_json_fuzz", scratch);
  fs::remove_all(scratch);
  if (!s.ok()) {
    std::fprintf(stderr, "make_fuzz_seeds: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
