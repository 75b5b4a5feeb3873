#include "model/checkpoint.h"

#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace expertd::model {
namespace fs = std::filesystem;
namespace {

// ReadTensors reads and hashes in pieces of this size (8 MiB): large enough
// that the syscalls cost nothing, small enough that the hash finds the piece
// still in the last-level cache.
constexpr size_t kReadChunkBytes = size_t{8} << 20;

}  // namespace

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
    auto file = formats::SafetensorsFile::Open((fs::path(model_dir) / shard).string());
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

absl::StatusOr<const formats::TensorInfo*> Checkpoint::Get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat(dir_, ": tensor '", name, "' is missing from the checkpoint"));
  }
  return it->second.first;
}

absl::StatusOr<const formats::TensorInfo*> Checkpoint::Get(const std::string& name,
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

const std::string& Checkpoint::FileOf(const formats::TensorInfo& tensor) const {
  auto it = tensors_.find(tensor.name);
  if (it == tensors_.end()) return dir_;
  return files_[it->second.second]->path();
}

size_t Checkpoint::FileIndexOf(const formats::TensorInfo& tensor) const {
  // Every TensorInfo a caller holds came from Get, so it is in the map.
  return tensors_.at(tensor.name).second;
}

absl::Status Checkpoint::Read(const formats::TensorInfo& tensor, std::byte* out) const {
  return files_[FileIndexOf(tensor)]->Read(tensor, out);
}

absl::StatusOr<std::vector<Checkpoint::FileReadStats>> Checkpoint::ReadTensors(
    absl::Span<const TensorRead> reads) const {
  std::vector<std::vector<const TensorRead*>> by_file(files_.size());
  for (const TensorRead& read : reads) by_file[FileIndexOf(*read.tensor)].push_back(&read);
  std::unique_ptr<XXH64_state_t, decltype(&XXH64_freeState)> hash(XXH64_createState(), &XXH64_freeState);
  if (hash == nullptr) return absl::ResourceExhaustedError("cannot allocate an XXH64 state");
  std::vector<FileReadStats> all_stats;
  for (size_t f = 0; f < files_.size(); ++f) {
    if (by_file[f].empty()) continue;
    const formats::SafetensorsFile& file = *files_[f];
    const auto start = std::chrono::steady_clock::now();
    std::sort(by_file[f].begin(), by_file[f].end(),
              [](const TensorRead* a, const TensorRead* b) { return a->tensor->offset < b->tensor->offset; });
    FileReadStats stats;
    stats.path = file.path();
    stats.file_bytes = file.file_size();
    XXH64_reset(hash.get(), 0);
    // The header was read by Open; it counts as read, and hashing it makes
    // the checksum that of the file's own byte sequence.
    const uint64_t header_length = file.header_json().size();
    XXH64_update(hash.get(), &header_length, 8);  // little-endian, as stored
    XXH64_update(hash.get(), file.header_json().data(), file.header_json().size());
    stats.read_bytes = 8 + file.header_json().size();
    for (const TensorRead* read : by_file[f]) {
      const formats::TensorInfo& tensor = *read->tensor;
      // Hashing each chunk right after its read finds it still in cache.
      for (size_t done = 0; done < tensor.size_bytes; done += kReadChunkBytes) {
        const size_t chunk = std::min(kReadChunkBytes, tensor.size_bytes - done);
        if (absl::Status status = file.ReadAt(tensor.offset + done, absl::MakeSpan(read->destination + done, chunk));
            !status.ok()) {
          return absl::Status(status.code(), absl::StrCat(status.message(), " (tensor '", tensor.name, "')"));
        }
        XXH64_update(hash.get(), read->destination + done, chunk);
      }
      stats.read_bytes += tensor.size_bytes;
    }
    RETURN_IF_ERROR(file.CheckUnchanged());
    stats.xxh64 = XXH64_digest(hash.get());
    stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    all_stats.push_back(std::move(stats));
  }
  return all_stats;
}

namespace {

// HF's MXFP4 blocks hold element 2b of a 32-element group in the low nibble
// of byte b and element 2b + 1 in the high one (transformers'
// integrations/mxfp4.py, _convert_moe_packed_tensors); GGML's hold element
// j in the low nibble of byte j and element j + 16 in the high one. The
// 4-bit codes and the exponent byte mean the same in both (HF: FP4 value x
// 2^(e - 127); GGML: twice the value x 2^(e - 128)), so only the nibbles
// move.
void PackMxfp4Block(uint8_t exponent, const uint8_t* hf_codes, uint8_t* out) {
  auto code = [&](int i) { return i % 2 == 0 ? hf_codes[i / 2] & 0x0F : hf_codes[i / 2] >> 4; };
  out[0] = exponent;
  for (int j = 0; j < 16; ++j) out[1 + j] = static_cast<uint8_t>(code(j) | code(j + 16) << 4);
}

constexpr uint64_t kMxfp4BlockBytes = 17;  // GGML's block_mxfp4

}  // namespace

absl::StatusOr<SourceTensor> CheckpointTensorSource::Get(const std::string& name,
                                                        const std::vector<int64_t>& shape) const {
  if (!checkpoint_.Has(name) && checkpoint_.Has(name + "_blocks") && checkpoint_.Has(name + "_scales")) {
    // An HF MXFP4 pair: blocks [..., cols / 32, 16] and scales [..., cols / 32].
    if (shape.empty() || shape.back() % 32 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(checkpoint_.dir(), ": MXFP4 tensor '", name,
                                                     "' must have a multiple of 32 columns"));
    }
    std::vector<int64_t> scales_shape(shape.begin(), shape.end() - 1);
    scales_shape.push_back(shape.back() / 32);
    std::vector<int64_t> blocks_shape = scales_shape;
    blocks_shape.push_back(16);
    ASSIGN_OR_RETURN(const formats::TensorInfo* blocks, checkpoint_.Get(name + "_blocks", blocks_shape));
    ASSIGN_OR_RETURN(const formats::TensorInfo* scales, checkpoint_.Get(name + "_scales", scales_shape));
    for (const formats::TensorInfo* t : {blocks, scales}) {
      if (t->dtype != formats::SafetensorsDtype::kU8) {
        return absl::InvalidArgumentError(absl::StrCat(checkpoint_.FileOf(*t), ": tensor '", t->name, "' has dtype ",
                                                       formats::SafetensorsDtypeName(t->dtype), "; MXFP4 blocks and scales are U8"));
      }
    }
    SourceTensor out;
    out.name = name;
    out.shape = shape;
    out.dtype = DType::kMXFP4;
    out.size_bytes = scales->size_bytes * kMxfp4BlockBytes;
    out.origin = blocks;
    out.mxfp4_scales = scales;
    return out;
  }
  ASSIGN_OR_RETURN(const formats::TensorInfo* tensor, checkpoint_.Get(name, shape));
  const std::optional<DType> dtype = formats::WeightDType(tensor->dtype);
  if (!dtype.has_value()) {
    return absl::UnimplementedError(absl::StrCat(checkpoint_.FileOf(*tensor), ": tensor '", tensor->name,
                                                 "' has dtype ", formats::SafetensorsDtypeName(tensor->dtype),
                                                 "; weights must be F32, BF16 or F16"));
  }
  SourceTensor out;
  out.name = name;
  out.shape = shape;
  out.dtype = *dtype;
  out.size_bytes = tensor->size_bytes;
  out.origin = tensor;
  return out;
}

