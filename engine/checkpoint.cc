#include "engine/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace expertd {
namespace fs = std::filesystem;

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& model_dir) {
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) {
    return absl::NotFoundError(absl::StrCat("model directory ", model_dir, " does not exist"));
  }
  std::vector<std::string> shard_names;
  const fs::path index_path = fs::path(model_dir) / "model.safetensors.index.json";
  if (fs::exists(index_path, ec)) {
    std::ifstream in(index_path);
    std::stringstream text;
    text << in.rdbuf();
    auto index = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
        !index["weight_map"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": not a valid index (needs a weight_map object)"));
    }
    std::set<std::string> unique;
    for (const auto& [tensor, file] : index["weight_map"].items()) {
      if (!file.is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": weight_map entry '", tensor, "' is not a file name"));
      }
      const std::string name = file.get<std::string>();
      if (name.find('/') != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": shard name '", name, "' must be a plain file name"));
      }
      unique.insert(name);
    }
    shard_names.assign(unique.begin(), unique.end());
  } else if (fs::exists(fs::path(model_dir) / "model.safetensors", ec)) {
    shard_names.push_back("model.safetensors");
  } else {
    return absl::NotFoundError(absl::StrCat(model_dir, ": no model.safetensors or model.safetensors.index.json"));
  }

  auto checkpoint = std::unique_ptr<Checkpoint>(new Checkpoint());
  checkpoint->dir_ = model_dir;
  for (const std::string& shard : shard_names) {
    auto file = SafetensorsFile::Open((fs::path(model_dir) / shard).string());
    if (!file.ok()) return file.status();
    const size_t file_index = checkpoint->files_.size();
    for (const auto& [name, view] : (*file)->tensors()) {
      auto [it, inserted] = checkpoint->tensors_.emplace(name, std::make_pair(&view, file_index));
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' appears in both ",
                                                       checkpoint->files_[it->second.second]->path(), " and ",
                                                       (*file)->path()));
      }
    }
    checkpoint->files_.push_back(std::move(*file));
  }
  return checkpoint;
}

absl::StatusOr<const TensorView*> Checkpoint::Get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat(dir_, ": tensor '", name, "' is missing from the checkpoint"));
  }
  return it->second.first;
}

absl::StatusOr<const TensorView*> Checkpoint::Get(const std::string& name,
                                                  const std::vector<int64_t>& shape) const {
  auto view = Get(name);
  if (!view.ok()) return view.status();
  if ((*view)->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(FileOf(**view), ": tensor '", name, "' has shape [",
                                                   absl::StrJoin((*view)->shape, ", "), "], expected [",
                                                   absl::StrJoin(shape, ", "), "]"));
  }
  return view;
}

const std::string& Checkpoint::FileOf(const TensorView& view) const {
  auto it = tensors_.find(view.name);
  if (it == tensors_.end()) return dir_;
  return files_[it->second.second]->path();
}

}  // namespace expertd
