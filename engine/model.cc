#include "engine/model.h"

#include <filesystem>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/read_file.h"
#include "base/status_macros.h"
#include "io/expert_file.h"

namespace expertd {

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) {
    return absl::NotFoundError(absl::StrCat("model directory ", model_dir, " does not exist"));
  }
  auto model = std::unique_ptr<Model>(new Model());
  const std::string config_path = (fs::path(model_dir) / "config.json").string();
  // Read once: the same bytes are parsed and go into the fingerprint.
  ASSIGN_OR_RETURN(std::string config_text, ReadFileCapped(config_path, kMaxConfigJsonBytes, "config.json"));
  ASSIGN_OR_RETURN(model->config_, ParseModelConfig(config_text, config_path));
  ASSIGN_OR_RETURN(model->checkpoint_, Checkpoint::Open(model_dir));
  ASSIGN_OR_RETURN(model->weights_, ModelWeights::Load(*model->checkpoint_, model->config_));
  ASSIGN_OR_RETURN(model->tokenizer_, Tokenizer::FromFile((fs::path(model_dir) / "tokenizer.json").string()));
  if (model->tokenizer_->vocab_size() > model->config_.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        model_dir, ": tokenizer.json has ids up to ", model->tokenizer_->vocab_size() - 1,
        " but config.json vocab_size is ", model->config_.vocab_size));
  }
  std::string identity = std::move(config_text);
  for (const auto& shard : model->checkpoint_->files()) {
    absl::StrAppend(&identity, "|", shard->file_size(), "|", shard->header_json());
    // Fine-tunes share config and headers; 16 sampled 4 KiB windows of the
    // weights tell them apart for the cost of 16 page reads.
    const absl::string_view bytes = shard->file_bytes();
    constexpr size_t kWindows = 16, kWindowBytes = 4096;
    for (size_t w = 0; w < kWindows && bytes.size() >= kWindowBytes; ++w) {
      const size_t at = (bytes.size() - kWindowBytes) / (kWindows - 1) * w;
      absl::StrAppend(&identity, bytes.substr(at, kWindowBytes));
    }
  }
  model->fingerprint_ = io::Xxh64(absl::MakeConstSpan(reinterpret_cast<const std::byte*>(identity.data()), identity.size()));
  return model;
}

std::optional<int32_t> Model::eos_id() const {
  if (auto id = tokenizer_->eos_id()) return id;
  if (config_.eos_token_id) return *config_.eos_token_id;
  return std::nullopt;
}

}  // namespace expertd
