// A loaded model owns its weights: its safetensors files truncated or
// rewritten under it can neither crash it (SIGBUS through a mapping) nor
// change what it computes, and a file that is short or changes while it is
// being loaded fails the load with an error naming it.

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cache/expert_cache.h"
#include "model/checkpoint.h"
#include "engine/expert_packer.h"
#include "engine/expert_source.h"
#include "engine/forward.h"
#include "model/model.h"
#include "formats/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/all_logits.h"
#include "io/expert_file.h"
#include "tests/testing/packed_experts.h"
#include "tests/testing/test_models.h"

namespace expertd::engine {
namespace {

namespace fs = std::filesystem;
using ::expertd::testing::MakeTestModel;
using ::expertd::testing::ScopedTempDir;
using ::testing::HasSubstr;

const std::vector<int32_t> kTokens = {5, 17, 260, 99, 3, 42, 42, 1, 300, 77};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Logits of every position of kTokens, computed from scratch.
std::vector<float> Logits(const model::Model& model, ExpertSource* experts = nullptr) {
  return testing::AllPositionLogits(model, kTokens, experts);
}

// Bit-identical, NaNs included (EXPECT_EQ on floats would not say so).
bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// What someone editing the file in place does: every byte after the header
// becomes 0x7f (a large finite value in f32, bf16 and f16 alike), then the
// file is cut to half its size. Nothing is renamed: the inode stays the one
// the model was loaded from.
void DamageInPlace(const std::string& path) {
  const std::string bytes = ReadAll(path);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t header_length = 0;
  std::memcpy(&header_length, bytes.data(), 8);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  const std::string garbage(bytes.size() - 8 - header_length, '\x7f');
  EXPECT_EQ(::pwrite(fd, garbage.data(), garbage.size(), static_cast<off_t>(8 + header_length)),
            static_cast<ssize_t>(garbage.size()));
  EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(bytes.size() / 2)), 0);
  ::close(fd);
}

// Mappings of the process that name `path` (from /proc/self/maps).
std::vector<std::string> MappingsOf(const std::string& path) {
  const std::string canonical = fs::canonical(path).string();
  std::ifstream maps("/proc/self/maps");
  std::vector<std::string> found;
  for (std::string line; std::getline(maps, line);) {
    if (line.find(canonical) != std::string::npos) found.push_back(line);
  }
  return found;
}

class ModelFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    tools::MakeModelOptions o = testing::SmallOffloadModel("qwen2_moe", "bf16");
    model_dir_ = MakeTestModel(dir_, "model", o);
    weights_path_ = model_dir_ + "/model.safetensors";
  }

  ScopedTempDir dir_{"model_files"};
  std::string model_dir_;
  std::string weights_path_;
};

TEST_F(ModelFiles, TruncatedAndOverwrittenWeightsChangeNothing) {
  auto model = model::Model::Load(model_dir_);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<float> before = Logits(**model);
  ASSERT_FALSE(before.empty());

  DamageInPlace(weights_path_);
  // Through a mapping the next step would read 0x7f weights, or die of
  // SIGBUS on a page past the new end of the file.
  EXPECT_TRUE(SameBits(Logits(**model), before));
}

TEST_F(ModelFiles, NoMappingOfTheWeightsOutlivesTheLoad) {
  auto model = model::Model::Load(model_dir_);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_THAT(MappingsOf(weights_path_), ::testing::IsEmpty());
}

TEST_F(ModelFiles, ChecksumCoversEveryByteOfAFullyLoadedFile) {
  auto config = model::LoadModelConfig(model_dir_ + "/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  auto checkpoint = model::Checkpoint::Open(model_dir_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  std::vector<model::Checkpoint::FileReadStats> stats;
  auto weights = model::ModelWeights::Load(**checkpoint, *config, {}, &stats);
  ASSERT_TRUE(weights.ok()) << weights.status();
  ASSERT_EQ(stats.size(), 1u);
  // mkmodel writes only tensors the model uses, with no gaps: the load reads
  // the whole file, so its checksum is the file's.
  const std::string bytes = ReadAll(weights_path_);
  EXPECT_EQ(stats[0].path, weights_path_);
  EXPECT_EQ(stats[0].file_bytes, bytes.size());
  EXPECT_EQ(stats[0].read_bytes, bytes.size());
  EXPECT_EQ(stats[0].xxh64, io::Xxh64(absl::MakeConstSpan(reinterpret_cast<const std::byte*>(bytes.data()),
                                                          bytes.size())));
}

TEST_F(ModelFiles, ShortFileAtLoadIsAnErrorNamingIt) {
  const std::string bytes = ReadAll(weights_path_);
  std::ofstream(weights_path_, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() / 2);
  auto model = model::Model::Load(model_dir_);
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(), HasSubstr(weights_path_));
  EXPECT_THAT(model.status().message(), HasSubstr("truncated"));
}

