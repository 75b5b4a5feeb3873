#include "model/model.h"

#include <algorithm>
#include <filesystem>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/read_file.h"
#include "absl/strings/match.h"
#include "base/status_macros.h"
#include "model/gguf_model_config.h"
#include "model/gguf_tensor_source.h"
#include "model/gguf_tokenizer.h"
#include "formats/gguf_file.h"
#include "io/expert_file.h"
#include "spdlog/spdlog.h"

namespace expertd::model {

namespace {

// The shards' part of the fingerprint (Model::fingerprint): each one's size
// and header, then 16 windows of 4 KiB sampled across it. Fine-tunes share
// config and headers; the windows tell them apart for the cost of 16 reads.
absl::StatusOr<std::string> ShardsIdentity(const Checkpoint& checkpoint) {
  constexpr size_t kWindows = 16, kWindowBytes = 4096;
  std::string identity;
  std::string window(kWindowBytes, '\0');
  for (const auto& shard : checkpoint.files()) {
    absl::StrAppend(&identity, "|", shard->file_size(), "|", shard->header_json());
    const uint64_t size = shard->file_size();
    for (size_t w = 0; w < kWindows && size >= kWindowBytes; ++w) {
      const uint64_t at = (size - kWindowBytes) / (kWindows - 1) * w;
      RETURN_IF_ERROR(shard->ReadAt(at, absl::MakeSpan(reinterpret_cast<std::byte*>(window.data()), kWindowBytes)));
      identity += window;
    }
  }
  return identity;
}

// A GGUF file's part of the fingerprint: its size, every byte before the
// tensor data (header, metadata, tensor infos: the vocabulary and
// hyperparameters), then 16 windows of 4 KiB sampled across the file.
std::string GgufIdentity(const formats::GgufFile& file) {
  constexpr size_t kWindows = 16, kWindowBytes = 4096;
  const absl::Span<const std::byte> bytes = file.bytes();
  std::string identity = absl::StrCat("gguf|", bytes.size(), "|");
  const auto append = [&](uint64_t at, uint64_t size) {
    identity.append(reinterpret_cast<const char*>(bytes.data() + at), size);
  };
  append(0, std::min<uint64_t>(file.data_offset(), bytes.size()));
  const uint64_t size = bytes.size();
  for (size_t w = 0; w < kWindows && size >= kWindowBytes; ++w) append((size - kWindowBytes) / (kWindows - 1) * w, kWindowBytes);
  return identity;
}

uint64_t Xxh64Of(absl::string_view text) {
  return io::Xxh64(absl::MakeConstSpan(reinterpret_cast<const std::byte*>(text.data()), text.size()));
}

// One line per file a load read: how much, how fast, and the XXH64 of the
// bytes read (FileReadStats).
void LogReads(const std::vector<FileReadStats>& read_stats) {
  for (const FileReadStats& file : read_stats) {
    constexpr double kMiB = 1 << 20;
    const uint64_t loaded = file.read_bytes + file.mapped_bytes;
    spdlog::info("{}: read {:.1f} MiB{} of {:.1f} MiB in {:.3f} s ({:.0f} MiB/s), xxh64 of the bytes read {:016x}",
                 file.path, file.read_bytes / kMiB,
                 file.mapped_bytes > 0 ? fmt::format(" and mapped {:.1f} MiB (pages faulted in)", file.mapped_bytes / kMiB)
                                       : std::string(),
                 file.file_bytes / kMiB, file.seconds, loaded / kMiB / std::max(file.seconds, 1e-9), file.xxh64);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> Model::LoadTokenizer(const std::string& model_path) {
  if (!IsGgufPath(model_path)) {
    return tokenizer::Tokenizer::FromFile((std::filesystem::path(model_path) / "tokenizer.json").string());
  }
  ASSIGN_OR_RETURN(std::unique_ptr<formats::GgufFile> file, formats::GgufFile::Open(model_path));
  return TokenizerFromGguf(*file);
}

bool Model::IsGgufPath(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}

std::string Model::DefaultExpertFilePath() const {
  if (!is_gguf_) return dir_ + "/model.experts";
  if (absl::EndsWith(dir_, ".gguf")) return dir_.substr(0, dir_.size() - 5) + ".experts";
  return dir_ + ".experts";
}

absl::StatusOr<std::unique_ptr<Model>> Model::LoadGguf(const std::string& path, const WeightLoadOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<formats::GgufFile> opened, formats::GgufFile::Open(path));
  std::shared_ptr<const formats::GgufFile> file = std::move(opened);
  auto model = std::unique_ptr<Model>(new Model());
  model->dir_ = path;
  model->is_gguf_ = true;
  model->resident_experts_ = options.resident_experts;
  ASSIGN_OR_RETURN(model->config_, ModelConfigFromGguf(*file));
  ASSIGN_OR_RETURN(model->tokenizer_, TokenizerFromGguf(*file));
  if (model->tokenizer_->vocab_size() > model->config_.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the vocabulary has ids up to ",
                                                   model->tokenizer_->vocab_size() - 1, " but the model's vocab_size is ",
                                                   model->config_.vocab_size));
  }
  const std::string identity = GgufIdentity(*file);
  GgufTensorSource source(file, model->config_);
  std::vector<FileReadStats> read_stats;
  ASSIGN_OR_RETURN(model->weights_, ModelWeights::Load(source, model->config_, options, &read_stats));
  LogReads(read_stats);
  model->shards_identity_ = Xxh64Of(identity);
  model->fingerprint_ = model->shards_identity_;
  // The file stays mapped only while mapped weights point into it.
  return model;
}

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& model_dir, const WeightLoadOptions& options) {
  namespace fs = std::filesystem;
  if (IsGgufPath(model_dir)) return LoadGguf(model_dir, options);
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) {
    return absl::NotFoundError(absl::StrCat("model directory ", model_dir, " does not exist"));
  }
  auto model = std::unique_ptr<Model>(new Model());
  model->dir_ = model_dir;
  model->resident_experts_ = options.resident_experts;
  const std::string config_path = (fs::path(model_dir) / "config.json").string();
  // Read once: the same bytes are parsed and go into the fingerprint.
  ASSIGN_OR_RETURN(std::string config_text, ReadFileCapped(config_path, kMaxConfigJsonBytes, "config.json"));
  ASSIGN_OR_RETURN(model->config_, ParseModelConfig(config_text, config_path));
  // The checkpoint lives until Load returns: nothing of it outlasts the copy.
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, Checkpoint::Open(model_dir));
  // Sampled before the weights are read, so that ReadTensors' check that no
  // shard changed covers these reads too.
  ASSIGN_OR_RETURN(const std::string shards_identity, ShardsIdentity(*checkpoint));
  std::vector<FileReadStats> read_stats;
  ASSIGN_OR_RETURN(model->weights_, ModelWeights::Load(*checkpoint, model->config_, options, &read_stats));
  LogReads(read_stats);
  ASSIGN_OR_RETURN(model->tokenizer_, tokenizer::Tokenizer::FromFile((fs::path(model_dir) / "tokenizer.json").string()));
  if (model->tokenizer_->vocab_size() > model->config_.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        model_dir, ": tokenizer.json has ids up to ", model->tokenizer_->vocab_size() - 1,
        " but config.json vocab_size is ", model->config_.vocab_size));
  }
  model->shards_identity_ = Xxh64Of(shards_identity);
  model->fingerprint_ = Xxh64Of(config_text + shards_identity);
  return model;
}