absl::StatusOr<std::vector<FileReadStats>> CheckpointTensorSource::ReadTensors(
    absl::Span<const TensorRead> reads) const {
  std::vector<Checkpoint::TensorRead> checkpoint_reads;
  checkpoint_reads.reserve(reads.size());
  // A read of part of a tensor (one expert of gpt-oss's fused experts:
  // SourceTensor::offset and size_bytes) reads that byte range of it.
  // Reserved up front: the reads point into it.
  std::vector<formats::TensorInfo> parts;
  parts.reserve(2 * reads.size());
  // HF MXFP4 pairs: the codes are read into the front of the destination
  // (16 of every 17 bytes), the exponents aside, and the blocks are then
  // assembled in place from the last to the first (block i's output never
  // reaches below its own input, nor into an earlier block's).
  struct Mxfp4Read {
    std::byte* destination;
    std::vector<std::byte> exponents;
  };
  std::vector<Mxfp4Read> mxfp4;
  mxfp4.reserve(reads.size());
  for (const TensorRead& read : reads) {
    if (read.tensor->mxfp4_scales != nullptr) {
      const auto* blocks = static_cast<const formats::TensorInfo*>(read.tensor->origin);
      const auto* scales = static_cast<const formats::TensorInfo*>(read.tensor->mxfp4_scales);
      const uint64_t first = read.tensor->offset / kMxfp4BlockBytes;
      const uint64_t count = read.tensor->size_bytes / kMxfp4BlockBytes;
      if (read.tensor->offset % kMxfp4BlockBytes != 0 || read.tensor->size_bytes % kMxfp4BlockBytes != 0 ||
          first + count > scales->size_bytes) {
        return absl::InternalError(absl::StrCat("read of bytes ", read.tensor->offset, " + ", read.tensor->size_bytes,
                                                " of MXFP4 tensor '", read.tensor->name, "'"));
      }
      Mxfp4Read& m = mxfp4.emplace_back(Mxfp4Read{read.destination, std::vector<std::byte>(count)});
      formats::TensorInfo& codes = parts.emplace_back(*blocks);
      codes.offset += first * 16;
      codes.size_bytes = count * 16;
      checkpoint_reads.push_back({&codes, read.destination});
      formats::TensorInfo& exponents = parts.emplace_back(*scales);
      exponents.offset += first;
      exponents.size_bytes = count;
      checkpoint_reads.push_back({&exponents, m.exponents.data()});
      continue;
    }
    const auto* tensor = static_cast<const formats::TensorInfo*>(read.tensor->origin);
    if (read.tensor->offset != 0 || read.tensor->size_bytes != tensor->size_bytes) {
      if (read.tensor->offset + read.tensor->size_bytes > tensor->size_bytes) {
        return absl::InternalError(absl::StrCat("read of bytes ", read.tensor->offset, " + ", read.tensor->size_bytes,
                                                " of tensor '", tensor->name, "' of ", tensor->size_bytes, " bytes"));
      }
      formats::TensorInfo& part = parts.emplace_back(*tensor);
      part.offset += read.tensor->offset;
      part.size_bytes = read.tensor->size_bytes;
      tensor = &part;
    }
    checkpoint_reads.push_back({tensor, read.destination});
  }
  ASSIGN_OR_RETURN(std::vector<FileReadStats> stats, checkpoint_.ReadTensors(checkpoint_reads));
  for (Mxfp4Read& m : mxfp4) {
    auto* bytes = reinterpret_cast<uint8_t*>(m.destination);
    for (size_t i = m.exponents.size(); i-- > 0;) {
      uint8_t codes[16];
      std::memcpy(codes, bytes + 16 * i, 16);
      PackMxfp4Block(static_cast<uint8_t>(m.exponents[i]), codes, bytes + kMxfp4BlockBytes * i);
    }
  }
  return stats;
}

}  // namespace expertd::model