// Open validated the header against the size it saw; a file cut after that
// is found by the read, never by a signal.
TEST_F(ModelFiles, FileCutAfterOpenFailsTheReadNamingIt) {
  auto file = formats::SafetensorsFile::Open(weights_path_);
  ASSERT_TRUE(file.ok()) << file.status();
  const formats::TensorInfo* last = nullptr;
  for (const auto& [name, tensor] : (*file)->tensors()) {
    if (last == nullptr || tensor.offset > last->offset) last = &tensor;
  }
  ASSERT_NE(last, nullptr);
  ASSERT_EQ(::truncate(weights_path_.c_str(), static_cast<off_t>(last->offset + 1)), 0);
  std::vector<std::byte> out(last->size_bytes);
  const absl::Status status = (*file)->Read(*last, out.data());
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(status.message(), HasSubstr(weights_path_));
  EXPECT_THAT(status.message(), HasSubstr("unexpected end of file"));
}

TEST_F(ModelFiles, FileChangedDuringTheLoadFailsIt) {
  auto config = model::LoadModelConfig(model_dir_ + "/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  auto checkpoint = model::Checkpoint::Open(model_dir_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  // Between Open and the reads, someone appends to the file: every tensor is
  // still readable, but the bytes may be of a newer version.
  std::ofstream(weights_path_, std::ios::binary | std::ios::app) << "more";
  const absl::Status status = model::ModelWeights::Load(**checkpoint, *config).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
  EXPECT_THAT(status.message(), HasSubstr(weights_path_));
  EXPECT_THAT(status.message(), HasSubstr("changed while it was being read"));
}

// Loaded for offloading, a model holds its dense weights only; the packer
// reads the experts from the files, and the result is the same packed file
// and the same logits as with every expert resident, also after the
// safetensors file is damaged.
TEST_F(ModelFiles, WithoutResidentExpertsPacksAndRunsTheSame) {
  auto resident = model::Model::Load(model_dir_);
  ASSERT_TRUE(resident.ok()) << resident.status();
  auto dense_only = model::Model::Load(model_dir_, {.resident_experts = false});
  ASSERT_TRUE(dense_only.ok()) << dense_only.status();
  EXPECT_FALSE((*dense_only)->resident_experts());
  EXPECT_EQ((*dense_only)->fingerprint(), (*resident)->fingerprint());
  EXPECT_LT((*dense_only)->weights().storage.size(), (*resident)->weights().storage.size());
  const model::LayerWeights& layer = (*dense_only)->weights().layers[0];
  ASSERT_TRUE(layer.is_moe);
  EXPECT_EQ(layer.experts[0].gate.data, nullptr);
  EXPECT_EQ(layer.experts[0].gate.rows, (*resident)->weights().layers[0].experts[0].gate.rows);
  EXPECT_NE(layer.router.data, nullptr);

  const std::string from_resident = dir_.Sub("resident.experts");
  ASSERT_TRUE(PackExperts(**resident, from_resident, std::nullopt).ok());
  const std::string from_files = dir_.Sub("dense_only.experts");
  testing::PackedExperts packed = testing::PackAndOpenExperts(**dense_only, from_files);
  ASSERT_TRUE(packed.file && packed.reader);
  EXPECT_EQ(ReadAll(from_files), ReadAll(from_resident));

  cache::ExpertCacheOptions options;
  options.dram_budget_bytes = 6 * packed.file->layout().slot_bytes();
  options.min_slots = 4;
  auto cache = cache::ExpertCache::Create(*packed.file, *packed.reader, std::move(options));
  ASSERT_TRUE(cache.ok()) << cache.status();
  CachedExperts experts(**cache, *packed.file);
  const std::vector<float> expected = Logits(**resident);
  EXPECT_TRUE(SameBits(Logits(**dense_only, &experts), expected));

  DamageInPlace(weights_path_);
  EXPECT_TRUE(SameBits(Logits(**dense_only, &experts), expected));
  EXPECT_TRUE(SameBits(Logits(**resident), expected));
  // Experts read now would not belong with the dense weights in memory.
  const absl::Status repack = PackExperts(**dense_only, dir_.Sub("again.experts"), std::nullopt);
  EXPECT_FALSE(repack.ok());
  EXPECT_THAT(repack.message(), HasSubstr(model_dir_));
}

TEST_F(ModelFiles, AModelWithoutItsExpertsRunWithoutACacheIsAnErrorNotACrash) {
  auto dense_only = model::Model::Load(model_dir_, {.resident_experts = false});
  ASSERT_TRUE(dense_only.ok()) << dense_only.status();
  ForwardPass forward(**dense_only, nullptr);
  KvCache kv((*dense_only)->config(), 16);
  std::vector<float> logits;
  const absl::Status status = forward.Run(std::vector<int32_t>{1, 2, 3}, kv, {}, &logits);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr("loaded without its experts"));
}

}  // namespace
}  // namespace expertd::engine