absl::StatusOr<std::unique_ptr<TensorSource>> Model::ReopenTensorSource() const {
  if (!is_gguf_) {
    ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, ReopenCheckpoint());
    return std::make_unique<CheckpointTensorSource>(std::move(checkpoint));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<formats::GgufFile> file, formats::GgufFile::Open(dir_));
  if (Xxh64Of(GgufIdentity(*file)) != shards_identity_) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir_, " changed since the model was loaded; restart to load it again"));
  }
  return std::make_unique<GgufTensorSource>(std::move(file), config_);
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Model::ReopenCheckpoint() const {
  if (is_gguf_) {
    return absl::FailedPreconditionError(absl::StrCat(dir_, " is a GGUF file, not a checkpoint directory"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, Checkpoint::Open(dir_));
  ASSIGN_OR_RETURN(const std::string shards_identity, ShardsIdentity(*checkpoint));
  if (Xxh64Of(shards_identity) != shards_identity_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the safetensors files of ", dir_, " changed since the model was loaded; restart to load them again"));
  }
  return checkpoint;
}

std::optional<int32_t> Model::eos_id() const {
  if (auto id = tokenizer_->eos_id()) return id;
  if (config_.eos_token_id) return *config_.eos_token_id;
  return std::nullopt;
}

}  // namespace expertd::model
